"""Work files of processes killed midway (fased.leftovers): named after their process,
removed by a later one once that process is gone, never while it runs. The kill -9 tests of
a rebuild and a pull are in test_rebuild_parallel.py and test_local_model.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fased import local
from fased.leftovers import alive, pid_after, sweep


def dead_pid() -> int:
    """The PID of a process that has ended (and was reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.parametrize(("name", "pid"), [
    ("state.db.rebuild-123", 123), ("state.db.rebuild-123.side", 123),
    ("state.db.rebuild-", None), ("state.db.rebuild-12a", None), ("state.db", None),
    ("state.db.rebuild-\u0663", None),  # ٣: a digit to isdigit(), not a PID
    ("state.db.rebuild-99999999999999999999999", 99999999999999999999999),
])
def test_pid_after_reads_the_pid_of_a_work_file(name, pid):
    assert pid_after("state.db.rebuild-", name) == pid


def test_alive_knows_this_process_and_not_an_ended_one():
    assert alive(os.getpid())
    assert not alive(dead_pid())
    assert not alive(0) and not alive(-1) and not alive(1 << 80)


def test_the_prompt_a_killed_process_was_saving_is_removed_at_the_next_server_start(tmp_path):
    """save_prompt writes NAME.slot.PID.part, then renames it: killed between the two, the
    part (~23 KB a token of the prompt) stayed in ~/.fased/models/cache/ for good."""
    gone, here = dead_pid(), os.getpid()
    names = [f"ab.slot.{gone}.part", f"ab.slot.{gone}.part.tokens",
             f"ab.slot.{here}.part", "ab.slot", "ab.tokens", "notes.txt"]
    for name in names:
        (tmp_path / name).write_text("x")

    local._remove_unsaved(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_sweep_leaves_what_it_cannot_remove_and_says_what_it_removed(tmp_path):
    (tmp_path / "w-1").mkdir()
    (tmp_path / "w-1" / "f").write_text("x")
    (tmp_path / "w-2").write_text("x")
    (tmp_path / "other").write_text("x")
    removed = sweep(tmp_path, lambda n: pid_after("w-", n), gone=lambda pid: pid == 1)
    assert removed == ["w-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "w-2"]
    assert sweep(tmp_path / "missing", lambda n: 1) == []
