"""Pairing is an invariant: before every model request, every tool call in the history has
exactly one result, whatever happened (a runner dying before or after any write, while a tool
runs, a steering message, a denied or unknown tool, broken arguments, a failing model).

Hypothesis draws turns of random steps and random interruptions; a runner that "dies" is
followed by another whose clock is past the dead one's lease, as cron's next `fased run`
would be. Every request the server received is checked, and every recorded request rebuilt
by `replay --turn ID --request` too.
"""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakeserver import FakeModelServer, Reply, Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fased.commands.main import cli
from fased.timeparse import utc_now

CALLS = [
    ("read", '{"path": "notes.txt"}'),  # ok
    ("read", '{"path": "missing.txt"}'),  # error
    ("nosuch", "{}"),  # unknown tool
    ("read", "{broken"),  # bad JSON
    ("exec", '{"command": "echo hi"}'),  # ok (mode full)
    ("write", '{"path": "out.txt", "content": "x"}'),  # ok
]


class Crash(BaseException):
    """The runner's process dies here: nothing after this point runs."""


def check_pairing(messages: list[dict]) -> None:
    """Every assistant tool call is followed by exactly one result, each result by its call."""
    i = 0
    while i < len(messages):
        m = messages[i]
        assert m["role"] != "tool", f"a result without its call at {i}: {m}"
        calls = [c["id"] for c in m.get("tool_calls") or []]
        i += 1
        answered = []
        while i < len(messages) and messages[i]["role"] == "tool":
            answered.append(messages[i]["tool_call_id"])
            i += 1
        assert answered == calls, f"calls {calls} answered by {answered}"


def invoke(home: Path, *args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], input=input,
                                catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


turns = st.lists(
    st.tuples(
        st.lists(st.lists(st.sampled_from(range(len(CALLS))), min_size=1, max_size=3),
                 max_size=3),  # the steps of a turn, each with its calls
        st.one_of(st.none(), st.integers(0, 12)),  # crash at the Nth recording, or none
        st.booleans(),  # the crash comes after the write (True) or before it
        st.booleans(),  # a message is queued (steer mode) while the turn runs
        st.booleans(),  # the model fails once, mid-loop (a fallback takes the same history)
    ),
    min_size=1, max_size=3)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(plan=turns)
def test_every_request_pairs_every_call_with_one_result(plan, monkeypatch_module):
    from fased.runner import Runner
    from fased.store import Store

    with tempfile.TemporaryDirectory() as tmp, FakeModelServer() as server:
        home = Path(tmp) / "home"
        invoke(home, "setup", "-y", "--no-detect")
        invoke(home, "agent", "models", "providers", "add", "oa", "--kind",
               "openai-compatible", "--base-url", server.url + "/v1")
        invoke(home, "agent", "models", "set", "primary", "oa/fake-model")
        invoke(home, "agent", "models", "fallback", "add", "oa/fake-small")
        invoke(home, "config", "set", "agents.defaults.retries", "0")
        invoke(home, "config", "set", "agents.defaults.cooldownSeconds", "0")
        invoke(home, "config", "set", "tools", '{"exec": {"mode": "full"}}')
        invoke(home, "config", "set", "agents.defaults.queue", '{"mode": "steer"}')
        (home / "workspace" / "notes.txt").write_text("notes")
        clock = [utc_now()]
        server.default = Reply("done")
        for steps, crash_at, after_write, steer, fail in plan:
            replies = [Reply("", tool_calls=[CALLS[i] for i in calls]) for calls in steps]
            if fail and replies:
                replies.insert(1, Status(500))
            server.script(*replies, Reply("done"))
            invoke(home, "chat", "--queue", "go")
            if steer:
                invoke(home, "chat", "--queue", "steer me")
            recorded = [0]
            real = Runner.record_fenced

            def record(self, claim, drafts, real=real, crash_at=crash_at,
                       after_write=after_write, recorded=recorded):
                recorded[0] += 1
                if crash_at is not None and recorded[0] == crash_at + 1:
                    if after_write:
                        real(self, claim, drafts)
                    raise Crash
                real(self, claim, drafts)

            monkeypatch_module.setattr(Runner, "record_fenced", record)
            for _ in range(4):  # the first runner may die; the next ones take over
                store = Store(home)
                runner = Runner(store, clock=lambda: clock[0])
                try:
                    while (claim := runner.claim_next()) is not None:
                        runner.run(claim)
                    break
                except Crash:
                    clock[0] += timedelta(seconds=300)  # past the dead runner's lease
                finally:
                    store.close()
            monkeypatch_module.undo()
        for request in server.requests:
            check_pairing(request["json"]["messages"])
        queued = [json.loads(line)["data"]["turn"] for line in invoke(
            home, "replay", "--type", "turn.queued", "--json").splitlines()]
        for turn in queued:
            result = CliRunner().invoke(cli, ["--home", str(home), "replay", "--turn", turn,
                                              "--request", "--json"])
            if result.exit_code == 0:
                for request in json.loads(result.stdout):
                    check_pairing(request["messages"])
        assert invoke(home, "replay", "--verify") == "Projections match the log.\n"


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_the_pairing_check_itself_catches_a_call_without_a_result():
    with pytest.raises(AssertionError):
        check_pairing([{"role": "user", "content": "x"},
                       {"role": "assistant", "content": "", "tool_calls": [{"id": "a"}]},
                       {"role": "user", "content": "y"}])
    with pytest.raises(AssertionError):
        check_pairing([{"role": "tool", "tool_call_id": "a", "content": ""}])
    check_pairing([{"role": "assistant", "content": "", "tool_calls": [{"id": "a"}]},
                   {"role": "tool", "tool_call_id": "a", "content": "r"}])

