"""`fased replay`: filters, tables, JSONL, --follow, --rebuild, --verify and --at."""

from __future__ import annotations

import json
import os
import re
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import error_line, events, rows, run_process

import fased.log
import fased.store
from fased.store import Draft, Store

FASED = [sys.executable, "-c", "from fased.commands.entry import main; main()"]
HEADER = ("SEQ", "TIME (UTC)", "TYPE", "STREAM", "ACTOR", "DATA")
# (seq, time, type, stream, data) of the history below; the actor is always alice
HISTORY = [
    (1, "2025-01-01 10:00:00", "config.set", "config",
     "path=agents.defaults.skipBootstrap value=true"),
    (2, "2025-01-01 10:01:00", "agent.created", "agent:main", "agent=main name=main"),
    (3, "2025-01-01 10:02:00", "agent.created", "agent:ops", "agent=ops name=Ops"),
    (4, "2025-01-01 10:03:00", "session.created", "session:s-1",
     "agent=main session=s-1 name=work"),
    (5, "2025-01-01 10:03:00", "session.switched", "agent:main", "agent=main session=s-1"),
    (6, "2025-01-01 10:04:00", "session.created", "session:s-2",
     "agent=ops session=s-2 name=night"),
    (7, "2025-01-01 10:04:00", "session.switched", "agent:ops", "agent=ops session=s-2"),
    (8, "2025-01-01 10:05:00", "agent.deleted", "agent:ops",
     "agent=ops force=true cancelled_tasks=[]"),
    (9, "2025-01-01 10:06:00", "agent.created", "agent:dev", "agent=dev name=dev"),
    (10, "2025-01-01 10:07:00", "session.renamed", "session:s-1",
     "agent=main session=s-1 name=main work"),
]
NOW = {"FASED_NOW": "2025-01-01T10:08:00Z"}


@pytest.fixture
def history(fased_home, ok, monkeypatch) -> Path:
    """Ten events, one command a minute from 10:00 UTC, all by user alice."""
    monkeypatch.setenv("LOGNAME", "alice")
    monkeypatch.setattr(fased.store, "_META_BASE", None)
    for minute, args in enumerate([
            ("config", "set", "agents.defaults.skipBootstrap", "true"),
            ("setup", "-y", "--no-detect"),
            ("agent", "create", "ops", "--name", "Ops"),
            ("session", "new", "--name", "work"),
            ("session", "new", "--agent", "ops", "--name", "night"),
            ("agent", "delete", "ops", "--force"),
            ("agent", "create", "dev"),
            ("session", "rename", "work", "main work")]):
        ok(*args, env={"FASED_NOW": f"2025-01-01T10:{minute:02d}:00Z"})
    assert [e["meta"]["actor"] for e in events(fased_home)] == ["alice"] * 10
    return fased_home


def parse_table(text: str) -> list[tuple]:
    """Rows of a table, cut at the header's column starts (so misaligned cells show)."""
    lines = text.splitlines()
    starts = [lines[0].index(h) for h in HEADER]
    out = []
    for line in lines[1:]:
        assert all(line[a - 2:a] == "  " and line[a] != " " for a in starts[1:]), line
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        out.append((int(cells[0]), cells[1], cells[2], cells[3], cells[4], cells[5]))
    return out


def expected_rows(*seqs: int) -> list[tuple]:
    return [(s, t, ty, st, "alice", d) for s, t, ty, st, d in HISTORY if s in seqs]


def snapshot(home: Path) -> dict[str, list[tuple]]:
    """Every projection row (meta aside, which holds the checkpoint and file hashes)."""
    con = sqlite3.connect(home / "state.db")
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'meta'")]
        return {t: sorted(map(tuple, con.execute(f"SELECT * FROM {t}")), key=repr)
                for t in tables}
    finally:
        con.close()


# -- the table and its filters -----------------------------------------------------------------

def test_the_whole_log_as_a_table(history, ok):
    assert ok("replay") == """\
SEQ  TIME (UTC)           TYPE              STREAM       ACTOR  DATA
1    2025-01-01 10:00:00  config.set        config       alice  path=agents.defaults.skipBootstrap value=true
2    2025-01-01 10:01:00  agent.created     agent:main   alice  agent=main name=main
3    2025-01-01 10:02:00  agent.created     agent:ops    alice  agent=ops name=Ops
4    2025-01-01 10:03:00  session.created   session:s-1  alice  agent=main session=s-1 name=work
5    2025-01-01 10:03:00  session.switched  agent:main   alice  agent=main session=s-1
6    2025-01-01 10:04:00  session.created   session:s-2  alice  agent=ops session=s-2 name=night
7    2025-01-01 10:04:00  session.switched  agent:ops    alice  agent=ops session=s-2
8    2025-01-01 10:05:00  agent.deleted     agent:ops    alice  agent=ops force=true cancelled_tasks=[]
9    2025-01-01 10:06:00  agent.created     agent:dev    alice  agent=dev name=dev
10   2025-01-01 10:07:00  session.renamed   session:s-1  alice  agent=main session=s-1 name=main work
"""  # noqa: E501


@pytest.mark.parametrize(("args", "seqs"), [
    (["--since", "8"], [8, 9, 10]),
    (["--until", "3"], [1, 2, 3]),
    (["--since", "4", "--until", "6"], [4, 5, 6]),
    (["--since", "2025-01-01T10:04:00Z"], [6, 7, 8, 9, 10]),
    (["--until", "2025-01-01T10:03:00Z"], [1, 2, 3, 4, 5]),
    (["--since", "2025-01-01T11:02:30+01:00", "--until", "2025-01-01T10:05:00.000001Z"],
     [4, 5, 6, 7, 8]),
    (["--since", "2m"], [9, 10]),
    (["--since", "1h30m"], list(range(1, 11))),
    (["--since", "5m", "--until", "3m"], [4, 5, 6, 7, 8]),
    (["--type", "session.*"], [4, 5, 6, 7, 10]),
    (["--type", "agent.created", "-t", "agent.deleted"], [2, 3, 8, 9]),
    (["--type", "*.created"], [2, 3, 4, 6, 9]),
    (["--stream", "agent:*"], [2, 3, 5, 7, 8, 9]),
    (["--stream", "session:s-1", "--stream", "config"], [1, 4, 10]),
    (["--agent", "ops"], [3, 6, 7, 8]),
    (["-a", "main"], [2, 4, 5, 10]),
    (["--session", "s-1"], [4, 5, 10]),
    (["-s", "s-2", "--until", "2025-01-01T10:04:00Z"], [6, 7]),
    (["--agent", "main", "--type", "session.*", "--since", "5"], [5, 10]),
    (["--stream", "agent:*", "--type", "agent.*", "-n", "2"], [8, 9]),
    (["--agent", "ops", "--since", "2025-01-01T10:03:30Z", "--until", "7", "-n", "5"], [6, 7]),
    (["-n", "1"], [10]),
    (["-n", "3", "--until", "5"], [3, 4, 5]),
    (["-n", "2", "--since", "2025-01-01T10:05:00Z", "--type", "agent.*"], [8, 9]),
    (["-n", "50"], list(range(1, 11))),
    (["-n", "5", "--since", "8"], [8, 9, 10]),
    (["-n", "2", "--since", "8", "--type", "agent.*"], [8, 9]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and isinstance(v[0], str) else None)
def test_filters(history, run, args, seqs):
    result = run("replay", *args, env=NOW)

    assert (result.exit_code, result.stderr) == (0, "")
    assert parse_table(result.stdout) == expected_rows(*seqs)
    assert result.stdout.splitlines()[0].split() == ["SEQ", "TIME", "(UTC)", "TYPE", "STREAM",
                                                     "ACTOR", "DATA"]


@pytest.mark.parametrize("args", [["--type", "turn.*"], ["--agent", "nobody"], ["-n", "0"],
                                  ["--since", "11"], ["--since", "9", "--until", "8"],
                                  ["--since", "2025-01-02T00:00:00Z"]])
def test_filters_matching_nothing_print_nothing(history, run, args):
    result = run("replay", *args)

    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


def test_long_values_and_newlines_are_cut_in_the_table(fased_home, ok):
    Store(fased_home, command="t").append_internal([Draft(
        "config.set", "config", {"path": "agents.defaults.systemPrompt",
                                 "value": "line one\nline two " + "x" * 80})])

    data = parse_table(ok("replay"))[0][5]

    assert data == ("path=agents.defaults.systemPrompt value=line one⏎line two "
                    + "x" * 42 + "…")


def test_last_one_of_a_long_log_reads_only_its_end(fased_home, run, monkeypatch):
    store = Store(fased_home, command="bulk")
    for batch in range(40):
        store.append_internal([Draft("config.set", "config", {"path": "x.n", "value": i})
                               for i in range(batch * 100, batch * 100 + 100)])
    store.close()
    decoded = []
    decode = fased.log.decode_record
    monkeypatch.setattr(fased.log, "decode_record",
                        lambda *args: decoded.append(1) or decode(*args))

    result = run("replay", "-n", "1", "--json")

    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["data"] for line in result.stdout.splitlines()] == [
        {"path": "x.n", "value": 3999}]
    assert len(decoded) < 20  # of 4000 records


# -- JSON lines --------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "seqs"), [([], list(range(1, 11))),
                                            (["--agent", "ops", "-n", "2"], [7, 8])])
def test_json_is_one_log_record_per_line(history, ok, args, seqs):
    out = ok("replay", "--json", *args)

    lines = out.splitlines()
    assert [json.loads(line) for line in lines] == [e for e in events(history)
                                                    if e["seq"] in seqs]
    assert all(line.startswith('{"seq":') and "\n" not in line for line in lines)


# -- --follow ----------------------------------------------------------------------------------

class Follower:
    """`fased replay --follow ...` in its own process, read line by line with a deadline."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([*FASED, "replay", "--follow", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=os.environ)
        self.buffer = b""
        # poll, not select: a long test run may have file descriptors past FD_SETSIZE
        self.poller = select.poll()
        self.poller.register(self.proc.stdout, select.POLLIN)

    def lines(self, n: int, timeout: float = 15) -> list[str]:
        deadline = time.monotonic() + timeout
        while self.buffer.count(b"\n") < n:
            left = deadline - time.monotonic()
            assert left > 0, (self.buffer, self.proc.poll())
            if self.poller.poll(min(left, 0.2) * 1000):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                assert chunk, (self.buffer, self.proc.stderr.read())
                self.buffer += chunk
        *got, self.buffer = self.buffer.split(b"\n", n)
        return [line.decode() for line in got]

    def quiet_for(self, seconds: float) -> bool:
        return not self.poller.poll(seconds * 1000) and not self.buffer

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        err = self.proc.stderr.read().decode()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return err


def test_follow_prints_events_another_process_appends(history):
    follower = Follower("--json")
    try:
        assert [json.loads(line)["seq"] for line in follower.lines(10)] == list(range(1, 11))
        assert run_process("config", "set", "agents.defaults.retries", "4").returncode == 0
        new = json.loads(follower.lines(1)[0])
        assert run_process("session", "new", "--name", "later").returncode == 0
        newer = [json.loads(line) for line in follower.lines(2)]
    finally:
        err = follower.stop()

    assert new == events(history)[10]
    assert newer == events(history)[11:13]
    assert [e["type"] for e in newer] == ["session.created", "session.switched"]
    assert "Traceback" not in err


def test_follow_table_with_a_filter(history):
    follower = Follower("--type", "config.*")
    try:
        assert [ln.split()[:3] for ln in follower.lines(2)] == [
            ["SEQ", "TIME", "(UTC)"], ["1", "2025-01-01", "10:00:00"]]
        assert run_process("session", "new", "--name", "ignored").returncode == 0
        assert run_process("config", "set", "agents.defaults.retries", "4").returncode == 0
        line = follower.lines(1)[0]
        assert follower.quiet_for(1.2)
    finally:
        err = follower.stop()

    cells = [c for c in line.split("  ") if c]  # followed rows are padded like the first page
    assert cells[0] == "13"
    assert [c.strip() for c in cells[2:]] == [
        "config.set", "config", events(history)[-1]["meta"]["actor"],
        "path=agents.defaults.retries value=4"]
    assert err == ""


def test_follow_on_an_empty_log_prints_the_header_with_the_first_event(fased_home):
    follower = Follower("--since", "1")
    try:
        assert follower.quiet_for(0.8)
        assert run_process("config", "set", "agents.defaults.retries", "4").returncode == 0
        header, line = follower.lines(2)
    finally:
        follower.stop()

    assert header.split()[0] == "SEQ"
    assert line.startswith("1    ")


def test_followed_rows_line_up_with_the_first_page_and_ctrl_c_exits_130(history):
    import signal

    follower = Follower()
    try:
        first = follower.lines(11)
        assert run_process("config", "set", "agents.defaults.retries", "4").returncode == 0
        assert run_process("session", "new", "--name", "later").returncode == 0
        followed = follower.lines(3)
        follower.proc.send_signal(signal.SIGINT)
        assert follower.proc.wait(timeout=10) == 130
    finally:
        err = follower.stop()

    assert parse_table("\n".join(first)) == expected_rows(*range(1, 11))
    table = parse_table("\n".join([first[0], *followed]))  # each cell under its header
    assert [(r[0], r[2], r[3]) for r in table] == [
        (11, "config.set", "config"), (12, "session.created", "session:s-3"),
        (13, "session.switched", "agent:main")]
    assert err == ""


# -- --rebuild and --verify --------------------------------------------------------------------

def test_rebuild_replaces_state_db_with_identical_rows(history, run, ok):
    before = snapshot(history)
    inode = (history / "state.db").stat().st_ino

    result = run("replay", "--rebuild")

    assert result.exit_code == 0, result.stderr
    assert re.fullmatch(r"Rebuilt projections from 10 events in \d+\.\d\d s \([\d,]+ "
                        r"events/s\)\.\n", result.stdout), result.stdout
    assert snapshot(history) == before
    assert (history / "state.db").stat().st_ino != inode
    report = json.loads(ok("replay", "--rebuild", "--json"))
    assert set(report) == {"events", "seconds", "events_per_second"}
    assert report["events"] == 10
    assert snapshot(history) == before


def test_rebuild_mends_a_tampered_state_db(history, ok):
    before = snapshot(history)
    con = sqlite3.connect(history / "state.db")
    con.execute("UPDATE agents SET name = 'Mallory' WHERE id = 'main'")
    con.execute("DELETE FROM sessions WHERE id = 's-2'")
    con.commit()
    con.close()

    ok("replay", "--rebuild")

    assert snapshot(history) == before


def test_verify_passes_then_names_each_difference(history, run, ok):
    assert ok("replay", "--verify") == "Projections match the log.\n"
    con = sqlite3.connect(history / "state.db")
    con.execute("UPDATE agents SET name = 'Mallory' WHERE id = 'main'")
    con.execute("DELETE FROM sessions WHERE id = 's-2'")
    con.commit()
    con.close()

    result = run("replay", "--verify")

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("differs: agents: 3 rows live, 3 from the log; only live: "
                               "[('main', 1, 'Mallory', ")
    assert "; only in rebuild: [('main', 1, 'main', " in lines[0]
    assert lines[1].startswith("differs: sessions: 1 rows live, 2 from the log; only in "
                               "rebuild: [('s-2', 'ops', 'night', ")
    assert "only live" not in lines[1]
    assert lines[2] == "Projections differ from the log; `fased replay --rebuild` fixes them."
    report = json.loads(run("replay", "--verify", "--json").stdout)
    assert report["ok"] is False
    assert [d.split(":")[0] for d in report["differences"]] == ["agents", "sessions"]
    assert rows(history, "SELECT name FROM agents WHERE id = 'main'") == [{"name": "Mallory"}]

    ok("replay", "--rebuild")
    assert json.loads(ok("replay", "--verify", "--json")) == {"ok": True, "differences": []}


def test_verify_notices_a_missing_table(history, run):
    con = sqlite3.connect(history / "state.db")
    con.execute("DROP TABLE tasks")
    con.commit()
    con.close()

    result = run("replay", "--verify")

    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "differs: tasks: missing or unreadable in state.db (no such table: tasks)")


# -- --at --------------------------------------------------------------------------------------

def state_at(ok, point: str) -> dict:
    return json.loads(ok("replay", "--at", point, "--json", env=NOW))


def test_at_a_seq_shows_the_state_then(history, ok):
    state = state_at(ok, "3")

    assert state["seq"] == 3
    assert [(a["id"], a["name"], a["deleted"]) for a in state["agents"]] == [
        ("main", "main", 0), ("ops", "Ops", 0)]
    assert (state["sessions"], state["tasks"]) == ([], [])


def test_at_a_time_shows_a_deleted_agent_and_not_a_later_one(history, ok):
    state = state_at(ok, "2025-01-01T10:05:30Z")

    assert state["seq"] == 8
    assert [(a["id"], a["deleted"], a["deleted_at"]) for a in state["agents"]] == [
        ("main", 0, None), ("ops", 1, "2025-01-01T10:05:00.000000Z")]
    assert [(s["id"], s["agent"], s["name"]) for s in state["sessions"]] == [
        ("s-1", "main", "work"), ("s-2", "ops", "night")]


@pytest.mark.parametrize(("point", "seq"), [("2025-01-01T10:07:00Z", 10), ("2m", 9),
                                            ("2025-01-01T09:00:00Z", 0), ("99", 10),
                                            ("0", 0)])
def test_at_picks_the_last_event_at_or_before_the_point(history, ok, point, seq):
    state = state_at(ok, point)

    assert state["seq"] == seq
    assert len(state["agents"]) == {0: 0, 9: 3, 10: 3}[seq]


def test_at_table_marks_what_was_deleted(history, ok):
    out = ok("replay", "--at", "8")

    lines = out.splitlines()
    assert lines[:3] == ["State at seq 8:", "", "AGENTS (2)"]
    # the words of `agent list` and `session list`, not raw columns (`DELETED 0`)
    assert lines[3].split() == ["ID", "NAME", "PRIMARY", "MODEL", "STATE", "CREATED", "(UTC)"]
    assert [ln.split()[:4] for ln in lines[4:6]] == [["main", "main", "-", "2025-01-01"],
                                                     ["ops", "Ops", "-", "deleted"]]
    assert all(re.fullmatch(r".*  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", ln) for ln in lines[4:6])
    assert lines[7] == "SESSIONS (2)"
    assert lines[8].split() == ["ID", "NAME", "AGENT", "MESSAGES", "STATE", "UPDATED", "(UTC)"]
    assert lines[-2:] == ["", "TASKS (0)"]


def test_at_changes_nothing_and_leaves_no_temporary_file(history, ok, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    before = snapshot(history)
    log = (history / "log" / "00000000000000000001.jsonl").read_bytes()

    ok("replay", "--at", "3")
    ok("replay", "--at", "2025-01-01T10:05:30Z", "--json")

    assert snapshot(history) == before
    assert (history / "log" / "00000000000000000001.jsonl").read_bytes() == log
    assert list(scratch.iterdir()) == []


# -- bad input ---------------------------------------------------------------------------------

TIME_HINT = ("use RFC 3339 (2026-11-21T09:00:00Z), a local time (2026-11-21 09:00) or a "
             "duration (30m, 2h, 1d)")


@pytest.mark.parametrize(("args", "line"), [
    (["--since", "yesterday-ish"], "Error: Invalid value for '--since': invalid time "
     f"'yesterday-ish' ({TIME_HINT})"),
    (["--until", "2025-13-45"], "Error: Invalid value for '--until': invalid time "
     f"'2025-13-45' ({TIME_HINT})"),
    (["--at", "garbage"], "Error: --at: invalid time 'garbage'"),
    (["-n", "-1"], "Error: Invalid value for '-n': -1 is not in the range 0<=x<=1000000"),
    (["--bogus"], "Error: No such option '--bogus'."),
    (["--verify", "--rebuild"], "Error: --rebuild and --verify cannot be combined"),
    (["--at", "3", "--follow"], "Error: --at and --follow cannot be combined"),
])
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(history, run, args, line):
    before = snapshot(history)
    log = (history / "log" / "00000000000000000001.jsonl").read_bytes()

    result = run("replay", *args)

    assert result.exit_code == 2
    assert error_line(result) == line
    assert result.stdout == ""
    assert snapshot(history) == before
    assert (history / "log" / "00000000000000000001.jsonl").read_bytes() == log


@pytest.mark.parametrize("value", ["-5", "1.5"])
def test_a_number_that_is_no_seq_is_a_malformed_time(history, run, value):
    result = run("replay", "--since", value)

    assert result.exit_code == 2
    assert error_line(result).startswith(f"Error: Invalid value for '--since': invalid time "
                                         f"{value!r}")


def test_a_corrupt_record_is_named_with_file_and_offset(history, run):
    segment = history / "log" / "00000000000000000001.jsonl"
    data = bytearray(segment.read_bytes())
    offset = data.index(b'"seq":3,') - 18
    data[offset + 40] ^= 0x01
    segment.write_bytes(bytes(data))

    result = run("replay", "--json")

    assert result.exit_code == 4
    assert error_line(result) == (
        f"Error: corrupt record in {segment} at byte {offset}: checksum mismatch")
    assert result.stdout == ""


def test_since_a_time_skips_early_blocks_but_not_events_from_a_clock_that_stepped_back(
        fased_home, run):
    """`--since TIME` starts reading at the first block of 4096 seqs that has an event that
    late. Writers' clocks can step backwards, so an early block with one late event must still
    be read, and the result is exactly what reading every event would give."""
    from datetime import UTC, datetime, timedelta

    from fased.audit import EventFilter, first_seq_since
    from fased.log import EventLog

    start = datetime(2025, 6, 1, tzinfo=UTC)
    times = iter([start + timedelta(minutes=m) for m in range(100)])
    times_with_a_jump = (start + timedelta(days=30) if i == 20 else t
                         for i, t in enumerate(times))  # batch 20: a clock a month ahead
    store = Store(fased_home, command="test", clock=lambda: next(times_with_a_jump))
    store.transact(lambda con: [Draft("agent.created", "agent:main",
                                      {"agent": "main", "name": "main"}, expect=0)])
    for batch in range(1, 31):  # 30 batches of 300 events: seqs 2..9001, blocks 0, 1 and 2
        store.transact(lambda con, b=batch: [
            Draft("agent.updated", "agent:main", {"agent": "main", "name": f"n{b}-{i}"})
            for i in range(300)])
    store.close()
    since = start + timedelta(minutes=29)  # later than every event of blocks 0 and 1, but the
    # jumped batch (seqs 5702..6001, in block 1)
    expected = [e["seq"] for e in EventLog(fased_home).read()
                if EventFilter(since=since).matches(e)]
    assert expected[:300] == list(range(5702, 6002)) and expected[300] > 8192

    result = run("replay", "--since", since.isoformat(), "--json")

    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == expected
    spans = rows(fased_home, "SELECT block, min_ts, max_ts FROM time_blocks ORDER BY block")
    assert [s["block"] for s in spans] == [0, 1, 2]
    assert spans[1]["max_ts"] == "2025-07-01T00:00:00.000000Z"  # the jump
    assert spans[0]["max_ts"] < since.strftime("%Y-%m-%dT%H:%M:%S.%fZ") < spans[2]["max_ts"]
    con = sqlite3.connect(fased_home / "state.db")
    try:
        assert first_seq_since(con, since) == 4096  # block 0 is skipped
        assert first_seq_since(con, start + timedelta(days=31)) == 9002  # after everything
        assert first_seq_since(con, start) == 1
        # --until and --at TIME: state.db's blocks give what reading every event gives
        from fased.audit import last_seq_at

        log = EventLog(fased_home)
        for minutes in (-1, 0, 10, 29, 40, 60 * 24 * 29, 60 * 24 * 31):
            point = start + timedelta(minutes=minutes)
            assert last_seq_at(log, point, con) == last_seq_at(log, point), minutes
        assert last_seq_at(log, since, con) == 8701  # batch 29's last seq: the batch stamped
        # a month ahead (seqs 5702..6001) comes before it in the log, so it is included
    finally:
        con.close()


def test_until_and_at_a_time_follow_one_rule_when_the_clock_stepped_back(fased_home, run,
                                                                        ok):
    """Both take the log as it stood when its last event stamped at or before TIME was
    written: that event and everything before it in seq order, whatever their stamps."""
    from datetime import UTC, datetime

    stamps = iter([datetime(2025, 6, 1, 10, m, tzinfo=UTC) for m in (0, 5, 2, 6)])
    store = Store(fased_home, command="test", clock=lambda: next(stamps))
    store.transact(lambda con: [Draft("agent.created", "agent:main",
                                      {"agent": "main", "name": "main"}, expect=0)])
    for name in ("ahead", "back", "last"):  # 10:05, then a clock 3 minutes behind, 10:06
        store.transact(lambda con, n=name: [
            Draft("agent.updated", "agent:main", {"agent": "main", "name": n})])
    store.close()

    def until(point: str, *more: str) -> list[int]:
        out = ok("replay", "--until", point, "--json", *more)
        return [json.loads(line)["seq"] for line in out.splitlines()]

    def at(point: str) -> tuple[int, str | None]:
        state = json.loads(ok("replay", "--at", point, "--json"))
        return state["seq"], state["agents"][0]["name"] if state["agents"] else None

    assert until("2025-06-01T10:03:00Z") == [1, 2, 3]
    assert at("2025-06-01T10:03:00Z") == (3, "back")
    assert until("2025-06-01T10:03:00Z", "-n", "1") == [3]
    assert until("2025-06-01T10:01:00Z") == [1]
    assert at("2025-06-01T10:01:00Z") == (1, "main")
    assert until("2025-06-01T10:05:30Z") == [1, 2, 3]
    assert until("2025-06-01T09:00:00Z") == []
    assert at("2025-06-01T09:00:00Z") == (0, None)
    assert until("2025-06-01T11:00:00Z") == [1, 2, 3, 4]
    assert at("2025-06-01T11:00:00Z") == (4, "last")
    assert ok("replay", "--until", "2025-06-01T10:03:00Z").splitlines()[-1].split()[0] == "3"


@pytest.mark.parametrize("command", [("replay", "--verify"), ("doctor",)])
def test_a_command_that_writes_while_the_log_is_checked_is_no_difference(history, run,
                                                                       monkeypatch, command):
    """The check builds state.db again from the log, without the lock, and compares. A
    `fased session new` that lands while the build runs (here: every time) used to make
    state.db and the build differ: "Projections differ from the log" about 1 run in 10."""
    import fased.audit

    build = fased.audit.build_at

    def build_while_a_command_writes(log, upto):
        built = build(log, upto)
        done = run_process("session", "new", "--name", "meanwhile")
        assert done.returncode == 0, done.stderr
        return built

    monkeypatch.setattr(fased.audit, "build_at", build_while_a_command_writes)
    result = run(*command)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "differ" not in result.stdout + result.stderr
    assert "meanwhile" in {r["name"] for r in rows(history, "SELECT name FROM sessions")}
