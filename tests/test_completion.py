"""Shell completion through click's protocol, run as a real process the way a shell runs it:
commands (lazily loaded groups too), options, and live values read from the home read-only."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_process


def complete(line: str, shell: str = "bash", env: dict | None = None) -> list[str]:
    """The candidates for the last word of `line` (a trailing space: a new, empty word)."""
    words = line.split()
    if line.endswith(" "):
        words.append("")
    # fish passes the word being completed itself where bash and zsh pass its index
    cword = words[-1] if shell == "fish" else str(len(words) - 1)
    result = run_process(env={"_FASED_COMPLETE": f"{shell}_complete",
                              "COMP_WORDS": " ".join(words), "COMP_CWORD": cword,
                              **(env or {})})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    if shell == "zsh":  # type, value, help: three lines per candidate
        lines = result.stdout.splitlines()
        return [lines[i + 1] for i in range(0, len(lines), 3)]
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]


def files_of(home: Path) -> dict[str, bytes]:
    """Every file's bytes but the WAL index (state.db-shm): SQLite's shared memory, which
    every reader of a WAL database updates, fased's own read commands too."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*"))
            if p.is_file() and p.name != "state.db-shm"}


def test_commands_and_options_complete_in_lazily_loaded_groups(set_up):
    assert complete("fased ") == ["agent", "approvals", "channel", "chat", "completion",
                                  "config", "doctor", "hooks", "memory", "pairing", "replay",
                                  "run", "session", "setup", "skill", "task", "usage"]
    assert complete("fased ta") == ["task"]
    assert complete("fased task ne") == ["new", "next"]
    assert complete("fased agent mo") == ["models"]  # a group inside a lazily loaded one
    assert complete("fased agent models providers s") == ["set", "show"]
    assert complete("fased run --d") == ["--dry-run"]
    assert complete("fased task next --") == ["--agent", "--at", "--json", "--help"]
    assert complete("fased completion ") == ["bash", "zsh", "fish"]


def test_ids_and_model_refs_come_from_the_home(models, ok, server):
    ok("agent", "create", "ops", "--model", "ollama/fake-model")
    ok("session", "new", "--name", "review")
    ok("task", "new", "--every", "1h", "--message", "m")
    ok("task", "new", "--every", "1d", "--message", "m", "--agent", "ops")
    ok("agent", "models", "alias", "add", "fast", "ollama/fake-model")
    ok("agent", "models", "providers", "add", "lab", "--kind", "vllm", "--base-url",
       "http://127.0.0.1:9/v1")
    before = files_of(models)

    assert complete("fased task show ") == ["task-1", "task-2"]
    assert complete("fased task run task-") == ["task-1", "task-2"]
    assert complete("fased chat --agent ") == ["main", "ops"]
    assert complete("fased task list -a o") == ["ops"]
    assert complete("fased chat -s ") == ["s-1", "review"]
    assert complete("fased session switch r") == ["review"]
    assert complete("fased chat --agent ops -s ") == ["s-2"]  # the one its task made
    assert complete("fased agent models providers show ") == ["lab", "ollama"]
    assert complete("fased agent models auth l") == ["lab"]
    assert set(complete("fased chat -m ")) == {"ollama/fake-model", "fast"}
    assert complete("fased agent models set primary f") == ["fast"]
    assert complete("fased agent use ", shell="zsh") == ["main", "ops"]
    assert complete("fased agent show o", shell="fish") == ["ops"]
    assert files_of(models) == before  # completion reads; it never writes a byte


def test_home_option_and_variable_choose_where_ids_come_from(models, ok, tmp_path):
    ok("task", "new", "--every", "1h", "--message", "m")
    other = tmp_path / "other"
    assert complete(f"fased --home {other} task show ") == []
    assert complete("fased task show ", env={"FASED_HOME": str(other)}) == []
    assert complete(f"fased --home {models} task show ",
                    env={"FASED_HOME": str(other)}) == ["task-1"]
    assert not other.exists()  # nothing is created for a home that is not there


@pytest.mark.parametrize("damage", ["garbage", "empty", "directory", "old schema"])
def test_a_damaged_home_gives_no_candidates_and_stays_as_it_was(set_up, ok, damage):
    ok("task", "new", "--every", "1h", "--message", "m")
    db = set_up / "state.db"
    if damage == "garbage":
        db.write_bytes(b"not a database at all" * 100)
    elif damage == "empty":
        db.write_bytes(b"")
    elif damage == "directory":
        db.unlink()
        db.mkdir()
    else:
        import sqlite3

        con = sqlite3.connect(db)
        con.execute("DROP TABLE tasks")
        con.commit()
        con.close()
    before = files_of(set_up)
    assert complete("fased task show ") == []
    assert complete("fased ta") == ["task"]  # commands still complete
    assert files_of(set_up) == before  # not rebuilt, not repaired: left for `fased doctor`


def test_a_home_without_state_db_is_not_rebuilt_by_completion(set_up, ok):
    ok("task", "new", "--every", "1h", "--message", "m")
    (set_up / "state.db").unlink()
    assert complete("fased task show ") == []
    assert not (set_up / "state.db").exists()


@pytest.mark.parametrize("shell, marker", [
    ("bash", "complete -o nosort -F _fased_completion fased"),
    ("zsh", "compdef _fased_completion fased"),
    ("fish", "complete --no-files --command fased"),
])
def test_completion_prints_the_script_for_each_shell(run, shell, marker):
    result = run("completion", shell)
    assert result.exit_code == 0
    assert "_FASED_COMPLETE" in result.stdout and marker in result.stdout


def test_completion_refuses_an_unknown_shell(run):
    result = run("completion", "tcsh")
    assert result.exit_code == 2 and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in (
        result.stderr)
