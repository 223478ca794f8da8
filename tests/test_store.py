"""The store: catching projections up from the checkpoint, rebuilding state.db when it is not
ours, idempotency keys, expected stream versions, schema checks before an append, and the
homes and logs a command must refuse without writing anything."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import events, rows, run_process

import fased.log
import fased.schema
from fased import __version__
from fased import upcast as upcast_module
from fased.errors import ConflictError, FasedError
from fased.log import EventLog, encode_record
from fased.projections import Projector
from fased.schema import SchemaError, current_versions, load_schema
from fased.store import Draft, Store

AGENT_ROWS = "SELECT id, name, emoji, deleted FROM agents ORDER BY position"


def error_lines(stderr: str) -> list[str]:
    """stderr of a refused command: exactly one `Error: ...` line (and maybe its hint)."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len([ln for ln in lines if ln.startswith("Error: ")]) == 1, stderr
    assert lines[0].startswith("Error: ")
    assert all(ln.startswith("Hint: ") for ln in lines[1:]), stderr
    return lines


def append_raw(home: Path, type_: str, v: int, data: dict, stream: str = "agent:x") -> dict:
    """Append one record as another fased would have written it."""
    log = EventLog(home)
    record = {"seq": log.head().seq + 1, "id": uuid.uuid4().hex, "type": type_, "v": v,
              "ts": "2030-01-01T00:00:00.000000Z", "stream": stream, "data": data,
              "meta": {"actor": "someone", "command": "fased (newer)"}}
    segment = log.segments()[-1][1]
    with segment.open("ab") as f:
        f.write(encode_record(record))
    return record


def files_of(home: Path) -> dict[str, object]:
    """What "nothing written" compares: every file under the home with its bytes, state.db
    as its SQL dump (SQLite may checkpoint its WAL into the file whenever a connection
    closes, which changes bytes but no row)."""
    out: dict[str, object] = {}
    for p in sorted(home.rglob("*")):
        if not p.is_file() or p.name in ("log.lock", "state.db-wal", "state.db-shm"):
            continue
        if p.name == "state.db":
            con = sqlite3.connect(p)
            out[p.name] = list(con.iterdump())
            con.close()
        else:
            out[str(p.relative_to(home))] = p.read_bytes()
    return out


def checkpoint(home: Path) -> int:
    return int(rows(home, "SELECT value FROM meta WHERE key = 'checkpoint'")[0]["value"])


# -- the home ----------------------------------------------------------------------------------

def test_home_is_home_option_then_fased_home_then_dot_fased(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FASED_HOME"}
    env["HOME"] = str(tmp_path / "user")
    base = [sys.executable, "-c", "from fased.commands.entry import main; main()"]

    def fased(*args, **extra):
        return subprocess.run([*base, *args], env={**env, **extra}, capture_output=True,
                              text=True, timeout=60)

    key = "agents.defaults.retries"
    assert fased("config", "set", key, "1").returncode == 0
    assert fased("config", "set", key, "2", FASED_HOME=str(tmp_path / "env")).returncode == 0
    assert fased("--home", str(tmp_path / "opt"), "config", "set", key, "3",
                 FASED_HOME=str(tmp_path / "env")).returncode == 0

    for home, value in ((tmp_path / "user" / ".fased", 1), (tmp_path / "env", 2),
                        (tmp_path / "opt", 3)):
        assert [e["data"] for e in events(home)] == [{"path": key, "value": value}]


def test_home_and_files_are_private_whatever_the_umask(tmp_path, set_up, ok):
    ok("agent", "models", "providers", "add", "openai")
    ok("agent", "models", "auth", "openai", "--stdin", input="sk-test\n")
    proc = subprocess.run(
        [sys.executable, "-c", "import os; os.umask(0); "
         "from fased.commands.entry import main; main()", "session", "new", "--name", "u"],
        capture_output=True, text=True, timeout=60, env=os.environ)
    assert proc.returncode == 0, proc.stderr

    assert oct(set_up.stat().st_mode & 0o777) == "0o700"
    for name in ("state.db", "fased.json", "credentials.json", "log.lock"):
        assert oct((set_up / name).stat().st_mode & 0o777) == "0o600", name
    transcript = set_up / "agents" / "main" / "sessions" / "s-1.jsonl"
    assert oct(transcript.stat().st_mode & 0o777) == "0o600"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes a chmod 000 directory")
def test_unreadable_home_is_a_state_error(fased_home, run):
    fased_home.mkdir(mode=0o700)
    fased_home.chmod(0)
    try:
        result = run("agent", "list")
    finally:
        fased_home.chmod(0o700)

    assert result.exit_code == 4
    assert error_lines(result.stderr)[0] == (
        f"Error: the fased home {fased_home} is not readable and writable by this user")
    assert list(fased_home.iterdir()) == []


@pytest.mark.parametrize("where", ["the file", "under the file"])
def test_home_that_cannot_be_a_directory_is_a_state_error(tmp_path, run, where):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("keep me\n")
    home = blocker if where == "the file" else blocker / "home"

    result = run("--home", home, "config", "set", "agents.defaults.retries", "1")

    assert result.exit_code == 4
    assert error_lines(result.stderr)[0] == (
        f"Error: the fased home {home} is not a directory" if where == "the file"
        else f"Error: cannot create the fased home {home}: Not a directory")
    assert result.stdout == ""
    assert blocker.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]


# -- catching up from the checkpoint -----------------------------------------------------------

class Spy:
    """Records which events the log hands out and which ones projections apply."""

    def __init__(self, monkeypatch):
        self.reads: list[tuple[int, int | None]] = []
        self.read_seqs: list[int] = []
        self.applied: list[int] = []
        self.decoded = 0
        read, apply, decode = EventLog.read, Projector.apply, fased.log.decode_record

        def spy_read(log, from_seq=1, to_seq=None, **options):
            self.reads.append((from_seq, to_seq))
            for e in read(log, from_seq, to_seq, **options):
                self.read_seqs.append(e["seq"])
                yield e

        def spy_apply(proj, con, evs):
            def seen():
                for e in evs:
                    self.applied.append(e["seq"])
                    yield e
            return apply(proj, con, seen())

        def spy_decode(*args):
            self.decoded += 1
            return decode(*args)

        monkeypatch.setattr(EventLog, "read", spy_read)
        monkeypatch.setattr(Projector, "apply", spy_apply)
        monkeypatch.setattr(fased.log, "decode_record", spy_decode)


def test_a_command_applies_only_the_events_after_its_checkpoint(set_up, ok, monkeypatch):
    ok("agent", "create", "ops")
    before = checkpoint(set_up)
    # appended by a process that died before it updated state.db
    append_raw(set_up, "config.set", 1, {"path": "agents.defaults.retries", "value": 2},
               "config")
    append_raw(set_up, "agent.updated", 1, {"agent": "ops", "name": "Ops"}, "agent:ops")
    spy = Spy(monkeypatch)

    out = ok("config", "get", "agents.defaults.retries")

    assert out == "2\n"
    assert spy.reads == [(before, None)]  # from the checkpoint, to check it is still the log's
    assert spy.read_seqs == [before, before + 1, before + 2]
    assert spy.applied == [before + 1, before + 2]
    assert checkpoint(set_up) == before + 2
    assert rows(set_up, "SELECT name FROM agents WHERE id = 'ops'") == [{"name": "Ops"}]


def test_nothing_new_reads_no_event(set_up, ok, monkeypatch):
    spy = Spy(monkeypatch)

    ok("agent", "list")

    assert (spy.reads, spy.applied) == ([], [])


def test_catch_up_cost_does_not_grow_with_history(fased_home, monkeypatch):
    store = Store(fased_home, command="test")
    for batch in range(30):
        store.append_internal([Draft("config.set", "config", {"path": f"x.k{batch}", "value": i})
                               for i in range(100)])
    append_raw(fased_home, "config.set", 1, {"path": "x.later", "value": 2}, "config")
    spy = Spy(monkeypatch)

    con = store.db(check_files=False)

    assert spy.applied == [3001]
    assert spy.decoded < 100  # of 3001 records: found by binary search, not by a scan
    assert con.execute("SELECT doc FROM config").fetchone()[0].endswith('"later": 2}}')
    store.close()


# -- rebuilding state.db -----------------------------------------------------------------------

def stale_wal(home: Path, keep: Path) -> None:
    """Save a real WAL of state.db that renames every agent to STALE (never checkpointed)."""
    con = sqlite3.connect(home / "state.db")
    con.execute("PRAGMA wal_autocheckpoint = 0")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.execute("UPDATE agents SET name = 'STALE'")
    con.commit()
    shutil.copyfile(f"{home}/state.db-wal", keep)
    con.execute("UPDATE agents SET name = id")  # put the live file back as it was
    con.commit()
    con.close()


def spoil_missing(home: Path) -> None:
    (home / "state.db").unlink()


def spoil_garbage(home: Path) -> None:
    (home / "state.db").write_bytes(os.urandom(8192))


def spoil_version(home: Path) -> None:
    con = sqlite3.connect(home / "state.db")
    con.execute("UPDATE meta SET value = 'older-projection' WHERE key = 'version'")
    con.execute("UPDATE agents SET name = 'OLD'")
    con.commit()
    con.close()


def spoil_truncated(home: Path) -> None:
    path = home / "state.db"
    path.write_bytes(path.read_bytes()[:5000])


@pytest.mark.parametrize("spoil", [spoil_missing, spoil_garbage, spoil_version,
                                   spoil_truncated], ids=lambda f: f.__name__[6:])
def test_state_db_not_ours_is_rebuilt_into_a_new_file_without_the_stale_wal(
        set_up, ok, tmp_path, spoil):
    ok("agent", "create", "ops", "--name", "Ops", "--emoji", "🛠")
    ok("agent", "delete", "ops")
    expected = rows(set_up, AGENT_ROWS)
    wal = tmp_path / "saved-wal"
    stale_wal(set_up, wal)
    old_inode = (set_up / "state.db").stat().st_ino
    spoil(set_up)
    shutil.copyfile(wal, f"{set_up}/state.db-wal")
    log_before = files_of(set_up / "log")

    out = ok("agent", "list", "--all", "--json")

    assert '"STALE"' not in out and '"OLD"' not in out
    assert rows(set_up, AGENT_ROWS) == expected == [
        {"id": "main", "name": "main", "emoji": None, "deleted": 0},
        {"id": "ops", "name": "Ops", "emoji": "🛠", "deleted": 1}]
    if spoil is not spoil_missing:  # a deleted file's inode is free for the new one to reuse
        assert (set_up / "state.db").stat().st_ino != old_inode
    assert checkpoint(set_up) == len(events(set_up))
    assert files_of(set_up / "log") == log_before
    assert not list(set_up.glob("state.db.rebuild-*"))
    assert ok("replay", "--verify") == "Projections match the log.\n"


def test_a_stale_wal_under_a_connection_another_process_holds_is_rebuilt_over(
        set_up, ok, tmp_path):
    """A `fased run` holds state.db open (its shared memory indexes the WAL) when a stale WAL
    is put in place: SQLite reads it short, which is damage, not a passing I/O error."""
    ok("agent", "create", "ops", "--name", "Ops")
    expected = rows(set_up, AGENT_ROWS)
    wal = tmp_path / "saved-wal"
    stale_wal(set_up, wal)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
         "c.execute('SELECT count(*) FROM agents').fetchone(); print('held', flush=True); "
         "sys.stdin.read()", str(set_up / "state.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        spoil_version(set_up)
        shutil.copyfile(wal, f"{set_up}/state.db-wal")

        out = ok("agent", "list", "--all", "--json")
    finally:
        holder.communicate("")

    assert '"STALE"' not in out and '"OLD"' not in out
    assert rows(set_up, AGENT_ROWS) == expected
    assert ok("replay", "--verify") == "Projections match the log.\n"


@pytest.mark.parametrize(("code", "damage"), [
    (522, True), (8458, True),  # read short, the file system says corrupt: rebuild
    (10, False), (4874, False), (266, False), (13, False), (5, False),  # I/O, shm, full, busy
    (11, True), (26, True)])  # malformed, not a database
def test_which_sqlite_errors_are_damage_that_a_rebuild_repairs(code, damage):
    from fased.store import is_projection_damage

    exc = sqlite3.DatabaseError("an error")
    exc.sqlite_errorcode = code
    assert is_projection_damage(exc) is damage


def open_files_of(home: Path) -> list[str]:
    """The files under `home` this process holds open."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{home}/"):
                held.append(target[len(str(home)) + 1:])
    return sorted(held)


def test_a_store_that_rebuilt_a_missing_state_db_holds_one_connection_and_closes_it(fased_home):
    """A missing state.db is rebuilt while connecting: the rebuild's connection is the one
    kept, so closing the Store lets go of state.db, its WAL and its shared memory."""
    store = Store(fased_home, command="test")
    store.append_internal([Draft("config.set", "config", {"path": "x.k", "value": 1})])
    store.close()
    (fased_home / "state.db").unlink()

    store = Store(fased_home, command="test")
    assert store.db(check_files=False).execute("SELECT count(*) FROM config").fetchone()[0] == 1
    assert open_files_of(fased_home).count("state.db") == 1
    store.close()

    assert [f for f in open_files_of(fased_home) if f.startswith("state.db")] == []


def two_homes(tmp_path: Path, ours: list[list[str]], theirs: list[list[str]]) -> tuple:
    homes = []
    for name, commands in (("ours", ours), ("theirs", theirs)):
        home = tmp_path / name
        for args in [["setup", "-y", "--no-detect"], *commands]:
            proc = run_process("--home", str(home), *args)
            assert proc.returncode == 0, proc.stderr
        homes.append(home)
    return tuple(homes)


@pytest.mark.parametrize(("ours", "theirs"), [
    ([["agent", "create", "ops"]], [["agent", "create", "dev"]]),  # same length
    ([["agent", "create", "ops"]], [["agent", "create", "dev"], ["session", "new"]]),  # longer
    ([["agent", "create", "ops"], ["session", "new"]], [["agent", "create", "dev"]]),  # shorter
], ids=["same-length", "longer", "shorter"])
def test_a_log_swapped_for_another_homes_is_rebuilt_not_caught_up(tmp_path, run, ours, theirs):
    home, other = two_homes(tmp_path, ours, theirs)
    old_inode = (home / "state.db").stat().st_ino
    shutil.rmtree(home / "log")
    shutil.copytree(other / "log", home / "log")
    (home / "fased.json").unlink()  # else it reads as a hand edit naming our agents

    result = run("--home", home, "agent", "list", "--json")

    assert result.exit_code == 0, result.stderr
    assert rows(home, AGENT_ROWS) == rows(other, AGENT_ROWS)
    assert [r["id"] for r in rows(home, AGENT_ROWS)] == ["main", "dev"]
    assert (home / "state.db").stat().st_ino != old_inode
    assert rows(home, "SELECT name, version FROM streams ORDER BY name") == rows(
        other, "SELECT name, version FROM streams ORDER BY name")
    assert (home / "fased.json").read_bytes() == (other / "fased.json").read_bytes()


def test_rebuild_keeps_fased_json_and_transcripts(set_up, ok):
    ok("session", "new", "--name", "keep")
    config = (set_up / "fased.json").read_bytes()
    (set_up / "state.db").unlink()
    (set_up / "agents" / "main" / "sessions" / "s-1.jsonl").unlink()

    ok("agent", "list")

    assert (set_up / "fased.json").read_bytes() == config
    assert (set_up / "agents" / "main" / "sessions" / "s-1.jsonl").exists()


# -- idempotency -------------------------------------------------------------------------------

def test_same_key_twice_appends_once_and_prints_the_original_outcome(set_up):
    first = run_process("--idempotency-key", "cfg-1", "config", "set", "agents.defaults.retries",
                        "3")
    count = len(events(set_up))
    again = run_process("--idempotency-key", "cfg-1", "config", "set", "agents.defaults.retries",
                        "3")

    assert (first.returncode, first.stdout) == (0, "Set agents.defaults.retries.\n")
    assert (again.returncode, again.stdout, again.stderr) == (0, first.stdout, "")
    assert len(events(set_up)) == count
    assert events(set_up)[-1]["meta"]["key"] == "cfg-1"


def test_key_from_the_environment(set_up):
    env = {"FASED_IDEMPOTENCY_KEY": "env-key"}
    first = run_process("session", "new", "--name", "once", env=env)
    count = len(events(set_up))
    again = run_process("session", "new", "--name", "once", env=env)

    assert first.returncode == again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert len(events(set_up)) == count
    assert [e["meta"]["key"] for e in events(set_up)[-2:]] == ["env-key", "env-key"]
    assert rows(set_up, "SELECT id, name FROM sessions") == [{"id": "s-1", "name": "once"}]


def test_same_key_for_another_command_is_a_conflict_and_appends_nothing(set_up):
    key = "agents.defaults.retries"
    assert run_process("--idempotency-key", "k", "config", "set", key, "1").returncode == 0
    before = files_of(set_up / "log")

    other = run_process("--idempotency-key", "k", "config", "set", key, "2")

    assert other.returncode == 3
    assert error_lines(other.stderr) == [
        "Error: idempotency key 'k' was already used by another command "
        "(fased config set agents.defaults.retries 1)",
        "Hint: use a new key for a different command"]
    assert other.stdout == ""
    assert files_of(set_up / "log") == before


def test_a_multi_step_command_replays_each_step_under_key_n(fased_home):
    def two_steps(command: str) -> list:
        store = Store(fased_home, key="job", command=command)
        try:
            return [store.transact(lambda con, n=n: [
                Draft("config.set", "config", {"path": f"x.step{n}", "value": n})])
                for n in (1, 2)]
        finally:
            store.close()

    first = two_steps("fased job")
    log = files_of(fased_home / "log")
    again = two_steps("fased job")

    assert [o.replayed for o in first] == [False, False]
    assert [o.replayed for o in again] == [True, True]
    assert [o.events for o in again] == [o.events for o in first]
    assert [e["meta"]["key"] for e in events(fased_home)] == ["job", "job#2"]
    assert files_of(fased_home / "log") == log
    with pytest.raises(ConflictError, match="already used by another command"):
        two_steps("fased other job")


# -- expected stream versions ------------------------------------------------------------------

def test_a_stale_expected_version_is_a_conflict_and_appends_nothing(set_up):
    slow = Store(set_up, command="slow")
    fast = Store(set_up, command="fast")
    version = slow.db().execute("SELECT version FROM streams WHERE name = 'agent:main'"
                                ).fetchone()[0]
    fast.transact(lambda con: [Draft("agent.updated", "agent:main",
                                     {"agent": "main", "name": "Fast"}, expect=version)])
    log = files_of(set_up / "log")

    with pytest.raises(ConflictError) as caught:
        slow.transact(lambda con: [
            Draft("config.set", "config", {"path": "a.b", "value": 1}),
            Draft("agent.updated", "agent:main", {"agent": "main", "name": "Slow"},
                  expect=version)])

    assert caught.value.message == (f"agent:main changed while this command ran (expected "
                                    f"version {version}, found {version + 1})")
    assert caught.value.exit_code == 3
    assert files_of(set_up / "log") == log  # not even the first draft of the batch
    assert rows(set_up, "SELECT name FROM agents") == [{"name": "Fast"}]
    slow.close()
    fast.close()


def test_expected_version_counts_drafts_earlier_in_the_same_batch(fased_home):
    store = Store(fased_home, command="t")
    store.transact(lambda con: [
        Draft("agent.created", "agent:a", {"agent": "a", "name": "A"}, expect=0),
        Draft("agent.updated", "agent:a", {"agent": "a", "name": "B"}, expect=1)])

    with pytest.raises(ConflictError, match=r"expected version 0, found 2"):
        store.transact(lambda con: [Draft("agent.created", "agent:a",
                                          {"agent": "a", "name": "A"}, expect=0)])
    assert [e["type"] for e in events(fased_home)] == ["agent.created", "agent.updated"]
    store.close()


def test_two_processes_racing_to_create_an_agent(set_up):
    for name in ("race-a", "race-b", "race-c"):
        procs = [subprocess.Popen(
            [sys.executable, "-c", "from fased.commands.entry import main; main()", "agent",
             "create", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
        results = sorted((p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs)
        for p in procs:
            p.stdout.close()
            p.stderr.close()

        assert [r[0] for r in results] == [0, 3], results
        assert results[0][1].startswith(f"Created agent {name} ")
        assert error_lines(results[1][2])[0] == f"Error: agent '{name}' already exists"
    created = [e["data"]["agent"] for e in events(set_up) if e["type"] == "agent.created"]
    assert created == ["main", "race-a", "race-b", "race-c"]


# -- schemas before appending ------------------------------------------------------------------

def test_invalid_data_is_refused_before_anything_is_written(set_up):
    store = Store(set_up, command="t")
    log = files_of(set_up / "log")

    with pytest.raises(SchemaError) as caught:
        store.transact(lambda con: [
            Draft("config.set", "config", {"path": "a.b", "value": 1}),
            Draft("agent.created", "agent:Bad", {"agent": "Bad Id", "name": "x"})])

    assert caught.value.message == ("invalid agent.created v1 event: data.agent: 'Bad Id' "
                                    "does not match ^[a-z0-9][a-z0-9_-]{0,63}$")
    assert files_of(set_up / "log") == log
    with pytest.raises(SchemaError, match=r"data: missing required key 'name'"):
        store.transact(lambda con: [Draft("agent.created", "agent:x", {"agent": "x"})])
    with pytest.raises(SchemaError, match=r"data.colour: unknown key"):
        store.transact(lambda con: [Draft("agent.updated", "agent:main",
                                          {"agent": "main", "colour": "red"})])
    with pytest.raises(FasedError, match=r"internal error: no schema for event type gizmo\.made"):
        store.append_internal([Draft("gizmo.made", "gizmo:1", {})])
    assert files_of(set_up / "log") == log
    store.close()


# -- logs this fased cannot read ---------------------------------------------------------------

@pytest.mark.parametrize(("type_", "v", "named"), [
    ("agent.created", 99, "agent.created v99"),
    ("gizmo.made", 1, "gizmo.made v1"),
])
@pytest.mark.parametrize("args", [["agent", "list"], ["agent", "create", "ops"],
                                  ["config", "set", "agents.defaults.retries", "1"]])
def test_a_log_from_a_newer_fased_is_refused_and_nothing_is_written(set_up, run, type_, v,
                                                                    named, args):
    record = append_raw(set_up, type_, v, {"agent": "x", "name": "X", "future": True})
    before = files_of(set_up)

    result = run(*args)

    assert result.exit_code == 4
    assert error_lines(result.stderr) == [
        f"Error: the log holds a {named} event (seq {record['seq']}) that this fased "
        f"{__version__} does not know: it was written by a newer fased",
        "Hint: upgrade fased; nothing was changed"]
    assert result.stdout == ""
    assert files_of(set_up) == before


def test_a_newer_log_is_refused_by_a_rebuild_too(set_up, run):
    record = append_raw(set_up, "agent.created", 2, {"agent": "x", "name": "X"})
    (set_up / "state.db").unlink()
    log = files_of(set_up / "log")

    result = run("agent", "list")

    assert result.exit_code == 4
    assert error_lines(result.stderr)[0].startswith(
        f"Error: the log holds a agent.created v2 event (seq {record['seq']})")
    assert files_of(set_up / "log") == log
    assert not (set_up / "state.db").exists()
    assert not list(set_up.glob("state.db.rebuild-*"))


# -- upcasting ---------------------------------------------------------------------------------

@pytest.fixture
def history(tmp_path, monkeypatch):
    """A schema registry where agent.created is at v3 and v1, v2 had other shapes; v3 is
    today's v1 (so today's handlers apply to it)."""
    schemas = tmp_path / "schemas"
    shutil.copytree(fased.schema.schema_dir(), schemas)
    today = load_schema("agent.created.v1")
    (schemas / "agent.created.v1.json").unlink()
    v1 = {**today, "properties": {"agent": today["properties"]["agent"],
                                  "title": {"type": "string"}}, "required": ["agent", "title"]}
    v2 = {**today, "properties": {**today["properties"], "icon": {"type": "string"}}}
    del v2["properties"]["emoji"]
    for v, schema in ((1, v1), (2, v2), (3, today)):
        (schemas / f"agent.created.v{v}.json").write_text(
            json.dumps({**schema, "$id": f"https://fased.dev/schemas/"
                                      f"agent.created.v{v}.json"}))
    for fn in (fased.schema.current_versions, fased.schema.load_schema):
        fn.cache_clear()
    monkeypatch.setattr(fased.schema, "schema_dir", lambda: schemas)
    monkeypatch.setattr(upcast_module, "UPCASTERS", {
        ("agent.created", 1): lambda d: {"agent": d["agent"], "name": d["title"]},
        ("agent.created", 2): lambda d: {**{k: v for k, v in d.items() if k != "icon"},
                                         **({"emoji": d["icon"]} if "icon" in d else {})},
    })
    monkeypatch.setattr(upcast_module, "ALIASES", {"agent.born": "agent.created"})
    yield
    monkeypatch.undo()
    for fn in (fased.schema.current_versions, fased.schema.load_schema):
        fn.cache_clear()


def test_old_versions_and_renamed_types_are_upcast_on_read(history, fased_home, run):
    assert current_versions()["agent.created"] == 3
    (fased_home / "log").mkdir(parents=True)
    (fased_home / "log" / "00000000000000000001.jsonl").touch()
    append_raw(fased_home, "agent.created", 1, {"agent": "a1", "title": "One"}, "agent:a1")
    append_raw(fased_home, "agent.created", 2, {"agent": "a2", "name": "Two", "icon": "2"},
               "agent:a2")
    append_raw(fased_home, "agent.born", 1, {"agent": "a3", "title": "Three"}, "agent:a3")
    log = (fased_home / "log" / "00000000000000000001.jsonl").read_bytes()

    result = run("agent", "create", "a4", "--name", "Four")

    assert result.exit_code == 0, result.stderr
    assert rows(fased_home, AGENT_ROWS) == [
        {"id": "a1", "name": "One", "emoji": None, "deleted": 0},
        {"id": "a2", "name": "Two", "emoji": "2", "deleted": 0},
        {"id": "a3", "name": "Three", "emoji": None, "deleted": 0},
        {"id": "a4", "name": "Four", "emoji": None, "deleted": 0}]
    read = events(fased_home)
    assert [(e["type"], e["v"]) for e in read[:3]] == [
        ("agent.created", 1), ("agent.created", 2), ("agent.born", 1)]  # never rewritten
    assert (fased_home / "log" / "00000000000000000001.jsonl").read_bytes().startswith(log)
    assert (read[3]["type"], read[3]["v"], read[3]["data"]) == (
        "agent.created", 3, {"agent": "a4", "name": "Four"})
    assert run("replay", "--verify").exit_code == 0


def test_a_missing_upcaster_is_a_state_error(history, fased_home, run, monkeypatch):
    monkeypatch.setattr(upcast_module, "UPCASTERS", {})
    (fased_home / "log").mkdir(parents=True)
    (fased_home / "log" / "00000000000000000001.jsonl").touch()
    append_raw(fased_home, "agent.created", 1, {"agent": "a1", "title": "One"})

    result = run("agent", "list")

    assert result.exit_code == 4
    assert error_lines(result.stderr) == ["Error: no upcaster for agent.created v1 -> v2"]
    assert not (fased_home / "state.db").exists()


def test_the_written_out_projection_version_and_file_checks_are_the_modules_own():
    """A command that finds state.db current compares its version with the literal in
    fased.projections, without importing every module: it must be what they compute."""
    import importlib

    from fased import projections

    assert projections.projector().version == projections.VERSION, (
        f"set fased.projections.VERSION = {projections.projector().version!r}")
    checkers = tuple(m for m in projections.MODULES if hasattr(
        importlib.import_module(f"fased.projections.{m}"), "check_files"))
    assert checkers == projections.FILE_CHECKS


def test_a_read_of_a_current_home_loads_no_projection_module(set_up):
    import subprocess
    import sys

    probe = ("import sys; from fased.store import Store; Store(sys.argv[1]).db()\n"
             "print(sorted(m for m in sys.modules if m.startswith('fased.projections.')))")
    done = subprocess.run([sys.executable, "-c", probe, str(set_up)], capture_output=True,
                          text=True, cwd=set_up, env={"PATH": "/usr/bin:/bin",
                                                      "PYTHONSAFEPATH": "1"})
    assert done.returncode == 0, done.stderr
    loaded = set(eval(done.stdout.strip()))  # a list of module names
    assert "fased.projections.config" in loaded  # it notices hand edits of fased.json
    assert loaded <= {"fased.projections.config", "fased.projections.agents"}, loaded


def test_event_ids_are_distinct_random_version_4_uuids(set_up, ok):
    ok("session", "new", "--name", "ids")
    ids = [e["id"] for e in events(set_up)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert parsed.hex == text and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
