"""The append-only event log: segmented JSONL, one checksummed record per line.

A record line is a complete JSON object whose first member is the checksum:

    {"crc":"1a2b3c4d","seq":1,"id":"...","type":"agent.created",...}

`crc` is the CRC-32 of the same line with the `"crc":"...",` member removed, so a reader checks
it over the raw bytes without re-serialising anything. The events one command appends are one
batch, written with one `write()`; `meta.batch = [i, n]` marks them (only when n > 1) so that a
batch torn by a crash is cut off whole and readers never apply half a command.

Segments are named by their first seq (`00000000000000000001.jsonl`) and roll at a size limit;
only the last one is ever written. Appends hold an exclusive flock on `log.lock`.

The log is a chain: seqs start at 1 and go up by one, across segments too. Anything that breaks
the chain (a missing segment, a deleted, duplicated or swapped line, a flipped bit) is damage,
and nothing is appended after damage. Only a torn write at the very end (a prefix of the last
batch, or zeros) is cut off, into a `.broken` file. What was verified is kept as a `LogState`
(per segment: the bytes checked, their CRC-32, the file's inode and times), so a command checks
the whole log with one `stat` per segment and reads only what changed since.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from fased.errors import CorruptLogError, LogGapError, StateError, UsageError

PREFIX = b'{"crc":"'
BODY_START = 18  # len('{"crc":"') + 8 hex digits + len('",')
_BRACE_CRC = zlib.crc32(b"{")
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
# One record's line at most: a chat message, a reply or a config value is bounded well below
# this (fased.bounds), so a longer line is damage, and no reader ever holds more than this.
MAX_RECORD_BYTES = 64 * 1024 * 1024
_CHUNK = 1 << 20


class BadRecord(ValueError):
    """A line that is not a valid record (torn, zero-filled, flipped bit)."""


def encode_record(record: dict) -> bytes:
    """One record as its log line (with the trailing newline)."""
    try:
        body = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        # a lone surrogate (undecodable input smuggled through as text) would be stored and
        # then break every projection that reads it back: refuse it before anything is written
        raise UsageError("the text holds invalid Unicode (a lone surrogate); nothing was "
                         "recorded", hint="pass UTF-8 text") from None
    if len(body) > MAX_RECORD_BYTES:
        raise UsageError(f"an event of {len(body):,} bytes is larger than the log takes "
                         f"({MAX_RECORD_BYTES:,}); nothing was recorded")
    crc = zlib.crc32(body)
    return b'%s%08x",%s\n' % (PREFIX, crc, body[1:])


def bulk_loads():
    """A JSON parser for reading many records at once: orjson (about 3x faster than json,
    but ~18 ms to import, so only bulk reads use it), falling back to json for what orjson
    refuses (integers over 64 bits, NaN)."""
    import orjson

    def loads(data: bytes):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data)

    return loads


def decode_record(line: bytes, loads=json.loads) -> dict:
    """Check a line's checksum and parse it. `line` has no trailing newline."""
    if len(line) <= BODY_START or not line.startswith(PREFIX) or line[16:18] != b'",':
        raise BadRecord("not a fased record")
    # compare the exact bytes written: int(..., 16) would also accept 'A' for 'a' or a space
    # for a '0', letting a flipped bit through
    if line[8:16] != b"%08x" % zlib.crc32(line[BODY_START:], _BRACE_CRC):
        raise BadRecord("checksum mismatch")
    try:
        record = loads(line)
    except (ValueError, RecursionError):
        raise BadRecord("checksum matches but JSON does not parse") from None
    if not isinstance(record, dict) or not isinstance(record.get("seq"), int) or not (
            isinstance(record.get("meta"), dict)):
        raise BadRecord("checksum matches but it is not an event")
    del record["crc"]
    return record


def is_batch_end(record: dict) -> bool:
    """True unless the record is inside a multi-event batch that continues after it."""
    batch = record["meta"].get("batch")
    return batch is None or batch[0] == batch[1]


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.jsonl"


# -- what is known good ---------------------------------------------------------------------


@dataclass
class Segment:
    """What is known good of one segment file: bytes [0, size) hold seqs first..last in whole
    batches, with CRC-32 `crc`, and the file had this inode, mtime and ctime then. An empty
    segment has last = first - 1 (and the previous segment's last id)."""

    first: int
    size: int = 0
    last: int = 0
    last_id: str | None = None
    first_id: str | None = None
    crc: int = 0
    ino: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0

    @property
    def name(self) -> str:
        return segment_name(self.first)

    def same_file(self, st: os.stat_result) -> bool:
        """True when the file is exactly as it was when checked (ctime changes on any write,
        even one that puts the mtime back)."""
        return (st.st_size == self.size and st.st_ino == self.ino
                and st.st_mtime_ns == self.mtime_ns and st.st_ctime_ns == self.ctime_ns)

    def stamp(self, st: os.stat_result) -> None:
        self.ino, self.mtime_ns, self.ctime_ns = st.st_ino, st.st_mtime_ns, st.st_ctime_ns


@dataclass
class LogState:
    """The verified log: every segment, oldest first. Kept in state.db with the checkpoint."""

    segments: list[Segment]

    @property
    def head(self) -> Head:
        if not self.segments:
            return Head(0, None)
        last = self.segments[-1]
        return Head(last.last, last.last_id)

    @property
    def first_id(self) -> str | None:
        """The id of seq 1: which log this is (another home's log has another)."""
        return self.segments[0].first_id if self.segments else None

    def dumps(self) -> str:
        return json.dumps([[s.first, s.size, s.last, s.last_id, s.first_id, s.crc, s.ino,
                            s.mtime_ns, s.ctime_ns] for s in self.segments],
                          separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | None) -> LogState | None:
        """Parse `dumps` output; None for anything else (an old or damaged state.db)."""
        if not text:
            return None
        try:
            return cls([Segment(*row) for row in json.loads(text)])
        except (ValueError, TypeError):
            return None

    def copy(self) -> LogState:
        return LogState([replace(s) for s in self.segments])


@dataclass
class Torn:
    """Bytes at the end of the last segment that a crash left: a prefix of the batch being
    written, or zeros. Whole committed records are never torn."""

    path: Path
    offset: int
    size: int
    first_seq: int  # the seq the cut bytes would have started with


class _Locked:
    """The context manager `EventLog.locked()` returns (a class: cheaper than a generator
    on a path taken once per append)."""

    __slots__ = ("log",)

    def __init__(self, log: EventLog):
        self.log = log

    def __enter__(self) -> None:
        self.log._acquire()

    def __exit__(self, *exc: object) -> None:
        self.log._release()


@dataclass
class Head:
    """Where the log ends: the last complete batch's last seq and event id."""

    seq: int
    id: str | None


@dataclass
class Repair:
    """A torn tail that was cut off, and where the cut bytes were kept."""

    segment: Path
    offset: int
    length: int
    broken: Path


class EventLog:
    """The segments under `<home>/log` and the lock that serialises writers."""

    def __init__(self, home: Path, segment_bytes: int | None = None):
        self.home = Path(home)
        self.dir = self.home / "log"
        self.lock_path = self.home / "log.lock"
        env_limit = os.environ.get("FASED_SEGMENT_BYTES")
        self.segment_bytes = segment_bytes or (
            _positive(env_limit, "FASED_SEGMENT_BYTES") if env_limit else DEFAULT_SEGMENT_BYTES)
        # file objects (not bare descriptors) so that a dropped EventLog closes them
        self._lock_file = None
        self._lock_depth = 0
        self._seg_file = None  # the active segment, open for appends
        self._seg_path: Path | None = None
        # the verified log (writers), and whether it was checked during this lock hold
        self.state: LogState | None = None
        self._state_checked = False
        # a torn tail must not take seqs up to this one with it: state.db has applied them
        self.floor = 0
        self.repairs: list[Repair] = []

    # -- segments ---------------------------------------------------------------------------

    def size(self) -> int:
        """Bytes in all segments."""
        return sum(st.st_size for _, _, st in self._listing())

    def segments(self) -> list[tuple[int, Path]]:
        """(first seq, path) of every segment, oldest first."""
        return [(first, path) for first, path, _ in self._listing(stat=False)]

    def _listing(self, stat: bool = True) -> list[tuple[int, Path, os.stat_result | None]]:
        """Every segment with its stat, oldest first. A segment that is a symlink (or not a
        regular file) is refused: the log is never read or written through a link."""
        try:
            entries = os.scandir(self.dir)
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            raise StateError(f"{self.dir} is not a directory",
                             hint="`fased doctor` shows what is wrong with the home") from None
        out = []
        with entries:
            for entry in entries:
                name = entry.name
                stem = name[:-6]
                if not (name.endswith(".jsonl") and stem.isascii() and stem.isdigit()):
                    continue
                if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                    raise StateError(
                        f"{self.dir / name} is not a regular file (a symlink or another kind "
                        "of file): fased never reads or writes the log through one",
                        hint="put the segment file itself in its place; `fased doctor` lists "
                        "every problem")
                out.append((int(name[:-6]), self.dir / name,
                            entry.stat(follow_symlinks=False) if stat else None))
        out.sort(key=_first)
        return out

    # -- locking ----------------------------------------------------------------------------

    def locked(self) -> _Locked:
        """Hold the exclusive writer lock (re-entrant within this object). The lock file stays
        open between acquisitions: opening it costs as much as the flock."""
        return _Locked(self)

    def try_lock(self, seconds: float) -> bool:
        """Take the writer lock if it comes free within `seconds` (a reader that must see
        the log at rest: writers hold it only to append); release it with unlock()."""
        import time

        if self._lock_depth:
            self._lock_depth += 1
            return True
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._acquire(fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.02)

    def unlock(self) -> None:
        self._release()

    def _acquire(self, how: int = fcntl.LOCK_EX) -> None:
        if self._lock_depth == 0:
            if self._lock_file is None:
                try:
                    fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
                except OSError as exc:
                    raise StateError(f"cannot open {self.lock_path}: {exc.strerror}") from None
                self._lock_file = os.fdopen(fd, "r+b", buffering=0)
            fcntl.flock(self._lock_file.fileno(), how)
            self._state_checked = False  # others may have written while we did not hold it
        self._lock_depth += 1

    def _release(self) -> None:
        self._lock_depth -= 1
        if self._lock_depth == 0:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the files this object keeps open (the lock must not be held)."""
        for f in (self._lock_file, self._seg_file):
            if f is not None:
                f.close()
        self._lock_file = self._seg_file = self._seg_path = None
        self.state = None

    @property
    def is_locked(self) -> bool:
        return self._lock_depth > 0

    # -- verifying --------------------------------------------------------------------------

    def unchanged(self, known: LogState) -> bool:
        """True when every segment file is exactly as `known` recorded it: nothing was
        appended, cut, removed or modified since. One stat per segment, no reads."""
        listing = self._listing()
        if len(listing) != len(known.segments):
            return False
        for (first, _, st), seg in zip(listing, known.segments, strict=True):
            if first != seg.first or not seg.same_file(st):
                return False
        return True

    def survey(self, known: LogState | None = None) -> tuple[LogState, Torn | None]:
        """Verify the log and return what is good, and a torn tail if there is one.

        Segments that `known` recorded and that have not changed are trusted; a segment that
        only grew has its old bytes checked by CRC and only the new ones read; anything else
        is read in full. Raises LogGapError for missing seqs and CorruptLogError (file and
        offset) for any other damage. Changes nothing."""
        listing = self._listing()
        # a segment that is gone shows as a break in the chain, or (the last ones) as a log
        # that ends before what state.db applied: the Store refuses that
        recorded = {s.first: s for s in known.segments} if known else {}
        segments: list[Segment] = []
        torn = None
        expect, last_id = 1, None
        for i, (first, path, st) in enumerate(listing):
            if first != expect:
                self._chain_broken(segments, first, expect, path)
            seg = recorded.get(first)
            if seg is None or not seg.same_file(st):
                seg, torn = self._check_segment(path, first, last_id, seg,
                                                i == len(listing) - 1)
            segments.append(seg)
            expect, last_id = seg.last + 1, seg.last_id
        return LogState(segments), torn

    def _chain_broken(self, segments: list[Segment], first: int, expect: int,
                      path: Path) -> None:
        after = f"{segments[-1].name} ends at seq {expect - 1}" if segments else (
            "no segment holds seq 1")
        starts = _first_seq_in(path)
        if starts is not None and starts != first:
            raise CorruptLogError(str(path), 0, f"the segment is named for seq {first} but "
                                  f"starts with seq {starts} (renamed?)")
        if first > expect:
            raise LogGapError(f"seqs {expect}..{first - 1} are missing from the log: {after} "
                              f"and {path.name} starts at seq {first}", first=expect,
                              last=first - 1)
        raise CorruptLogError(str(path), 0, f"the segment is named for seq {first}, but {after}")

    def _check_segment(self, path: Path, first: int, prev_id: str | None,
                       known: Segment | None, is_last: bool) -> tuple[Segment, Torn | None]:
        """Verify one segment from its start, or from where `known` ended if the bytes
        before that are still the ones checked then."""
        try:
            f = _open_segment(path)
        except FileNotFoundError:
            raise LogGapError(f"the log segment {path} disappeared while it was checked",
                              first=first, last=first) from None
        with f:
            st = os.fstat(f.fileno())
            seg = Segment(first, 0, first - 1, prev_id)
            if (known is not None and known.ino == st.st_ino and known.size <= st.st_size
                    and _crc_of(f, known.size) == known.crc):
                seg = replace(known)
            f.seek(seg.size)
            torn = None
            scan = _Scan(path, seg, tail=is_last)
            ended = [st]
            for _ in _scan_looking_again(scan, f, ended, bulk_loads()):
                pass
            st = ended[-1]
            if scan.torn_at is not None:
                torn = Torn(path, scan.torn_at, st.st_size, seg.last + 1)
            seg.stamp(st)
        return seg, torn

    # -- the tail (writers only) -------------------------------------------------------------

    def verified(self) -> LogState:
        """The verified log, its torn tail cut off (under the lock). Checked once per lock
        hold; after that nobody else can write."""
        assert self.is_locked
        if self.state is not None and (self._state_checked or self.unchanged(self.state)):
            self._state_checked = True
            return self.state
        state, torn = self.survey(self.state)
        if torn is not None:
            self.state = state
            self.repair_torn(torn)
        return self.adopt(state)

    def repair_torn(self, torn: Torn) -> None:
        """Cut a torn tail off `self.state`'s last segment into a `.broken` file (under the
        lock), unless that would take seqs up to `floor` (which state.db applied) with it."""
        assert self.is_locked and self.state is not None
        if self.state.head.seq < self.floor:
            from fased.errors import StateAheadError

            raise StateAheadError(self.state.head.seq, self.floor, torn)
        self._cut(torn.path, torn.offset, torn.size)
        with _open_segment(torn.path) as f:
            self.state.segments[-1].stamp(os.fstat(f.fileno()))

    def adopt(self, state: LogState) -> LogState:
        """Take `state` (checked by the caller, under the lock) as the log as it is now."""
        if not state.segments:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            self._create_segment(self.dir / segment_name(1))
            seg = Segment(1, 0, 0, None)
            seg.stamp(os.stat(self.dir / seg.name))
            state = LogState([seg])
        self._open_active(self.dir / state.segments[-1].name)
        self.state = state
        self._state_checked = self.is_locked
        return state

    def _open_active(self, path: Path) -> None:
        if self._seg_path != path:
            if self._seg_file is not None:
                self._seg_file.close()
            self._seg_file = os.fdopen(
                os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW), "ab", buffering=0)
            self._seg_path = path

    def _cut(self, path: Path, offset: int, size: int) -> None:
        """Move bytes [offset, size) of a segment into a `.broken` file, then truncate."""
        with open(path, "rb") as f:
            f.seek(offset)
            cut = f.read(size - offset)
        broken = path.with_name(f"{path.name}.{offset}.broken")
        n = 1
        while broken.exists():
            n += 1
            broken = path.with_name(f"{path.name}.{offset}.{n}.broken")
        fd = os.open(broken, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, cut)
            os.fsync(fd)
        finally:
            os.close(fd)
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(path.parent)
        self.repairs.append(Repair(path, offset, size - offset, broken))

    def _create_segment(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        _fsync_dir(path.parent)

    def repair_tail(self) -> list[Repair]:
        """Cut a torn tail now (what every append does first). Returns the cuts made."""
        before = len(self.repairs)
        with self.locked():
            self._state_checked = False
            self.state = None
            self.verified()
        return self.repairs[before:]

    def head_locked(self) -> Head:
        """The end of the log, after repairing a torn tail. Under the lock."""
        return self.verified().head

    # -- appending --------------------------------------------------------------------------

    def append(self, records: list[dict], fsync: bool = True) -> list[dict]:
        """Write records (with seq already assigned by `next_seq`) as one batch. Under the lock.

        Each record needs seq, id, type, v, ts, stream, data, meta. On any write or fsync error
        the segment is truncated back to where it was, so the log stays valid.
        """
        assert self.is_locked and records
        state = self.verified()
        tail = state.segments[-1]
        if records[0]["seq"] != tail.last + 1:
            raise AssertionError("records must continue the log: use next_seq()")
        n = len(records)
        if n > 1:
            for i, rec in enumerate(records, 1):
                rec["meta"]["batch"] = [i, n]
        data = b"".join(encode_record(r) for r in records)
        if tail.size >= self.segment_bytes:
            path = self.dir / segment_name(records[0]["seq"])
            self._create_segment(path)
            new = Segment(records[0]["seq"], 0, tail.last, tail.last_id)
            new.stamp(os.stat(path))
            state.segments.append(new)
            self._open_active(path)
            tail = new
        fd = self._seg_file.fileno()
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        except OSError as exc:
            _truncate_quietly(fd, tail.size)
            self.state = None
            self._state_checked = False
            raise StateError(
                f"could not write the event log ({self._seg_path.name}): "
                f"{exc.strerror or exc}",
                hint="nothing was recorded; free disk space and try again"
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else None,
            ) from None
        if tail.size == 0:
            tail.first_id = records[0]["id"]
        tail.crc = zlib.crc32(data, tail.crc)
        tail.size += len(data)
        tail.last = records[-1]["seq"]
        tail.last_id = records[-1]["id"]
        tail.stamp(os.fstat(fd))
        return records

    def next_seq(self) -> int:
        """The seq the next appended record gets. Under the lock."""
        return self.verified().head.seq + 1

    # -- reading ----------------------------------------------------------------------------

    def head(self) -> Head:
        """The end of the log as a reader sees it (no lock, no repair); O(1) in log length."""
        segs = self.segments()
        for i in range(len(segs) - 1, -1, -1):
            path = segs[i][1]
            try:
                with open(path, "rb") as f:
                    _, last = _last_batch_end(f)
            except FileNotFoundError:
                continue
            if last is not None:
                return Head(last["seq"], last["id"])
        return Head(0, None)

    def read(self, from_seq: int = 1, to_seq: int | None = None,
             bulk: bool = False, track: list[Segment] | None = None) -> Iterator[dict]:
        """Events with from_seq <= seq (<= to_seq), oldest first, complete batches only.

        Every record is checked: its checksum, its batch, and that its seq continues the
        chain (within and across segments). Damage raises CorruptLogError naming file and
        offset, or LogGapError; a torn last batch of the last segment is treated as not there
        (the next append cuts it). A whole read (from seq 1, to the end) given `track` fills
        it with what it verified of each segment, so a rebuild learns the LogState for free.
        """
        loads = bulk_loads() if bulk else json.loads
        expect = None  # the seq the next segment must start with (None: not known yet)
        last_id = None
        for index, (first, path, is_last) in enumerate(self._segments_for(from_seq, to_seq)):
            if expect is not None and first != expect:
                self._chain_broken([Segment(expect - 1, 0, expect - 1)], first, expect, path)
            if index == 0 and first > from_seq:
                self._chain_broken([], first, from_seq, path)
            with _open_or_none(path) as f:
                if f is None:
                    raise LogGapError(f"the log segment {path} disappeared while it was read",
                                      first=first, last=first)
                st = os.fstat(f.fileno())
                start = _seek_seq(f, st.st_size, from_seq) if from_seq > first else 0
                seg = Segment(first, start, first - 1, last_id)
                whole = track is not None and start == 0
                scan = _Scan(path, seg, tail=is_last, mid=start > 0, crc=whole)
                ended = [st]
                # from `start` on the chain is checked, and _seek_seq starts before from_seq
                for record in _scan_looking_again(scan, f, ended, loads):
                    seq = record["seq"]
                    if to_seq is not None and seq > to_seq:
                        return
                    if seq >= from_seq:
                        yield record
                        if to_seq is not None and seq >= to_seq:
                            return  # do not decode (or trip over) anything after the range
                if whole:
                    seg.stamp(ended[-1])
                    track.append(seg)
                expect, last_id = seg.last + 1, seg.last_id

    def read_unchecked(self, to_seq: int | None = None) -> Iterator[dict]:
        """Every event (up to to_seq), oldest first, parsed but NOT checked: no checksums, no
        batch structure. Only for a rebuild that runs the checked `read` over the same bytes
        in another process at the same time and throws its work away unless that read passes.
        Ends where `read` ends (complete batches of the last segment). Needs the lock held, so
        the bytes cannot change between the two reads."""
        loads = bulk_loads()
        for _, path, is_last in self._segments_for(1, to_seq):
            with _open_or_none(path) as f:
                if f is None:
                    continue
                end = os.fstat(f.fileno()).st_size
                if is_last:
                    end, _ = _scan_back_for_batch_end(f, end)
                    f.seek(0)
                for lines in _lines_of(f, end):
                    if to_seq is None:
                        yield from map(loads, lines)
                        continue
                    for record in map(loads, lines):
                        if record["seq"] > to_seq:
                            return
                        yield record

    def _segments_for(self, from_seq: int,
                      to_seq: int | None) -> list[tuple[int, Path, bool]]:
        """The segments that can hold seqs from_seq..to_seq: (first seq, path, is the last)."""
        segs = self.segments()
        start = 0
        for i, (first, _) in enumerate(segs):
            if first <= from_seq:
                start = i
        out = []
        for i in range(start, len(segs)):
            first, path = segs[i]
            if to_seq is not None and first > to_seq:
                break
            out.append((first, path, i == len(segs) - 1))
        return out

    def read_reverse(self) -> Iterator[dict]:
        """Events newest first; cost grows with what is read, not with the log's length.
        Seqs must go down by one, across segments too."""
        segs = self.segments()
        expect = None  # the seq the next record must have
        for i in range(len(segs) - 1, -1, -1):
            first, path = segs[i]
            with _open_or_none(path) as f:
                if f is None:
                    raise LogGapError(f"the log segment {path} disappeared while it was read",
                                      first=first, last=first)
                end = os.fstat(f.fileno()).st_size
                if i == len(segs) - 1:
                    end, _ = _last_batch_end(f)
                boundary = True
                for start, line in _lines_back(f, end):
                    try:
                        record = decode_record(line)
                    except BadRecord as exc:
                        raise CorruptLogError(str(path), start, str(exc)) from None
                    seq = record["seq"]
                    if expect is not None and seq != expect:
                        if boundary and seq < expect:
                            raise LogGapError(
                                f"seqs {seq + 1}..{expect} are missing from the log: "
                                f"{path.name} ends at seq {seq}", first=seq + 1, last=expect)
                        raise _chain_error(path, start, seq, expect, reverse=True)
                    if seq < first:
                        raise CorruptLogError(str(path), start, f"seq {seq} is in the segment "
                                              f"named for seq {first}")
                    boundary = False
                    expect = seq - 1
                    yield record
            if expect is not None and expect >= first:
                raise LogGapError(f"seqs {first}..{expect} are missing from the log: "
                                  f"{path.name} starts at seq {expect + 1}", first=first,
                                  last=expect)
            expect = first - 1


class _Scan:
    """The checked forward read of one segment: checksums, batches, seqs that continue the
    chain. Updates `seg` at every batch end (size, CRC, last seq and id), so `seg` always
    says what is known good. At the end of the last segment (`tail`), bytes that a torn
    write can leave are not an error: `torn_at` says where they start. `mid`: reading starts
    inside the segment (at a line start), so the first seq and batch are whatever is there."""

    def __init__(self, path: Path, seg: Segment, *, tail: bool, mid: bool = False,
                 crc: bool = True):
        self.path = path
        self.seg = seg
        self.tail = tail
        self.mid = mid
        self.crc = crc
        self.torn_at: int | None = None

    def records(self, f, size: int, loads) -> Iterator[dict]:
        """Records from `seg.size` to `size` (the file's size), whole batches at a time."""
        seg = self.seg
        offset = seg.size
        line_end = _last_line_end(f, size) if size > offset else offset
        f.seek(offset)
        expect = None if self.mid else seg.last + 1
        crc = seg.crc
        track = self.crc
        pending: list[dict] = []  # the records of a batch that is not complete yet
        pending_at = 0
        next_index = 0  # the batch index the next record needs; 0: a new batch
        for lines in _lines_of(f, max(0, line_end - offset)):
            for line in lines:
                try:
                    record = decode_record(line, loads)
                except BadRecord as exc:
                    self._bad(f, offset, size, pending_at if pending else offset, str(exc))
                    return
                seq = record["seq"]
                if expect is not None and seq != expect:
                    raise _chain_error(self.path, offset, seq, expect)
                expect = seq + 1
                batch = record["meta"].get("batch")
                if self.mid:  # the first record read: it may end a batch begun before it
                    self.mid = False
                    if isinstance(batch, list) and batch and isinstance(batch[0], int):
                        next_index = batch[0] if batch[0] > 1 else 0
                start = offset
                offset += len(line) + 1
                if track:
                    crc = zlib.crc32(b"\n", zlib.crc32(line, crc))
                if batch is None and not next_index:
                    seg.size, seg.last, seg.last_id, seg.crc = offset, seq, record["id"], crc
                    if seq == seg.first:
                        seg.first_id = record["id"]
                    yield record
                    continue
                if not _batch_follows(batch, next_index):
                    raise CorruptLogError(str(self.path), start,
                                          "batch out of order" if batch else "incomplete batch")
                if not pending:
                    pending_at = start
                pending.append(record)
                if batch[0] < batch[1]:
                    next_index = batch[0] + 1
                    continue
                next_index = 0
                seg.size, seg.last, seg.last_id, seg.crc = offset, seq, record["id"], crc
                if pending[0]["seq"] == seg.first:
                    seg.first_id = pending[0]["id"]
                yield from pending
                pending = []
        if pending or line_end < size:  # a batch cut short, or bytes after the last newline
            at = pending_at if pending else line_end
            self._bad(f, line_end, size, at, "incomplete record or batch at the end")

    def _bad(self, f, offset: int, size: int, cut_at: int, reason: str) -> None:
        """A line at `offset` that is no record, or a batch that `cut_at` began and that never
        ended: a torn tail when it is at the end of the last segment and nothing committed
        follows it (it is then cut from `cut_at`); anything else is damage.

        Only the first `size` bytes count, the file's size when the read began: a reader
        holds no lock, and a writer may since have finished the batch it saw half written
        and appended more. Those records are not evidence that the batch was torn."""
        follows = _records_after(f, offset, size)
        if self.tail and not follows:
            self.torn_at = cut_at
            return
        f.seek(offset)
        if _embeds_record(f.read(min(MAX_RECORD_BYTES, size - offset)).split(b"\n")[0]):
            reason = "a record is missing its line end (committed events follow it)"
        elif not follows and not self.tail:
            reason += " of a sealed segment"
        raise CorruptLogError(str(self.path), offset if follows else cut_at, reason)


LOOKS = 3  # how often a reader looks again at a last segment that changed as it read it


def _scan_looking_again(scan: _Scan, f, ended: list, loads) -> Iterator[dict]:
    """scan.records(f, ...) up to the size the file had at `ended[-1]` (its stat).

    A reader holds no lock, so the bytes below that size can change while it reads them: a
    writer that finds a crash's torn tail cuts it and appends in its place. Damage met in
    the last segment when the file has changed since its stat may be such a mix of two
    versions of the file: the read goes on from its last whole batch over the file as it is
    now, up to LOOKS times. Damage in a file that did not change is damage. The stat the
    read ended with is appended to `ended`."""
    for look in range(LOOKS):
        try:
            yield from scan.records(f, ended[-1].st_size, loads)
            return
        except CorruptLogError:
            now = _changed(f, ended[-1]) if scan.tail and look < LOOKS - 1 else None
            if now is None:
                raise
            ended.append(now)


def _last_batch_end(f) -> tuple[int, dict | None]:
    """_scan_back_for_batch_end of the whole file, looked at again (up to LOOKS times) when
    what it took for damage was read while a writer changed the file."""
    st = os.fstat(f.fileno())
    for look in range(LOOKS):
        try:
            return _scan_back_for_batch_end(f, st.st_size)
        except CorruptLogError:
            now = _changed(f, st) if look < LOOKS - 1 else None
            if now is None:
                raise
            st = now
    raise AssertionError("unreachable")


def _changed(f, st: os.stat_result) -> os.stat_result | None:
    """The file's stat now if it changed since `st` (size, mtime or ctime), else None. When
    it changed, the buffered reader is made to drop the old bytes it may still hold."""
    now = os.fstat(f.fileno())
    if (now.st_size, now.st_mtime_ns, now.st_ctime_ns) == (
            st.st_size, st.st_mtime_ns, st.st_ctime_ns):
        return None
    f.seek(0, os.SEEK_END)  # a seek within the buffer would read the stale bytes again
    return now


def _batch_follows(batch: list | None, next_index: int) -> bool:
    """Whether a record with `batch` may come when the batch index `next_index` is due."""
    if batch is None:
        return False  # only reached inside a batch: a lone record cannot interrupt it
    if (not isinstance(batch, list) or len(batch) != 2
            or not all(isinstance(n, int) for n in batch) or not 1 <= batch[0] <= batch[1]):
        return False
    return batch[0] == (next_index or 1)


def _chain_error(path: Path, offset: int, seq: int, expect: int,
                 reverse: bool = False) -> CorruptLogError:
    previous = expect + 1 if reverse else expect - 1
    if seq == previous:
        what = f"seq {seq} appears twice"
    elif (seq < expect) if reverse else (seq > expect):
        what = f"seq gap: found {seq}, expected {expect}"
    else:
        what = f"seq {seq} where seq {expect} was expected: out of order"
    return CorruptLogError(str(path), offset, what)


def _first_seq_in(path: Path) -> int | None:
    """The seq of a segment's first record, if it has a valid one."""
    with _open_or_none(path) as f:
        line = f.readline(MAX_RECORD_BYTES) if f is not None else b""
    try:
        return decode_record(line.rstrip(b"\n"))["seq"]
    except BadRecord:
        return None


def _records_after(f, offset: int, end: int) -> bool:
    """True when a valid record starts anywhere from `offset` to `end` (at a line start, or
    inside a line whose newline was lost): what a torn write can never leave behind."""
    f.seek(offset)
    lines = f.read(max(0, end - offset)).split(b"\n")
    lines.pop()  # bytes after the last newline: a write cut short, whatever they hold
    for line in lines:
        if not line.strip(b"\0"):
            continue
        try:
            decode_record(line)
            return True
        except BadRecord:
            if _embeds_record(line):
                return True
    return False


def _crc_of(f, size: int) -> int:
    """CRC-32 of the first `size` bytes of `f`."""
    f.seek(0)
    crc = 0
    while size > 0:
        chunk = f.read(min(_CHUNK * 4, size))
        if not chunk:
            return -1
        crc = zlib.crc32(chunk, crc)
        size -= len(chunk)
    return crc


def _first(item: tuple) -> int:
    return item[0]


def _positive(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{name} must be a positive number of bytes, not {text!r}")
    return value


def _lines_of(f, size: int) -> Iterator[list[bytes]]:
    """The next `size` bytes of `f` as lines without their newlines, a chunk's worth of lines
    at a time. Raises BadRecord if the bytes do not end with a newline."""
    rest = b""
    while size > 0:
        chunk = f.read(min(_CHUNK, size))
        if not chunk:
            break
        size -= len(chunk)
        lines = (rest + chunk if rest else chunk).split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_RECORD_BYTES:
            lines.append(rest)  # no record is that long: the caller finds it is no record
            rest = b""
        yield lines
    if rest:
        raise BadRecord("incomplete record at the end")


@contextmanager
def _open_or_none(path: Path):
    """Open a segment for reading; None when a concurrent rebuild or test removed it."""
    try:
        f = _open_segment(path)
    except FileNotFoundError:
        yield None
        return
    with f:
        yield f


def _no_follow(path, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def _open_segment(path: Path):
    """Open a segment for reading, never through a symlink (the file keeps its name)."""
    try:
        return open(path, "rb", opener=_no_follow)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateError(f"{path} is a symlink: fased never reads the log through one",
                             hint="put the segment file itself in its place") from None
        raise


def _lines_back(f, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of each line in [0, end), newest first. `end` is 0 or just after a newline."""
    pos = end
    carry = b""
    while pos > 0:
        size = min(_CHUNK, pos)
        pos -= size
        f.seek(pos)
        buf = f.read(size) + carry
        parts = buf.split(b"\n")
        parts.pop()  # the empty string after the final newline
        line_end = pos + len(buf)
        for line in reversed(parts[1:] if pos > 0 else parts):
            start = line_end - len(line) - 1
            yield start, line
            line_end = start
        carry = parts[0] + b"\n" if pos > 0 and parts else b""


def _last_line_end(f, size: int) -> int:
    """Offset just after the last newline in [0, size); 0 when there is none."""
    pos = size
    while pos > 0:
        n = min(_CHUNK, pos)
        pos -= n
        f.seek(pos)
        i = f.read(n).rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0


def _scan_back_for_batch_end(f, size: int) -> tuple[int, dict | None]:
    """The offset just after the last complete, valid batch, and that batch's last record.

    What follows it is a torn write, a zero-filled or corrupt record, or a batch a crash cut
    short: the tail that an append cuts off and a reader ignores. A bad line that holds a
    whole valid record inside it cannot come from a torn write (a torn write is a prefix of
    complete lines): a lost newline merged two committed records, and that is corruption.
    Only the end is found here; the forward read checks the chain up to it.
    """
    for start, line in _lines_back(f, _last_line_end(f, size)):
        if line.strip(b"\0"):
            try:
                record = decode_record(line)
            except BadRecord:
                if _embeds_record(line):
                    raise CorruptLogError(f.name, start, "a record is missing its line end "
                                          "(committed events follow it)") from None
                continue
            if is_batch_end(record):
                return start + len(line) + 1, record
    return 0, None


def _embeds_record(line: bytes) -> bool:
    """True when a valid record starts somewhere after the beginning of `line`."""
    at = line.find(PREFIX, 1)
    while at != -1:
        try:
            decode_record(line[at:])
            return True
        except BadRecord:
            at = line.find(PREFIX, at + 1)
    return False


def _seek_seq(f, end: int, seq: int) -> int:
    """Offset of a line start before the record with `seq`, close to it (binary search)."""
    lo, hi = 0, end
    best = 0
    while hi - lo > 4096:
        mid = (lo + hi) // 2
        f.seek(mid)
        f.readline()  # skip the partial line
        start = f.tell()
        line = f.readline()
        if start >= end or not line.endswith(b"\n"):
            hi = mid
            continue
        try:
            rec_seq = decode_record(line[:-1])["seq"]
        except BadRecord:
            hi = mid
            continue
        if rec_seq < seq:
            best = start
            lo = mid
        else:
            hi = mid
    return best


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
