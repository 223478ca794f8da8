"""The console script runs `fased memory search` without click (fased.commands.quick) to
start faster. Whatever the command line, it must print exactly what click's command prints,
exit the same way and leave the same home behind; and it must really skip click."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import rows
from fakeserver import Reply

QUICK = [sys.executable, "-c", "from fased.commands.entry import main; main()"]
CLICK = [sys.executable, "-c", "from fased.commands.main import main; main()"]

# what the quick path reads itself, and what it leaves to click (each run both ways)
COMMAND_LINES = [
    ["postgres"],
    ["postgres", "--json"],
    ["postgres", "-n", "1"],
    ["postgres", "-n1", "--json"],
    ["-n", "007", "postgres"],
    ["postgres", "--agent", "main"],
    ["postgres", "-a", "main", "--no-sessions"],
    ["--agent=main", "wombat", "--sessions"],
    ["wombat", "--json", "-n", "2", "--no-sessions"],
    ["nothing-like-it-anywhere"],
    ["\x1b[31mred\u202e words"],
    ["postgres", "--agent", "nope"],
    ["postgres", "-n", "0"],
    ["postgres", "-n", "101"],
    ["postgres", "-n", "99999999999999999999999"],
    ["postgres", "-n", "9" * 5000],  # past what int() converts
    ["   "],
    ["!!! ???"],
    # click's alone: help, repeats, a missing or odd value, `--`, unknown options
    ["--help"],
    ["postgres", "--json", "--json"],
    ["postgres", "-n", "-1"],
    ["postgres", "-n", "²"],
    ["postgres", "-n"],
    ["postgres", "-a"],
    ["postgres", "--agent="],
    ["postgres", "--agent", "-n"],
    ["postgres", "again"],
    [],
    ["--", "-x"],
    ["-"],
    ["postgres", "--bogus"],
]


@pytest.fixture
def home(models, ok, server, at) -> Path:
    """Notes and a session with words to find; a copy of it to restore before every run.
    The clock stays pinned (`at`): scores decay with a note's age against it, and two runs a
    moment apart could print a different last digit."""
    workspace = models / "workspace"
    (workspace / "memory").mkdir(exist_ok=True)
    (workspace / "MEMORY.md").write_text("# Memory\n\nPostgres runs on db-2.\n")
    (workspace / "memory" / "2026-03-01.md").write_text(
        "Met Alice about the postgres migration.\nThe wombat \x1b]0;owned\x07 is fed.\n")
    server.script(Reply("Noted: the wombat enclosure code is 4471."))
    ok("chat", "remember that the wombat enclosure code is 4471")
    shutil.copytree(models, models.parent / "pristine", symlinks=True)
    return models


def run_both(home: Path, args: list[str], env: dict | None = None):
    """(quick, click): each run on the home as the fixture left it, at the same moment."""
    out = []
    for command in (QUICK, CLICK):
        shutil.rmtree(home)
        shutil.copytree(home.parent / "pristine", home, symlinks=True)
        done = subprocess.run([*command, "memory", "search", *args], capture_output=True,
                              env={**os.environ, **(env or {})}, timeout=60)
        out.append((done.returncode, done.stdout, done.stderr))
    return out


def test_every_command_line_prints_and_exits_as_click_does(home):
    seen, differ = {}, []
    for args in COMMAND_LINES:
        quick, click = run_both(home, args)
        seen[tuple(args)] = quick
        if quick != click:
            differ.append((args, quick, click))
    assert not differ
    # and the cases mean something: found, escaped, found nothing, refused, helped
    code, out, err = seen[("postgres",)]
    assert code == 0 and out.startswith(b"MEMORY.md:") and b"db-2" in out and not err
    assert b"\x1b" not in seen[("wombat", "--json", "-n", "2", "--no-sessions")][1]
    assert seen[("nothing-like-it-anywhere",)][2].startswith(b"No memory matches")
    assert seen[("postgres", "--agent", "nope")][:2] == (1, b"")
    assert seen[("postgres", "-n", "0")][2].startswith(b"Error: the number of results")
    assert seen[("postgres", "--bogus")][0] == 2
    assert seen[("--help",)][1].startswith(b"Usage: fased memory search")


def test_failures_in_the_environment_are_reported_the_same_way(home):
    cases = [
        ({"FASED_NOW": "not a time"}, ["postgres"]),
        ({"_FASED_COMPLETE": "bash_complete", "COMP_WORDS": "fased memory search --a",
          "COMP_CWORD": "3"}, ["--a"]),  # a shell completing: click's
        ({"FASED_IDEMPOTENCY_KEY": "k-1"}, ["postgres"]),  # click's: keys are its business
    ]
    codes = []
    for env, args in cases:
        quick, click = run_both(home, args, env)
        assert quick == click, env
        codes.append(quick[0])
    assert codes == [2, 0, 0]


def test_a_damaged_index_and_a_damaged_state_db_are_mended_the_same_way(home):
    index = home / "memory" / "index.db"
    pristine = home.parent / "pristine"
    # a damaged index: dropped and built again, said once on stderr
    index.parent.mkdir(exist_ok=True)
    (pristine / "memory").mkdir(exist_ok=True)
    (pristine / "memory" / "index.db").write_bytes(b"not a database at all" * 100)
    quick, click = run_both(home, ["postgres"])
    assert quick == click and quick[0] == 0 and b"postgres" in quick[1].lower()
    # state.db with bytes that are no UTF-8 in the message the search indexes: rebuilt from
    # the log, then the search runs again and finds it
    (pristine / "memory" / "index.db").unlink()
    db = pristine / "state.db"
    data = bytearray(db.read_bytes())
    at = data.find(b"enclosure code is 4471")
    assert at >= 0
    data[at + 1:at + 3] = b"\xff\xfe"
    db.write_bytes(bytes(data))
    quick, click = run_both(home, ["wombat"])
    assert quick == click
    assert quick[0] == 0 and b"state.db was damaged" in quick[2], quick
    assert rows(home, "SELECT count(*) AS n FROM sessions")[0]["n"] >= 1


def test_ctrl_c_anywhere_is_one_line_never_a_traceback(home):
    """Ctrl-C while the store closes, after the search: outside the command's own handler,
    so it ends as click ends such a Ctrl-C."""
    probe = ("import sys\nfrom fased import store\nclose = store.Store.close\n"
             "def interrupted(self):\n    close(self)\n    raise KeyboardInterrupt\n"
             "store.Store.close = interrupted\nwhich = sys.argv.pop(1)\n"
             "module = __import__(f'fased.commands.{which}', fromlist=['main'])\n"
             "module.main()\n")
    seen = []
    for which in ("entry", "main"):
        done = subprocess.run([sys.executable, "-c", probe, which, "memory", "search",
                               "postgres"], capture_output=True, text=True, timeout=60)
        seen.append((done.returncode, done.stderr.splitlines()[-1:]))
        assert "Traceback" not in done.stderr
    assert seen[0] == seen[1]


def test_the_quick_path_never_imports_click(home):
    probe = ("import sys\nfrom fased.commands.entry import main\ntry:\n    main()\n"
             "finally:\n    print('click' in sys.modules, file=sys.stderr)\n")
    for args, expect in ((["postgres", "--json"], "False"), (["--agent", "nope", "x"], "False"),
                         (["--help"], "True")):
        done = subprocess.run([sys.executable, "-c", probe, "memory", "search", *args],
                              capture_output=True, text=True, timeout=60)
        assert done.stderr.splitlines()[-1] == expect, (args, done.stderr)
