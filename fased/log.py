"""The append-only event log: segmented JSONL, one checksummed record per line.

A record line is a complete JSON object whose first member is the checksum:

    {"crc":"1a2b3c4d","seq":1,"id":"...","type":"agent.created",...}

`crc` is the CRC-32 of the same line with the `"crc":"...",` member removed, so a reader checks
it over the raw bytes without re-serialising anything. The events one command appends are one
batch, written with one `write()`; `meta.batch = [i, n]` marks them (only when n > 1) so that a
batch torn by a crash is cut off whole and readers never apply half a command.

Segments are named by their first seq (`00000000000000000001.jsonl`) and roll at a size limit;
only the last one is ever written. Appends hold an exclusive flock on `log.lock`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from fased.errors import CorruptLogError, StateError, UsageError

PREFIX = b'{"crc":"'
BODY_START = 18  # len('{"crc":"') + 8 hex digits + len('",')
_BRACE_CRC = zlib.crc32(b"{")
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
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
    except ValueError:
        raise BadRecord("checksum matches but JSON does not parse") from None
    del record["crc"]
    return record


def is_batch_end(record: dict) -> bool:
    """True unless the record is inside a multi-event batch that continues after it."""
    batch = record["meta"].get("batch")
    return batch is None or batch[0] == batch[1]


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.jsonl"


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
class _Tail:
    path: Path
    size: int
    last_seq: int
    last_id: str | None
    dir_mtime: int = 0


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
            int(env_limit) if env_limit else DEFAULT_SEGMENT_BYTES)
        # file objects (not bare descriptors) so that a dropped EventLog closes them
        self._lock_file = None
        self._lock_depth = 0
        self._tail: _Tail | None = None
        self._seg_file = None  # the active segment, open for appends
        self._seg_path: Path | None = None
        self._tail_checked = False  # the cached tail was verified during this lock hold
        self.repairs: list[Repair] = []

    # -- segments ---------------------------------------------------------------------------

    def size(self) -> int:
        """Bytes in all segments."""
        total = 0
        for _, path in self.segments():
            with suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def segments(self) -> list[tuple[int, Path]]:
        """(first seq, path) of every segment, oldest first."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.endswith(".jsonl") and name[:-6].isdigit():
                out.append((int(name[:-6]), self.dir / name))
        out.sort()
        return out

    # -- locking ----------------------------------------------------------------------------

    def locked(self) -> _Locked:
        """Hold the exclusive writer lock (re-entrant within this object). The lock file stays
        open between acquisitions: opening it costs as much as the flock."""
        return _Locked(self)

    def _acquire(self) -> None:
        if self._lock_depth == 0:
            if self._lock_file is None:
                try:
                    fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
                except OSError as exc:
                    raise StateError(f"cannot open {self.lock_path}: {exc.strerror}") from None
                self._lock_file = os.fdopen(fd, "r+b", buffering=0)
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
            self._tail_checked = False  # others may have written while we did not hold it
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
        self._tail = None

    @property
    def is_locked(self) -> bool:
        return self._lock_depth > 0

    # -- the tail (writers only) -------------------------------------------------------------

    def _recover_tail(self) -> _Tail:
        """Find the end of the log, cutting off a torn or corrupt last batch. Under the lock.

        The tail found last time is still the tail when the log directory has not changed
        (no segment was created or removed) and the open segment has the size we left it at:
        a new segment is only ever started after the last one is full, by whoever appends.
        """
        assert self.is_locked
        cached = self._tail
        if cached is not None and self._tail_checked:
            return cached  # nobody else can write while we hold the lock
        if cached is not None and self._seg_file is not None and self._seg_path is cached.path:
            try:
                if (os.stat(self.dir).st_mtime_ns == cached.dir_mtime
                        and os.fstat(self._seg_file.fileno()).st_size == cached.size):
                    self._tail_checked = True
                    return cached
            except FileNotFoundError:
                pass
        segs = self.segments()
        if not segs:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            path = self.dir / segment_name(1)
            self._create_segment(path)
            return self._remember(_Tail(path, 0, 0, None))
        first_seq, path = segs[-1]
        size = path.stat().st_size
        with open(path, "rb") as f:
            good_end, last = _scan_back_for_batch_end(f, size)
        if good_end < size:
            self._cut(path, good_end, size)
        if last is None:
            return self._remember(_Tail(path, 0, first_seq - 1, _last_id_before(segs)))
        return self._remember(_Tail(path, good_end, last["seq"], last["id"]))

    def _remember(self, tail: _Tail) -> _Tail:
        """Cache `tail` with the directory's mtime, keeping its segment open for appends."""
        if self._seg_path is not tail.path:  # identity: pathlib's == costs a microsecond
            if self._seg_file is not None:
                self._seg_file.close()
            self._seg_file = os.fdopen(os.open(tail.path, os.O_WRONLY | os.O_APPEND), "ab",
                                       buffering=0)
            self._seg_path = tail.path
        tail.dir_mtime = os.stat(self.dir).st_mtime_ns
        self._tail = tail
        self._tail_checked = self.is_locked
        return tail

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
        fd = os.open(path, os.O_WRONLY)
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
            self._tail = None
            self._tail = self._recover_tail()
        return self.repairs[before:]

    def head_locked(self) -> Head:
        """The end of the log, after repairing a torn tail. Under the lock."""
        self._tail = self._recover_tail()
        return Head(self._tail.last_seq, self._tail.last_id)

    # -- appending --------------------------------------------------------------------------

    def append(self, records: list[dict], fsync: bool = True) -> list[dict]:
        """Write records (with seq already assigned by `next_seq`) as one batch. Under the lock.

        Each record needs seq, id, type, v, ts, stream, data, meta. On any write or fsync error
        the segment is truncated back to where it was, so the log stays valid.
        """
        assert self.is_locked and records
        tail = self._recover_tail()
        if records[0]["seq"] != tail.last_seq + 1:
            raise AssertionError("records must continue the log: use next_seq()")
        path, size = tail.path, tail.size
        if size >= self.segment_bytes:
            path = self.dir / segment_name(records[0]["seq"])
            self._create_segment(path)
            size = 0
        n = len(records)
        if n > 1:
            for i, rec in enumerate(records, 1):
                rec["meta"]["batch"] = [i, n]
        data = b"".join(encode_record(r) for r in records)
        if path is not self._seg_path:  # a new segment
            self._remember(_Tail(path, 0, records[0]["seq"] - 1, tail.last_id))
        fd = self._seg_file.fileno()
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        except OSError as exc:
            _truncate_quietly(fd, size)
            self._tail = None
            self._tail_checked = False
            raise StateError(
                f"could not write the event log ({path.name}): {exc.strerror or exc}",
                hint="nothing was recorded; free disk space and try again"
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else None,
            ) from None
        self._tail.size = size + len(data)
        self._tail.last_seq = records[-1]["seq"]
        self._tail.last_id = records[-1]["id"]
        return records

    def next_seq(self) -> int:
        """The seq the next appended record gets. Under the lock."""
        self._tail = self._recover_tail()
        return self._tail.last_seq + 1

    # -- reading ----------------------------------------------------------------------------

    def head(self) -> Head:
        """The end of the log as a reader sees it (no lock, no repair); O(1) in log length."""
        segs = self.segments()
        for i in range(len(segs) - 1, -1, -1):
            path = segs[i][1]
            try:
                with open(path, "rb") as f:
                    _, last = _scan_back_for_batch_end(f, os.fstat(f.fileno()).st_size)
            except FileNotFoundError:
                continue
            if last is not None:
                return Head(last["seq"], last["id"])
        return Head(0, None)

    def read(self, from_seq: int = 1, to_seq: int | None = None,
             bulk: bool = False) -> Iterator[dict]:
        """Events with from_seq <= seq (<= to_seq), oldest first, complete batches only.

        A bad record before the tail raises CorruptLogError naming file and offset; a torn or
        bad last batch of the last segment is treated as not there (the next append cuts it).
        """
        loads = bulk_loads() if bulk else json.loads
        for path, is_last in self._segments_for(from_seq, to_seq):
            for record in self._read_segment(path, from_seq, is_last, loads):
                if to_seq is not None and record["seq"] > to_seq:
                    return
                yield record
                if to_seq is not None and record["seq"] >= to_seq:
                    return  # do not decode (or trip over) anything after the range

    def read_unchecked(self, to_seq: int | None = None) -> Iterator[dict]:
        """Every event (up to to_seq), oldest first, parsed but NOT checked: no checksums, no
        batch structure. Only for a rebuild that runs the checked `read` over the same bytes
        in another process at the same time and throws its work away unless that read passes.
        Ends where `read` ends (complete batches of the last segment). Needs the lock held, so
        the bytes cannot change between the two reads."""
        loads = bulk_loads()
        for path, is_last in self._segments_for(1, to_seq):
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

    def _segments_for(self, from_seq: int, to_seq: int | None) -> Iterator[tuple[Path, bool]]:
        """The segments that can hold seqs from_seq..to_seq, each with whether it is the last."""
        segs = self.segments()
        start = 0
        for i, (first, _) in enumerate(segs):
            if first <= from_seq:
                start = i
        for i in range(start, len(segs)):
            first, path = segs[i]
            if to_seq is not None and first > to_seq:
                return
            yield path, i == len(segs) - 1

    def _read_segment(self, path: Path, from_seq: int, is_last: bool,
                      loads=json.loads) -> Iterator[dict]:
        with _open_or_none(path) as f:
            if f is None:
                return
            end = os.fstat(f.fileno()).st_size
            if is_last:
                end, _ = _scan_back_for_batch_end(f, end)
            offset = _seek_seq(f, end, from_seq) if from_seq > 1 else 0
            f.seek(offset)
            expect = 0  # the batch index the next record needs; 0: any (we may start mid-batch)
            try:
                for lines in _lines_of(f, end - offset):
                    for line in lines:
                        try:
                            record = decode_record(line, loads)
                        except BadRecord as exc:
                            raise CorruptLogError(str(path), offset, str(exc)) from None
                        batch = record["meta"].get("batch")
                        if batch is not None:
                            if expect and batch[0] != expect:
                                raise CorruptLogError(str(path), offset, "batch out of order")
                            expect = 1 if batch[0] == batch[1] else batch[0] + 1
                        elif expect > 1:
                            raise CorruptLogError(str(path), offset, "incomplete batch")
                        else:
                            expect = 1
                        offset += len(line) + 1
                        if record["seq"] >= from_seq:
                            yield record
            except BadRecord:  # bytes after the last newline (_lines_of)
                expect = -1
            if expect > 1 or expect < 0:
                raise CorruptLogError(str(path), offset, "incomplete record or batch at the end")

    def read_reverse(self) -> Iterator[dict]:
        """Events newest first; cost grows with what is read, not with the log's length."""
        segs = self.segments()
        for i in range(len(segs) - 1, -1, -1):
            path = segs[i][1]
            with _open_or_none(path) as f:
                if f is None:
                    continue
                end = os.fstat(f.fileno()).st_size
                if i == len(segs) - 1:
                    end, _ = _scan_back_for_batch_end(f, end)
                for start, line in _lines_back(f, end):
                    try:
                        yield decode_record(line)
                    except BadRecord as exc:
                        raise CorruptLogError(str(path), start, str(exc)) from None


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
        yield lines
    if rest:
        raise BadRecord("incomplete record at the end")


@contextmanager
def _open_or_none(path: Path):
    """Open a segment for reading; None when a concurrent rebuild or test removed it."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        yield None
        return
    with f:
        yield f


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


def _last_id_before(segs: list[tuple[int, Path]]) -> str | None:
    for _, path in reversed(segs[:-1]):
        with open(path, "rb") as f:
            _, last = _scan_back_for_batch_end(f, os.fstat(f.fileno()).st_size)
        if last is not None:
            return last["id"]
    return None


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
