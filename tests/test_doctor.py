"""`fased doctor [--repair] [--json]`: findings about the home, the log and state.db, and the
repairs that lose no event."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import events, rows, run_process

from fased import __version__
from fased.log import encode_record

SEGMENT = "00000000000000000001.jsonl"


@pytest.fixture
def home(set_up, ok) -> Path:
    """A home with 11 events: setup, then a session."""
    ok("session", "new", "--name", "work")
    assert len(events(set_up)) == 11
    return set_up


def lines(result) -> list[str]:
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout.splitlines()


def clean(home: Path, n: int = 11) -> list[str]:
    return [f"ok    permissions  {home} and its files are private to the user",
            f"ok    lock         {home}/log.lock can be locked",
            f"ok    log          {n} events in 1 segment(s), checksums valid, seq 1..{n} gapless",
            f"ok    projections  state.db is current at seq {n}"]


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def projection_rows(home: Path) -> list[dict]:
    return rows(home, "SELECT id, agent, name, deleted FROM sessions")


def flip_bit(home: Path, seq: int, at: int = 40) -> int:
    """Flip one bit inside the record with `seq`; returns the record's byte offset."""
    segment = home / "log" / SEGMENT
    data = bytearray(segment.read_bytes())
    offset = data.index(b'"seq":%d,' % seq) - 18
    data[offset + at] ^= 0x01
    segment.write_bytes(bytes(data))
    return offset


# -- a healthy home ----------------------------------------------------------------------------

def test_a_healthy_home_is_all_ok(home, run):
    log = (home / "log" / SEGMENT).read_bytes()

    result = run("doctor")

    assert (result.exit_code, lines(result), result.stderr) == (0, clean(home), "")
    assert (home / "log" / SEGMENT).read_bytes() == log


def test_json_is_the_list_of_findings(home, run):
    human = lines(run("doctor"))

    result = run("doctor", "--json")

    assert result.exit_code == 0
    findings = json.loads(result.stdout)
    assert findings == [
        {"check": "permissions", "level": "ok", "fixed": False,
         "message": f"{home} and its files are private to the user"},
        {"check": "lock", "level": "ok", "fixed": False,
         "message": f"{home}/log.lock can be locked"},
        {"check": "log", "level": "ok", "fixed": False,
         "message": "11 events in 1 segment(s), checksums valid, seq 1..11 gapless"},
        {"check": "projections", "level": "ok", "fixed": False,
         "message": "state.db is current at seq 11"}]
    assert [f"{f['check']} {f['message']}" for f in findings] == [
        " ".join(line.split(None, 2)[1:]) for line in human]


def test_a_lock_held_by_another_command_is_reported(home, run):
    fd = os.open(home / "log.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = run("doctor")
    finally:
        os.close(fd)

    assert result.exit_code == 0
    assert lines(result)[1] == ("info  lock         the log lock is held by another fased "
                                "command right now")


# -- torn tail ---------------------------------------------------------------------------------

def test_a_torn_tail_is_a_warning_and_repair_cuts_it_into_a_broken_file(home, run, ok):
    segment = home / "log" / SEGMENT
    good = segment.read_bytes()
    torn = b'{"crc":"0badf00d","seq":12,"id":"half a rec'
    segment.write_bytes(good + torn)

    checked = run("doctor")

    warning = (f"warn  log          torn tail: {len(torn)} bytes at byte {len(good)} of {SEGMENT}"
               " (an interrupted write; the next append moves them to a .broken file)")
    assert checked.exit_code == 0
    assert lines(checked) == [*clean(home)[:2], warning, *clean(home)[2:]]
    assert segment.read_bytes() == good + torn  # checking changes nothing

    repaired = run("doctor", "--repair")

    broken = f"{SEGMENT}.{len(good)}.broken"
    assert repaired.exit_code == 0
    assert lines(repaired) == [
        *clean(home)[:2], warning + " (repaired)",
        f"info  log          1 .broken file(s) hold bytes cut from torn tails: {broken}",
        *clean(home)[2:]]
    assert segment.read_bytes() == good
    assert (home / "log" / broken).read_bytes() == torn
    assert mode(home / "log" / broken) == 0o600
    assert len(events(home)) == 11
    again = run("doctor")
    assert again.exit_code == 0
    assert "torn tail:" not in again.stdout
    ok("session", "new", "--name", "after")
    assert [e["seq"] for e in events(home)][-2:] == [12, 13]


# a real command whose every write to the log is cut to 100 bytes and then waits: its batch
# stays half written (and its lock held) for about a second
SLOW_WRITER = """
import sys, time, types
import fased.log
class SlowOs(types.ModuleType):
    def __getattr__(self, name):
        return getattr(__import__("os"), name)
    def write(self, fd, data):
        import os
        n = os.write(fd, memoryview(data)[:100])
        time.sleep(PAUSE)
        return n
PAUSE = float(sys.argv.pop(1))
fased.log.os = SlowOs("os")
from fased.commands.entry import main
main()
"""


@pytest.mark.parametrize("pause", [0.15, 1.0], ids=["lock-freed-soon", "lock-held-long"])
def test_a_batch_being_written_is_not_reported_as_a_torn_tail(home, run, monkeypatch, pause):
    """doctor read the log without the lock, then stat'ed the last segment again: any batch
    a command was writing then was a "torn tail", and --repair said "(repaired)" for it."""
    import fased.doctor

    monkeypatch.setattr(fased.doctor, "TAIL_LOCK_SECONDS", 2.0 if pause < 0.5 else 0.3)
    segment = home / "log" / SEGMENT
    before = segment.stat().st_size
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(pause), "session", "new",
                               "--name", "slowly"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while segment.stat().st_size == before:  # its batch has begun
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.01)
        checked = run("doctor", "--repair")
    finally:
        assert writer.wait(timeout=60) == 0, writer.stderr.read()
    assert checked.exit_code == 0, checked.stdout
    assert "torn tail" not in checked.stdout and "repaired" not in checked.stdout
    if pause >= 0.5:  # still being written when doctor gave up waiting: said as it is
        assert "no whole batch yet: the command holding the lock may be writing them" in (
            checked.stdout)
    assert "slowly" in {r["name"] for r in projection_rows(home)}
    assert not list((home / "log").glob("*.broken"))


# -- corruption --------------------------------------------------------------------------------

def test_a_bit_flip_before_the_tail_is_an_error_naming_file_and_offset(home, run):
    offset = flip_bit(home, 5)
    segment = home / "log" / SEGMENT
    corrupt = segment.read_bytes()
    before = projection_rows(home)

    for args in (["doctor"], ["doctor", "--repair"]):
        result = run(*args)

        assert result.exit_code == 1, args
        assert lines(result) == [
            *clean(home)[:2],
            f"ERROR log          corrupt record in {segment} at byte {offset}: checksum mismatch",
            "ERROR log          the log cannot be read past the error above; events before it "
            "are intact. Keep a copy of the home before editing anything by hand.",
            "info  projections  not checked: the log cannot be read to its end"]
        assert result.stderr == ""
        assert segment.read_bytes() == corrupt  # --repair deletes no event
        assert sorted(p.name for p in (home / "log").iterdir()) == [SEGMENT]
        assert projection_rows(home) == before


def test_two_records_merged_at_the_tail_are_an_error_not_a_torn_tail(home, run):
    segment = home / "log" / SEGMENT
    data = segment.read_bytes()
    last = data.rindex(b'{"crc":')
    segment.write_bytes(data[:last - 1] + b" " + data[last:])  # the newline before it is lost
    start = data.rindex(b'{"crc":', 0, last - 1)

    result = run("doctor", "--repair")

    assert result.exit_code == 1
    assert lines(result)[2] == (
        f"ERROR log          corrupt record in {segment} at byte {start}: a record is missing "
        "its line end (committed events follow it)")
    assert lines(result)[-1] == "info  projections  not checked: the log cannot be read to its end"
    assert segment.read_bytes() == data[:last - 1] + b" " + data[last:]


def append_record(home: Path, seq: int, type_: str = "config.set", v: int = 1,
                  data: dict | None = None) -> int:
    segment = home / "log" / SEGMENT
    offset = segment.stat().st_size
    record = {"seq": seq, "id": uuid.uuid4().hex, "type": type_, "v": v,
              "ts": "2030-01-01T00:00:00.000000Z", "stream": "config",
              "data": data or {"path": "agents.defaults.retries", "value": 1}, "meta": {}}
    with segment.open("ab") as f:
        f.write(encode_record(record))
    return offset


def test_a_seq_gap_is_an_error(home, run):
    offset = append_record(home, 13)
    append_record(home, 14)

    result = run("doctor", "--repair")

    assert result.exit_code == 1
    assert lines(result)[2] == (f"ERROR log          corrupt record in {home / 'log' / SEGMENT} "
                                f"at byte {offset}: seq gap: found 13, expected 12")
    assert len((home / "log" / SEGMENT).read_bytes().splitlines()) == 13


def test_a_segment_named_for_the_wrong_seq_is_an_error(home, run):
    (home / "log" / SEGMENT).rename(home / "log" / "00000000000000000002.jsonl")

    result = run("doctor")

    assert result.exit_code == 1
    assert lines(result)[2] == (f"ERROR log          corrupt record in {home}/log/"
                                "00000000000000000002.jsonl at byte 0: the segment is named for "
                                "seq 2 but starts with seq 1 (renamed?)")


def test_an_event_from_a_newer_fased_is_an_error(home, run):
    append_record(home, 12, "agent.created", 7, {"agent": "x", "name": "X"})

    result = run("doctor")

    assert result.exit_code == 1
    assert lines(result)[2] == (
        "ERROR log          the log holds a agent.created v7 event (seq 12) that this fased "
        f"{__version__} does not know: it was written by a newer fased")


# -- permissions -------------------------------------------------------------------------------

def test_loose_permissions_are_warnings_and_repair_tightens_them(home, run):
    loose = {home: 0o755, home / "log": 0o775, home / "log" / SEGMENT: 0o644,
             home / "state.db": 0o664, home / "fased.json": 0o666}
    for path, m in loose.items():
        path.chmod(m)

    checked = run("doctor")

    warnings = sorted(f"warn  permissions  {p} is {oct(m)}, should be "
                      f"{'0o700' if p.is_dir() else '0o600'}" for p, m in loose.items())
    assert checked.exit_code == 0
    assert sorted(lines(checked)[:5]) == warnings
    assert lines(checked)[0] == f"warn  permissions  {home} is 0o755, should be 0o700"
    assert lines(checked)[5:] == clean(home)[1:]
    assert {p: mode(p) for p in loose} == loose

    repaired = run("doctor", "--repair")

    assert repaired.exit_code == 0
    assert sorted(lines(repaired)[:5]) == sorted(w + " (repaired)" for w in warnings)
    assert {p: mode(p) for p in loose} == {p: 0o700 if p.is_dir() else 0o600 for p in loose}
    assert lines(run("doctor")) == clean(home)


# -- projections -------------------------------------------------------------------------------

def spoil_version(home: Path) -> None:
    con = sqlite3.connect(home / "state.db")
    con.execute("UPDATE meta SET value = 'built-by-another' WHERE key = 'version'")
    con.execute("UPDATE sessions SET name = 'stale'")
    con.commit()
    con.close()


def spoil_garbage(home: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{home}/state.db{suffix}").unlink(missing_ok=True)
    (home / "state.db").write_bytes(b"not a database at all" * 500)


def spoil_missing(home: Path) -> None:
    (home / "state.db").unlink()


def spoil_ahead(home: Path) -> None:
    con = sqlite3.connect(home / "state.db")
    con.execute("UPDATE meta SET value = '40' WHERE key = 'checkpoint'")
    con.execute("UPDATE sessions SET name = 'stale'")
    con.commit()
    con.close()


@pytest.mark.parametrize(("spoil", "problem"), [
    (spoil_version, "state.db was built by another projection version"),
    (spoil_garbage, "state.db is unreadable (file is not a database)"),
    (spoil_missing, "state.db is missing (any command rebuilds it)"),
], ids=["version", "garbage", "missing"])
def test_a_stale_or_broken_state_db_is_rebuilt_by_repair(home, run, spoil, problem):
    expected = projection_rows(home)
    spoil(home)

    checked = run("doctor")

    assert checked.exit_code == 0
    assert lines(checked) == [*clean(home)[:3], f"warn  projections  {problem}"]

    repaired = run("doctor", "--repair")

    assert repaired.exit_code == 0
    assert lines(repaired) == [*clean(home)[:3], f"warn  projections  {problem} (repaired)"]
    assert projection_rows(home) == expected
    assert lines(run("doctor")) == clean(home)


def test_a_state_db_ahead_of_the_log_is_an_error_that_only_accept_loss_mends(home, run):
    """state.db applied seqs the log no longer holds: the log lost committed events. Plain
    --repair must not rebuild over that evidence; --accept-loss does, and records it."""
    spoil_ahead(home)
    lost = ("ERROR projections  state.db has applied events up to seq 40, but the log ends at "
            "seq 11: seqs 12..40 are missing from the log")
    advice = (". Restore the log from a backup, or go on without those events: `fased doctor "
              "--repair --accept-loss` (recorded in the log)")

    for args in (["doctor"], ["doctor", "--repair"]):
        result = run(*args)

        assert result.exit_code == 1, args
        assert lines(result) == [*clean(home)[:3], lost + advice]
        assert len(events(home)) == 11
        assert projection_rows(home)[0]["name"] == "stale"  # the evidence is kept

    assert fails_with_state_error(run, "session", "list") == (
        "Error: state.db has applied events up to seq 40, but the log ends at seq 11: seqs "
        "12..40 are missing from the log")

    result = run("doctor", "--repair", "--accept-loss")

    assert result.exit_code == 0, result.stdout
    assert lines(result) == [*clean(home)[:3], lost + " (repaired)"]
    accepted = events(home)[-1]
    assert (accepted["seq"], accepted["type"], accepted["stream"]) == (12, "log.loss_accepted",
                                                                     "log")
    assert accepted["data"] == {"checkpoint": 40, "head": 11, "missing": [12, 40],
                                "reason": lost[19:]}
    assert projection_rows(home)[0]["name"] == "work"
    assert lines(run("doctor")) == clean(home, 12)


def fails_with_state_error(run, *args: str) -> str:
    result = run(*args)
    assert result.exit_code == 4, (args, result.stdout, result.stderr)
    return next(ln for ln in result.stderr.splitlines() if ln.startswith("Error: "))


def test_accept_loss_goes_with_repair(home, run):
    result = run("doctor", "--accept-loss")

    assert result.exit_code == 2
    assert "Error: --accept-loss goes with --repair" in result.stderr


def test_a_state_db_behind_the_log_is_information(home, run, tmp_path):
    older = sqlite3.connect(tmp_path / "older.db")
    live = sqlite3.connect(home / "state.db")
    live.backup(older)
    live.close()
    older.close()
    assert run_process("session", "new", "--name", "later").returncode == 0
    for suffix in ("-wal", "-shm"):
        Path(f"{home}/state.db{suffix}").unlink(missing_ok=True)
    os.replace(tmp_path / "older.db", home / "state.db")

    result = run("doctor", "--repair")

    assert result.exit_code == 0
    assert lines(result)[-1] == ("info  projections  state.db is 2 events behind the log (the "
                                 "next command catches up)")
    assert lines(result)[2] == ("ok    log          13 events in 1 segment(s), checksums valid, "
                                "seq 1..13 gapless")
