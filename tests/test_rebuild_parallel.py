"""A rebuild of a big log runs on two cores: turns in the fased process, every other projection
in a forked child that does the checked read. It must build exactly what one process builds,
and a damaged log must fail it exactly as it fails a one-process build, leaving nothing behind.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from conftest import error_line, run_process

from fased import forked
from fased.errors import CorruptLogError, StateError
from fased.log import EventLog
from fased.projections import GROUPS, MODULES, Projector
from fased.store import PARALLEL_BUILD_BYTES, build_projection

sys.path.insert(0, str(Path(__file__).parent / "perf"))
from genlog import make_home

SEGMENT = "00000000000000000001.jsonl"
EVENTS = 30_000  # about 13 MB of log: over PARALLEL_BUILD_BYTES, so a rebuild forks


@pytest.fixture(scope="module")
def big_log(tmp_path_factory) -> Path:
    """A log big enough for the two-process rebuild (written once, copied per test)."""
    home = make_home(tmp_path_factory.mktemp("big") / "home", EVENTS)
    assert EventLog(home).size() >= PARALLEL_BUILD_BYTES
    return home / "log" / SEGMENT


def records(log: Path) -> int:
    return log.read_bytes().count(b"\n")


def home_with(log: Path, home: Path) -> Path:
    (home / "log").mkdir(parents=True)
    (home / "log" / SEGMENT).write_bytes(log.read_bytes())
    home.chmod(0o700)
    return home


def tables(db: Path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(db)
    try:
        names = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")]
        out = {n: sorted(map(tuple, con.execute(f"SELECT * FROM {n}")), key=repr)
               for n in names}
        # of meta, what says which log it was built from (fased.json's sha comes after)
        out["meta"] = [row for row in out["meta"] if row[0] != "config_sha"]
        return out
    finally:
        con.close()


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir()
                  if ".rebuild-" in p.name or p.name.endswith(".side"))


def test_the_groups_split_the_modules_without_sharing_a_table():
    assert sorted(m for group in GROUPS for m in group) == sorted(MODULES)
    first, second = (set(Projector(group).tables) for group in GROUPS)
    assert first and second and not first & second


def test_replay_rebuild_of_a_big_log_builds_what_one_process_builds(big_log, fased_home,
                                                                    tmp_path):
    home = home_with(big_log, fased_home)

    result = run_process("replay", "--rebuild")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Rebuilt projections from {records(big_log)} events in ")
    build_projection(EventLog(home), tmp_path / "serial.db", parallel=False)
    assert tables(home / "state.db") == tables(tmp_path / "serial.db")
    assert leftovers(home) == []
    transcripts = sorted(home.glob("agents/*/sessions/*.jsonl"))
    assert len(transcripts) == 200
    lines = sum(len(p.read_bytes().splitlines()) for p in transcripts)
    assert lines == 200 + (records(big_log) - 410) // 3 * 2  # headers, then a question and
    # an answer for every turn (genlog: 10 agents, 200 sessions, then 3 events per turn)


@pytest.mark.parametrize("damage", ["bit flip", "broken JSON"])
def test_a_corrupt_record_fails_the_rebuild_with_its_file_and_offset(big_log, fased_home,
                                                                     damage):
    home = home_with(big_log, fased_home)
    assert run_process("replay", "--rebuild").returncode == 0
    state_before = (home / "state.db").read_bytes()
    data = bytearray((home / "log" / SEGMENT).read_bytes())
    line_start = data.index(b"\n", len(data) // 2) + 1  # a record well before the tail
    if damage == "bit flip":
        data[line_start + 200] ^= 0x04
    else:  # what the unchecked parse in the parent chokes on first
        data[line_start + 30:line_start + 34] = b"\x00{[:"
    (home / "log" / SEGMENT).write_bytes(bytes(data))

    result = run_process("replay", "--rebuild")

    assert result.returncode == 4, result.stderr
    assert error_line(result) == (f"Error: corrupt record in {home / 'log' / SEGMENT} at byte "
                                  f"{line_start}: checksum mismatch")
    assert (home / "state.db").read_bytes() == state_before
    assert leftovers(home) == []


def test_a_torn_tail_is_left_out_by_both_processes(big_log, fased_home, tmp_path):
    home = home_with(big_log, fased_home)
    segment = home / "log" / SEGMENT
    data = segment.read_bytes()
    last_start = data.rindex(b"\n", 0, len(data) - 1) + 1
    segment.write_bytes(data[:last_start + 40])  # the last record cut short

    count = build_projection(EventLog(home), tmp_path / "parallel.db", parallel=True)

    assert count == records(big_log) - 1  # the torn record is not there (an append cuts it)
    build_projection(EventLog(home), tmp_path / "serial.db", parallel=False)
    assert tables(tmp_path / "parallel.db") == tables(tmp_path / "serial.db")
    assert segment.read_bytes() == data[:last_start + 40]  # reading repairs nothing


def test_a_rebuild_up_to_a_seq_stops_there_in_both_processes(big_log, fased_home, tmp_path):
    home = home_with(big_log, fased_home)

    assert build_projection(EventLog(home), tmp_path / "p.db", upto=12_345, parallel=True) \
        == 12_345
    build_projection(EventLog(home), tmp_path / "s.db", upto=12_345, parallel=False)
    assert tables(tmp_path / "p.db") == tables(tmp_path / "s.db")


# -- the forked worker ------------------------------------------------------------------------

def _answer(x: int) -> list[int]:
    return [x, x * 2]


def _corrupt() -> None:
    raise CorruptLogError("/some/segment.jsonl", 1234, "checksum mismatch")


def _bug() -> None:
    raise KeyError("turn")


def _killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_forked_worker_returns_its_result():
    with forked.Forked(_answer, 21) as child:
        assert child.wait() == [21, 42]


def test_a_forked_workers_error_is_raised_again_as_the_same_error():
    with forked.Forked(_corrupt) as child, pytest.raises(CorruptLogError) as caught:
        child.wait()
    assert isinstance(caught.value, StateError) and caught.value.exit_code == 4
    assert str(caught.value) == "corrupt record in /some/segment.jsonl at byte 1234: " \
                                "checksum mismatch"
    assert (caught.value.path, caught.value.offset) == ("/some/segment.jsonl", 1234)
    assert "fased doctor" in caught.value.hint


def test_a_forked_workers_bug_and_death_are_reported_not_hidden():
    with forked.Forked(_bug) as child, pytest.raises(Exception,
                                                      match="worker failed: KeyError: 'turn'"):
        child.wait()
    with forked.Forked(_killed) as child, pytest.raises(Exception,
                                                         match="killed by signal 9"):
        child.wait()


def test_a_worker_the_parent_gives_up_on_is_killed_and_reaped():
    with pytest.raises(RuntimeError), forked.Forked(signal.pause) as child:
        pid = child.pid
        raise RuntimeError("the parent failed first")
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie left behind


def test_a_rebuild_killed_midway_leaves_nothing_after_the_next(big_log, fased_home):
    """kill -9 during a rebuild skipped its cleanup: the half-built state.db.rebuild-PID
    (and the child's side file) stayed in the home, as large as state.db, one more for
    every killed rebuild. The next rebuild, under the log lock, removes them."""
    import subprocess
    import time

    home = home_with(big_log, fased_home)
    run_process("agent", "list")  # state.db, so the rebuild below is a replacement
    proc = subprocess.Popen([sys.executable, "-c", "from fased.commands.entry import main; "
                             "main()", "replay", "--rebuild"], env={**os.environ},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not leftovers(home) and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert leftovers(home), "the rebuild ended before it could be killed"

    done = run_process("replay", "--rebuild")

    assert done.returncode == 0, done.stderr
    assert leftovers(home) == []
