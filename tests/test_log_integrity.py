"""The log never lies: damaged history stops every command (exit 4) and nothing is appended past
it; state.db that applied events the log lost is evidence, never rebuilt over; a full disk and a
damaged state.db are reported, not "internal errors".

Each test damages a real home the way an accident or an attacker would (a deleted segment, a
flipped bit, a duplicated, swapped or deleted line, a full tmpfs, bytes flipped inside state.db)
and checks what a user sees: exit codes, the one Error line, log bytes untouched, requests the
model server received.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import error_line, events, rows, run_process, tmpfs

from fased.log import EventLog

SEGMENT_BYTES = 3000
# commands that read the log (every one of them must refuse damaged history)
READERS = [
    ("session", "list"),
    ("agent", "list"),
    ("task", "list"),
    ("replay", "-n", "3"),
    ("replay", "--verify"),
    ("replay", "--rebuild"),
    ("run", "--once"),
    ("chat", "hello again"),
    ("session", "new", "--name", "later"),
]


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file in log/ and its bytes: what "nothing was appended or cut" compares."""
    return {p.name: p.read_bytes() for p in sorted((home / "log").iterdir())}


def segments(home: Path) -> list[Path]:
    return sorted((home / "log").glob("*.jsonl"))


@pytest.fixture
def home(fased_home, ok, server, monkeypatch) -> Path:
    """A home whose log spans several small segments, with answered turns in it."""
    monkeypatch.setenv("FASED_SEGMENT_BYTES", str(SEGMENT_BYTES))
    ok("setup", "-y", "--no-detect")
    ok("agent", "models", "providers", "add", "ollama", "--kind", "ollama", "--base-url",
       server.url)
    ok("agent", "models", "set", "primary", "ollama/fake-model")
    ok("config", "set", "agents.defaults.retries", "0")
    for i in range(6):
        ok("chat", f"question {i}")
        ok("session", "new", "--name", f"s{i}")
    while len(segments(fased_home)[-1].read_bytes().splitlines()) < 5:
        ok("session", "new")
    assert len(segments(fased_home)) >= 4
    return fased_home


def refuses(run, home: Path, server, *args: str) -> str:
    """Run a command that must stop at damaged history: exit 4, one Error line, no byte of
    the log changed, no model request. Returns the Error line."""
    before, asked = snapshot(home), len(server.requests)
    result = run(*args)
    assert result.exit_code == 4, (args, result.stdout, result.stderr)
    assert snapshot(home) == before, args
    assert len(server.requests) == asked, f"{args} called the model"
    return error_line(result)


def answered_turns(home: Path) -> int:
    return len([e for e in events_raw(home) if e["type"] == "turn.completed"])


def events_raw(home: Path) -> list[dict]:
    """Every complete record in every segment, checked one by one but not as a chain."""
    from fased.log import BadRecord, decode_record

    out = []
    for path in segments(home):
        for line in path.read_bytes().split(b"\n")[:-1]:
            with contextlib.suppress(BadRecord):
                out.append(decode_record(line))
    return out


# -- missing segments --------------------------------------------------------------------------

@pytest.mark.parametrize("also_state_db", [False, True], ids=["state.db-kept", "state.db-gone"])
def test_a_missing_middle_segment_stops_every_command(home, run, server, also_state_db):
    gone = segments(home)[1]
    first = int(gone.name[:20])
    after = int(segments(home)[2].name[:20])
    gone.unlink()
    if also_state_db:
        (home / "state.db").unlink()
    turns = answered_turns(home)

    for args in READERS:
        line = refuses(run, home, server, *args)
        assert f"seqs {first}..{after - 1} are missing from the log" in line, (args, line)

    assert answered_turns(home) == turns  # nothing was answered a second time
    doctor = run("doctor", "--repair")
    assert doctor.exit_code == 1
    assert f"seqs {first}..{after - 1} are missing" in doctor.stdout
    assert f"Restore the segment holding seq {first} ({gone}) from a backup" in doctor.stdout


def test_a_removed_last_segment_is_refused_as_lost_events(home, run, server):
    last = segments(home)[-1]
    lost_first = int(last.name[:20])
    checkpoint = len(events(home))
    shutil.move(last, home / "elsewhere.jsonl")

    for args in READERS:
        line = refuses(run, home, server, *args)
        assert line == (f"Error: state.db has applied events up to seq {checkpoint}, but the log "
                        f"ends at seq {lost_first - 1}: seqs {lost_first}..{checkpoint} are "
                        "missing from the log"), args

    shutil.move(home / "elsewhere.jsonl", last)  # restoring it is all it takes
    assert run("session", "list").exit_code == 0
    assert run("doctor").exit_code == 0


def test_an_emptied_last_segment_is_refused_and_accept_loss_records_it(home, run, server, ok):
    last = segments(home)[-1]
    first = int(last.name[:20])
    checkpoint = len(events(home))
    last.write_bytes(b"")

    refuses(run, home, server, "session", "list")
    doctor = run("doctor", "--repair")
    assert doctor.exit_code == 1
    assert f"seqs {first}..{checkpoint} are missing from the log" in doctor.stdout
    assert last.read_bytes() == b""

    accepted = run("doctor", "--repair", "--accept-loss")
    assert accepted.exit_code == 0, accepted.stdout
    loss = events(home)[-1]
    assert loss["type"] == "log.loss_accepted"
    assert loss["data"]["missing"] == [first, checkpoint]
    ok("session", "list")
    assert run("doctor").exit_code == 0


# -- damage before the tail ----------------------------------------------------------------

def damage(path: Path, how: str, where: str) -> int:
    """Damage one line of a segment; returns the byte offset of the first line touched."""
    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]
    i = 1 if where == "middle" else len(lines) - 2
    offset = sum(len(x) + 1 for x in lines[:i])
    if how == "flip":
        line = bytearray(lines[i])
        line[len(line) // 2] ^= 0x08
        lines[i] = bytes(line)
    elif how == "duplicate":
        lines.insert(i + 1, lines[i])
        offset += len(lines[i]) + 1
    elif how == "swap":
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    elif how == "delete":
        del lines[i]
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    return offset


@pytest.mark.parametrize("where", ["middle", "tail"])
@pytest.mark.parametrize("how", ["flip", "duplicate", "swap", "delete"])
@pytest.mark.parametrize("segment", ["sealed", "last"])
def test_damage_before_the_tail_stops_appends_and_names_file_and_offset(
        home, run, server, how, where, segment):
    path = segments(home)[0 if segment == "sealed" else -1]
    offset = damage(path, how, where)

    for args in (("session", "new", "--name", "after the damage"), ("chat", "hi"),
                 ("replay", "--verify"), ("replay", "-n", "1"), ("replay", "--rebuild")):
        line = refuses(run, home, server, *args)
        assert f"{path}" in line and f"at byte {offset}" in line, (args, line)

    doctor = run("doctor", "--repair")
    assert doctor.exit_code == 1
    assert f"{path} at byte {offset}" in doctor.stdout


def test_two_swapped_last_lines_never_give_a_seq_twice(home, run, server):
    """The head is the highest seq that continues the chain, not the last line: an append
    after swapped last lines would otherwise write a seq that is already in the log."""
    path = segments(home)[-1]
    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]
    lines[-1], lines[-2] = lines[-2], lines[-1]
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    (home / "state.db").unlink()  # no evidence at all: the log alone must tell

    refuses(run, home, server, "session", "new")
    seqs = [e["seq"] for e in events_raw(home)]
    assert len(seqs) == len(set(seqs))


def test_a_flip_in_a_sealed_segment_is_found_by_its_changed_stat_without_rereads(
        home, run, ok, monkeypatch):
    """Reads stay cheap: a command whose log did not change reads no segment at all; one whose
    sealed segment changed re-checks that segment and finds the damage."""
    ok("session", "list")
    checked = []
    real = EventLog._check_segment

    def spy(self, path, *args):
        checked.append(path.name)
        return real(self, path, *args)

    monkeypatch.setattr(EventLog, "_check_segment", spy)
    ok("session", "list")
    ok("agent", "list")
    assert checked == []

    sealed = segments(home)[1]
    st = sealed.stat()
    damage(sealed, "flip", "middle")
    os.utime(sealed, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime put back: ctime tells

    result = run("session", "list")

    assert result.exit_code == 4
    assert checked == [sealed.name]


# -- state.db ahead of the log -----------------------------------------------------------------

def test_a_damaged_last_record_that_state_db_applied_is_not_cut_as_a_torn_tail(
        home, run, server):
    """A flipped bit in the last record looks like a torn write, but state.db applied it: it
    was committed. Cutting it would reuse its seq for the next event."""
    path = segments(home)[-1]
    data = bytearray(path.read_bytes())
    last = events(home)[-1]
    batch_first = last["seq"] - (last["meta"].get("batch") or [1])[0] + 1  # it takes its batch
    data[-30] ^= 0x01
    path.write_bytes(bytes(data))

    line = refuses(run, home, server, "session", "new", "--name", "x")
    assert line.startswith(f"Error: state.db has applied events up to seq {last['seq']}, but the "
                           f"log ends at seq {batch_first - 1}: seqs {batch_first}.."
                           f"{last['seq']} are missing from the log")
    assert not list((home / "log").glob("*.broken"))

    repaired = run("doctor", "--repair")
    assert repaired.exit_code == 1
    assert not list((home / "log").glob("*.broken"))  # plain --repair keeps the bytes

    assert run("doctor", "--repair", "--accept-loss").exit_code == 0
    broken = list((home / "log").glob("*.broken"))
    assert len(broken) == 1
    assert bytes(data).endswith(broken[0].read_bytes())
    assert broken[0].read_bytes().count(b"\n") == (last["meta"].get("batch") or [1])[0]
    assert events(home)[-1]["data"]["broken"] == [broken[0].name]


# -- a full disk -------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs, and a way to fill it to the last byte; skipped where none can be mounted."""
    with tmpfs(tmp_path / "disk", "3m") as mount:
        yield mount


def fill(mount: Path) -> Path:
    """Write a file until the device has no byte left."""
    filler = mount / f"filler-{len(list(mount.glob('filler-*')))}"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 64, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def tmpfs_home(mount: Path, server) -> Path:
    home = mount / "home"
    for args in (["setup", "-y", "--no-detect"],
                 ["agent", "models", "providers", "add", "ollama", "--kind", "ollama",
                  "--base-url", server.url],
                 ["agent", "models", "set", "primary", "ollama/fake-model"]):
        assert run_process("--home", str(home), *args).returncode == 0
    return home


def test_a_full_disk_before_the_append_records_nothing(small_disk, server):
    home = tmpfs_home(small_disk, server)
    before = snapshot(home)
    filler = fill(small_disk)

    done = run_process("--home", str(home), "config", "set", "agents.defaults.systemPrompt",
                       "a long prompt " * 400)  # more than the free end of the last page

    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert "free disk space" in done.stderr
    assert snapshot(home) == before
    filler.unlink()
    assert run_process("--home", str(home), "session", "new").returncode == 0
    assert run_process("--home", str(home), "doctor").returncode == 0


def test_a_full_disk_stops_readers_with_what_is_wrong_and_rebuilds_nothing(small_disk, server):
    """With no byte left, SQLite cannot make state.db's shared-memory file: that I/O error is
    not damage, so nothing is rebuilt (which could not be written anyway), and the user is
    told the disk is full; doctor says so and fails."""
    home = tmpfs_home(small_disk, server)
    assert run_process("--home", str(home), "session", "new", "--name", "a").returncode == 0
    for name in ("state.db-wal", "state.db-shm"):
        (home / name).unlink(missing_ok=True)
    db = (home / "state.db").read_bytes()
    filler = fill(small_disk)

    for args in (["session", "list"], ["replay", "-n", "1"], ["session", "export"]):
        done = run_process("--home", str(home), *args)
        assert done.returncode == 4, (args, done.stderr)
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
        assert "rebuilt" not in done.stderr, done.stderr
        assert f"the disk holding {home} is full" in done.stderr, done.stderr
    assert (home / "state.db").read_bytes() == db
    doctor = run_process("--home", str(home), "doctor")
    assert doctor.returncode == 1, doctor.stdout
    assert f"the disk holding {home} is full" in doctor.stdout

    filler.unlink()
    assert run_process("--home", str(home), "session", "list").returncode == 0
    assert run_process("--home", str(home), "doctor").returncode == 0


def test_a_full_disk_after_the_append_says_it_is_recorded_and_catches_up(small_disk, server):
    """The event is in the log when SQLite finds the disk full: the user is told it is
    recorded (so they do not run it again), and the next command catches up cleanly."""
    home = tmpfs_home(small_disk, server)
    real_append = EventLog.append
    fillers = []

    def append_then_fill(self, records, fsync=True):
        out = real_append(self, records, fsync)
        fillers.append(fill(small_disk))
        return out

    from click.testing import CliRunner

    from fased.commands.main import cli

    with pytest.MonkeyPatch.context() as patch:  # undone alone: conftest's patches stay
        patch.setattr(EventLog, "append", append_then_fill)
        result = CliRunner().invoke(cli, ["--home", str(home), "session", "new", "--name",
                                          "kept"])

    assert result.exit_code == 4, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert "the command is recorded in the log (seq" in result.stderr
    assert "do not run it again" in result.stderr
    assert [e["data"].get("name") for e in events(home)].count("kept") == 1
    fillers[0].unlink()
    listed = run_process("--home", str(home), "session", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"kept"' in listed.stdout
    assert run_process("--home", str(home), "doctor").returncode == 0


# -- a damaged state.db that still opens ---------------------------------------------------------

def flip_in_state_db(home: Path, text: bytes) -> None:
    """Flip bytes inside a text value where it lies in state.db's pages (as a disk would)."""
    con = sqlite3.connect(home / "state.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    path = home / "state.db"
    data = bytearray(path.read_bytes())
    at = data.find(text)
    assert at >= 0
    data[at + 1] = 0xFF  # no UTF-8 byte is 0xff
    data[at + 2] = 0xFE
    path.write_bytes(bytes(data))


def test_a_damaged_text_column_is_rebuilt_not_a_crash(set_up, run, ok):
    ok("session", "new", "--name", "projectname-xyz")
    flip_in_state_db(set_up, b"projectname-xyz")
    assert run("doctor").exit_code == 0  # a warning: state.db differs from the log
    assert "state.db differs from the log" in run("doctor").stdout

    result = run("session", "list")

    assert result.exit_code == 0, result.stderr
    assert "projectname-xyz" in result.stdout
    assert "state.db was damaged (a text that is not UTF-8)" in result.stderr
    assert "Traceback" not in result.stderr and "DecodeError" not in result.stderr
    assert "projectname-xyz" in {r["name"] for r in rows(set_up, "SELECT name FROM sessions")}
    assert run("doctor").stdout.count("ok") == 4


def test_a_chat_over_a_damaged_state_db_queues_its_turn_once_and_answers_it(models, run,
                                                                             server):
    assert run("chat", "an old question abcdef").exit_code == 0
    flip_in_state_db(models, b"an old question abcdef")

    result = run("chat", "the new question")

    assert result.exit_code == 0, result.stderr
    queued = [e for e in events(models) if e["type"] == "turn.queued"]
    assert [e["data"]["message"] for e in queued] == ["an old question abcdef",
                                                      "the new question"]
    assert len([e for e in events(models) if e["type"] == "turn.completed"]) == 2


# -- links and modes ------------------------------------------------------------------------

def test_a_symlinked_segment_is_refused_and_never_written_through(home, run, server, tmp_path):
    last = segments(home)[-1]
    outside = tmp_path / "outside.jsonl"
    shutil.copy(last, outside)
    last.unlink()
    last.symlink_to(outside)
    data = outside.read_bytes()

    line = refuses(run, home, server, "session", "new")
    assert f"{last} is not a regular file" in line
    assert outside.read_bytes() == data
    doctor = run("doctor")
    assert doctor.exit_code == 1
    assert f"{last} is a symlink to {outside} (outside the home)" in doctor.stdout


def test_doctor_checks_the_modes_of_the_directories_it_creates(set_up, run, ok):
    ok("session", "new")
    sessions = next((set_up / "agents").rglob("sessions"))
    for path in (set_up / "agents", sessions):
        path.chmod(0o755)

    result = run("doctor", "--repair")

    assert f"warn  permissions  {set_up / 'agents'} is 0o755, should be 0o700 (repaired)" in (
        result.stdout)
    assert f"warn  permissions  {sessions} is 0o755, should be 0o700 (repaired)" in result.stdout
    assert (set_up / "agents").stat().st_mode & 0o777 == 0o700


def test_a_transcript_directory_linked_outside_the_home_is_not_written_through(
        set_up, run, ok, tmp_path):
    ok("session", "new", "--name", "first")
    sessions = next((set_up / "agents").rglob("sessions"))
    outside = tmp_path / "outside"
    shutil.copytree(sessions, outside)
    shutil.rmtree(sessions)
    sessions.symlink_to(outside)
    before = sorted(p.name for p in outside.iterdir())

    result = run("session", "new", "--name", "second")

    assert result.exit_code == 4
    assert "is outside the fased home" in error_line(result)
    assert sorted(p.name for p in outside.iterdir()) == before


def test_a_file_in_the_log_directory_named_with_other_digits_is_not_a_segment(set_up, ok):
    """`²².jsonl` passed str.isdigit() as a segment name and int() raised: every command
    was an internal error."""
    (set_up / "log" / "\u00b2\u00b2.jsonl").write_text("")
    assert "main" in ok("agent", "list")


# -- a home of one segment ----------------------------------------------------------------------

@pytest.fixture
def one_segment(fased_home, ok, server) -> Path:
    """The usual home: every event in one segment, with answered turns in it."""
    ok("setup", "-y", "--no-detect")
    ok("agent", "models", "providers", "add", "ollama", "--kind", "ollama", "--base-url",
       server.url)
    ok("agent", "models", "set", "primary", "ollama/fake-model")
    ok("config", "set", "agents.defaults.retries", "0")
    ok("chat", "question")
    assert len(segments(fased_home)) == 1
    return fased_home


@pytest.mark.parametrize("how", ["emptied", "cut-inside-the-first-record", "crlf-every-line"])
def test_a_one_segment_log_that_lost_its_first_record_is_refused_never_started_over(
        one_segment, run, server, how):
    """With no readable first record, the log is this home's log damaged, not another home's:
    state.db's checkpoint is evidence of what it lost. No reader may cut it into a .broken
    file and rebuild an empty history over it."""
    home = one_segment
    path = segments(home)[0]
    checkpoint = len(events(home))
    data = path.read_bytes()
    if how == "emptied":
        path.write_bytes(b"")
    elif how == "cut-inside-the-first-record":
        path.write_bytes(data[:200])
    else:
        path.write_bytes(data.replace(b"\n", b"\r\n"))

    for args in READERS:
        line = refuses(run, home, server, *args)
        if how != "crlf-every-line":
            assert f"seqs 1..{checkpoint} are missing from the log" in line, (args, line)
    assert not list((home / "log").glob("*.broken"))
    doctor = run("doctor")
    assert doctor.exit_code == 1, doctor.stdout
