"""A turn whose runner was a process of this host that has ended (kill -9) is taken over at
once, not after its lease; a live runner, or one on another host, keeps its lease. A chat
that waits names the turn holding its session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import events, rows, run_process, wait_for
from fakeserver import Echo, Reply

pytestmark = pytest.mark.slow

FASED = [sys.executable, "-c", "from fased.commands.entry import main; main()"]


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*FASED, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def of_type(home: Path, etype: str) -> list[dict]:
    return [e["data"] for e in events(home) if e["type"] == etype]


def test_a_chat_killed_during_a_tool_call_frees_its_session_at_once(models, ok, server):
    ok("config", "set", "tools.exec.mode", "full")
    server.script(Reply("", tool_calls=[("exec", json.dumps(
                      {"command": "sleep 3; echo x >> marker"}))]),
                  Reply("after tool"))
    server.default = Echo()
    first = spawn("chat", "go")  # the default lease: 60 s
    try:
        wait_for(lambda: of_type(models, "tool.started"))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
        first.communicate(timeout=10)
    [go] = [d["turn"] for d in of_type(models, "turn.queued")]

    began = time.monotonic()
    second = run_process("chat", "second", timeout=60)

    assert second.returncode == 0, second.stderr
    assert time.monotonic() - began < 20  # not the dead runner's 60 s lease
    assert second.stdout == "second\n"
    assert f"fased: answering the earlier queued turn {go} of session s-1 first" in (
        second.stderr.splitlines())
    assert "waiting for another runner" not in second.stderr
    started = [d for d in of_type(models, "turn.started") if d["turn"] == go]
    assert [(d["claim"], d["pid"]) for d in started] == [(1, first.pid), (2, started[1]["pid"])]
    assert started[1]["pid"] != first.pid
    [finished] = of_type(models, "tool.finished")
    assert finished["status"] == "interrupted"
    assert len(of_type(models, "tool.started")) == 1  # never run again
    assert rows(models, "SELECT id, state, reply FROM turns ORDER BY queued_seq") == [
        {"id": go, "state": "completed", "reply": "after tool"},
        {"id": of_type(models, "turn.queued")[1]["turn"], "state": "completed",
         "reply": "second"}]


def test_a_waiting_chat_names_the_turn_that_holds_its_session(models, ok, server):
    server.script(Reply("slow " * 15, delay=0.1))
    server.default = Echo()
    earlier = ok("chat", "--queue", "earlier").strip()
    runner = spawn("run", "--until-idle", "--poll", "0.05")
    try:
        wait_for(lambda: server.requests)
        chat = run_process("chat", "later")
    finally:
        runner.communicate(timeout=30)

    assert chat.returncode == 0, chat.stderr
    later = of_type(models, "turn.queued")[1]["turn"]
    assert (f"fased: waiting for another runner to finish turn {earlier} of session s-1"
            in chat.stderr.splitlines()), chat.stderr
    assert later not in chat.stderr


def test_a_live_runner_that_stops_responding_keeps_its_lease(models, ok, server):
    """Only a process that has ended is taken over early: one stopped (SIGSTOP) is alive,
    and its turn waits for the lease to run out."""
    server.script(Reply("slow " * 40, delay=0.1))
    [turn] = [ok("chat", "--queue", "hi").strip()]
    first = spawn("run", "--until-idle", "--lease", "3", "--poll", "0.1")
    try:
        wait_for(lambda: server.requests)
        first.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        second = run_process("run", "--until-idle", "--lease", "5", "--poll", "0.1", "--json")
    finally:
        first.send_signal(signal.SIGCONT)
        first.communicate(timeout=30)

    assert second.returncode == 0, second.stderr
    assert time.monotonic() - stopped_at >= 2  # it waited for most of the 3 s lease
    started = [d for d in of_type(models, "turn.started") if d["turn"] == turn]
    assert [(d["claim"], d["pid"]) for d in started] == [(1, first.pid), (2, started[1]["pid"])]
    takeover = next(e for e in events(models) if e["type"] == "turn.started"
                    and e["data"]["claim"] == 2)
    first_leases = [e["data"]["lease_until"] for e in events(models)
                    if e["type"] in ("turn.started", "turn.lease_extended")
                    and e["data"]["runner"] == started[0]["runner"] and e["seq"] < takeover["seq"]]
    assert takeover["ts"] >= max(first_leases)


def ended_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def claimed_by(home: Path, ok, runner: str) -> str:
    """A queued turn, then recorded as claimed by `runner` under a 60 s lease."""
    from datetime import timedelta

    from fased.store import Draft, Store
    from fased.timeparse import format_ts, utc_now

    turn = ok("chat", "--queue", "hi").strip()
    host, pid, _ = runner.rsplit(":", 2)
    data = {"turn": turn, "agent": "main", "session": "s-1", "runner": runner,
            "pid": int(pid), "host": host, "claim": 1, "models": ["ollama/fake-model"],
            "lease_until": format_ts(utc_now() + timedelta(seconds=60))}
    store = Store(home)
    try:
        store.append_internal([Draft("turn.started", "session:s-1", data)])
    finally:
        store.close()
    return turn


@pytest.mark.parametrize(("host", "ns", "taken"), [
    (os.uname().nodename, "own", True), ("elsewhere", "own", False),
    (os.uname().nodename, "1a2b3c", False),  # a container of the same name, its own pids
    (os.uname().nodename, "", False)],  # an id without its namespace: the lease decides
    ids=["this-host", "another-host", "another-pid-namespace", "no-namespace"])
def test_only_a_runner_of_this_host_is_known_to_be_gone(models, ok, run, server, host, ns,
                                                        taken):
    from fased.leases import namespace

    server.default = Echo()
    tail = {"own": f"{namespace()}-abcdef", "": "abcdef"}.get(ns, f"{ns}-abcdef")
    turn = claimed_by(models, ok, f"{host}:{ended_pid()}:{tail}")

    result = run("run", "--once", "--json")

    assert result.exit_code == 0, result.stderr
    shown = [json.loads(x) for x in result.stdout.splitlines()]
    if taken:
        assert [(x["turn"], x["state"], x["reply"]) for x in shown] == [(turn, "completed", "hi")]
        assert [d["claim"] for d in of_type(models, "turn.started")] == [1, 2]
    else:
        assert shown == []
        assert rows(models, "SELECT state, claims FROM turns") == [
            {"state": "running", "claims": 1}]
        assert server.requests == []


def test_a_chat_behind_a_parked_turn_says_it_waits_for_an_approval(models, ok, run, server):
    ok("config", "set", "tools.exec.mode", "ask")
    server.script(Reply("", tool_calls=[("exec", json.dumps({"command": "touch f"}))]))
    parked = ok("chat", "--queue", "make the file").strip()
    assert run("run", "--once", env={"FASED_NO_TTY": "1"}).exit_code == 0
    chat = spawn("chat", "later")
    try:
        line = chat.stderr.readline()  # then it waits, until Ctrl-C
        chat.send_signal(signal.SIGINT)
        _, rest = chat.communicate(timeout=15)
    finally:
        chat.kill()

    assert line == (f"fased: waiting for turn {parked} of session s-1: it awaits an "
                    "approval (`fased approvals`)\n"), line + rest
    assert chat.returncode == 130
    assert rows(models, "SELECT state FROM turns ORDER BY queued_seq") == [
        {"state": "parked"}, {"state": "aborted"}]


def test_a_channel_turn_whose_runner_is_gone_is_answered_by_the_next_poll_at_once(
        models, ok, run, server):
    """The channel poller asks which sessions are ready the way `run` does: a turn held by
    a runner of this host that is gone is not left for its whole lease."""
    from datetime import timedelta

    from fakebotapi import TOKEN, FakeBotAPI

    from fased.leases import namespace
    from fased.store import Draft, Store
    from fased.timeparse import format_ts, utc_now

    with FakeBotAPI() as api:
        ok("channel", "add", "telegram", "--token-stdin", "--api-base", api.url, input=TOKEN)
        ok("config", "set", "channels.telegram.dmPolicy", "open")
        api.message(7, "are you there")
        ok("channel", "poll", "--no-answer")
        [turn] = rows(models, "SELECT id, session FROM turns WHERE state = 'queued'")
        pid = ended_pid()
        store = Store(models)
        try:
            store.append_internal([Draft("turn.started", f"session:{turn['session']}", {
                "turn": turn["id"], "agent": "main", "session": turn["session"],
                "runner": f"{os.uname().nodename}:{pid}:{namespace()}-abcdef", "pid": pid,
                "host": os.uname().nodename, "claim": 1, "models": ["ollama/fake-model"],
                "lease_until": format_ts(utc_now() + timedelta(seconds=60))})])
        finally:
            store.close()
        server.script(Reply("yes, here"))

        result = run("channel", "poll", env={"FASED_NO_TTY": "1"})

        assert result.exit_code == 0, result.stderr
        assert api.texts(7) == ["yes, here"]
        assert [d["claim"] for d in of_type(models, "turn.started")] == [1, 2]
