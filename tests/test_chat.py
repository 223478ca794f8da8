"""`fased chat` against the fake model server over real HTTP: output, retries, fallback,
cooldowns, model overrides, context trimming and the session transcript."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import events, read_json, rows

from fased.timeparse import format_ts, parse_ts

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import DEFAULT_TEXT, Drop, Echo, FakeModelServer, Hang, Reply, Status

FASED = [sys.executable, "-c", "from fased.commands.entry import main; main()"]
PRIMARY, FALLBACK = "ollama/fake-model", "ollama/fake-small"


@pytest.fixture
def models(set_up, ok, server) -> Path:
    """Agent main: primary ollama/fake-model, fallback ollama/fake-small; two retries with
    short backoff, no cooldown (tests that need one set it)."""
    ok("agent", "models", "providers", "add", "ollama", "--kind", "ollama", "--base-url",
       server.url)
    ok("agent", "models", "set", "primary", PRIMARY)
    ok("agent", "models", "fallback", "add", FALLBACK)
    ok("config", "set", "agents.defaults.retries", "2")
    ok("config", "set", "agents.defaults.cooldownSeconds", "0")
    return set_up


def use_kind(ok, server: FakeModelServer, kind: str) -> None:
    """Answer through a provider of `kind` (the fixture's is ollama) on the same server."""
    if kind != "ollama":
        ok("agent", "models", "providers", "add", "oa", "--kind", kind, "--base-url",
           server.url + "/v1")
        ok("agent", "models", "set", "primary", "oa/fake-model")


def of_type(home: Path, *types: str) -> list[dict]:
    return [e for e in events(home) if e["type"] in types]


def no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def asked(server: FakeModelServer) -> list[tuple[str, str]]:
    """(model, last user message) of every chat request the server got."""
    out = []
    for r in server.requests:
        users = [m["content"] for m in r["json"]["messages"] if m["role"] == "user"]
        out.append((r["model"], users[-1]))
    return out


def attempts(home: Path) -> list[tuple]:
    return [(e["data"]["model"], e["data"]["attempt"], e["data"]["kind"],
             e["data"].get("status")) for e in of_type(home, "turn.attempt_failed")]


def shell(command: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a shell line in which `fased` is this interpreter's fased."""
    fased = " ".join(shlex.quote(a) for a in FASED)
    return subprocess.run(command.replace("fased", fased, 1), shell=True, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


# -- input and output --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ollama", "openai-compatible"])
def test_pipe_in_file_out_holds_exactly_the_reply(models, ok, server, tmp_path, kind):
    use_kind(ok, server, kind)

    proc = shell("printf 'x' | fased chat \"y\" > out", tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out").read_bytes() == DEFAULT_TEXT.encode() + b"\n"
    assert proc.stderr == ""
    assert asked(server) == [("fake-model", "x\n\ny")]
    queued, completed = of_type(models, "turn.queued", "turn.completed")
    assert queued["data"]["message"] == "x\n\ny"
    assert completed["data"]["reply"] == DEFAULT_TEXT
    assert completed["data"]["turn"] == queued["data"]["turn"]


@pytest.mark.parametrize("option", ["", "--stream", "--no-stream"])
@pytest.mark.parametrize("kind", ["ollama", "openai-compatible"])
def test_a_piped_reply_ends_with_one_newline(models, ok, server, tmp_path, kind, option):
    use_kind(ok, server, kind)

    proc = shell(f"fased chat {option} hi | wc -l", tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


@pytest.mark.parametrize("kind", ["ollama", "openai-compatible", "anthropic"])
def test_no_stream_asks_the_server_for_one_document(models, ok, run, server, kind):
    if kind == "anthropic":
        ok("agent", "models", "providers", "add", "an", "--kind", kind, "--base-url",
           server.url)
        ok("agent", "models", "auth", "an", "--stdin", input="sk-ant-test-key\n")
        ok("agent", "models", "set", "primary", "an/fake-model")
    else:
        use_kind(ok, server, kind)

    streamed = run("chat", "hi")
    whole = run("chat", "--no-stream", "hi")

    assert (streamed.exit_code, whole.exit_code) == (0, 0), whole.stderr
    assert streamed.stdout == whole.stdout == DEFAULT_TEXT + "\n"
    assert [r["json"]["stream"] for r in server.requests] == [True, False]


@pytest.mark.parametrize("option", ["", "--stream"])
def test_pipe_out_into_another_command(models, server, tmp_path, option):
    """A reply that ends with a newline itself gets no second one; its bytes are unchanged."""
    reply = "naïve café ✓\nline two\n"
    server.script(Reply(reply))

    proc = shell(f"fased chat {option} 'two lines' | cat > out", tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out").read_bytes() == reply.encode()


@pytest.mark.parametrize(("piped", "sent"), [
    ("hi\\n", "hi"), ("hi", "hi"), ("hi\\n\\n", "hi\n"), ("a\\nb\\n", "a\nb")])
def test_a_piped_message_loses_its_one_trailing_newline(models, server, tmp_path, piped, sent):
    server.default = Echo()

    proc = shell(f"printf '{piped}' | fased chat > out", tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert asked(server) == [("fake-model", sent)]
    assert (tmp_path / "out").read_bytes() == sent.encode() + (
        b"" if sent.endswith("\n") else b"\n")


def test_bytes_that_are_not_utf8_are_replaced(models, ok, server, tmp_path):
    proc = shell("printf 'caf\\351 \\377' | fased chat \"$(printf 'y\\377')\" > out", tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out").read_bytes() == DEFAULT_TEXT.encode() + b"\n"
    assert asked(server) == [("fake-model", "caf\ufffd \ufffd\n\ny\ufffd")]
    ok("chat", "the home still works")
    assert len(of_type(models, "turn.completed")) == 2


def read_terminals(*masters: int) -> list[bytes]:
    """Everything written to each pty until its last writer closed it."""
    out = {fd: b"" for fd in masters}
    open_fds = set(masters)
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], 30)
        assert ready, "timed out"
        for fd in ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if chunk:
                out[fd] += chunk
            else:
                open_fds.discard(fd)
                os.close(fd)
    return [out[fd] for fd in masters]


def chat_on_terminals(*args: str) -> tuple[int, bytes, bytes]:
    """`fased chat ARGS` with stdout and stderr each on a terminal of its own: (exit code,
    what each terminal showed)."""
    (out_main, out_child), (err_main, err_child) = pty.openpty(), pty.openpty()
    proc = subprocess.Popen([*FASED, "chat", *args], stdin=subprocess.DEVNULL,
                            stdout=out_child, stderr=err_child)
    os.close(out_child)
    os.close(err_child)
    out, err = read_terminals(out_main, err_main)
    return proc.wait(timeout=30), out, err


@pytest.mark.parametrize("option", [[], ["--no-stream"]])
def test_on_a_terminal_the_reply_ends_the_line_and_a_status_follows(models, server, option):
    server.script(Reply("streamed", usage=(4, 1)))
    code, out, err = chat_on_terminals(*option, "hi")

    assert code == 0, err
    assert out == b"streamed\r\n"
    assert re.fullmatch(rb"\[ollama/fake-model \xc2\xb7 4 in / 1 out \xc2\xb7 \d+\.\d s\]\r\n",
                        err), err


HOSTILE = "before \x1b]0;PWNED\x07\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J after"


@pytest.mark.parametrize("option", [[], ["--no-stream"]])
def test_a_reply_with_control_sequences_is_escaped_on_a_terminal_and_kept_in_a_pipe(
        models, server, option):
    """A model fed a hostile page could set the terminal's title, clear it or write the
    clipboard (OSC 52): on a terminal a reply's control characters are shown escaped; a
    pipe or a file gets its bytes unchanged (data)."""
    server.script(Reply(HOSTILE))
    code, out, err = chat_on_terminals(*option, "hi")
    assert code == 0, err
    assert b"\x1b" not in out and b"\x07" not in out
    assert out.startswith(b"before \\x1b]0;PWNED\\x07")

    server.script(Reply(HOSTILE))
    piped = subprocess.run([*FASED, "chat", *option, "hi"], capture_output=True)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == HOSTILE.encode() + b"\n"


def test_json_on_a_terminal_prints_no_footer(models, server):
    code, out, err = chat_on_terminals("--json", "hi")

    assert code == 0, err
    assert json.loads(out)["reply"] == DEFAULT_TEXT
    assert err == b""


def test_message_from_stdin_only(models, run, server):
    result = run("chat", input="only stdin\n")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == DEFAULT_TEXT + "\n"
    assert asked(server) == [("fake-model", "only stdin")]


@pytest.mark.parametrize(("args", "stdin"), [
    ((), ""), ((), "  \n"), (("",), ""), ((" \n",), "")])
def test_no_message_is_a_usage_error(models, run, server, args, stdin):
    before = len(events(models))

    result = run("chat", *args, input=stdin)

    assert result.exit_code == 2
    no_traceback(result)
    assert result.stderr.splitlines()[0] == "Error: no message"
    assert len(events(models)) == before
    assert server.requests == []


def test_turn_events_in_order(models, run, server):
    server.script(Reply("fine", usage=(7, 3)))
    before = len(events(models))

    result = run("chat", "how are you?")

    assert result.exit_code == 0, result.stderr
    new = events(models)[before:]
    # the first turn records what its request refers to: the workspace files it read, the
    # system prompt and the tool specs, once each, before the turn's outcome
    assert [e["type"] for e in new if e["type"] != "context.recorded"] == [
        "session.created", "session.switched", "turn.queued", "turn.started", "turn.completed"]
    recorded = [e["data"] for e in new if e["type"] == "context.recorded"]
    assert [r["kind"] for r in recorded][-2:] == ["prompt", "tools"]
    names = {r["name"] for r in recorded[:-2]}
    skills = {n for n in names if n.startswith("skills/")}
    assert names - skills == {"AGENTS.md", "SOUL.md", "IDENTITY.md", "BOOTSTRAP.md"}
    # the bundled skills offered (fased-cli only where `fased` is on PATH)
    assert "skills/skill-writing/SKILL.md" in skills <= {
        "skills/skill-writing/SKILL.md", "skills/fased-cli/SKILL.md"}
    assert [e["type"] for e in new].index("turn.completed") == len(new) - 1
    queued, started = (e["data"] for e in new[2:4])
    prompt, tools = recorded[-2:]
    completed = new[-1]["data"]
    assert completed["request"]["system"] == prompt["sha256"]
    assert completed["request"]["tools"] == tools["sha256"]
    turn = queued["turn"]
    assert queued == {"turn": turn, "agent": "main", "session": "s-1",
                      "message": "how are you?", "source": "chat"}
    assert started["turn"] == turn and started["claim"] == 1
    assert started["models"] == [PRIMARY, FALLBACK]
    assert started["pid"] > 0 and started["runner"] and started["lease_until"]
    assert {k: completed[k] for k in ("turn", "reply", "model", "usage", "finish_reason",
                                      "attempts")} == {
        "turn": turn, "reply": "fine", "model": PRIMARY,
        "usage": {"input_tokens": 7, "output_tokens": 3}, "finish_reason": "stop",
        "attempts": 1}
    assert completed["latency_ms"] > 0 and completed["ttft_ms"] > 0
    assert rows(models, "SELECT state, reply, model_used, claims FROM turns") == [
        {"state": "completed", "reply": "fine", "model_used": PRIMARY, "claims": 1}]


def test_json_is_one_object(models, run, server):
    server.script(Reply("fine", usage=(7, 3)))

    result = run("chat", "--json", "hi")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    turn = of_type(models, "turn.queued")[0]["data"]["turn"]
    assert {k: report[k] for k in ("turn", "agent", "session", "state", "reply", "model",
                                   "usage", "attempts")} == {
        "turn": turn, "agent": "main", "session": "s-1", "state": "completed",
        "reply": "fine", "model": PRIMARY, "usage": {"input_tokens": 7, "output_tokens": 3},
        "attempts": 1}
    assert report["timings"]["latency_ms"] > 0
    assert report["timings"]["ttft_ms"] > 0


def test_queue_only_prints_the_turn_id(models, run, server):
    result = run("chat", "--queue", "later")

    assert result.exit_code == 0, result.stderr
    turn = of_type(models, "turn.queued")[0]["data"]["turn"]
    assert result.stdout == f"{turn}\n"
    assert of_type(models, "turn.started") == []
    assert server.requests == []

    again = run("chat", "--queue", "--json", "later still")
    report = json.loads(again.stdout)
    assert report == {"turn": of_type(models, "turn.queued")[1]["data"]["turn"],
                      "agent": "main", "session": "s-1", "queued": True}
    assert rows(models, "SELECT state FROM turns") == [{"state": "queued"}] * 2


def test_a_retried_chat_with_an_idempotency_key_is_answered_once(models, run, server):
    server.default = Echo()

    first = run("--idempotency-key", "k-1", "chat", "--json", "hi")
    again = run("--idempotency-key", "k-1", "chat", "--json", "hi")

    assert (first.exit_code, again.exit_code) == (0, 0), again.stderr
    one, two = json.loads(first.stdout), json.loads(again.stdout)
    assert (one["replayed"], two["replayed"]) == (False, True)
    assert {k: v for k, v in two.items() if k != "replayed"} == {
        k: v for k, v in one.items() if k != "replayed"}
    assert len(server.requests) == 1
    assert len(of_type(models, "turn.queued")) == len(of_type(models, "turn.completed")) == 1
    queued = run("--idempotency-key", "k-2", "chat", "--queue", "later")
    queued_again = run("--idempotency-key", "k-2", "chat", "--queue", "later")
    assert queued.stdout == queued_again.stdout
    assert len(of_type(models, "turn.queued")) == 2


def test_output_options_are_not_part_of_an_idempotency_key(models, run, ok, server):
    """A retry that adds --json (or --stream, --no-stream) is the same command; one that
    changes what it asks for is not."""
    server.default = Echo()

    plain = run("--idempotency-key", "k-1", "chat", "hi")
    as_json = run("--idempotency-key", "k-1", "chat", "--json", "hi")
    streamed = run("--idempotency-key", "k-1", "chat", "--no-stream", "--stream", "hi")

    assert (plain.exit_code, as_json.exit_code, streamed.exit_code) == (0, 0, 0), as_json.stderr
    assert plain.stdout == streamed.stdout == "hi\n"
    assert (json.loads(as_json.stdout)["reply"], json.loads(as_json.stdout)["replayed"]) == (
        "hi", True)
    assert len(server.requests) == 1
    other = run("--idempotency-key", "k-1", "chat", "--json", "--", "--json")
    assert other.exit_code == 3
    assert "already used by another command (fased chat hi)" in other.stderr

    first = json.loads(ok("--idempotency-key", "k-2", "task", "new", "--every", "1h",
                          "--message", "m", "--json"))
    assert ok("--idempotency-key", "k-2", "task", "new", "--every", "1h", "--message",
              "m").startswith(f"Created {first['task']}:")
    ok("--idempotency-key", "k-3", "session", "new", "--name", "x")
    again = json.loads(ok("--idempotency-key", "k-3", "session", "new", "--name", "x",
                          "--json"))
    assert len(of_type(models, "task.created")) == 1
    assert [e["data"]["name"] for e in of_type(models, "session.created")
            if e["data"].get("name")] == ["x"], again


def test_a_streamed_chat_answered_elsewhere_still_shows_the_reply(models, run, server):
    """Its reply came from the log, not from a stream (here: a retried CI step; equally a
    `fased run` that took the turn first): it is shown whole, once."""
    server.default = Echo()

    first = run("--idempotency-key", "k-1", "chat", "--stream", "hello there")
    again = run("--idempotency-key", "k-1", "chat", "--stream", "hello there")

    assert (first.exit_code, again.exit_code) == (0, 0), again.stderr
    assert first.stdout == again.stdout == "hello there\n"
    assert len(server.requests) == 1


def test_earlier_queued_turn_of_the_session_is_answered_first(models, run, server):
    server.default = Echo()
    run("chat", "--queue", "first")

    result = run("chat", "second")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "second\n"
    assert asked(server) == [("fake-model", "first"), ("fake-model", "second")]
    assert "answering the earlier queued turn" in result.stderr
    assert [e["data"]["reply"] for e in of_type(models, "turn.completed")] == ["first", "second"]


def test_sessions_and_agents_by_option(models, run, ok, server):
    server.default = Echo()
    ok("session", "new", "--name", "ops")
    ok("session", "new")
    ok("agent", "create", "helper")
    ok("agent", "models", "set", "primary", PRIMARY, "--agent", "helper")

    assert ok("chat", "current") == "current\n"
    assert ok("chat", "--session", "ops", "by name") == "by name\n"
    assert ok("chat", "--session", "s-2", "by id") == "by id\n"
    assert ok("chat", "--new-session", "fresh") == "fresh\n"
    assert ok("chat", "--agent", "helper", "other agent") == "other agent\n"

    assert [(e["data"]["agent"], e["data"]["session"], e["data"]["message"])
            for e in of_type(models, "turn.queued")] == [
        ("main", "s-2", "current"), ("main", "s-1", "by name"), ("main", "s-2", "by id"),
        ("main", "s-3", "fresh"), ("helper", "s-4", "other agent")]
    # each session's model saw only its own history
    assert [len(r["json"]["messages"]) for r in server.requests] == [2, 2, 4, 2, 2]  # + system
    result = run("chat", "--session", "nope", "hi")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no session 'nope'")


# -- retries and fallback ----------------------------------------------------------------------

def test_rate_limit_waits_for_retry_after_then_succeeds(models, run, server):
    server.script(Status(429, retry_after=1), Reply("after the wait"))

    started = time.monotonic()
    result = run("chat", "hi")
    elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "after the wait\n"
    assert elapsed >= 1.0
    assert "fased: ollama/fake-model: rate_limit; retrying in 1.0s (attempt 2 of 3)" in (
        result.stderr.splitlines())
    [failed] = of_type(models, "turn.attempt_failed")
    assert {k: failed["data"][k] for k in ("model", "attempt", "kind", "status", "retry_after",
                                          "retryable")} == {
        "model": PRIMARY, "attempt": 1, "kind": "rate_limit", "status": 429,
        "retry_after": 1.0, "retryable": True}
    completed = of_type(models, "turn.completed")[0]["data"]
    assert (completed["model"], completed["attempts"]) == (PRIMARY, 2)
    assert [m for m, _ in asked(server)] == ["fake-model", "fake-model"]


def test_retry_after_beyond_the_limit_falls_back_without_waiting(models, run, server):
    server.script_for("fake-model", Status(429, retry_after=3600))

    started = time.monotonic()
    result = run("chat", "hi")

    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started < 10
    assert result.stdout == DEFAULT_TEXT + "\n"
    assert [m for m, _ in asked(server)] == ["fake-model", "fake-small"]
    assert of_type(models, "turn.completed")[0]["data"]["model"] == FALLBACK


def test_server_errors_exhaust_retries_then_fall_back(models, run, server):
    server.script_for("fake-model", Status(500), Status(502), Status(503))

    result = run("chat", "hi")

    assert result.exit_code == 0, result.stderr
    no_traceback(result)
    assert result.stdout == DEFAULT_TEXT + "\n"
    assert attempts(models) == [(PRIMARY, 1, "server", 500), (PRIMARY, 2, "server", 502),
                                (PRIMARY, 3, "server", 503)]
    assert [m for m, _ in asked(server)] == ["fake-model"] * 3 + ["fake-small"]
    lines = result.stderr.splitlines()
    assert sum("retrying in" in ln for ln in lines) == 2
    assert f"fased: {PRIMARY} failed (server); falling back to {FALLBACK}" in lines
    completed = of_type(models, "turn.completed")[0]["data"]
    assert (completed["model"], completed["attempts"]) == (FALLBACK, 4)
    assert rows(models, "SELECT model_used, attempts FROM turns") == [
        {"model_used": FALLBACK, "attempts": 4}]


@pytest.mark.parametrize(("primary", "step", "kind"), [
    (PRIMARY, Status(401), "auth"),
    (PRIMARY, Status(403), "auth"),
    ("ollama/no-such-model", None, "not_found"),
])
def test_auth_and_unknown_model_fall_back_at_once(models, ok, run, server, primary, step, kind):
    ok("agent", "models", "set", "primary", primary)
    if step is not None:
        server.script_for("fake-model", step)

    result = run("chat", "hi")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == DEFAULT_TEXT + "\n"
    assert attempts(models) == [(primary, 1, kind, 404 if kind == "not_found" else step.code)]
    assert [m for m, _ in asked(server)] == [primary.split("/")[1], "fake-small"]
    assert "retrying" not in result.stderr
    assert f"fased: {primary} failed ({kind}); falling back to {FALLBACK}" in (
        result.stderr.splitlines())


def test_bad_request_fails_without_fallback(models, run, server):
    server.script_for("fake-model", Status(400))

    result = run("chat", "hi")

    assert result.exit_code == 1
    no_traceback(result)
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1].startswith("Error: ")
    assert [m for m, _ in asked(server)] == ["fake-model"]
    failed = of_type(models, "turn.failed")[0]["data"]
    assert (failed["error_class"], failed["attempts"], failed["models_tried"]) == (
        "bad_request", 1, [PRIMARY])


def test_a_conversation_too_long_for_the_model_says_what_to_do(models, run, server):
    """A context-length refusal ends the turn (no fallback can take the same prompt) with the
    provider error's hint, which the turn's error line lost."""
    server.script_for("fake-model", Status(400, body={"error": "input too long for the "
                                                     "context window"}))

    result = run("chat", "hi")

    assert result.exit_code == 1
    no_traceback(result)
    assert "context length exceeded" in result.stderr
    assert "the conversation is too long for this model; shorten it or use a bigger one" in (
        result.stderr)
    failed = of_type(models, "turn.failed")[0]["data"]
    assert failed["error_class"] == "context_length"
    assert failed["hint"].startswith("the conversation is too long")


def test_timeout_is_retried(models, ok, run, server):
    ok("config", "set", "agents.defaults.timeoutSeconds", "1")
    server.script(Hang(5), Reply("in time"))

    result = run("chat", "hi")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "in time\n"
    assert attempts(models) == [(PRIMARY, 1, "timeout", None)]


TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.mark.parametrize("kind", ["ollama", "openai-compatible"])
@pytest.mark.parametrize("framing", ["chunked", "close"])
@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_drop_mid_stream_then_retry_prints_the_reply_once(models, ok, run, server, kind,
                                                          framing, stream):
    use_kind(ok, server, kind)
    server.script(Drop(after_chunks=3, text=TEXT, framing=framing), Reply(TEXT))

    result = run("chat", *stream, "hi")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == TEXT + "\n"
    [failed] = of_type(models, "turn.attempt_failed")
    assert (failed["data"]["kind"], failed["data"]["partial_chars"]) == (
        "stream_dropped", len("The quick brown "))
    assert of_type(models, "turn.completed")[0]["data"]["reply"] == TEXT


def test_drop_mid_stream_in_a_real_pipe(models, server, tmp_path):
    server.script(Drop(after_chunks=3, text=TEXT), Reply(TEXT))

    proc = shell("fased chat --stream hi > out", tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out").read_bytes() == TEXT.encode() + b"\n"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("dropped", "retried", "stdout"), [
    (2, "Goodbye now", "Hello there \nGoodbye now"),  # shorter than what was shown
    (2, "Goodbye, see you later", "Hello there \nGoodbye, see you later"),
    (3, "Hello there", "Hello there my \nHello there"),  # stops inside what was shown
])
def test_retried_reply_that_differs_is_shown_in_full(models, run, server, dropped, retried,
                                                     stdout):
    server.script(Drop(after_chunks=dropped, text="Hello there my friend"), Reply(retried))

    result = run("chat", "--stream", "hi")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == stdout + "\n"
    assert result.stderr.count("fased: the retried reply differs from what was shown; it "
                               "follows in full") == 1
    assert of_type(models, "turn.completed")[0]["data"]["reply"] == retried


def test_every_model_failing_exits_5_with_every_attempt(models, ok, run, server):
    ok("config", "set", "agents.defaults.retries", "1")
    server.default = Status(503)

    result = run("chat", "hi")

    assert result.exit_code == 5
    no_traceback(result)
    assert result.stdout == ""
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    assert errors == [f"Error: every model failed ({PRIMARY}, {FALLBACK}); last: "
                      + of_type(models, "turn.attempt_failed")[-1]["data"]["message"]]
    assert attempts(models) == [(PRIMARY, 1, "server", 503), (PRIMARY, 2, "server", 503),
                                (FALLBACK, 1, "server", 503), (FALLBACK, 2, "server", 503)]
    failed = of_type(models, "turn.failed")[0]["data"]
    assert (failed["error_class"], failed["attempts"], failed["models_tried"]) == (
        "models_failed", 4, [PRIMARY, FALLBACK])
    assert of_type(models, "turn.completed") == []
    assert rows(models, "SELECT state, error_class, attempts FROM turns") == [
        {"state": "failed", "error_class": "models_failed", "attempts": 4}]


def test_every_model_failing_with_json(models, ok, run, server):
    ok("config", "set", "agents.defaults.retries", "0")
    server.default = Status(500)

    result = run("chat", "--json", "hi")

    assert result.exit_code == 5
    report = json.loads(result.stdout)
    assert (report["state"], report["error_class"], report["attempts"], report["reply"]) == (
        "failed", "models_failed", 2, "")


def test_unreachable_server_is_retried_then_exits_5(models, ok, run, server):
    ok("config", "set", "agents.defaults.retries", "1")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    ok("agent", "models", "providers", "add", "gone", "--kind", "ollama", "--base-url", closed)
    ok("agent", "models", "set", "primary", "gone/fake-model")
    ok("agent", "models", "fallback", "clear")

    result = run("chat", "hi")

    assert result.exit_code == 5
    no_traceback(result)
    assert attempts(models) == [("gone/fake-model", 1, "connection", None),
                                ("gone/fake-model", 2, "connection", None)]
    assert result.stderr.splitlines()[-2].startswith(
        "Error: every model failed (gone/fake-model); last: ")


def test_no_model_configured(set_up, run):
    result = run("chat", "hi")

    assert result.exit_code == 1
    no_traceback(result)
    assert "has no model" in result.stderr
    assert of_type(set_up, "turn.failed")[0]["data"]["error_class"] == "no_model"


# -- cooldowns ---------------------------------------------------------------------------------

def test_failed_model_cools_down_and_the_next_turn_skips_it(models, ok, run, server):
    ok("config", "set", "agents.defaults.retries", "0")
    ok("config", "set", "agents.defaults.cooldownSeconds", "300")
    server.script_for("fake-model", Status(500))

    first = run("chat", "one")
    second = run("chat", "two")

    assert (first.exit_code, second.exit_code) == (0, 0), second.stderr
    [cooldown] = of_type(models, "model.cooldown")
    assert cooldown["stream"] == f"model:{PRIMARY}"
    assert (cooldown["data"]["model"], cooldown["data"]["reason"]) == (PRIMARY, "server")
    until = cooldown["data"]["until"]
    assert rows(models, "SELECT * FROM cooldowns") == [
        {"model": PRIMARY, "until": until, "reason": "server"}]
    assert asked(server) == [("fake-model", "one"), ("fake-small", "one"),
                             ("fake-small", "two")]
    assert f"fased: skipping {PRIMARY} (cooling down until {until})" in (
        second.stderr.splitlines())
    assert [e["data"]["model"] for e in of_type(models, "turn.completed")] == [FALLBACK] * 2
    assert [e["data"]["models"] for e in of_type(models, "turn.started")] == [
        [PRIMARY, FALLBACK], [FALLBACK]]


def test_when_every_model_cools_down_they_are_tried_anyway(models, ok, run, server):
    ok("config", "set", "agents.defaults.retries", "0")
    ok("config", "set", "agents.defaults.cooldownSeconds", "300")
    server.script_for("fake-model", Status(500), Status(500))
    server.script_for("fake-small", Status(500))

    first = run("chat", "one")
    second = run("chat", "two")

    assert (first.exit_code, second.exit_code) == (5, 0)
    assert [m for m, _ in asked(server)] == ["fake-model", "fake-small", "fake-model",
                                             "fake-small"]
    assert of_type(models, "turn.completed")[0]["data"]["model"] == FALLBACK


def test_a_cooldown_runs_out(models, ok, run, server):
    ok("config", "set", "agents.defaults.retries", "0")
    ok("config", "set", "agents.defaults.cooldownSeconds", "60")
    server.script_for("fake-model", Status(500))
    ok("chat", "one")
    until = of_type(models, "model.cooldown")[0]["data"]["until"]
    later = format_ts(parse_ts(until) + timedelta(seconds=1))

    result = run("chat", "two", env={"FASED_NOW": later})

    assert result.exit_code == 0, result.stderr
    assert "skipping" not in result.stderr
    assert asked(server)[-1] == ("fake-model", "two")
    assert of_type(models, "turn.started")[-1]["data"]["models"] == [PRIMARY, FALLBACK]


def test_no_cooldown_when_it_is_zero(models, run, server):
    server.script_for("fake-model", Status(401))

    run("chat", "one")
    run("chat", "two")

    assert of_type(models, "model.cooldown") == []
    assert [m for m, _ in asked(server)] == ["fake-model", "fake-small", "fake-model"]


# -- model override ----------------------------------------------------------------------------

def primary_of(home: Path) -> tuple[str, str]:
    """The agent's primary model: in the rows and in fased.json."""
    row = rows(home, "SELECT primary_model FROM agents WHERE id = 'main'")[0]["primary_model"]
    doc = read_json(home / "fased.json")
    return row, doc["agents"]["list"][0]["model"]["primary"]


def test_model_override_is_for_this_session_only(models, ok, run, server):
    agent_events = len(of_type(models, "agent.models_set"))

    result = run("chat", "-m", FALLBACK, "one")

    assert result.exit_code == 0, result.stderr
    assert primary_of(models) == (PRIMARY, PRIMARY)
    [model_set] = of_type(models, "session.model_set")
    assert model_set["data"] == {"agent": "main", "session": "s-1", "model": FALLBACK}
    ok("chat", "two")
    ok("chat", "--new-session", "three")
    ok("chat", "-m", FALLBACK, "--session", "s-1", "four")

    assert [m for m, _ in asked(server)] == ["fake-small", "fake-small", "fake-model",
                                             "fake-small"]
    assert [e["data"]["models"] for e in of_type(models, "turn.started")] == [
        [FALLBACK], [FALLBACK], [PRIMARY, FALLBACK], [FALLBACK]]
    assert len(of_type(models, "session.model_set")) == 1
    assert len(of_type(models, "agent.models_set")) == agent_events
    assert primary_of(models) == (PRIMARY, PRIMARY)


def test_model_override_with_save_sets_the_primary(models, ok, run, server):
    # a primary that is also a fallback would be no fallback at all: it is refused
    refused = run("chat", "-m", FALLBACK, "--save", "one")
    assert refused.exit_code == 2
    assert [ln for ln in refused.stderr.splitlines() if ln.startswith("Error: ")] == [
        f"Error: {FALLBACK} is a fallback of agent main; the primary must be another model"]
    assert of_type(models, "turn.queued", "session.model_set") == []
    ok("agent", "models", "fallback", "clear")

    result = run("chat", "-m", FALLBACK, "--save", "one")

    assert result.exit_code == 0, result.stderr
    assert primary_of(models) == (FALLBACK, FALLBACK)
    assert of_type(models, "agent.models_set")[-1]["data"] == {"agent": "main",
                                                               "primary": FALLBACK}
    assert [m for m, _ in asked(server)] == ["fake-small"]


@pytest.mark.parametrize(("args", "code"), [
    (("--save", "hi"), 2),
    (("-m", "nowhere/fake-model", "hi"), 2),
    (("-m", "clear", "--save", "hi"), 2),
    (("--queue", "--schedule", "every 1h", "hi"), 2),
    (("--schedule", "every 1h", "-m", FALLBACK, "hi"), 2),
    (("--schedule", "every 1h", "--new-session", "hi"), 2),
    (("--schedule", "every 1h", "--no-stream", "hi"), 2),
    (("--tz", "Europe/Paris", "hi"), 2),
])
def test_bad_model_options_append_nothing(models, run, server, args, code):
    before = len(events(models))

    result = run("chat", *args)

    assert result.exit_code == code, result.stderr
    no_traceback(result)
    assert len([ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]) == 1
    assert len(events(models)) == before
    assert server.requests == []


def test_chat_says_when_it_sets_keeps_or_clears_an_override(models, ok, run, server):
    ok("session", "new", "--name", "ops")

    first = run("chat", "-m", FALLBACK, "one")
    kept = run("chat", "two")
    again = run("chat", "-m", FALLBACK, "three")
    cleared = run("chat", "-m", "clear", "four")
    plain = run("chat", "five")

    assert [r.exit_code for r in (first, kept, again, cleared, plain)] == [0] * 5
    assert (f"fased: session ops now answers with {FALLBACK} "
            "(fased session model ops clear to undo)") in first.stderr.splitlines()
    for result in (kept, again):
        assert f"fased: session ops answers with its override {FALLBACK}" in (
            result.stderr.splitlines())
    assert (f"fased: session ops answers with the agent default {PRIMARY} again"
            in cleared.stderr.splitlines())
    assert "override" not in plain.stderr
    assert [m for m, _ in asked(server)] == ["fake-small"] * 3 + ["fake-model"] * 2
    assert [e["data"]["model"] for e in of_type(models, "session.model_set")] == [
        FALLBACK, None]
    # --queue says it too: the override decides who answers the queued turn
    queued = run("chat", "--queue", "-m", FALLBACK, "six")
    assert (f"fased: session ops now answers with {FALLBACK} "
            "(fased session model ops clear to undo)") in queued.stderr.splitlines()


def test_chat_warns_when_m_names_a_model_the_catalog_lacks(models, ok, run, server):
    unknown = run("chat", "--queue", "-m", "ollama/fake-typo", "one")
    assert unknown.exit_code == 0
    assert "did not list" not in unknown.stderr  # no catalog fetched yet: nothing to compare
    ok("agent", "models", "list")

    typo = run("chat", "--queue", "-m", "ollama/fake-typ0", "two")
    listed = run("chat", "--queue", "-m", FALLBACK, "three")

    assert typo.exit_code == 0
    assert typo.stderr.splitlines()[0].startswith(
        "note: ollama did not list 'fake-typ0' when its models were last fetched")
    assert "did not list" not in listed.stderr
    assert [e["data"]["model"] for e in of_type(models, "session.model_set")] == [
        "ollama/fake-typo", "ollama/fake-typ0", FALLBACK]


def test_a_model_named_by_the_user_is_tried_while_it_cools_down(models, ok, run, server):
    ok("config", "set", "agents.defaults.retries", "0")
    ok("config", "set", "agents.defaults.cooldownSeconds", "300")
    server.script_for("fake-model", Status(500))
    ok("chat", "one")  # fake-model fails and cools down; fake-small answers

    named = run("chat", "-m", PRIMARY, "two")
    kept = run("chat", "three")
    other = run("chat", "--new-session", "four")

    assert (named.exit_code, kept.exit_code, other.exit_code) == (0, 0, 0), named.stderr
    assert "skipping" not in named.stderr + kept.stderr
    assert f"fased: skipping {PRIMARY}" in other.stderr  # no override: the cooldown holds
    assert asked(server) == [("fake-model", "one"), ("fake-small", "one"),
                             ("fake-model", "two"), ("fake-model", "three"),
                             ("fake-small", "four")]
    assert [e["data"]["models"] for e in of_type(models, "turn.started")] == [
        [PRIMARY, FALLBACK], [PRIMARY, FALLBACK], [PRIMARY, FALLBACK], [FALLBACK]]


# -- context window ----------------------------------------------------------------------------

def test_history_over_the_window_drops_the_oldest_with_a_note(models, ok, run, server):
    # room for the system prompt, the tools, the reply reserve and two of the 400-token
    # messages with a short reply, not three
    fixed = json.loads(ok("agent", "context", "--json"))["tokens"]
    window = fixed["system"] + fixed["tools"] + 1024 + 830
    ok("config", "set", "agents.defaults.contextWindow", str(window))
    server.default = Reply("ok")
    a, b, c = "a" * 1600, "b" * 1600, "c" * 1600
    ok("chat", a)
    second = run("chat", b)

    third = run("chat", "--json", c)

    assert "dropped" not in second.stderr
    assert third.exit_code == 0, third.stderr
    assert (f"fased: dropped the 2 oldest message(s) of session s-1 to fit the {window}-token "
            "context window") in third.stderr.splitlines()
    assert json.loads(third.stdout)["context_dropped"] == 2
    assert [(m["role"], m["content"]) for m in server.requests[-1]["json"]["messages"]
            if m["role"] != "system"] == [("user", b), ("assistant", "ok"), ("user", c)]
    assert [e["data"]["context_dropped"] for e in of_type(models, "turn.completed")] == [0, 0, 2]


def test_a_turn_with_a_short_reply_keeps_more_history(models, ok, run, server):
    """The same window as above: with -o max_tokens 200 the reply needs 200 tokens, not
    the 1,024 kept for a reply of unknown length, and all three messages fit."""
    fixed = json.loads(ok("agent", "context", "--json"))["tokens"]
    window = fixed["system"] + fixed["tools"] + 1024 + 830
    ok("config", "set", "agents.defaults.contextWindow", str(window))
    server.default = Reply("ok")
    ok("chat", "a" * 1600)
    ok("chat", "b" * 1600)

    third = run("chat", "--json", "-o", "max_tokens", "200", "c" * 1600)

    assert third.exit_code == 0, third.stderr
    assert "dropped" not in third.stderr
    assert json.loads(third.stdout)["context_dropped"] == 0


def test_a_model_that_counts_more_tokens_than_estimated_gets_less_history(models, ok, run,
                                                                         server):
    """The window is planned by an estimate of the tokens; a model whose tokenizer takes
    more (a small one, or a language it was not trained on) refused a conversation the plan
    said fits, and the session could not go on. The refusal is re-planned with less
    history, oldest first, and the turn is answered."""
    server.default = Reply("ok")
    for word in ("one", "two", "three"):
        ok("chat", word * 200)
    server.script(Status(400, body={"error": "input too long for the context window"}))

    result = run("chat", "--json", "four")

    assert result.exit_code == 0, result.stderr
    no_traceback(result)
    first, retried = (r["json"]["messages"] for r in server.requests[-2:])
    assert len(retried) < len(first)
    assert [m["content"] for m in retried if m["role"] == "user"][-1] == "four"
    dropped = json.loads(result.stdout)["context_dropped"]
    assert dropped == len(first) - len(retried) > 0
    assert (f"fased: the model refused {len(first) - 1} message(s) as too long; dropped the "
            f"{dropped} oldest of session s-1") in result.stderr
    assert attempts(models)[-1] == (PRIMARY, 1, "context_length", 400)
    completed = of_type(models, "turn.completed")[-1]["data"]
    assert completed["context_dropped"] == dropped
    # what the model was sent is what the log says it was sent
    calls = json.loads(ok("replay", "--turn", completed["turn"], "--request", "--json"))
    assert [[(m["role"], m["content"]) for m in c["messages"]] for c in calls] == [
        [(m["role"], m["content"]) for m in retried]]


def test_a_refusal_as_too_long_that_less_history_cannot_fix_ends_the_turn(models, ok, run,
                                                                         server):
    """Re-planning stops when nothing older is left to drop: the turn fails with the
    hint, after one request for every plan that was smaller than the last."""
    server.default = Reply("ok")
    ok("chat", "one " * 100)
    server.default = Status(400, body={"error": "input too long for the context window"})
    before = len(server.requests)

    result = run("chat", "two")

    assert result.exit_code == 1
    no_traceback(result)
    assert "the conversation is too long for this model" in result.stderr
    sent = [r["json"]["messages"] for r in server.requests[before:]]
    assert [len(m) for m in sent] == [4, 2]  # system, one, its reply, two; then system, two
    assert of_type(models, "turn.failed")[-1]["data"]["error_class"] == "context_length"


# -- transcript --------------------------------------------------------------------------------

def transcript(home: Path, session: str = "s-1") -> Path:
    return home / "agents" / "main" / "sessions" / f"{session}.jsonl"


def test_transcript_lines_and_rebuild_byte_for_byte(models, ok, run, server):
    server.script(Reply("first answer", usage=(3, 2)))
    ok("chat", "first question")
    server.script_for("fake-model", Status(400))
    run("chat", "a bad one")
    ok("chat", "-m", FALLBACK, "third")
    ok("chat", "--new-session", "elsewhere")

    path = transcript(models)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    header, *messages = lines
    assert header == {"type": "session", "version": 1, "id": "s-1", "agent": "main",
                      "name": None, "created_at": header["created_at"]}
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "first question"), ("assistant", "first answer"), ("user", "a bad one"),
        ("user", "third"), ("assistant", DEFAULT_TEXT)]
    ids = [m["id"] for m in messages]
    assert len(set(ids)) == 5
    assert [m["parent"] for m in messages] == [None, ids[0], ids[1], ids[2], ids[3]]
    assert messages[1]["model"] == PRIMARY
    assert messages[1]["usage"] == {"input_tokens": 3, "output_tokens": 2}
    assert messages[4]["model"] == FALLBACK
    assert all(m["ts"] and m["turn"] for m in messages)
    before = {p: p.read_bytes() for p in (path, transcript(models, "s-2"))}

    ok("replay", "--rebuild")
    assert {p: p.read_bytes() for p in before} == before

    for p in before:
        p.unlink()
    (models / "state.db").unlink()
    ok("replay", "--rebuild")
    assert {p: p.read_bytes() for p in before} == before


# -- block streaming ---------------------------------------------------------------------------

def test_block_streaming_writes_whole_blocks(models, ok, server, tmp_path):
    ok("config", "set", "agents.defaults.blockStreamingDefault", "on")
    ok("config", "set", "agents.defaults.blockStreamingChunk", '{"minChars":40,"maxChars":80}')
    paragraphs = [f"Paragraph {i} " + "word " * 10 for i in range(4)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    server.script(Reply(text, chunks=len(text) // 5, delay=0.005))

    proc = subprocess.Popen([*FASED, "chat", "--stream", "hi"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    reads = []
    while chunk := proc.stdout.read1(65536):
        reads.append(chunk.decode())
    proc.wait(timeout=30)

    assert proc.returncode == 0, proc.stderr.read()
    assert "".join(reads) == text + "\n"
    assert all(len(r) >= 40 for r in reads[:-1]), reads


def test_replay_of_what_the_model_was_sent_shows_control_sequences_escaped(models, ok):
    """`replay --request` printed every message and workspace file as it was: a message
    with an OSC sequence set the terminal's title when the request was shown."""
    ok("chat", "x \x1b]0;PWNED\x07 \x1b[2J")
    turn = of_type(models, "turn.completed")[-1]["data"]["turn"]
    shown = ok("replay", "--turn", turn, "--request")
    assert "\x1b" not in shown and "\x07" not in shown
    assert "x \\x1b]0;PWNED\\x07" in shown


@pytest.mark.parametrize("option", [[], ["--stream"], ["--json"]])
def test_a_chat_with_stdout_closed_ends_its_turn_and_says_no_bug(models, server, option):
    """`fased chat hi >&-`: Python's sys.stdout is None, and chat failed as an internal
    error after queueing the turn, which the next chat then answered first."""
    done = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *FASED, "chat", *option, "hi"],
                          capture_output=True, text=True, timeout=60)
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert done.returncode == 0, done.stderr
    turns = [e["type"] for e in events(models) if e["type"].startswith("turn.")]
    assert turns[-1] in ("turn.completed", "turn.aborted"), turns
    after = subprocess.run([*FASED, "chat", "next"], capture_output=True, text=True,
                           timeout=60)
    assert after.returncode == 0 and "earlier queued turn" not in after.stderr


def test_a_reply_that_cannot_be_written_to_stdout_is_not_a_full_home(models, server):
    """`fased chat ... > /dev/full` said the home's disk was full (exit 4, free disk
    space); the log and state.db were fine."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([*FASED, "chat", "hi"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: cannot write the output: no space left on the "
                                  "device it goes to"), done.stderr
    assert of_type(models, "turn.completed")
