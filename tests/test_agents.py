"""`fased agent create|list|show|use|set-identity|delete|restore|files`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import error_line, events, fails, read_json, rows, run_process

BOOTSTRAP = ["AGENTS.md", "SOUL.md", "TOOLS.md", "IDENTITY.md", "USER.md", "HEARTBEAT.md",
             "MEMORY.md", "BOOTSTRAP.md"]


def config_agents(home: Path) -> list[dict]:
    return read_json(home / "fased.json")["agents"]["list"]


# -- create ------------------------------------------------------------------------------------

def test_create_appends_events_rows_files_and_config(set_up, run, ok):
    ok("agent", "models", "providers", "add", "ollama")
    count = len(events(set_up))

    result = run("agent", "create", "ops", "--name", "Ops", "--emoji", "🛠",
                 "--model", "ollama/llama3.2")

    assert result.exit_code == 0, result.stderr
    ws = set_up / "workspace-ops"
    assert result.stdout == (f"Created agent ops (workspace {ws}; created "
                             f"{', '.join(BOOTSTRAP)}).\n")
    new = events(set_up)[count:]
    assert new[0]["type"] == "agent.created"
    assert new[0]["stream"] == "agent:ops"
    assert new[0]["data"] == {"agent": "ops", "name": "Ops", "emoji": "🛠",
                              "model": "ollama/llama3.2"}
    assert [(e["type"], e["data"]["file"]) for e in new[1:]] == [
        ("workspace.file_created", name) for name in BOOTSTRAP]
    assert rows(set_up, "SELECT id, position, name, emoji, workspace, primary_model, deleted "
                        "FROM agents WHERE id = 'ops'") == [
        {"id": "ops", "position": 2, "name": "Ops", "emoji": "🛠", "workspace": None,
         "primary_model": "ollama/llama3.2", "deleted": 0}]
    assert "- Name: Ops" in (ws / "IDENTITY.md").read_text()
    assert "- Emoji: 🛠" in (ws / "IDENTITY.md").read_text()
    assert config_agents(set_up)[1] == {"id": "ops", "name": "Ops", "identity": {"emoji": "🛠"},
                                        "model": {"primary": "ollama/llama3.2"}}
    # creating does not change the selected agent
    assert config_agents(set_up)[0] == {"id": "main", "name": "main", "default": True}


def test_create_with_workspace_and_use(set_up, run, tmp_path):
    ws = tmp_path / "research"

    result = run("agent", "create", "research", "--workspace", ws, "--use", "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    log = events(set_up)
    created = next(e for e in log if e["type"] == "agent.created" and e["data"]["agent"]
                   == "research")
    assert report == {
        "events": [created["seq"], created["seq"] + 1], "replayed": False,
        "message": f"Created agent research (workspace {ws}; created {', '.join(BOOTSTRAP)}).",
    }
    assert created["data"] == {"agent": "research", "name": "research", "workspace": str(ws)}
    assert log[created["seq"]]["type"] == "agent.selected"  # seq is 1-based: the next event
    assert rows(set_up, "SELECT value FROM kv WHERE key = 'selected_agent'") == [
        {"value": "research"}]
    assert sorted(os.listdir(ws)) == sorted(BOOTSTRAP)
    assert config_agents(set_up)[1] == {"id": "research", "name": "research", "default": True,
                                        "workspace": str(ws)}


@pytest.mark.parametrize("bad", ["Ops", "-ops", "_ops", "ops.x", "ops/x", "a" * 65, "ops x", "",
                                 "ops\n"])  # $ in a pattern matches before a last newline
def test_create_rejects_invalid_ids(set_up, run, bad):
    line = fails(run, set_up, 2, "agent", "create", "--", bad)
    assert line == f"Error: invalid agent id {bad!r}"


def test_create_accepts_the_longest_id(set_up, ok):
    ok("agent", "create", "a" * 64)
    assert rows(set_up, "SELECT id FROM agents WHERE position = 2") == [{"id": "a" * 64}]


def test_create_existing_or_deleted_agent_is_a_conflict(set_up, run, ok):
    ok("agent", "create", "ops")

    assert fails(run, set_up, 3, "agent", "create", "ops") == "Error: agent 'ops' already exists"
    assert fails(run, set_up, 3, "agent", "create", "main") == "Error: agent 'main' already exists"
    ok("agent", "delete", "ops")
    result = run("agent", "create", "ops")
    assert result.exit_code == 3
    assert error_line(result) == "Error: agent 'ops' already exists (deleted)"
    assert "Hint: `fased agent restore ops`" in result.stderr


def test_create_with_unknown_model_provider_appends_nothing(set_up, run):
    line = fails(run, set_up, 2, "agent", "create", "ops", "--model", "nosuch/model")
    assert "unknown provider 'nosuch'" in line


def test_two_processes_racing_to_create_the_same_agent(set_up):
    env = {**os.environ}
    code = "from fased.commands.entry import main; main()"
    for round_ in range(3):
        agent = f"ops{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", code, "agent", "create", agent],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env) for _ in range(2)]
        results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
        codes = sorted(r[0] for r in results)
        assert codes == [0, 3], results
        loser = next(r for r in results if r[0] == 3)
        assert loser[2].splitlines()[0] == f"Error: agent '{agent}' already exists"
        assert "Traceback" not in loser[2]
        created = [e for e in events(set_up)
                   if e["type"] == "agent.created" and e["data"]["agent"] == agent]
        assert len(created) == 1
        files = [e for e in events(set_up) if e["type"] == "workspace.file_created"
                 and e["data"]["agent"] == agent]
        assert sorted(e["data"]["file"] for e in files) == sorted(BOOTSTRAP)


def test_idempotency_key_replays_and_refuses_another_command(set_up):
    first = run_process("--idempotency-key", "k1", "agent", "create", "ops")
    count = len(events(set_up))
    again = run_process("--idempotency-key", "k1", "agent", "create", "ops")
    other = run_process("--idempotency-key", "k1", "agent", "create", "ops2")

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout.rstrip("\n") + " (already done: idempotency key)\n"
    assert other.returncode == 3
    assert other.stderr.splitlines()[0] == (
        "Error: idempotency key 'k1' was already used by another command "
        "(fased agent create ops)")
    assert len(events(set_up)) == count
    keys = [e["meta"].get("key") for e in events(set_up)[-9:]]
    assert keys == ["k1"] + ["k1#2"] * 8
    assert rows(set_up, "SELECT id FROM agents ORDER BY position") == [{"id": "main"},
                                                                       {"id": "ops"}]


def test_idempotent_rerun_in_process(set_up, run):
    first = run("--idempotency-key", "k7", "agent", "create", "ops", "--json")
    count = len(events(set_up))
    again = run("--idempotency-key", "k7", "agent", "create", "ops", "--json")

    assert first.exit_code == again.exit_code == 0, again.stderr
    assert len(events(set_up)) == count
    assert json.loads(again.stdout) == {**json.loads(first.stdout), "replayed": True}


def test_same_key_with_another_command_in_process_is_a_conflict(set_up, run):
    assert run("--idempotency-key", "k2", "agent", "create", "ops").exit_code == 0

    other = run("--idempotency-key", "k2", "agent", "create", "ops2")

    assert other.exit_code == 3
    assert "already used by another command" in other.stderr


# -- list and show -----------------------------------------------------------------------------

def test_list_table_json_and_all(set_up, ok):
    ok("agent", "create", "ops", "--name", "Ops")
    ok("session", "new", "--agent", "ops")

    lines = ok("agent", "list").splitlines()
    assert lines[0].split() == ["ID", "NAME", "EMOJI", "PRIMARY", "MODEL", "SESSIONS", "TASKS",
                                "STATE", "WORKSPACE"]
    assert lines[1].split() == ["*", "main", "main", "-", "0", "0", str(set_up / "workspace")]
    assert lines[2].split() == ["ops", "Ops", "-", "1", "0", str(set_up / "workspace-ops")]

    listed = json.loads(ok("agent", "list", "--json"))
    assert [a["id"] for a in listed] == ["main", "ops"]
    assert set(listed[1]) == {"id", "name", "emoji", "selected", "deleted", "workspace", "model",
                              "current_session", "sessions", "tasks", "created_at",
                              "updated_at"}
    assert listed[1]["model"] == {"primary": None, "fallbacks": [], "task": None}
    assert (listed[1]["selected"], listed[1]["sessions"], listed[1]["current_session"]) == (
        False, 1, "s-1")

    ok("agent", "delete", "ops", "--force")
    assert [a["id"] for a in json.loads(ok("agent", "list", "--json"))] == ["main"]
    everyone = json.loads(ok("agent", "list", "--all", "--json"))
    assert [(a["id"], a["deleted"]) for a in everyone] == [("main", False), ("ops", True)]
    assert ok("agent", "list", "--all").splitlines()[2].split()[-2] == "deleted"


def test_show_text_and_json(set_up, run, ok):
    ok("agent", "create", "ops", "--name", "Ops", "--emoji", "🛠")
    ok("session", "new", "--agent", "ops", "--name", "daily")

    lines = ok("agent", "show", "ops").splitlines()
    assert lines[0] == "🛠 Ops (ops)"
    assert lines[1] == f"  Workspace:     {set_up / 'workspace-ops'}"
    assert "  Sessions:      1 (current: s-1)" in lines
    assert "  Tasks:         0" in lines
    assert ok("agent", "show").splitlines()[0] == "main (main) [selected]"

    detail = json.loads(ok("agent", "show", "ops", "--json"))
    assert detail["id"] == "ops" and detail["emoji"] == "🛠" and detail["sessions"] == 1
    assert detail["task_list"] == [] and detail["skills"] == "all allowed (no policy)"

    assert fails(run, set_up, 1, "agent", "show", "nope") == "Error: no agent 'nope'"
    ok("agent", "delete", "ops", "--force")
    assert ok("agent", "show", "ops").splitlines()[0] == "🛠 Ops (ops) [deleted]"


def test_commands_before_setup_say_so(run, fased_home):
    result = run("agent", "show")
    assert result.exit_code == 1
    assert error_line(result) == "Error: no agent yet"
    assert "Hint: run `fased setup` first" in result.stderr
    assert run("agent", "list").stdout == ""


# -- use and set-identity ----------------------------------------------------------------------

def test_use_selects_an_agent(set_up, run, ok):
    ok("agent", "create", "ops")
    count = len(events(set_up))

    assert ok("agent", "use", "ops") == "Selected agent ops.\n"
    new = events(set_up)[count:]
    assert [(e["type"], e["stream"], e["data"]) for e in new] == [
        ("agent.selected", "agents", {"agent": "ops"})]
    assert rows(set_up, "SELECT value FROM kv WHERE key = 'selected_agent'") == [
        {"value": "ops"}]
    assert [a.get("default") for a in config_agents(set_up)] == [None, True]
    assert ok("agent", "show").startswith("ops (ops) [selected]")

    assert ok("agent", "use", "ops") == "Agent ops is already selected.\n"
    assert len(events(set_up)) == count + 1
    assert fails(run, set_up, 1, "agent", "use", "nope") == "Error: no agent 'nope'"
    ok("agent", "use", "main")
    ok("agent", "delete", "ops")
    assert fails(run, set_up, 1, "agent", "use", "ops") == "Error: agent 'ops' is deleted"


def test_set_identity(set_up, run, ok):
    ok("agent", "create", "ops", "--emoji", "🛠")
    count = len(events(set_up))

    assert ok("agent", "set-identity", "ops", "--name", "Ops Team", "--emoji", "🤖") == (
        "Identity updated.\n")
    new = events(set_up)[count:]
    assert [(e["type"], e["data"]) for e in new] == [
        ("agent.updated", {"agent": "ops", "name": "Ops Team", "emoji": "🤖"})]
    assert rows(set_up, "SELECT name, emoji FROM agents WHERE id = 'ops'") == [
        {"name": "Ops Team", "emoji": "🤖"}]
    assert config_agents(set_up)[1] == {"id": "ops", "name": "Ops Team",
                                        "identity": {"emoji": "🤖"}}

    assert ok("agent", "set-identity", "ops", "--name", "Ops Team") == "Nothing changed.\n"
    ok("agent", "set-identity", "ops", "--emoji", "")
    assert events(set_up)[-1]["data"] == {"agent": "ops", "emoji": None}
    assert config_agents(set_up)[1] == {"id": "ops", "name": "Ops Team"}
    ok("agent", "set-identity", "--name", "Boss")  # the selected agent
    assert rows(set_up, "SELECT name FROM agents WHERE id = 'main'") == [{"name": "Boss"}]

    assert fails(run, set_up, 2, "agent", "set-identity", "ops") == "Error: nothing to change"
    assert fails(run, set_up, 2, "agent", "set-identity", "ops", "--name", " ") == (
        "Error: --name must not be empty")
    assert fails(run, set_up, 1, "agent", "set-identity", "nope", "--name", "x") == (
        "Error: no agent 'nope'")


# -- delete and restore ------------------------------------------------------------------------

def test_delete_needs_force_with_sessions_and_restore_brings_it_back(set_up, run, ok):
    ok("agent", "create", "ops")
    ok("agent", "use", "ops")
    ok("session", "new")

    assert fails(run, set_up, 3, "agent", "delete", "ops") == (
        "Error: agent 'ops' has 1 session(s) and 0 active task(s)")
    count = len(events(set_up))
    assert ok("agent", "delete", "ops", "--force") == (
        "Deleted agent ops (restore with `fased agent restore ops`).\n")
    new = events(set_up)[count:]
    assert [(e["type"], e["data"]) for e in new] == [
        ("agent.deleted", {"agent": "ops", "force": True, "cancelled_tasks": []})]
    assert rows(set_up, "SELECT deleted FROM agents WHERE id = 'ops'") == [{"deleted": 1}]
    # the selection falls back to a live agent; the file lists live agents only
    assert rows(set_up, "SELECT value FROM kv WHERE key = 'selected_agent'") == [
        {"value": "main"}]
    assert [a["id"] for a in config_agents(set_up)] == ["main"]
    assert (set_up / "workspace-ops" / "SOUL.md").exists()  # soft: nothing removed

    assert ok("agent", "restore", "ops") == "Restored agent ops.\n"
    assert events(set_up)[-1]["type"] == "agent.restored"
    assert [a["id"] for a in config_agents(set_up)] == ["main", "ops"]
    sessions = rows(set_up, "SELECT id, agent, deleted FROM sessions")
    assert sessions == [{"id": "s-1", "agent": "ops", "deleted": 0}]


def test_delete_and_restore_errors(set_up, run, ok):
    assert fails(run, set_up, 3, "agent", "delete", "main") == (
        "Error: agent 'main' is the only agent left")
    ok("agent", "create", "ops")
    assert fails(run, set_up, 1, "agent", "delete", "nope") == "Error: no agent 'nope'"
    assert fails(run, set_up, 3, "agent", "restore", "ops") == "Error: agent 'ops' is not deleted"
    assert fails(run, set_up, 1, "agent", "restore", "nope") == "Error: no agent 'nope'"
    ok("agent", "delete", "ops")
    assert fails(run, set_up, 1, "agent", "delete", "ops") == "Error: agent 'ops' is deleted"
    assert fails(run, set_up, 2, "agent", "delete").startswith("Error: Missing argument")


def test_delete_refuses_an_agent_with_active_tasks(set_up, run, ok):
    ok("agent", "create", "ops")
    # no task commands in this feature: a task row as the tasks projection would hold it
    con = sqlite3.connect(set_up / "state.db")
    con.execute("INSERT INTO tasks(id, agent, session, state) VALUES ('task-1', 'ops', NULL, "
                "'active')")
    con.commit()
    con.close()

    assert fails(run, set_up, 3, "agent", "delete", "ops") == (
        "Error: agent 'ops' has 0 session(s) and 1 active task(s)")
    assert json.loads(ok("agent", "show", "ops", "--json"))["tasks"] == 1
    count = len(events(set_up))

    ok("agent", "delete", "ops", "--force")

    assert [(e["type"], e["data"]) for e in events(set_up)[count:]] == [
        ("task.cancelled", {"task": "task-1", "agent": "ops", "reason": "agent deleted"}),
        ("agent.deleted", {"agent": "ops", "force": True, "cancelled_tasks": ["task-1"]}),
    ]
    assert rows(set_up, "SELECT state FROM tasks") == [{"state": "cancelled"}]


# -- files -------------------------------------------------------------------------------------

def test_files_lists_states_and_sizes(set_up, ok):
    ws = set_up / "workspace"
    (ws / "BOOTSTRAP.md").unlink()

    lines = ok("agent", "files").splitlines()
    assert lines[0] == f"Workspace: {ws}"
    assert lines[1].split() == ["FILE", "STATE", "BYTES"]
    assert lines[2].split() == ["AGENTS.md", "present", str((ws / "AGENTS.md").stat().st_size)]
    assert lines[-1].split() == ["BOOTSTRAP.md", "deleted-by-user"]

    ok("agent", "create", "ops", "--workspace", set_up / "pre")
    (set_up / "pre" / "USER.md").unlink()
    listing = json.loads(ok("agent", "files", "ops", "--json"))
    assert set(listing) == {"agent", "workspace", "files"}
    assert (listing["agent"], listing["workspace"]) == ("ops", str(set_up / "pre"))
    assert [f["name"] for f in listing["files"]] == BOOTSTRAP
    user = listing["files"][4]
    assert user == {"name": "USER.md", "path": str(set_up / "pre" / "USER.md"),
                    "state": "deleted-by-user", "size": None}

    ok("config", "set", "agents.defaults.skipBootstrap", "true")
    ok("agent", "create", "bare", "--workspace", set_up / "bare")
    states = json.loads(ok("agent", "files", "bare", "--json"))["files"]
    assert {f["state"] for f in states} == {"missing"}


def test_files_show(set_up, run, ok):
    ws = set_up / "workspace"
    (ws / "SOUL.md").write_text("be kind\n")
    ok("agent", "create", "ops", "--name", "Ops")

    assert ok("agent", "files", "show", "SOUL.md") == "be kind\n"
    assert ok("agent", "files", "show", "soul.md") == "be kind\n"
    assert "- Name: Ops" in ok("agent", "files", "show", "IDENTITY.md", "--agent", "ops")

    (ws / "BOOTSTRAP.md").unlink()
    assert fails(run, set_up, 2, "agent", "files", "show", "BOOTSTRAP.md") == (
        f"Error: BOOTSTRAP.md is deleted-by-user in {ws}")
    assert fails(run, set_up, 2, "agent", "files", "show", "notes.md") == (
        "Error: 'notes.md' is not a bootstrap file")
    assert fails(run, set_up, 2, "agent", "files", "show") == (
        "Error: usage: fased agent files show NAME [--agent ID]")
    assert fails(run, set_up, 2, "agent", "files", "main", "ops") == (
        "Error: usage: fased agent files [ID]")
    assert fails(run, set_up, 1, "agent", "files", "nope") == "Error: no agent 'nope'"
