"""`fased session export`: a session as a readable Markdown transcript, its raw event lines, or
one JSON document; for deleted sessions too, and without writing anything."""

from __future__ import annotations

import json

import pytest
from conftest import error_line, events, fails
from fakeserver import Reply, Status


def call(name: str, **args) -> tuple[str, str]:
    return (name, json.dumps(args))


@pytest.fixture
def chatted(models, ok, server):
    """Session s-1 (named ops): a turn with a read call, then a plain turn."""
    ok("session", "new", "--name", "ops")
    (models / "workspace" / "notes.txt").write_text("the answer is 42\n")
    server.script(Reply("Let me look.", tool_calls=[call("read", path="notes.txt")]),
                  Reply("The notes say 42."), Reply("You are welcome."))
    ok("chat", "--no-stream", "what do my notes say?")
    ok("chat", "--no-stream", "thanks")
    return models


def test_markdown_shows_messages_tool_calls_results_times_and_models(chatted, ok):
    out = ok("session", "export", "ops")
    turns = [e for e in events(chatted) if e["type"] == "turn.queued"]
    first = turns[0]["ts"][:19].replace("T", " ")

    assert out.startswith("# Session s-1 (ops), agent main\n")
    assert f"## User · {first} UTC\n\nwhat do my notes say?\n" in out
    assert "## Assistant · " in out and "· ollama/fake-model\n" in out
    assert "Let me look.\n" in out
    assert "**Tool call** `read`" in out
    assert '{"path": "notes.txt"}' in out
    assert "the answer is 42" in out
    assert out.index("Let me look.") < out.index("the answer is 42") < out.index(
        "The notes say 42.")
    assert out.index("The notes say 42.") < out.index("thanks") < out.index("You are welcome.")


def test_long_tool_results_are_cut_with_a_marker_unless_asked_for_whole(models, ok, server):
    (models / "workspace" / "big.txt").write_text("".join(f"{n:04d}" + "x" * 45 + "\n"
                                                          for n in range(100)))
    server.script(Reply("", tool_calls=[call("read", path="big.txt")]), Reply("Big."))
    ok("chat", "--no-stream", "read big.txt")
    doc = json.loads(ok("session", "export", "--format", "json"))
    result = doc["turns"][0]["steps"][0]["calls"][0]["result"]
    assert len(result) > 4000

    cut = ok("session", "export", "s-1")
    marker = f"[... {len(result) - 2000} more characters; --max-chars 0 shows all]"
    assert f"{result[:2000]}\n{marker}\n```" in cut
    assert result[:2001] not in cut
    whole = ok("session", "export", "s-1", "--max-chars", "0")
    assert result.rstrip("\n") in whole and "more characters" not in whole


def test_jsonl_is_the_sessions_event_lines_from_the_log(chatted, ok):
    out = ok("session", "export", "ops", "--format", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    expected = [e for e in events(chatted) if e["stream"] == "session:s-1"
                or e["data"].get("session") == "s-1"]

    assert [e["seq"] for e in lines] == [e["seq"] for e in expected]
    assert lines[0]["type"] == "session.created"
    assert {"turn.queued", "turn.step", "tool.started", "tool.finished",
            "turn.completed"} <= {e["type"] for e in lines}
    assert lines == json.loads("[" + ",".join(
        ok("replay", "--session", "s-1", "--json").splitlines()) + "]")


def test_json_is_one_document_with_turns_steps_and_calls(chatted, ok):
    doc = json.loads(ok("session", "export", "s-1", "--format", "json"))

    assert doc["session"]["id"] == "s-1" and doc["session"]["name"] == "ops"
    assert doc["session"]["agent"] == "main" and doc["session"]["deleted"] is False
    first, second = doc["turns"]
    assert first["message"] == "what do my notes say?"
    assert first["reply"] == "The notes say 42." and first["model"] == "ollama/fake-model"
    assert first["state"] == "completed" and first["queued_at"] and first["finished_at"]
    (step,) = first["steps"]
    assert step["text"] == "Let me look."
    (c,) = step["calls"]
    assert (c["name"], c["arguments"], c["status"], c["result"]) == (
        "read", {"path": "notes.txt"}, "ok", "the answer is 42")
    assert second["message"] == "thanks" and second["steps"] == []


def test_a_deleted_session_is_exported_from_what_the_log_still_has(chatted, ok):
    ok("session", "new")
    ok("session", "delete", "ops")

    out = ok("session", "export", "ops")
    assert out.startswith("# Session s-1 (ops), agent main [deleted]\n")
    assert "The notes say 42." in out
    assert json.loads(ok("session", "export", "s-1", "--format", "json"))["session"][
        "deleted"] is True


def test_a_failed_turn_shows_its_error(models, ok, run, server):
    server.script(Status(400, "bad things"))
    assert run("chat", "--no-stream", "hello").exit_code != 0

    out = ok("session", "export")
    assert "hello" in out
    assert "**Failed**" in out and "bad things" in out


def test_output_file_gets_the_export_and_stdout_stays_empty(chatted, ok, run, tmp_path):
    target = tmp_path / "ops.md"
    result = run("session", "export", "ops", "-o", target)

    assert result.exit_code == 0 and result.stdout == ""
    assert target.read_text() == ok("session", "export", "ops")
    assert f"wrote session s-1 to {target}" in result.stderr


def test_export_writes_nothing_to_the_log(chatted, ok):
    before = events(chatted)
    for fmt in ("md", "jsonl", "json"):
        ok("session", "export", "ops", "--format", fmt)
    assert events(chatted) == before


def test_bad_input_is_one_error_line_and_changes_nothing(chatted, run, tmp_path):
    assert "no session 'nope'" in fails(run, chatted, 1, "session", "export", "nope")
    assert "--format" in fails(run, chatted, 2, "session", "export", "ops", "--format", "pdf")
    missing = tmp_path / "no-such-dir" / "x.md"
    line = fails(run, chatted, 1, "session", "export", "ops", "-o", missing)
    assert str(missing) in line
    assert not missing.parent.exists()


def test_control_characters_in_a_message_are_escaped_in_markdown(models, ok, server):
    server.script(Reply("fine"))
    ok("chat", "--no-stream", "colour \x1b[31mred")
    out = ok("session", "export")
    assert "\x1b" not in out and "colour \\x1b[31mred" in out


def test_no_session_yet_says_how_to_make_one(set_up, run):
    result = run("session", "export")
    assert result.exit_code == 1
    assert "has no session yet" in error_line(result)



def test_a_deleted_agents_session_is_exported_too(models, ok, server):
    ok("agent", "create", "ops", "--model", "ollama/fake-model")
    server.script(Reply("ops here"))
    ok("chat", "--agent", "ops", "--no-stream", "hi ops")
    ok("agent", "delete", "ops", "--force")

    out = ok("session", "export", "--agent", "ops")
    assert "hi ops" in out and "ops here" in out
