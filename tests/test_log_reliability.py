"""Reliability of the event log with real processes: concurrent writers, kill -9, torn tails at
every byte, bit flips, segment rolling, a full disk, file modes.

Writers are separate processes running tests/logwriter.py; every record they write is
deterministic, so after a kill a test can rebuild the exact bytes the writer was in the middle of
and check that what an append cut off (and kept in a `.broken` file) is a prefix of them.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import itertools
import os
import random
import re
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fased.errors import CorruptLogError, StateError
from fased.log import EventLog, Head, decode_record, encode_record

pytestmark = pytest.mark.slow

WRITER = Path(__file__).resolve().parent / "logwriter.py"
_spec = importlib.util.spec_from_file_location("fased_tests_logwriter", WRITER)
assert _spec is not None and _spec.loader is not None
lw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lw)

SEG1 = "00000000000000000001.jsonl"
SEGMENT_NAME = re.compile(r"^\d{20}\.jsonl$")


# -- helpers ---------------------------------------------------------------------------------


def _home(tmp_path: Path, name: str = "home") -> Path:
    home = tmp_path / name
    home.mkdir(mode=0o700)
    return home


def _record(seq: int, text: str, **meta) -> dict:
    return {
        "seq": seq,
        "id": f"ev-{seq}-{text[:8]}",
        "type": "test.event",
        "v": 1,
        "ts": "2024-01-01T00:00:00Z",
        "stream": "test:1",
        "data": {"text": text},
        "meta": {"actor": "test", **meta},
    }


def _append(log: EventLog, texts: list[str]) -> list[dict]:
    """Append one batch (one record per text) the way a command does."""
    with log.locked():
        seq = log.next_seq()
        return log.append([_record(seq + i, t) for i, t in enumerate(texts)])


def _encoded_batch(records: list[dict]) -> bytes:
    """The bytes EventLog.append writes for these records as one batch."""
    n = len(records)
    out = []
    for i, rec in enumerate(records, 1):
        rec = {**rec, "meta": dict(rec["meta"])}
        if n > 1:
            rec["meta"]["batch"] = [i, n]
        out.append(encode_record(rec))
    return b"".join(out)


def _log_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in _segment_files(home))


def _segment_files(home: Path) -> list[Path]:
    if not (home / "log").exists():
        return []
    return sorted(p for p in (home / "log").iterdir() if p.name.endswith(".jsonl"))


def _broken_files(home: Path) -> list[Path]:
    return sorted((home / "log").glob("*.broken"))


def _raw_records(home: Path) -> list[dict]:
    """Every line of every segment, decoded with its checksum checked (no tail tolerance)."""
    out = []
    for path in _segment_files(home):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path} does not end with a newline"
        out.extend(decode_record(line) for line in data.split(b"\n")[:-1])
    return out


def _line_starts(data: bytes) -> list[int]:
    starts = [0]
    for i, byte in enumerate(data):
        if byte == 0x0A and i + 1 < len(data):
            starts.append(i + 1)
    return starts


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _head_of(records: list[dict]) -> Head:
    return Head(records[-1]["seq"], records[-1]["id"]) if records else Head(0, None)


def _assert_repaired_by_next_append(
    home: Path, before: list[dict], good_end: int, cut: bytes
) -> None:
    """The log ends after `before` (at byte `good_end` of the only segment) followed by the torn
    bytes `cut`: readers see exactly `before`, and the next append keeps `cut` verbatim in a
    `.broken` file, truncates, and gets the next seq."""
    seg = home / "log" / SEG1
    prefix = seg.read_bytes()[:good_end]
    reader = EventLog(home)
    assert list(reader.read()) == before
    assert list(reader.read_reverse()) == before[::-1]
    assert reader.head() == _head_of(before)

    log = EventLog(home)
    with log.locked():
        seq = log.next_seq()
        assert seq == len(before) + 1
        new = log.append([_record(seq, "after the repair")])
    brokens = _broken_files(home)
    if cut:
        assert len(log.repairs) == 1
        repair = log.repairs[0]
        assert (repair.segment, repair.offset, repair.length) == (seg, good_end, len(cut))
        assert brokens == [repair.broken]
        assert repair.broken.parent == seg.parent
        assert repair.broken.name.startswith(seg.name)
        assert repair.broken.read_bytes() == cut
        assert _mode(repair.broken) == 0o600
    else:
        assert log.repairs == []
        assert brokens == []
    assert seg.read_bytes() == prefix + encode_record(new[0])
    after = EventLog(home)
    assert list(after.read()) == before + new
    assert after.head() == Head(seq, new[0]["id"])


@pytest.fixture
def procs():
    """Popen objects a test started; any still running at teardown are killed (by pid)."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()


def _spawn(procs: list, home: Path, *args: str, **popen) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, str(WRITER), str(home), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )
    procs.append(p)
    return p


def _expect_ready(p: subprocess.Popen) -> None:
    line = p.stdout.readline()
    if line != b"ready\n":
        p.kill()
        _, err = p.communicate(timeout=10)
        pytest.fail(f"writer did not start: {line!r}\n{err.decode(errors='replace')}")


# A reader in a process of its own, for `seconds`: each way of reading the log, over and over,
# while writers append. Prints "<reads> <errors>" and the first errors.
_READER = """
import sys, time
from fased.log import EventLog
log, mode, until = EventLog(sys.argv[1]), sys.argv[2], time.monotonic() + float(sys.argv[3])
reads = errors = 0
while time.monotonic() < until:
    try:
        if mode == "read":
            seqs = [r["seq"] for r in log.read()]
            assert seqs == list(range(1, len(seqs) + 1)), "seqs are not 1..n"
        elif mode == "read-from":
            list(log.read(from_seq=max(1, log.head().seq - 5)))
        elif mode == "survey":
            log.survey()
        else:
            for i, _ in zip(range(20), log.read_reverse()):
                pass
        reads += 1
    except Exception as exc:
        errors += 1
        if errors < 3:
            print(type(exc).__name__, exc, file=sys.stderr)
print(reads, errors)
"""


def test_readers_never_see_damage_while_writers_append(tmp_path, procs):
    """Readers take no lock, so they meet batches half written (short writes make that
    common): each must read the log as it was, never call it damaged."""
    home = _home(tmp_path)
    for w in (1, 2):
        _expect_ready(_spawn(procs, home, "--writer", str(w), "--batch", "1", "6", "--seed",
                             str(w), "--payload", "300", "--no-fsync", "--segment-bytes",
                             "200000", "--short-writes", "97", "--pause", "0.0005"))
    time.sleep(0.3)
    readers = [subprocess.Popen([sys.executable, "-c", _READER, str(home), mode, "4"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for mode in ("read", "read-from", "survey", "reverse")]
    procs.extend(readers)
    for reader in readers:
        out, err = reader.communicate(timeout=60)
        reads, errors = map(int, out.split())
        assert (errors, err) == (0, "") and reads > 0
    assert _log_bytes(home) > 50_000  # the writers wrote all along


# -- 1. concurrent writers ------------------------------------------------------------------


@pytest.mark.parametrize("batch", [(1, 1), (1, 5)], ids=["single", "batches-1-5"])
def test_concurrent_writers_get_gapless_seqs_in_their_own_order(tmp_path, procs, batch):
    writers, count = 8, 500
    home = _home(tmp_path)
    go = tmp_path / "go"
    for w in range(writers):
        _spawn(
            procs, home, "--writer", str(w), "--count", str(count),
            "--batch", str(batch[0]), str(batch[1]), "--seed", str(100 + w),
            "--wait-for", str(go),
        )  # fmt: skip
    for p in procs:
        _expect_ready(p)
    go.touch()  # all of them start appending at once
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode(errors="replace")

    records = list(EventLog(home).read())
    assert [r["seq"] for r in records] == list(range(1, writers * count + 1))
    assert _raw_records(home) == records  # every line decodes, checksum valid, nothing else
    assert len({r["id"] for r in records}) == len(records)
    assert _broken_files(home) == []
    assert EventLog(home).head() == _head_of(records)

    by_writer: dict[int, list[dict]] = {w: [] for w in range(writers)}
    for r in records:
        by_writer[r["data"]["writer"]].append(r)
    for w, mine in by_writer.items():
        assert [r["data"]["n"] for r in mine] == list(range(count)), f"writer {w}"
    switches = sum(
        a["data"]["writer"] != b["data"]["writer"] for a, b in itertools.pairwise(records)
    )
    assert switches > writers - 1, "the writers never interleaved: the test tested nothing"

    # Batches: contiguous in seq, marked [i, n] (only when n > 1), sized as the writer planned.
    for w, mine in by_writer.items():
        batches = [list(g) for _, g in itertools.groupby(mine, key=lambda r: r["data"]["batch"])]
        assert [b[0]["data"]["batch"] for b in batches] == list(range(len(batches)))
        plan = lw.batch_plan(100 + w, *batch)
        planned, total = [], 0
        while total < count:
            planned.append(min(next(plan), count - total))
            total += planned[-1]
        assert [len(b) for b in batches] == planned, f"writer {w}"
        for b in batches:
            n = len(b)
            first = b[0]["seq"]
            assert [r["seq"] for r in b] == list(range(first, first + n))
            for i, r in enumerate(b, 1):
                assert (r["data"]["i"], r["data"]["of"]) == (i, n)
                assert r["meta"].get("batch") == ([i, n] if n > 1 else None)
    if batch == (1, 1):
        assert all("batch" not in r["meta"] for r in records)


# -- 2. kill -9 -------------------------------------------------------------------------------

KILL_SEGMENT_BYTES = 3_000_000
BIG_PAYLOAD = 1_000_000
SMALL_PAYLOAD = 64


def _kill_cycle(cycle: int) -> tuple[int, tuple[int, int], int, list[str]]:
    """Payload, batch sizes, seed and extra options of the writer of kill cycle `cycle` (its
    writer id): small records in batches of 1-3 and ~1 MB records in batches of 1-2 take turns;
    every other big cycle writes through short, slow writes so that kills land mid-record."""
    if cycle % 2 == 0:
        return SMALL_PAYLOAD, (1, 3), 700 + cycle, []
    slow = ["--short-writes", str(64 * 1024), "--pause", "0.005"] if cycle % 4 == 3 else []
    return BIG_PAYLOAD, (1, 2), 700 + cycle, slow


def _verify_after_kill(home: Path, probes: list[dict]) -> tuple[Head, dict[int, dict]]:
    """Read the whole log with a fresh EventLog: no exception, seq 1.., every writer's events a
    gapless prefix of its own sequence in whole batches, payloads intact, our probes in place.
    Returns the head and the last record of each writer."""
    last: dict[int, dict] = {}
    probe_iter = iter(probes)
    seq = 0
    for rec in EventLog(home, KILL_SEGMENT_BYTES).read():
        seq += 1
        assert rec["seq"] == seq
        if rec["stream"] == "test:1":
            assert rec == next(probe_iter)
            continue
        d = rec["data"]
        w = d["writer"]
        payload = _kill_cycle(w)[0]
        got = (d["n"], d["batch"], d["i"])
        prev = last[w]["data"] if w in last else None
        if prev is None:
            assert got == (0, 0, 1)
        elif prev["i"] == prev["of"]:
            assert got == (prev["n"] + 1, prev["batch"] + 1, 1)
        else:
            assert (*got, d["of"]) == (prev["n"] + 1, prev["batch"], prev["i"] + 1, prev["of"])
        assert d["pad"] == lw.pad(w, d["n"], payload)
        assert rec["meta"].get("batch") == ([d["i"], d["of"]] if d["of"] > 1 else None)
        last[w] = rec
    assert next(probe_iter, None) is None, "a probe record is missing"
    for w, rec in last.items():
        assert rec["data"]["i"] == rec["data"]["of"], f"writer {w}: half a batch is visible"
    head = EventLog(home, KILL_SEGMENT_BYTES).head()
    assert head.seq == seq
    return head, last


def _in_flight_bytes(writer: int, last: dict | None, seq: int) -> bytes:
    """The exact bytes of the batch the writer was appending when it was killed."""
    payload, sizes, seed, _ = _kill_cycle(writer)
    counter = last["data"]["n"] + 1 if last else 0
    batch_no = last["data"]["batch"] + 1 if last else 0
    n = next(itertools.islice(lw.batch_plan(seed, *sizes), batch_no, None))
    return _encoded_batch(lw.make_batch(seq, writer, counter, batch_no, n, payload))


def test_kill9_at_random_moments_leaves_a_readable_log(tmp_path, procs):
    home = _home(tmp_path)
    rng = random.Random(20240917)
    probes: list[dict] = []
    repairs = 0
    started = time.monotonic()
    for cycle in range(20):
        payload, sizes, seed, extra = _kill_cycle(cycle)
        p = _spawn(
            procs, home, "--writer", str(cycle), "--payload", str(payload),
            "--batch", str(sizes[0]), str(sizes[1]), "--seed", str(seed),
            "--segment-bytes", str(KILL_SEGMENT_BYTES), *extra,
        )  # fmt: skip
        before = _log_bytes(home)
        _expect_ready(p)
        if extra:  # a slow writer: kill it while it writes (a busy machine may start it late)
            deadline = time.monotonic() + 10
            while _log_bytes(home) == before and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.04))
        else:
            time.sleep(rng.uniform(0.0, 0.1))
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        assert p.returncode == -signal.SIGKILL, p.stderr.read().decode(errors="replace")

        head, last = _verify_after_kill(home, probes)
        in_flight = _in_flight_bytes(cycle, last.get(cycle), head.seq + 1)
        broken_before = set(_broken_files(home))

        log = EventLog(home, KILL_SEGMENT_BYTES)
        with log.locked():
            seq = log.next_seq()
            assert seq == head.seq + 1
            probe = log.append([_record(seq, f"probe after kill {cycle}")])[0]
        probes.append(probe)
        for r in log.repairs:
            repairs += 1
            cut = r.broken.read_bytes()
            assert r.broken.parent == r.segment.parent
            assert r.broken.name.startswith(r.segment.name) and r.broken.name.endswith(".broken")
            assert r.segment == _segment_files(home)[-1]
            assert 0 < len(cut) == r.length < len(in_flight)
            assert in_flight.startswith(cut), "the cut bytes are not what the writer was writing"
            assert _mode(r.broken) == 0o600
        assert set(_broken_files(home)) - broken_before == {r.broken for r in log.repairs}

        fresh = EventLog(home, KILL_SEGMENT_BYTES)
        assert list(fresh.read(from_seq=seq)) == [probe]
        assert fresh.head() == Head(seq, probe["id"])
        for path in _segment_files(home):
            with path.open("rb") as f:
                first = decode_record(f.readline().rstrip(b"\n"))
            assert SEGMENT_NAME.match(path.name) and first["seq"] == int(path.name[:20])

    _verify_after_kill(home, probes)
    assert _raw_records(home)[-1] == probes[-1]
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"kill -9 cycles took {elapsed:.0f}s"
    # With slow writes most kills of a big writer land mid-record (P(none) is about 1e-4).
    assert repairs > 0, "no kill tore a record: the .broken checks never ran"
    print(f"kill -9: {repairs} torn tails repaired in 20 kills, {elapsed:.1f}s")


# -- 3. torn tails --------------------------------------------------------------------------


def _build_small_log(home: Path, last_is_batch: bool) -> tuple[list[dict], bytes, int, int]:
    """Three records then a last batch (3 records) or a last single record.

    Returns (all records, segment bytes, offset of the last batch, offset of the last record).
    """
    log = EventLog(home)
    written = []
    for text in ["first", "second: é ü ✓ 漢字", "third " + "y" * 40]:
        written += _append(log, [text])
    last = ["last one", "last two ✓", "last three"] if last_is_batch else ["the only last ✓"]
    written += _append(log, last)
    data = (home / "log" / SEG1).read_bytes()
    prefix = b"".join(encode_record(r) for r in written[:3])
    assert data == prefix + _encoded_batch(written[3:])
    batch_start = len(prefix)
    last_start = _line_starts(data)[-1]
    return written, data, batch_start, last_start


@pytest.mark.parametrize("last_is_batch", [False, True], ids=["last-single", "last-batch"])
def test_torn_tail_at_every_byte_offset(tmp_path, last_is_batch):
    written, data, start, _ = _build_small_log(_home(tmp_path), last_is_batch)
    before = written[:3]
    for offset in range(start, len(data)):
        home = tmp_path / f"cut-{offset}"
        (home / "log").mkdir(parents=True)
        (home / "log" / SEG1).write_bytes(data[:offset])
        _assert_repaired_by_next_append(home, before, start, data[start:offset])


@pytest.mark.parametrize("cut", ["mid-batch", "mid-line"])
@pytest.mark.parametrize("how", ["read", "survey"])
def test_a_reader_that_saw_a_batch_half_written_is_not_told_the_log_is_damaged(
        tmp_path, cut, how):
    """A reader takes no lock: its fstat can end inside a batch a writer is still writing.
    By the time it looks past that point, the writer has finished the batch and appended
    more, which must not read as "committed events follow a torn batch" (damage)."""
    written, data, start, last_start = _build_small_log(_home(tmp_path, "orig"), True)
    home = tmp_path / "home"
    (home / "log").mkdir(parents=True)
    segment = home / "log" / SEG1
    seen = last_start if cut == "mid-batch" else last_start + 7
    segment.write_bytes(data[:seen])
    real_fstat = os.fstat

    def fstat_then_the_writer_finishes(fd):
        st = real_fstat(fd)
        with open(segment, "ab") as f:  # the rest of the batch, then one more event
            f.write(data[seen:] + encode_record(_record(len(written) + 1, "after")))
        os.fstat = real_fstat
        return st

    os.fstat = fstat_then_the_writer_finishes
    try:
        log = EventLog(home)
        if how == "read":
            got = [r["seq"] for r in log.read()]
            assert got == [1, 2, 3]  # what was whole when it looked: the batch is not there yet
        else:
            state, torn = log.survey()
            assert state.head.seq == 3 and torn is not None and torn.offset == start
    finally:
        os.fstat = real_fstat
    assert [r["seq"] for r in EventLog(home).read()] == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("how", ["read", "survey"])
def test_a_reader_whose_torn_tail_a_writer_cuts_and_appends_over_reads_on(tmp_path, how):
    """A crash left a torn batch. A reader meets it; before the reader looks past it, a
    writer cuts it (as every append does) and appends in its place, so the bytes below the
    size the reader began with changed: the reader must not call the log damaged."""
    import fased.log as log_module

    home = _home(tmp_path)
    log = EventLog(home)
    written = _append(log, ["one"]) + _append(log, ["two"])
    torn = _encoded_batch([_record(3, "torn a"), _record(4, "torn b " + "z" * 30_000)])
    segment = home / "log" / SEG1
    with open(segment, "ab") as f:  # the batch's first line whole, its second cut short
        f.write(torn[:len(torn) - 5000])
    real = log_module._records_after
    writer = EventLog(home)

    def a_writer_cuts_then_appends(*args):
        log_module._records_after = real
        _append(writer, [f"after {i}" for i in range(200)])
        return real(*args)

    log_module._records_after = a_writer_cuts_then_appends
    try:
        reader = EventLog(home)
        if how == "read":
            seqs = [r["seq"] for r in reader.read()]
        else:
            state, found = reader.survey()
            seqs = list(range(1, state.head.seq + 1))
            assert found is None
    finally:
        log_module._records_after = real
    assert seqs == list(range(1, 203))  # read on over what the writer wrote meanwhile
    assert [r["data"]["text"] for r in EventLog(home).read()][:3] == ["one", "two", "after 0"]
    assert [r["id"] for r in written] == [r["id"] for r in EventLog(home).read()][:2]


@pytest.mark.parametrize("keep_newline", [False, True], ids=["newline-zeroed", "newline-kept"])
@pytest.mark.parametrize("last_is_batch", [False, True], ids=["last-single", "last-batch"])
def test_zero_filled_last_record(tmp_path, last_is_batch, keep_newline):
    written, data, start, last_start = _build_small_log(_home(tmp_path, "orig"), last_is_batch)
    length = len(data) - last_start
    zeros = b"\0" * (length - 1) + (b"\n" if keep_newline else b"\0")
    damaged = data[:last_start] + zeros
    home = tmp_path / "home"
    (home / "log").mkdir(parents=True)
    (home / "log" / SEG1).write_bytes(damaged)
    # A zeroed last record of a batch takes the whole batch with it.
    _assert_repaired_by_next_append(home, written[:3], start, damaged[start:])


# -- 4. bit flips ---------------------------------------------------------------------------


def _build_flip_log(home: Path) -> tuple[list[dict], bytes, list[int]]:
    """r1 r2 r3 [r4 r5 r6] r7 r8 (a batch in the middle); returns records, bytes, line starts."""
    log = EventLog(home)
    written = []
    for texts in (["one"], ["two: é ✓"], ["three"], ["four", "five", "six"], ["seven"], ["eight"]):
        written += _append(log, texts)
    data = (home / "log" / SEG1).read_bytes()
    starts = _line_starts(data)
    assert len(starts) == len(written) == 8
    return written, data, starts


def _flip_failures(home: Path, data: bytes, start: int, positions: range) -> list[str]:
    """Flip every bit at `positions`, one at a time: read() and read_reverse() must raise a
    CorruptLogError naming the segment and `start`; head() still sees the intact last record."""
    seg = home / "log" / SEG1
    expected_head = EventLog(home).head()
    failures = []
    for pos, bit in itertools.product(positions, range(8)):
        damaged = bytearray(data)
        damaged[pos] ^= 1 << bit
        seg.write_bytes(damaged)
        where = f"byte {pos} bit {bit} ({data[pos:pos + 1]!r} -> {bytes(damaged[pos:pos + 1])!r})"
        log = EventLog(home)
        for name, reader in (("read", log.read), ("read_reverse", log.read_reverse)):
            try:
                list(reader())
            except CorruptLogError as exc:
                if exc.path != str(seg) or exc.offset != start:
                    failures.append(f"{where}: {name} blamed {exc.path} at {exc.offset}")
                elif f"{seg}" not in str(exc) or f"at byte {start}" not in str(exc):
                    failures.append(f"{where}: {name} message {exc}")
            else:
                failures.append(f"{where}: {name} raised nothing")
        if log.head() != expected_head:
            failures.append(f"{where}: head() is {log.head()}")
    seg.write_bytes(data)
    return failures


@pytest.mark.parametrize("index", [1, 4, 6], ids=["r2", "r5-mid-batch", "r7-second-to-last"])
def test_bit_flip_before_the_tail_names_file_and_offset(tmp_path, index):
    home = _home(tmp_path)
    _, data, starts = _build_flip_log(home)
    start, end = starts[index], starts[index + 1] - 1  # end: the record's newline
    # The second-to-last record's newline is left to its own test below.
    positions = range(start, end + 1 if index < 6 else end)
    failures = _flip_failures(home, data, start, positions)
    assert failures == [], f"{len(failures)} undetected or misreported flips:\n" + "\n".join(
        failures[:20]
    )


def test_bit_flip_in_newline_of_second_to_last_record_is_an_error(tmp_path):
    """r7's newline flipped merges r7 and r8 into one bad line at the end of the log. Both were
    complete, fsynced records (a torn write leaves no bad line that ends in a newline and holds
    a whole earlier record), so this is corruption before the tail: readers must say so, and the
    next append must neither cut r7 and r8 off nor hand out their seqs again."""
    home = _home(tmp_path)
    _, data, starts = _build_flip_log(home)
    seg = home / "log" / SEG1
    failures = []
    for bit in range(8):
        damaged = bytearray(data)
        damaged[starts[7] - 1] ^= 1 << bit
        seg.write_bytes(damaged)
        where = f"newline -> {bytes(damaged[starts[7] - 1:starts[7]])!r}"
        reader = EventLog(home)
        for name, read in (("read", reader.read), ("read_reverse", reader.read_reverse)):
            try:
                list(read())
            except CorruptLogError as exc:
                if (exc.path, exc.offset) != (str(seg), starts[6]):
                    failures.append(f"{where}: {name} blamed {exc.path} at {exc.offset}")
            else:
                failures.append(f"{where}: {name} raised nothing")
        log = EventLog(home)
        try:
            with log.locked():
                seq = log.next_seq()  # repairs the tail, if it thinks there is a torn one
        except StateError:
            pass  # refusing to append onto a corrupt log is fine
        else:
            if seq != 9:
                failures.append(f"{where}: the next append would get seq {seq}, reused")
        if seg.read_bytes() != damaged or _broken_files(home):
            failures.append(f"{where}: r7 and r8 were cut off into a .broken file")
        for path in _broken_files(home):
            path.unlink()
    assert failures == [], "\n".join(failures)


def test_bit_flip_in_last_record_is_a_torn_tail(tmp_path):
    written, data, starts = _build_flip_log(_home(tmp_path, "orig"))
    start = starts[7]
    for pos, bit in itertools.product(range(start, len(data)), range(8)):
        damaged = bytearray(data)
        damaged[pos] ^= 1 << bit
        home = tmp_path / f"flip-{pos}-{bit}"
        (home / "log").mkdir(parents=True)
        (home / "log" / SEG1).write_bytes(damaged)
        try:
            _assert_repaired_by_next_append(home, written[:7], start, bytes(damaged[start:]))
        except AssertionError as exc:
            raise AssertionError(
                f"flip at byte {pos} bit {bit} ({data[pos:pos + 1]!r}): {exc}"
            ) from None


def test_bit_flip_offset_is_exact_when_reading_from_a_seq(tmp_path):
    """read(from_seq) seeks into a large segment (binary search); offsets stay exact."""
    home = _home(tmp_path)
    log = EventLog(home)
    for i in range(600):
        _append(log, [f"record {i} " + "z" * (i % 50)])
    seg = home / "log" / SEG1
    data = seg.read_bytes()
    assert len(data) > 8 * 4096
    starts = _line_starts(data)
    target = 450  # index of the damaged record (seq 451)
    damaged = bytearray(data)
    damaged[starts[target] + 30] ^= 0x04
    seg.write_bytes(damaged)
    for from_seq in (1, 200, 400, 451):
        with pytest.raises(CorruptLogError) as info:
            list(EventLog(home).read(from_seq=from_seq))
        assert (info.value.path, info.value.offset) == (str(seg), starts[target])
        assert f"at byte {starts[target]}" in str(info.value)


def test_read_up_to_a_seq_ignores_a_corrupt_record_after_it(tmp_path):
    """read(to_seq=N) (`fased replay --until N`) needs the records up to N, and the error's own
    hint says those are intact: a corrupt record after N must not make it fail."""
    home = _home(tmp_path)
    written, data, starts = _build_flip_log(home)
    damaged = bytearray(data)
    damaged[starts[1] + 30] ^= 0x04  # r2
    (home / "log" / SEG1).write_bytes(damaged)
    assert list(EventLog(home).read(to_seq=1)) == written[:1]


# -- 5. segments ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_segments_roll_and_sealed_segments_never_change(tmp_path, monkeypatch, how):
    limit = 2048
    home = _home(tmp_path)
    if how == "environment":
        monkeypatch.setenv("FASED_SEGMENT_BYTES", str(limit))

        def open_log() -> EventLog:
            return EventLog(home)
    else:
        monkeypatch.delenv("FASED_SEGMENT_BYTES", raising=False)

        def open_log() -> EventLog:
            return EventLog(home, segment_bytes=limit)

    rng = random.Random(5)
    written: list[dict] = []
    batches: list[list[int]] = []
    snapshot: dict[str, bytes] = {}
    sealed: dict[str, str] = {}
    log = open_log()
    for step in range(150):
        if step % 10 == 0:
            log = open_log()  # a new process, in effect
        n = rng.choice([1, 1, 1, 2, 3, 4])
        texts = [f"s{step}." + "q" * rng.randint(0, 300) for _ in range(n)]
        if step == 70:
            texts = ["big " + "B" * 5000]  # bigger than a segment on its own
        new = _append(log, texts)
        written += new
        batches.append([r["seq"] for r in new])

        now = {p.name: p.read_bytes() for p in _segment_files(home)}
        for name, old in snapshot.items():
            assert now[name].startswith(old), f"{name} was rewritten"
        for name, digest in sealed.items():
            assert hashlib.sha256(now[name]).hexdigest() == digest, f"sealed {name} changed"
        for name in sorted(now)[:-1]:
            sealed.setdefault(name, hashlib.sha256(now[name]).hexdigest())
        snapshot = now

    segs = _segment_files(home)
    assert len(segs) >= 8
    seq_to_segment = {}
    for i, path in enumerate(segs):
        assert SEGMENT_NAME.match(path.name)
        lines = path.read_bytes().split(b"\n")[:-1]
        recs = [decode_record(line) for line in lines]
        assert recs and recs[0]["seq"] == int(path.name[:20])
        for r in recs:
            seq_to_segment[r["seq"]] = i
        if i < len(segs) - 1:  # sealed: rolled only once full, never before
            size = path.stat().st_size
            assert size >= limit
            last_batch = next(b for b in batches if recs[-1]["seq"] in b)
            last_batch_bytes = sum(len(line) + 1 for line in lines[-len(last_batch):])
            assert size - last_batch_bytes < limit
    for b in batches:
        assert len({seq_to_segment[s] for s in b}) == 1, f"batch {b} spans segments"

    reader = open_log()
    assert list(reader.read()) == written
    assert _raw_records(home) == written
    for n in range(1, len(written) + 2):
        assert list(reader.read(from_seq=n)) == written[n - 1:], f"from_seq={n}"
        assert list(reader.read(from_seq=n, to_seq=n + 2)) == written[n - 1:n + 2]
    assert list(reader.read_reverse()) == written[::-1]
    assert reader.head() == _head_of(written)


def test_read_from_seq_in_large_segments(tmp_path):
    """Segments big enough that read(from_seq) binary-searches inside them."""
    home = _home(tmp_path)
    log = EventLog(home, segment_bytes=64 * 1024)
    rng = random.Random(11)
    written = []
    while len(written) < 1500:
        n = rng.choice([1, 1, 2, 3])
        written += _append(log, [f"r{len(written)}." + "w" * rng.randint(0, 120) for _ in range(n)])
    segs = _segment_files(home)
    assert len(segs) >= 3 and all(p.stat().st_size > 4 * 4096 for p in segs)
    reader = EventLog(home)
    for n in range(1, len(written) + 1):
        assert list(reader.read(from_seq=n, to_seq=n + 2)) == written[n - 1:n + 2], n
    for n in [*range(1, len(written) + 1, 97), len(written), len(written) + 1]:
        assert list(reader.read(from_seq=n)) == written[n - 1:], n
    assert list(reader.read_reverse()) == written[::-1]
    assert reader.head() == _head_of(written)


def test_torn_first_record_of_a_new_segment(tmp_path):
    """A torn tail that is all of the last segment: head comes from the segment before, and the
    repairing append reuses the segment (named by the seq it now gets)."""
    home = _home(tmp_path)
    log = EventLog(home, segment_bytes=1024)
    written = []
    while len(_segment_files(home)) < 3:
        written += _append(log, ["x" * 100])
    last = _segment_files(home)[-1]
    data = last.read_bytes()
    assert decode_record(data.rstrip(b"\n"))["seq"] == int(last.name[:20]) == written[-1]["seq"]
    cut = data[: len(data) // 2]
    last.write_bytes(cut)
    before = written[:-1]
    reader = EventLog(home)
    assert list(reader.read()) == before
    assert list(reader.read_reverse()) == before[::-1]
    assert reader.head() == _head_of(before)

    log = EventLog(home, segment_bytes=1024)
    with log.locked():
        seq = log.next_seq()
        assert seq == written[-1]["seq"]
        new = log.append([_record(seq, "again")])
    assert [(r.segment, r.offset, r.length) for r in log.repairs] == [(last, 0, len(cut))]
    assert log.repairs[0].broken.read_bytes() == cut
    assert _segment_files(home)[-1] == last
    assert last.read_bytes() == encode_record(new[0])
    assert list(EventLog(home).read()) == before + new


# -- 6. disk full -----------------------------------------------------------------------------


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("at_roll", [False, True], ids=["in-segment", "at-segment-roll"])
def test_write_error_leaves_no_trace(tmp_path, procs, at_roll):
    home = _home(tmp_path)
    log = EventLog(home)
    before = []
    for i in range(4):
        before += _append(log, [f"before {i} " + "p" * 150])
    seg1 = home / "log" / SEG1
    seg1_bytes = seg1.read_bytes()
    # At the roll: the segment is full, so the failing append first creates the next segment.
    segment_bytes = len(seg1_bytes) if at_roll else 1 << 20
    target = f"{len(before) + 1:020d}.jsonl" if at_roll else SEG1

    p = _spawn(
        procs, home, "--writer", "9", "--count", "1", "--payload", "300000",
        "--segment-bytes", str(segment_bytes),
        preexec_fn=_limit_file_size(64 * 1024),
    )  # fmt: skip
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3, err.decode(errors="replace")
    assert err.decode().splitlines() == [
        f"could not write the event log ({target}): {os.strerror(errno.EFBIG)}"
    ]
    assert out.decode().splitlines() == [
        "ready", "hint: nothing was recorded; free disk space and try again"
    ]

    assert seg1.read_bytes() == seg1_bytes
    for path in _segment_files(home)[1:]:
        assert path.name == target and path.read_bytes() == b""
    assert _broken_files(home) == []
    reader = EventLog(home)
    assert list(reader.read()) == before
    assert reader.head() == _head_of(before)

    log = EventLog(home, segment_bytes=segment_bytes)
    after = _append(log, ["after the failure"])
    assert after[0]["seq"] == len(before) + 1
    assert log.repairs == []
    assert list(EventLog(home).read()) == before + after
    assert (home / "log" / target).read_bytes().endswith(encode_record(after[0]))


# -- 7. modes ---------------------------------------------------------------------------------


def test_files_and_dirs_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        home = _home(tmp_path)
        log = EventLog(home, segment_bytes=512)
        while len(_segment_files(home)) < 2:
            _append(log, ["m" * 200])
        last = _segment_files(home)[-1]
        with last.open("ab") as f:
            f.write(b'{"crc":"00000000","seq":')  # a torn tail
        _append(EventLog(home, segment_bytes=512), ["repairs the tail"])
    finally:
        os.umask(old)
    assert _mode(home / "log") == 0o700
    assert _mode(home / "log.lock") == 0o600
    for path in _segment_files(home):
        assert _mode(path) == 0o600, path
    brokens = _broken_files(home)
    assert len(brokens) == 1
    assert _mode(brokens[0]) == 0o600
