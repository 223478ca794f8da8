"""`fased session new|list|switch|show|rename|delete|restore`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import error_line, events, fails, rows, run_process


def appended(home: Path, since: int) -> list[tuple[str, str, dict]]:
    return [(e["type"], e["stream"], e["data"]) for e in events(home)[since:]]


def current(home: Path, agent: str = "main") -> str | None:
    return rows(home, "SELECT current_session FROM agents WHERE id = ?", (agent,))[0][
        "current_session"]


def add_task(home: Path, task: str, agent: str, session: str) -> None:
    """A task row as the tasks projection would hold it (no task commands in this feature)."""
    con = sqlite3.connect(home / "state.db")
    con.execute("INSERT INTO tasks(id, agent, session, state) VALUES (?, ?, ?, 'active')",
                (task, agent, session))
    con.commit()
    con.close()


# -- new ---------------------------------------------------------------------------------------

def test_new_creates_and_switches(set_up, run):
    count = len(events(set_up))

    result = run("session", "new")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Created session s-1 and switched to it.\n"
    assert appended(set_up, count) == [
        ("session.created", "session:s-1", {"agent": "main", "session": "s-1", "name": None}),
        ("session.switched", "agent:main", {"agent": "main", "session": "s-1"}),
    ]
    assert rows(set_up, "SELECT id, agent, name, messages, input_tokens, output_tokens, deleted "
                        "FROM sessions") == [
        {"id": "s-1", "agent": "main", "name": None, "messages": 0, "input_tokens": 0,
         "output_tokens": 0, "deleted": 0}]
    assert current(set_up) == "s-1"


def test_new_with_name_agent_and_json(set_up, ok):
    ok("agent", "create", "ops")

    assert ok("session", "new", "--name", "daily") == (
        "Created session s-1 (daily) and switched to it.\n")
    report = json.loads(ok("session", "new", "--agent", "ops", "-n", "  triage  ", "--json"))

    assert report == {"session": "s-2", "agent": "ops", "name": "triage"}
    assert events(set_up)[-2]["data"] == {"agent": "ops", "session": "s-2", "name": "triage"}
    assert (current(set_up, "main"), current(set_up, "ops")) == ("s-1", "s-2")


@pytest.mark.parametrize(("args", "code", "message"), [
    (("--name", ""), 2, "Error: a session name needs 1-100 characters on one line"),
    (("--name", "x" * 101), 2, "Error: a session name needs 1-100 characters on one line"),
    (("--name", "a\nb"), 2, "Error: a session name needs 1-100 characters on one line"),
    (("--name", "s-7"), 2, "Error: 's-7' looks like a session id; pick another name"),
    (("--name", "daily"), 3, "Error: agent main already has a session named 'daily' (s-1)"),
    (("--agent", "nope"), 1, "Error: no agent 'nope'"),
    (("--bogus",), 2, "Error: No such option"),
])
def test_new_bad_input_appends_nothing(set_up, run, ok, args, code, message):
    ok("session", "new", "--name", "daily")
    assert fails(run, set_up, code, "session", "new", *args).startswith(message)


def test_new_before_setup(run, fased_home):
    result = run("session", "new")
    assert result.exit_code == 1
    assert error_line(result) == "Error: no agent yet"


def test_new_with_an_idempotency_key_creates_one_session(set_up):
    first = run_process("--idempotency-key", "n1", "session", "new", "--name", "once")
    again = run_process("--idempotency-key", "n1", "session", "new", "--name", "once")

    assert (first.returncode, again.returncode) == (0, 0), again.stderr
    assert first.stdout == again.stdout == "Created session s-1 (once) and switched to it.\n"
    assert rows(set_up, "SELECT id FROM sessions") == [{"id": "s-1"}]
    assert [e["meta"]["key"] for e in events(set_up) if e["type"].startswith("session.")] == [
        "n1", "n1"]


# -- list --------------------------------------------------------------------------------------

def test_list_table_and_json(set_up, ok):
    ok("agent", "create", "ops")
    ok("session", "new", "--name", "daily")
    ok("session", "new")
    ok("session", "new", "--agent", "ops")
    add_task(set_up, "task-1", "main", "s-1")

    lines = ok("session", "list").splitlines()
    assert lines[0].split() == ["ID", "NAME", "AGENT", "CREATED", "(UTC)", "UPDATED", "(UTC)",
                                "MESSAGES", "TOKENS", "IN/OUT", "TASKS", "STATE"]
    assert len(lines) == 3
    first, second = lines[1].split(), lines[2].split()
    assert first[:3] == ["s-1", "daily", "main"] and first[-3:] == ["0", "0/0", "1"]
    assert second[:3] == ["*", "s-2", "main"] and second[-3:] == ["0", "0/0", "0"]

    listed = json.loads(ok("session", "list", "--json"))
    assert [s["id"] for s in listed] == ["s-1", "s-2"]
    assert set(listed[0]) == {"id", "agent", "name", "current", "created_at", "updated_at",
                              "messages", "tokens", "tasks", "model_override", "queue_mode",
                              "deleted"}
    assert listed[0]["tokens"] == {"input": 0, "output": 0}
    assert (listed[0]["tasks"], listed[0]["current"], listed[1]["current"]) == (1, False, True)
    row = rows(set_up, "SELECT created_at, updated_at FROM sessions WHERE id = 's-1'")[0]
    assert (listed[0]["created_at"], listed[0]["updated_at"]) == (row["created_at"],
                                                                  row["updated_at"])

    ops = json.loads(ok("session", "list", "--agent", "ops", "--json"))
    assert [(s["id"], s["agent"], s["current"]) for s in ops] == [("s-3", "ops", True)]

    ok("session", "delete", "s-2")
    assert [s["id"] for s in json.loads(ok("session", "list", "--json"))] == ["s-1"]
    everything = json.loads(ok("session", "list", "--all", "--json"))
    assert [(s["id"], s["deleted"]) for s in everything] == [
        ("s-1", False), ("s-2", True), ("s-3", False)]
    assert ok("session", "list", "--all").splitlines()[2].split()[-1] == "deleted"


def test_list_empty_and_unknown_agent(set_up, run, ok):
    assert ok("session", "list") == ""
    assert json.loads(ok("session", "list", "--json")) == []
    assert fails(run, set_up, 1, "session", "list", "--agent", "nope") == (
        "Error: no agent 'nope'")


# -- switch ------------------------------------------------------------------------------------

def test_switch_by_id_and_name_per_agent(set_up, run, ok):
    ok("agent", "create", "ops")
    ok("session", "new", "--name", "daily")
    ok("session", "new")
    ok("session", "new", "--agent", "ops")
    count = len(events(set_up))

    assert ok("session", "switch", "daily") == "Switched to session s-1.\n"
    assert appended(set_up, count) == [
        ("session.switched", "agent:main", {"agent": "main", "session": "s-1"})]
    assert ok("session", "switch", "s-1") == "Session s-1 is already current.\n"
    assert len(events(set_up)) == count + 1
    assert ok("session", "switch", "s-2") == "Switched to session s-2.\n"
    # each agent keeps its own current session
    assert (current(set_up, "main"), current(set_up, "ops")) == ("s-2", "s-3")

    assert fails(run, set_up, 1, "session", "switch", "nope") == (
        "Error: no session 'nope' for agent main")
    assert fails(run, set_up, 2, "session", "switch", "s-3") == (
        "Error: session s-3 belongs to agent ops")
    assert ok("session", "switch", "s-3", "--agent", "ops") == "Session s-3 is already current.\n"
    ok("session", "delete", "daily")
    assert fails(run, set_up, 1, "session", "switch", "daily") == "Error: session daily is deleted"


def test_current_session_survives_across_processes(set_up, ok):
    ok("session", "new", "--name", "first")
    ok("session", "new")
    switched = run_process("session", "switch", "first")
    assert switched.returncode == 0, switched.stderr

    shown = run_process("session", "show", "--json")

    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert (detail["id"], detail["name"], detail["current"]) == ("s-1", "first", True)
    assert ok("session", "show").startswith("Session s-1 (first) of agent main [current]\n")


# -- show --------------------------------------------------------------------------------------

def test_show_text_and_json(set_up, run, ok):
    ok("session", "new", "--name", "daily")
    ok("session", "new")
    transcript = set_up / "agents" / "main" / "sessions" / "s-1.jsonl"

    lines = ok("session", "show", "daily").splitlines()
    assert lines[0] == "Session s-1 (daily) of agent main"
    created = rows(set_up, "SELECT created_at FROM sessions WHERE id = 's-1'")[0]["created_at"]
    shown = created[:19].replace("T", " ")  # to the second; --json keeps it whole
    assert lines[1:] == [
        f"  Created:    {shown} UTC",
        f"  Updated:    {shown} UTC",
        "  Messages:   0",
        "  Tokens:     0 in, 0 out",
        "  Model:      agent default",
        "  Queue mode: followup (default)",
        f"  Transcript: {transcript}",
    ]
    detail = json.loads(ok("session", "show", "s-1", "--json"))
    assert detail["transcript"] == str(transcript)
    assert (detail["task_list"], detail["last_messages"]) == ([], [])
    assert set(detail) >= {"id", "agent", "name", "current", "messages", "tokens", "tasks"}
    # without an id: the current session
    assert json.loads(ok("session", "show", "--json"))["id"] == "s-2"

    ok("session", "delete", "s-1")
    assert ok("session", "show", "s-1").splitlines()[0] == (
        "Session s-1 (daily) of agent main [deleted]")
    assert fails(run, set_up, 1, "session", "show", "nope") == (
        "Error: no session 'nope' for agent main")
    assert fails(run, set_up, 2, "session", "show", "-n", "-1").startswith("Error: Invalid value")


def test_show_without_any_session(set_up, run):
    result = run("session", "show")
    assert result.exit_code == 1
    assert error_line(result) == (
        "Error: agent main has no session yet (`fased session new` or `fased chat` creates one)")


# -- rename ------------------------------------------------------------------------------------

def test_rename(set_up, run, ok):
    ok("session", "new", "--name", "daily")
    ok("session", "new", "--name", "other")
    count = len(events(set_up))

    assert ok("session", "rename", "daily", "weekly") == "Renamed session daily to weekly.\n"
    assert appended(set_up, count) == [
        ("session.renamed", "session:s-1", {"agent": "main", "session": "s-1",
                                            "name": "weekly"})]
    assert rows(set_up, "SELECT name FROM sessions WHERE id = 's-1'") == [{"name": "weekly"}]
    assert ok("session", "switch", "weekly") == "Switched to session s-1.\n"
    ok("session", "rename", "s-1", "weekly")
    assert len(events(set_up)) == count + 2  # the rename to the same name appended nothing

    assert fails(run, set_up, 3, "session", "rename", "s-1", "other") == (
        "Error: agent main already has a session named 'other' (s-2)")
    assert fails(run, set_up, 2, "session", "rename", "s-1", "s-2") == (
        "Error: 's-2' looks like a session id; pick another name")
    assert fails(run, set_up, 2, "session", "rename", "s-1", " ") == (
        "Error: a session name needs 1-100 characters on one line")
    assert fails(run, set_up, 1, "session", "rename", "nope", "x") == (
        "Error: no session 'nope' for agent main")


# -- delete and restore ------------------------------------------------------------------------

def test_delete_is_soft_and_restore_brings_it_back(set_up, run, ok):
    ok("session", "new", "--name", "daily")
    count = len(events(set_up))

    assert ok("session", "delete", "daily") == (
        "Deleted session s-1 (restore with `fased session restore s-1`).\n")
    assert appended(set_up, count) == [
        ("session.deleted", "session:s-1", {"agent": "main", "session": "s-1",
                                            "cancelled_tasks": []})]
    assert rows(set_up, "SELECT deleted FROM sessions") == [{"deleted": 1}]
    assert current(set_up) is None
    assert json.loads(ok("session", "list", "--json")) == []
    assert fails(run, set_up, 1, "session", "delete", "s-1") == "Error: session s-1 is deleted"

    assert ok("session", "restore", "s-1") == "Restored session s-1.\n"
    assert events(set_up)[-1]["type"] == "session.restored"
    assert rows(set_up, "SELECT deleted, name FROM sessions") == [{"deleted": 0,
                                                                   "name": "daily"}]
    assert fails(run, set_up, 3, "session", "restore", "s-1") == (
        "Error: session s-1 is not deleted")
    assert fails(run, set_up, 1, "session", "restore", "s-9") == (
        "Error: no session 's-9' for agent main")
    assert fails(run, set_up, 1, "session", "delete", "s-9") == (
        "Error: no session 's-9' for agent main")


def test_restore_refuses_a_name_taken_meanwhile(set_up, run, ok):
    ok("session", "new", "--name", "daily")
    ok("session", "delete", "daily")
    ok("session", "new", "--name", "daily")

    assert fails(run, set_up, 3, "session", "restore", "s-1") == (
        "Error: agent main already has a session named 'daily' (s-2)")


def test_delete_is_protected_while_tasks_are_active(set_up, run, ok):
    ok("session", "new")
    add_task(set_up, "task-1", "main", "s-1")

    result = run("session", "delete", "s-1")

    assert result.exit_code == 3
    assert error_line(result) == "Error: session s-1 has 1 active task(s): task-1"
    assert "Hint: add --force" in result.stderr
    assert rows(set_up, "SELECT deleted FROM sessions") == [{"deleted": 0}]
    assert not any(e["type"] == "session.deleted" for e in events(set_up))

    count = len(events(set_up))
    assert ok("session", "delete", "s-1", "--force") == (
        "Deleted session s-1 and cancelled task(s) task-1 "
        "(restore with `fased session restore s-1`).\n")
    assert appended(set_up, count) == [
        ("task.cancelled", "task:task-1", {"task": "task-1", "agent": "main",
                                           "reason": "session deleted"}),
        ("session.deleted", "session:s-1", {"agent": "main", "session": "s-1",
                                            "cancelled_tasks": ["task-1"]}),
    ]
    assert rows(set_up, "SELECT state FROM tasks") == [{"state": "cancelled"}]


# -- model -------------------------------------------------------------------------------------

@pytest.fixture
def provider(set_up, ok, server):
    """Agent main answers with ollama/fake-model (the fake server lists fake-model and
    fake-small)."""
    ok("agent", "models", "providers", "add", "ollama", "--kind", "ollama", "--base-url",
       server.url)
    ok("agent", "models", "set", "primary", "ollama/fake-model")
    return set_up


def test_model_shows_sets_and_clears_the_session_override(provider, run, ok):
    home = provider
    ok("session", "new", "--name", "ops")
    assert ok("session", "model") == (
        "Session s-1 (ops) answers with the agent default ollama/fake-model (no override).\n")
    assert json.loads(ok("session", "model", "--json")) == {
        "agent": "main", "session": "s-1", "name": "ops", "override": None,
        "model": "ollama/fake-model"}

    since = len(events(home))
    result = run("session", "model", "ops", "set", "fake-small")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, "Session ops now answers with ollama/fake-small "
        "(`fased session model ops clear` to undo).\n", "")
    assert appended(home, since) == [("session.model_set", "session:s-1", {
        "agent": "main", "session": "s-1", "model": "ollama/fake-small"})]
    since = len(events(home))
    assert ok("session", "model", "s-1", "set", "ollama/fake-small") == (
        "Session ops already answers with ollama/fake-small.\n")
    assert appended(home, since) == []
    assert ok("session", "model", "ops") == (
        "Session s-1 (ops) answers with its override ollama/fake-small "
        "(the agent default is ollama/fake-model).\n")
    assert json.loads(ok("session", "model", "ops", "--json"))["override"] == (
        "ollama/fake-small")
    assert "  Model:      ollama/fake-small (override: `fased session model ops clear`)" in (
        ok("session", "show").splitlines())

    assert ok("session", "model", "ops", "clear") == (
        "Session ops: override cleared; it answers with the agent default "
        "ollama/fake-model.\n")
    assert appended(home, since) == [("session.model_set", "session:s-1", {
        "agent": "main", "session": "s-1", "model": None})]
    assert "  Model:      agent default (ollama/fake-model)" in ok("session", "show").splitlines()
    # Without an id: the current session; `set clear` is `clear`.
    ok("session", "model", "set", "ollama/fake-small")
    assert rows(home, "SELECT model_override FROM sessions") == [
        {"model_override": "ollama/fake-small"}]
    ok("session", "model", "set", "clear")
    since = len(events(home))
    assert ok("session", "model", "clear") == "Session ops has no override.\n"
    assert appended(home, since) == []


def test_model_warns_when_the_catalog_lacks_it(provider, run, ok):
    ok("agent", "models", "list")
    ok("session", "new")
    result = run("session", "model", "set", "fake-typo")
    assert result.exit_code == 0
    assert result.stdout.startswith("Session s-1 now answers with ollama/fake-typo")
    assert result.stderr.startswith(
        "note: ollama did not list 'fake-typo' when its models were last fetched")


@pytest.mark.parametrize(("args", "code", "message"), [
    (("ops", "set"), 2, "Error: set needs a model ref: fased session model [ID] set REF|clear"),
    (("set",), 2, "Error: set needs a model ref: fased session model [ID] set REF|clear"),
    (("ops", "use", "x"), 2, "Error: unknown action 'use': fased session model [ID] "
     "set REF|clear"),
    (("ops", "set", "a", "b"), 2, "Error: too many arguments: fased session model [ID] "
     "set REF|clear"),
    (("nope",), 1, "Error: no session 'nope' for agent main"),
    (("nope", "set", "fake-small"), 1, "Error: no session 'nope' for agent main"),
    (("ops", "set", "nowhere/x"), 2, "Error: unknown provider 'nowhere' in model ref "
     "'nowhere/x' (registered: ollama)"),
    (("ops", "set", " "), 2, "Error: empty model ref"),
    (("gone", "set", "fake-small"), 1, "Error: session gone is deleted"),
])
def test_model_bad_input_appends_nothing(provider, run, ok, args, code, message):
    ok("session", "new", "--name", "ops")
    ok("session", "new", "--name", "gone")
    ok("session", "delete", "gone")
    assert fails(run, provider, code, "session", "model", *args) == message


def test_model_without_any_session(provider, run):
    assert fails(run, provider, 1, "session", "model") == (
        "Error: agent main has no session yet (`fased session new` or `fased chat` creates one)")


def test_delete_withdraws_unanswered_turns_or_refuses_without_force(models, run, ok, server):
    ok("chat", "--queue", "first")
    ok("chat", "--queue", "second")
    queued = [e["data"]["turn"] for e in events(models) if e["type"] == "turn.queued"]

    assert fails(run, models, 3, "session", "delete", "s-1") == (
        "Error: session s-1 has 2 turn(s) waiting to be answered")
    assert "Hint: add --force to withdraw them and delete the session" in run(
        "session", "delete", "s-1").stderr

    count = len(events(models))
    assert ok("session", "delete", "s-1", "--force") == (
        "Deleted session s-1 and withdrew 2 unanswered turn(s) "
        "(restore with `fased session restore s-1`).\n")
    assert [(t, d.get("turn"), d.get("reason")) for t, _, d in appended(models, count)] == [
        ("turn.aborted", queued[0], "session deleted"),
        ("turn.aborted", queued[1], "session deleted"),
        ("session.deleted", None, None)]
    assert run("run", "--until-idle").exit_code == 0
    assert server.requests == []
    assert rows(models, "SELECT state FROM turns") == [{"state": "aborted"}] * 2


def test_delete_withdraws_a_parked_turn_and_denies_its_request(models, run, ok, server):
    from fakeserver import Reply

    server.script(Reply("", tool_calls=[("exec", json.dumps({"command": "touch parked"}))]),
                  Reply("ran it"))
    ok("chat", "--queue", "make the file")
    ok("session", "new", "--name", "other")
    add_task(models, "task-1", "main", "s-1")
    assert run("run", "--once", env={"FASED_NO_TTY": "1"}).exit_code == 0
    [approval] = [e["data"]["id"] for e in events(models) if e["type"] == "approval.requested"]

    result = run("session", "delete", "s-1")
    assert result.exit_code == 3
    assert error_line(result) == (
        "Error: session s-1 has 1 active task(s): task-1 and 1 turn(s) waiting to be answered")
    assert "Hint: add --force to cancel the tasks, withdraw the turns and delete the session" in (
        result.stderr)

    count = len(events(models))
    assert ok("session", "delete", "s-1", "--force") == (
        "Deleted session s-1 and cancelled task(s) task-1 and withdrew 1 unanswered turn(s) "
        "(restore with `fased session restore s-1`).\n")
    assert [(t, d.get("decision"), d.get("status"), d.get("reason"))
            for t, _, d in appended(models, count)] == [
        ("task.cancelled", None, None, "session deleted"),
        ("approval.decided", "denied", None, "session deleted"),
        ("tool.finished", None, "skipped", None),
        ("turn.aborted", None, None, "session deleted"),
        ("session.deleted", None, None, None)]
    assert json.loads(ok("approvals", "list", "--json")) == []
    assert rows(models, "SELECT state FROM approvals WHERE id = ?", (approval,)) == [
        {"state": "denied"}]
    assert run("run", "--until-idle", env={"FASED_NO_TTY": "1"}).exit_code == 0
    assert len(server.requests) == 1
    assert not (models / "workspace" / "parked").exists()


def test_deleting_an_agent_withdraws_its_unanswered_turns(models, run, ok, server):
    ok("agent", "create", "ops", "--model", "ollama/fake-model")
    ok("chat", "--agent", "ops", "--queue", "for ops")
    ok("chat", "--queue", "for main")

    assert ok("agent", "delete", "ops", "--force") == (
        "Deleted agent ops and withdrew 1 unanswered turn(s) "
        "(restore with `fased agent restore ops`).\n")
    aborted = [e["data"] for e in events(models) if e["type"] == "turn.aborted"]
    assert [(a["agent"], a["reason"]) for a in aborted] == [("ops", "agent deleted")]
    assert run("run", "--until-idle").exit_code == 0
    assert [r["json"]["messages"][-1]["content"] for r in server.requests] == ["for main"]
