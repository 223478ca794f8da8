"""`fased run` in-process against the fake model server: queue order, filters, exit codes,
and the collect / followup / steer queue modes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import events, rows

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import Echo, FakeModelServer, Status


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as srv:
        srv.default = Echo()
        yield srv


def of_type(home: Path, *types: str) -> list[dict]:
    return [e for e in events(home) if e["type"] in types]


def queue(ok, *messages: str, session: str | None = None, agent: str | None = None) -> list[str]:
    """Queue messages with `fased chat --queue`; returns their turn ids."""
    opts = [*(["--session", session] if session else []), *(["--agent", agent] if agent else [])]
    return [ok("chat", "--queue", *opts, m).strip() for m in messages]


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def user_messages(request: dict) -> list[str]:
    return [m["content"] for m in request["json"]["messages"] if m["role"] == "user"]


def ts(event: dict) -> datetime:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))


def test_nothing_queued(models, run, server):
    result = run("run", "--once", "--json")

    assert result.exit_code == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert server.requests == []


def test_once_answers_oldest_first_one_json_line_per_turn(models, run, ok, server):
    ok("session", "new")
    ok("session", "new")
    [a] = queue(ok, "a", session="s-1")
    [b] = queue(ok, "b", session="s-2")
    [c] = queue(ok, "c", session="s-1")

    result = run("run", "--once", "--json")

    assert result.exit_code == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [(r["turn"], r["session"], r["state"], r["reply"]) for r in lines] == [
        (a, "s-1", "completed", "a"), (b, "s-2", "completed", "b"),
        (c, "s-1", "completed", "c")]
    assert all(r["model"] == "ollama/fake-model" and r["timings"]["latency_ms"] > 0
               for r in lines)
    assert [user_messages(r) for r in server.requests] == [["a"], ["b"], ["a", "c"]]
    assert result.stderr.splitlines()[-1] == "fased: 3 turn(s) answered, 0 failed"
    assert rows(models, "SELECT state FROM turns") == [{"state": "completed"}] * 3


def test_max_turns_stops_early(models, run, ok, server):
    turns = queue(ok, "a", "b", "c")

    result = run("run", "--until-idle", "--max-turns", "2", "--json")

    assert result.exit_code == 0, result.stderr
    assert [r["turn"] for r in json_lines(result.stdout)] == turns[:2]
    assert [r["state"] for r in rows(models, "SELECT state FROM turns ORDER BY queued_seq")] == [
        "completed", "completed", "queued"]


def test_agent_filter(models, run, ok, server):
    ok("agent", "create", "ops")
    ok("agent", "models", "set", "primary", "ollama/fake-model", "--agent", "ops")
    [mine] = queue(ok, "for ops", agent="ops")
    [other] = queue(ok, "for main")

    result = run("run", "--until-idle", "--agent", "ops", "--json")

    assert result.exit_code == 0, result.stderr
    assert [(r["turn"], r["agent"]) for r in json_lines(result.stdout)] == [(mine, "ops")]
    assert rows(models, "SELECT state FROM turns WHERE id = ?", (other,)) == [
        {"state": "queued"}]


def test_a_turn_where_every_model_failed_exits_5(models, run, ok, server):
    server.script(Status(500))
    failed, answered = queue(ok, "a", "b")

    result = run("run", "--until-idle", "--json")

    assert result.exit_code == 5
    assert "Traceback" not in result.stderr
    assert [(r["turn"], r["state"], r["error_class"]) for r in json_lines(result.stdout)] == [
        (failed, "failed", "models_failed"), (answered, "completed", None)]
    assert result.stderr.splitlines()[-1] == "fased: 1 turn(s) answered, 1 failed"


def test_followup_answers_each_message_in_its_own_turn(models, run, ok, server):
    turns = queue(ok, "one", "two", "three")

    result = run("run", "--until-idle", "--json")

    assert result.exit_code == 0, result.stderr
    assert [(r["turn"], r["reply"], r["merged"]) for r in json_lines(result.stdout)] == [
        (turns[0], "one", []), (turns[1], "two", []), (turns[2], "three", [])]
    assert [[(m["role"], m["content"]) for m in r["json"]["messages"] if m["role"] != "system"]
            for r in server.requests][-1] == [
        ("user", "one"), ("assistant", "one"), ("user", "two"), ("assistant", "two"),
        ("user", "three")]


def test_steer_behaves_like_followup(models, run, ok, server):
    ok("config", "set", "agents.defaults.queue", '{"mode":"steer","debounceMs":5000}')
    turns = queue(ok, "one", "two")

    result = run("run", "--until-idle", "--json")

    assert result.exit_code == 0, result.stderr
    assert [(r["turn"], r["merged"]) for r in json_lines(result.stdout)] == [
        (turns[0], []), (turns[1], [])]


def test_collect_merges_queued_messages_after_the_debounce(models, run, ok, server):
    ok("config", "set", "agents.defaults.queue", '{"mode":"collect","debounceMs":300}')
    first, *rest = queue(ok, "one", "two", "three")

    result = run("run", "--until-idle", "--json")

    assert result.exit_code == 0, result.stderr
    [line] = json_lines(result.stdout)
    assert (line["turn"], line["state"], line["merged"], line["reply"]) == (
        first, "completed", rest, "three")
    [request] = server.requests
    assert [(m["role"], m["content"]) for m in request["json"]["messages"]
            if m["role"] != "system"] == [("user", "one"), ("user", "two"), ("user", "three")]
    [started] = of_type(models, "turn.started")
    assert started["data"]["merged"] == rest
    last_queued = of_type(models, "turn.queued")[-1]
    assert (ts(started) - ts(last_queued)).total_seconds() >= 0.3
    [completed] = of_type(models, "turn.completed")
    assert completed["data"]["merged"] == rest
    assert rows(models, "SELECT id, state, merged_into FROM turns ORDER BY queued_seq") == [
        {"id": first, "state": "completed", "merged_into": None},
        {"id": rest[0], "state": "merged", "merged_into": first},
        {"id": rest[1], "state": "merged", "merged_into": first}]
    transcript = models / "agents" / "main" / "sessions" / "s-1.jsonl"
    lines = [json.loads(x) for x in transcript.read_text().splitlines()[1:]]
    assert [(m["id"], m["parent"]) for m in lines] == [
        (f"{first}:u", None), (f"{rest[0]}:u", f"{first}:u"), (f"{rest[1]}:u", f"{rest[0]}:u"),
        (f"{first}:a", f"{rest[1]}:u")]
    written = transcript.read_bytes()
    ok("replay", "--rebuild")
    assert transcript.read_bytes() == written


def test_collect_respects_the_cap(models, run, ok, server):
    ok("config", "set", "agents.defaults.queue", '{"mode":"collect","debounceMs":50,"cap":2}')
    turns = queue(ok, "one", "two", "three")

    result = run("run", "--until-idle", "--json")

    assert result.exit_code == 0, result.stderr
    assert [(r["turn"], r["merged"]) for r in json_lines(result.stdout)] == [
        (turns[0], [turns[1]]), (turns[2], [])]
    assert [user_messages(r) for r in server.requests] == [["one", "two"],
                                                           ["one", "two", "three"]]


def test_collect_per_session_mode(models, run, ok, server):
    ok("config", "set", "agents.defaults.queue", '{"mode":"collect","debounceMs":50}')
    ok("session", "new")
    ok("session", "new")
    merged = queue(ok, "a", "b", session="s-1")
    queue(ok, "c", session="s-2")

    result = run("run", "--until-idle", "--json")

    assert result.exit_code == 0, result.stderr
    assert sorted((r["session"], r["merged"]) for r in json_lines(result.stdout)) == [
        ("s-1", [merged[1]]), ("s-2", [])]


def test_chat_of_a_merged_message_prints_the_merged_reply(models, run, ok, server):
    ok("config", "set", "agents.defaults.queue", '{"mode":"collect","debounceMs":50}')
    queue(ok, "one")

    result = run("chat", "two")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "two\n"
    [completed] = of_type(models, "turn.completed")
    assert len(completed["data"]["merged"]) == 1
    assert [user_messages(r) for r in server.requests] == [["one", "two"]]


def test_run_json_lines_have_the_keys_of_chat_json(models, run, ok, server):
    """One record of a turn, whichever command answered it (and however it ended)."""
    chat = json.loads(ok("chat", "--json", "hi"))
    queue(ok, "later")
    [line] = json_lines(ok("run", "--once", "--json"))
    server.script(Status(400))
    queue(ok, "broken")
    [failed] = json_lines(run("run", "--once", "--json").stdout)

    assert set(line) == set(chat) == set(failed)
    assert (line["replayed"], line["approval"], failed["state"]) == (False, None, "failed")
    assert {k: v for k, v in line.items() if k not in ("turn", "reply", "timings", "usage")} == {
        k: v for k, v in chat.items() if k not in ("turn", "reply", "timings", "usage")}

