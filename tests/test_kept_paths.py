"""Paths fased keeps are one line of printable text as they are kept: absolute, so a
working directory or a home with a newline in its name cannot bring one in (the check of
what was typed missed it), and a workspace that cannot be made is refused before the
agent is recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import events, run_process

GGUF = b"GGUF" + bytes(60)


@pytest.fixture
def newline_cwd(tmp_path, monkeypatch) -> Path:
    """The working directory, named with a newline (a folder someone else made)."""
    where = tmp_path / "cw\nd"
    where.mkdir()
    monkeypatch.chdir(where)
    return where


def refused_and_unrecorded(run, home: Path, *args: str, says: str = "holds a control character"):
    before = len(events(home))
    result = run(*args)
    assert result.exit_code == 2, (args, result.stdout, result.stderr)
    assert says in result.stderr, (args, result.stderr)
    assert "\n" not in result.stderr.split("Error: ", 1)[1].split("\nHint:")[0].rstrip("\n")
    assert "Traceback" not in result.stderr
    assert len(events(home)) == before, args
    return result


def test_relative_paths_in_a_working_directory_named_with_a_newline_are_refused(
        set_up, run, newline_cwd, fased_home):
    (newline_cwd / "Tiny.gguf").write_bytes(GGUF)
    refused_and_unrecorded(run, fased_home, "agent", "models", "providers", "add", "mine",
                           "--kind", "local", "--model-path", "Tiny.gguf")
    refused_and_unrecorded(run, fased_home, "agent", "create", "rel", "--workspace", "ws")
    refused_and_unrecorded(run, fased_home, "task", "new", "--every", "1h", "--message", "x",
                           "--deliver", "file:out.txt")
    refused_and_unrecorded(run, fased_home, "session", "export", "-o", "out.md")
    assert not (newline_cwd / "ws").exists()


def test_setup_with_a_relative_workspace_in_such_a_directory_writes_nothing(tmp_path, run,
                                                                          newline_cwd):
    home = tmp_path / "home"
    result = run("--home", str(home), "setup", "-y", "--no-detect", "--workspace", "sw")
    assert result.exit_code == 2, result.stderr
    assert "holds a control character" in result.stderr
    assert not (home / "fased.json").exists()


@pytest.mark.parametrize("how", ["--home", "FASED_HOME"])
def test_a_home_named_with_a_control_character_is_refused(tmp_path, how):
    home = tmp_path / "home\nx"
    args = ("--home", str(home), "setup", "-y", "--no-detect") if how == "--home" else (
        "setup", "-y", "--no-detect")
    done = run_process(*args, env={"FASED_HOME": str(home)} if how == "FASED_HOME" else None)
    assert done.returncode == 2, done.stderr
    assert "the fased home" in done.stderr and "holds a control character" in done.stderr
    assert done.stderr.count("\n") <= 2  # the error and its hint, each one line
    assert not home.exists()


@pytest.mark.parametrize("make", ["long", "under_a_file", "proc"])
def test_a_workspace_that_cannot_be_made_is_refused_before_the_agent_is_recorded(
        set_up, run, tmp_path, fased_home, make):
    """agent create recorded the agent, then failed as an internal error making its
    workspace (a 300-character name, a path under a file, under /proc): a half-made agent."""
    (tmp_path / "afile").write_text("x")
    workspace = {"long": str(tmp_path / ("b" * 300)), "under_a_file": str(tmp_path / "afile" / "x"),
                 "proc": "/proc/1/x"}[make]
    before = len(events(fased_home))
    result = run("agent", "create", "w", "--workspace", workspace)
    assert result.exit_code == 2, result.stderr
    assert "cannot make the workspace" in result.stderr, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert len(events(fased_home)) == before
    assert "w" not in [a["id"] for a in json.loads(run("agent", "list", "--json").stdout)]


def test_setup_with_a_workspace_that_cannot_be_made_records_nothing(tmp_path, run):
    home = tmp_path / "home"
    result = run("--home", str(home), "setup", "-y", "--no-detect", "--workspace",
                 str(tmp_path / ("q" * 300)))
    assert result.exit_code == 2, result.stderr
    assert "cannot make the workspace" in result.stderr
    assert "internal error" not in result.stderr
    assert not (home / "fased.json").exists()
    log = home / "log"
    assert not log.exists() or not any(os.scandir(log)) or events(home) == []


# -- every value of fased.json is one line, but the few that are text -------------------------

@pytest.mark.parametrize(("path", "value"), [
    ("tools", {"allow": ["re\nad", "exec"]}),
    ("tools", {"deny": ["wr\nite"]}),
    ("tools", {"exec": {"allowlist": ["ls\n-la"]}}),
    ("agents.defaults.tools", {"allow": ["read\u001b[2J"]}),
    ("channels.telegram.allowFrom", ["12\n3"]),
    ("channels.telegram.groups", ["-100\t1"]),
    ("channels.telegram.accounts", {"a\nb": {}}),
    ("skills.entries", {"my\nskill": {"enabled": True}}),
    ("skills.entries", {"s": {"env": {"K\nJ": "v"}}}),
    ("models.aliases", {"fast": "ollama/x\u202ey"}),
])
def test_a_fased_json_value_or_key_with_a_control_character_is_refused(set_up, run,
                                                                       fased_home, path, value):
    """tools.allow, allowFrom and object keys took newlines (the schema has no pattern for
    them), then printed them raw in `agent show`, `agent tools`, `channel routes`."""
    result = refused_and_unrecorded(run, fased_home, "config", "set", path, json.dumps(value))
    assert "fased.json" in result.stderr


def test_the_text_values_of_fased_json_keep_their_lines(set_up, ok):
    ok("config", "set", "agents.defaults.systemPrompt", json.dumps("Be brief.\nBe kind."))
    ok("config", "set", "hooks", json.dumps([{"id": "h", "on": "turn.completed",
                                              "run": "echo one\necho two"}]))
    ok("config", "set", "skills.entries", json.dumps({"s": {"env": {"PEM": "a\nb"}}}))


def test_a_user_time_zone_is_a_zone_that_exists(set_up, run, fased_home):
    """agents.defaults.userTimezone took any text ("Eu\\nrope") and went into the system
    prompt as it was; a heartbeat's zone was checked."""
    for zone, says in (("Eu\nrope", "holds a control character"),
                       ("Mars/Olympus", "unknown time zone 'Mars/Olympus'")):
        refused_and_unrecorded(run, fased_home, "config", "set", "agents.defaults.userTimezone",
                               json.dumps(zone), says=says)
    assert run("config", "set", "agents.defaults.userTimezone", '"Europe/Paris"').exit_code == 0


def test_a_hand_edit_with_a_newline_in_a_list_is_refused_naming_where(set_up, run):
    doc = json.loads((set_up / "fased.json").read_text())
    doc["tools"] = {"allow": ["re\nad"]}
    (set_up / "fased.json").write_text(json.dumps(doc))
    result = run("agent", "show")
    assert result.exit_code == 2, result.stderr
    assert "tools.allow[0]" in result.stderr and "holds a control character" in result.stderr


@pytest.mark.parametrize("path", ["agents.li\nst", "x\ty", "a\u001b[31m"])
def test_a_config_path_with_a_control_character_is_invalid(set_up, run, fased_home, path):
    for command in ("get", "unset"):
        result = refused_and_unrecorded(run, fased_home, "config", command, path,
                                        says="invalid config path")
        assert path not in result.stdout + result.stderr


def test_a_huge_config_path_is_clipped(set_up, run):
    result = run("config", "unset", "a" * 100000)
    assert result.exit_code == 0  # a key fased.json may hold, not set
    assert all(len(line) < 2000 for line in (result.stdout + result.stderr).splitlines())


def test_a_name_of_only_spaces_is_no_name(set_up, ok, run):
    """`agent create x --name "   "` kept a name of three spaces (a blank column in `agent
    list`); a blank name is no name, as an empty one is."""
    ok("agent", "create", "x", "--name", "   ")
    assert json.loads(ok("agent", "show", "x", "--json"))["name"] == "x"
    ok("task", "new", "--every", "1h", "--message", "hi", "--name", "   ")
    assert "(   )" not in ok("task", "list")


@pytest.mark.parametrize("args", [
    ("agent", "create", "y", "--workspace", "  "),
    ("setup", "-y", "--no-detect", "--workspace", " "),
    ("task", "new", "--every", "1h", "--message", "hi", "--deliver", "file: "),
])
def test_a_path_of_only_spaces_is_refused(set_up, run, fased_home, args, tmp_path,
                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused_and_unrecorded(run, fased_home, *args, says="")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(("fased",))) \
        == sorted(p.name for p in tmp_path.iterdir() if p.name.strip() and
                  not p.name.startswith("fased"))


@pytest.mark.parametrize(("key", "says"), [
    ("", "the idempotency key is empty"), ("  ", "the idempotency key is empty"),
    ("a\nb", "holds a control character"), ("k" * 300, "the idempotency key needs 1-256")])
def test_an_idempotency_key_is_one_line_of_text(set_up, run, fased_home, key, says):
    """`--idempotency-key ''` was a real key (a second, different command then failed with
    exit 3), while an empty FASED_IDEMPOTENCY_KEY is none; a key with a newline was kept."""
    refused_and_unrecorded(run, fased_home, "--idempotency-key", key, "agent", "create", "a",
                           says=says)


def test_an_alias_name_with_a_control_character_is_refused_as_an_alias(set_up, run,
                                                                      fased_home):
    result = refused_and_unrecorded(run, fased_home, "config", "set", "models.aliases",
                                    json.dumps({"a\nb": "ollama/x"}))
    assert "Hint: an alias is a name of one line of printable text" in result.stderr


@pytest.mark.parametrize("path", ["", " "])
def test_an_empty_model_path_is_said_empty(set_up, run, fased_home, path):
    """--model-path '' said ". is a directory, not a GGUF file"; ' ' said "no file  "."""
    refused_and_unrecorded(run, fased_home, "agent", "models", "providers", "add", "mine",
                           "--kind", "local", "--model-path", path, says="the model path ")


def test_a_hand_edited_relative_workspace_is_refused(set_up, run, ok):
    """A relative workspace written by hand was found from each command's working
    directory (from another one, `agent files` said every file was missing)."""
    doc = json.loads((set_up / "fased.json").read_text())
    doc["agents"]["list"][0]["workspace"] = "relws"
    (set_up / "fased.json").write_text(json.dumps(doc))
    result = run("agent", "files")
    assert result.exit_code == 2, result.stderr
    assert "agents.list[0].workspace: the workspace 'relws' is not an absolute path" \
        in result.stderr
    doc["agents"]["list"][0]["workspace"] = "~/ws"
    (set_up / "fased.json").write_text(json.dumps(doc))
    ok("agent", "files")
