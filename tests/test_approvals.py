"""Approvals that survive the terminal going away: a call that needs asking where nobody can
be asked parks its turn; a decision from another process resumes it; requests expire; an
approval can grant its exact command for a while or for good."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import events, rows, run_process, wait_for
from fakeserver import Reply

FASED = [sys.executable, "-c", "from fased.commands.entry import main; main()"]
NO_TTY = {"FASED_NO_TTY": "1"}


def of_type(home: Path, *types: str) -> list[dict]:
    return [e["data"] for e in events(home) if e["type"] in types]


def exec_call(command: str) -> Reply:
    return Reply("", tool_calls=[("exec", json.dumps({"command": command}))])


def later(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def parked(models, ok, run, server):
    """A turn parked on `touch approved-file`: (home, approval id, turn id)."""
    server.script(exec_call("touch approved-file"), Reply("ran it"))
    turn = ok("chat", "--queue", "make the file").strip()
    result = run("run", "--once", env=NO_TTY)
    assert result.exit_code == 0, result.stderr
    [request] = of_type(models, "approval.requested")
    assert f"waits for approval {request['id']}" in result.stderr
    return models, request["id"], turn


def test_a_call_nobody_can_be_asked_about_parks_its_turn(parked, ok, run, server):
    home, approval, turn = parked

    assert rows(home, "SELECT state FROM turns") == [{"state": "parked"}]
    assert not (home / "workspace" / "approved-file").exists()
    listed = json.loads(ok("approvals", "list", "--json"))
    assert [(a["id"], a["state"], a["command"], a["turn"]) for a in listed] == [
        (approval, "pending", "touch approved-file", turn)]
    assert of_type(home, "tool.started") == []
    # the session waits for it: a later message is not answered first
    ok("chat", "--queue", "later message")
    assert run("run", "--once", env=NO_TTY).exit_code == 0
    assert len(server.requests) == 1


def test_an_approval_from_another_process_resumes_the_turn(parked, ok, server):
    home, approval, _ = parked

    done = run_process("approvals", "approve", approval)
    assert done.returncode == 0, done.stderr
    assert f"Approved {approval}" in done.stdout
    assert run_process("run", "--once", env=NO_TTY).returncode == 0

    assert (home / "workspace" / "approved-file").exists()
    [started] = of_type(home, "tool.started")
    assert started["approval"].startswith(f"approved ({approval}")
    assert of_type(home, "turn.completed")[0]["reply"] == "ran it"
    assert "approved-file" not in json.dumps(server.requests[0]["json"]["messages"][-1])
    assert json.loads(ok("approvals", "list", "--json")) == []


def test_a_denial_is_the_call_s_result_and_nothing_runs(parked, ok, run):
    home, approval, _ = parked

    ok("approvals", "deny", approval, "--reason", "not on this machine")
    assert run("run", "--once", env=NO_TTY).exit_code == 0

    assert not (home / "workspace" / "approved-file").exists()
    [finished] = of_type(home, "tool.finished")
    assert finished["status"] == "denied"
    assert "not on this machine" in finished["result"]
    assert rows(home, "SELECT state FROM turns") == [{"state": "completed"}]


def test_a_request_nobody_decides_expires_as_denied(parked, ok, run):
    home, approval, _ = parked

    result = run("run", "--once", env={**NO_TTY, "FASED_NOW": later(61)})

    assert result.exit_code == 0, result.stderr
    [decided] = of_type(home, "approval.decided")
    assert decided["decision"] == "expired"
    [finished] = of_type(home, "tool.finished")
    assert finished["status"] == "denied" and "expired" in finished["result"]
    late = run("approvals", "approve", approval)
    assert late.exit_code == 3 and "already expired" in late.stderr


def test_deciding_twice_or_an_unknown_id_is_an_error(parked, ok, run):
    _, approval, _ = parked
    ok("approvals", "approve", approval)
    again = run("approvals", "deny", approval)
    assert again.exit_code == 3 and f"approval {approval} is already approved" in again.stderr
    unknown = run("approvals", "approve", "a-00000000")
    assert unknown.exit_code == 1 and "no approval 'a-00000000'" in unknown.stderr


def test_a_runner_killed_while_a_turn_is_parked_loses_nothing(models, ok, server):
    server.script(exec_call("touch survived"), Reply("ok"))
    ok("chat", "--queue", "go")
    runner = subprocess.Popen([*FASED, "run", "--poll", "0.1"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**os.environ, **NO_TTY})
    try:
        wait_for(lambda: of_type(models, "approval.requested"))
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
    finally:
        runner.kill()
        runner.communicate()
    [request] = of_type(models, "approval.requested")

    ok("approvals", "approve", request["id"])
    assert run_process("run", "--once", env=NO_TTY).returncode == 0

    assert (models / "workspace" / "survived").exists()
    assert rows(models, "SELECT state FROM turns") == [{"state": "completed"}]


def test_a_waiting_chat_resumes_when_another_terminal_approves(models, ok, server):
    server.script(exec_call("touch from-chat"), Reply("all done"))
    chat = subprocess.Popen([*FASED, "chat", "do it"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **NO_TTY})
    request = wait_for(lambda: of_type(models, "approval.requested"))[0]

    ok("approvals", "approve", request["id"])
    out, err = chat.communicate(timeout=30)

    assert chat.returncode == 0, err
    assert out == "all done\n"
    assert f"fased approvals approve {request['id']}" in err
    assert (models / "workspace" / "from-chat").exists()


def test_always_grants_exactly_that_command_until_it_is_removed(parked, ok, run, server):
    home, approval, _ = parked

    out = ok("approvals", "approve", approval, "--always")
    assert "Allowed from now on as g-" in out
    assert run("run", "--once", env=NO_TTY).exit_code == 0
    [grant] = json.loads(ok("approvals", "allowlist", "--json"))
    assert (grant["entries"], grant["source"]) == (["touch approved-file"],
                                                    f"approval {approval}")

    server.script(exec_call("touch approved-file"), Reply("again"),
                  exec_call("touch approved-file-2"), Reply("not this one"))
    ok("chat", "--queue", "same command")
    ok("chat", "--queue", "another command")
    assert run("run", "--once", env=NO_TTY).exit_code == 0
    requests = of_type(home, "approval.requested")
    assert [r["command"] for r in requests] == ["touch approved-file", "touch approved-file-2"]
    assert of_type(home, "turn.completed")[-1]["reply"] == "again"

    ok("approvals", "allowlist", "remove", grant["id"])
    assert json.loads(ok("approvals", "allowlist", "--json")) == []


def test_for_grants_a_command_for_a_while(parked, ok, run, server):
    home, approval, _ = parked
    ok("approvals", "approve", approval, "--for", "30m")
    assert run("run", "--once", env=NO_TTY).exit_code == 0

    server.script(exec_call("touch approved-file"), Reply("in time"),
                  exec_call("touch approved-file"), Reply("too late"))
    ok("chat", "--queue", "within the half hour")
    assert run("run", "--once", env={**NO_TTY, "FASED_NOW": later(10)}).exit_code == 0
    assert len(of_type(home, "approval.requested")) == 1
    ok("chat", "--queue", "after it", env={"FASED_NOW": later(40)})
    assert run("run", "--once", env={**NO_TTY, "FASED_NOW": later(40)}).exit_code == 0
    assert len(of_type(home, "approval.requested")) == 2


@pytest.mark.parametrize("command", ["bash -c 'echo hi'", "python3 -c 'print(1)'",
                                     "rm -rf $DIR", "make `cat target`"])
def test_always_refuses_inline_code_or_an_expansion(models, ok, run, server, command):
    server.script(exec_call(command), Reply("x"))
    ok("chat", "--queue", "go")
    run("run", "--once", env=NO_TTY)
    [request] = of_type(models, "approval.requested")

    result = run("approvals", "approve", request["id"], "--always")

    assert result.exit_code == 2
    assert "cannot allow" in result.stderr and "approve it once" in result.stderr
    assert of_type(models, "approval.decided") == []
