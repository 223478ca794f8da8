"""Heartbeat: HEARTBEAT.md drives a periodic turn per agent, fired by real `fased run --once`
processes under a pinned clock. What a user notices: the prompt the model got, the reply
printed or swallowed (HEARTBEAT_OK), no model call for an empty checklist, activeHours, each
due time fired once across runners, and `fased agent heartbeat`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import events, fails, rows, run_process, run_together, ts
from fakeserver import Reply

from fased.heartbeat import PROMPT, is_ack

FASED = [sys.executable, "-c", "from fased.commands.entry import main; main()"]
CHECKLIST = "# HEARTBEAT.md\n\n- [ ] Is the nightly build green?\n"


def chats(server) -> list[dict]:
    return [r for r in server.requests if r["path"].endswith("/chat")]


def of_type(home: Path, *types: str) -> list[dict]:
    return [e["data"] for e in events(home) if e["type"] in types]


def tick(when: str) -> subprocess.CompletedProcess:
    result = run_process("run", "--once", env={"FASED_NOW": when})
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def beating(at, models, ok):
    """Agent main with `heartbeat.every` 30m set at 08:00 and a checklist to follow."""
    (models / "workspace" / "HEARTBEAT.md").write_text(CHECKLIST)
    ok("config", "set", "agents.list[0].heartbeat", '{"every": "30m"}')
    return models


def test_off_by_default_nothing_fires_and_no_task_is_made(at, models, ok, server):
    (models / "workspace" / "HEARTBEAT.md").write_text(CHECKLIST)
    tick("2026-03-02T08:00:00Z")
    tick("2026-03-02T12:00:00Z")

    assert chats(server) == []
    assert rows(models, "SELECT * FROM tasks") == []
    assert "off" in ok("agent", "heartbeat")


def test_a_due_heartbeat_sends_the_prompt_in_the_main_session_and_ack_is_not_delivered(
        beating, ok, server):
    first = tick("2026-03-02T08:00:00Z")  # makes the task; due 30m after
    assert chats(server) == [] and first.stdout == ""
    (created,) = of_type(beating, "task.created")
    assert created["kind"] == "heartbeat" and created["session"] == "s-1"
    assert created["next_run"] == ts("2026-03-02T08:30:00Z")
    (session,) = of_type(beating, "session.created")  # its main session, made current
    assert session == {"agent": "main", "session": "s-1", "name": "main"}
    assert [r["id"] for r in json.loads(ok("session", "list", "--json")) if r["current"]] == [
        "s-1"]

    server.script(Reply("HEARTBEAT_OK"))
    result = tick("2026-03-02T08:30:00Z")

    (request,) = chats(server)
    assert request["json"]["messages"][-1]["content"] == PROMPT
    assert "Is the nightly build green?" in request["json"]["messages"][0]["content"]
    assert result.stdout == ""  # swallowed: never delivered
    assert of_type(beating, "task.delivered") == []
    (done,) = of_type(beating, "turn.completed")
    assert done["reply"] == "HEARTBEAT_OK" and done["session"] == "s-1"
    (run_,) = json.loads(ok("task", "history", "task-1", "--json"))
    assert run_["delivery"] == "acknowledged"

    tick("2026-03-02T08:30:00Z")  # the same due time again: nothing more
    tick("2026-03-02T08:45:00Z")
    assert len(chats(server)) == 1 and of_type(beating, "task.delivered") == []


def test_a_reply_that_needs_attention_is_delivered_like_a_task_reply(beating, server):
    tick("2026-03-02T08:00:00Z")
    server.script(Reply("The nightly build is red: test_login fails."))

    result = tick("2026-03-02T08:30:00Z")

    assert result.stdout == "The nightly build is red: test_login fails.\n"
    (delivered,) = of_type(beating, "task.delivered")
    assert delivered["ok"] and delivered["target"] == "stdout"


@pytest.mark.parametrize("reply", ["HEARTBEAT_OK", "  HEARTBEAT_OK.\n", "**HEARTBEAT_OK**",
                                   "HEARTBEAT_OK!", "`HEARTBEAT_OK`", "HEARTBEAT_OK ✅"])
def test_acknowledgements_with_whitespace_punctuation_or_markup_count(reply):
    assert is_ack(reply)


@pytest.mark.parametrize("reply", ["", "All fine.", "HEARTBEAT_OK, but the build is red",
                                   "The build is red. HEARTBEAT_OK", "HEARTBEAT_OKAY",
                                   "heartbeat ok"])
def test_anything_more_is_not_an_acknowledgement(reply):
    assert not is_ack(reply)


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("\n  \n", "empty"),
    ("# Heartbeat\n\n<!-- add checks here -->\n## Later\n", "empty"),
    (None, "the untouched template"),  # what setup wrote
])
def test_an_empty_checklist_skips_without_calling_the_model_once_per_due_time(
        at, models, ok, server, text, reason):
    path = models / "workspace" / "HEARTBEAT.md"
    if text is not None:
        path.write_text(text)
    ok("config", "set", "agents.list[0].heartbeat", '{"every": "30m"}')
    tick("2026-03-02T08:00:00Z")

    result = tick("2026-03-02T08:30:00Z")
    tick("2026-03-02T08:31:00Z")  # the same due time: no second record

    assert chats(server) == []  # no request reached the model server
    assert of_type(models, "turn.queued") == []
    (skip,) = of_type(models, "task.skipped")
    assert skip["reason"] == f"HEARTBEAT.md is {reason}"
    assert skip["occurrence"] == ts("2026-03-02T08:30:00Z")
    assert skip["next_run"] == ts("2026-03-02T09:00:00Z")
    assert f"skipped (task-1): HEARTBEAT.md is {reason}" in result.stderr
    replayed = run_process("replay", "--type", "task.skipped").stdout
    assert "task.skipped" in replayed

    tick("2026-03-02T09:00:00Z")  # the next due time: one more
    assert len(of_type(models, "task.skipped")) == 2
    path.write_text(CHECKLIST)
    tick("2026-03-02T09:30:00Z")  # something to check now: it runs
    assert len(chats(server)) == 1


def test_outside_active_hours_it_does_not_fire_and_records_nothing(at, models, ok, server):
    (models / "workspace" / "HEARTBEAT.md").write_text(CHECKLIST)
    ok("config", "set", "agents.list[0].heartbeat",
       '{"every": "1h", "activeHours": {"start": "09:30", "end": "22:00",'
       ' "timezone": "Europe/Berlin"}}')
    tick("2026-03-02T07:00:00Z")  # 08:00 in Berlin: the task is made
    before = len(events(models))

    tick("2026-03-02T08:00:00Z")  # due, but 09:00 in Berlin
    assert chats(server) == [] and len(events(models)) == before

    server.script(Reply("HEARTBEAT_OK"))
    tick("2026-03-02T08:30:00Z")  # 09:30 in Berlin: the due time fires now
    assert len(chats(server)) == 1
    tick("2026-03-02T21:00:00Z")  # 22:00 in Berlin: outside again
    assert len(chats(server)) == 1


def test_two_runners_started_together_fire_each_due_time_once(beating, server):
    tick("2026-03-02T08:00:00Z")
    run_together("2026-03-02T08:30:00Z", 3)

    assert len(of_type(beating, "task.fired")) == 1
    assert len(of_type(beating, "task.created")) == 1
    assert len(chats(server)) == 1


def test_changing_and_turning_it_off_follow_the_settings(beating, ok):
    tick("2026-03-02T08:00:00Z")
    ok("config", "set", "agents.list[0].heartbeat.every", "2h")
    tick("2026-03-02T08:10:00Z")
    (updated,) = of_type(beating, "task.updated")
    assert updated["schedule"]["expr"] == "2h"
    assert updated["next_run"] == ts("2026-03-02T10:10:00Z")

    ok("session", "new", "--name", "ops")  # another current session: the heartbeat stays
    tick("2026-03-02T08:15:00Z")
    assert len(of_type(beating, "task.updated")) == 1
    ok("session", "rename", "main", "old")  # no session is named main: a new one is made
    tick("2026-03-02T08:20:00Z")
    created = [d for d in of_type(beating, "session.created") if d["name"] == "main"]
    assert [d["session"] for d in created] == ["s-1", "s-3"]
    assert of_type(beating, "task.updated")[-1]["session"] == "s-3"

    tick("2026-03-02T08:25:00Z")  # nothing changed: nothing written
    assert len(of_type(beating, "task.updated")) == 2

    ok("config", "set", "agents.list[0].heartbeat.every", "0m")
    tick("2026-03-02T08:30:00Z")
    (cancelled,) = of_type(beating, "task.cancelled")
    assert cancelled["reason"] == "heartbeat turned off"


def test_its_task_is_changed_through_the_settings_only(beating, ok, run):
    tick("2026-03-02T08:00:00Z")
    line = fails(run, beating, 3, "task", "cancel", "task-1")
    assert "task task-1 is agent main's heartbeat" in line
    fails(run, beating, 3, "task", "edit", "task-1", "--every", "1h")
    ok("task", "pause", "task-1")  # pausing it is how to mute it for a while


def test_status_says_when_it_is_due_and_what_it_did_last(beating, ok, server, at):
    assert "made by the next `fased run` tick" in ok("agent", "heartbeat")
    tick("2026-03-02T08:00:00Z")
    server.script(Reply("HEARTBEAT_OK"))
    tick("2026-03-02T08:30:00Z")

    at("2026-03-02T08:40:00Z")
    info = json.loads(ok("agent", "heartbeat", "main", "--json"))
    assert info["enabled"] and info["every"] == "30m" and info["task"] == "task-1"
    assert info["session"] == "s-1" and info["next_due"] == ts("2026-03-02T09:00:00Z")
    assert info["last"]["result"].startswith("acknowledged")
    human = ok("agent", "heartbeat")
    assert "every 30m" in human and "2026-03-02 09:00:00 UTC" in human
    assert "acknowledged (HEARTBEAT_OK, not delivered)" in human


def test_a_bad_setting_is_refused_and_changes_nothing(at, models, run):
    fails(run, models, 2, "config", "set", "agents.list[0].heartbeat", '{"every": "soon"}')
    fails(run, models, 2, "config", "set", "agents.list[0].heartbeat",
          '{"every": "1h", "activeHours": {"start": "8am", "end": "22:00"}}')
    fails(run, models, 2, "config", "set", "agents.list[0].heartbeat", '{"every": "1000000w"}')
    line = fails(run, models, 2, "config", "set", "agents.list[0].heartbeat",
                 '{"every": "1h", "activeHours": {"start": "08:00", "end": "22:00",'
                 ' "timezone": "Mars/Olympus"}}')
    assert "agents.list[0].heartbeat" in line and "unknown time zone" in line


def test_a_runner_killed_mid_heartbeat_leaves_its_turn_to_the_next_and_it_fires_once(
        beating, server):
    import signal

    from conftest import wait_for
    from fakeserver import Hang

    tick("2026-03-02T08:00:00Z")
    server.script(Hang(30), Reply("HEARTBEAT_OK"))
    env = {**os.environ, "FASED_NOW": "2026-03-02T08:30:00Z"}
    runner = subprocess.Popen([*FASED, "run", "--once", "--lease", "1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: chats(server))
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=20)
    finally:
        runner.kill()

    result = tick("2026-03-02T08:30:05Z")  # the lease ran out: this runner answers it

    assert len(of_type(beating, "task.fired")) == 1
    assert [d["reply"] for d in of_type(beating, "turn.completed")] == ["HEARTBEAT_OK"]
    assert len(chats(server)) == 2 and result.stdout == ""


def test_dry_run_says_a_heartbeat_would_fire_or_skip_and_changes_nothing(at, models, ok,
                                                                         server):
    ok("config", "set", "agents.list[0].heartbeat", '{"every": "30m"}')
    plan = json.loads(ok("run", "--dry-run", "--json"))  # the task is not made yet
    assert plan["fires"] == [] and plan["skips"] == []
    tick("2026-03-02T08:00:00Z")
    before = events(models)

    at("2026-03-02T08:30:00Z")
    plan = json.loads(ok("run", "--dry-run", "--json"))
    assert plan["skips"] == [{"task": "task-1", "agent": "main",
                              "occurrence": ts("2026-03-02T08:30:00Z"),
                              "reason": "HEARTBEAT.md is the untouched template"}]
    assert "skip  task-1 (heartbeat of main)" in ok("run", "--dry-run")
    (models / "workspace" / "HEARTBEAT.md").write_text(CHECKLIST)
    plan = json.loads(ok("run", "--dry-run", "--json"))
    assert [f["task"] for f in plan["fires"]] == ["task-1"] and plan["skips"] == []
    assert events(models) == before and chats(server) == []


def test_the_main_session_is_the_one_named_main_whatever_is_current(at, models, ok, server):
    (models / "workspace" / "HEARTBEAT.md").write_text(CHECKLIST)
    server.script(Reply("noted"))
    ok("chat", "--no-stream", "hello")  # s-1, unnamed, current
    ok("session", "new", "--name", "main")  # s-2, current now
    ok("session", "switch", "s-1")
    ok("config", "set", "agents.list[0].heartbeat", '{"every": "30m"}')
    tick("2026-03-02T08:00:00Z")
    server.script(Reply("HEARTBEAT_OK"))
    tick("2026-03-02T08:30:00Z")

    (created,) = of_type(models, "task.created")
    assert created["session"] == "s-2"
    assert [d["session"] for d in of_type(models, "turn.completed")] == ["s-1", "s-2"]
    assert json.loads(ok("session", "show", "--json"))["id"] == "s-1"  # still current
