"""A hostile or broken server must not poison a session: invalid Unicode in replies, bugs
while answering a turn, servers that drip bytes, redirects to another origin, and webhook
deliveries that fail.

Deadlines are kept short with FASED_HTTP_DEADLINE (a cap on every outbound call's total
deadline); every drip server here would take well over a minute to finish its answer.
"""

from __future__ import annotations

import errno
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import error_line, events, rows, run_process

from fased.providers import Client, ProviderError, client_for
from fased.providers.loopback import LoopbackSession
from fased.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import (
    DEFAULT_TEXT,
    LONE_SURROGATES,
    SPLIT_EMOJI,
    Drip,
    FakeModelServer,
    Redirect,
    Reply,
    Status,
    StreamError,
)

# "loopback": the OpenAI wire over the embedded server's own transport (a socket)
FAMILIES = ["openai", "ollama", "anthropic", "loopback"]
HELLO = [{"role": "user", "content": "hello"}]
KEY = "sk-test-SECRET-0123456789"
CUT_OFF = 15.0  # seconds: "did not hang" (each drip below needs a minute or more)
T0 = "2026-03-02T08:00:00Z"


def make(family: str, url: str, **kwargs) -> Client:
    if family == "loopback":
        client = make("openai", url, **kwargs)
        client._new_session = LoopbackSession
        return client
    base = url + "/v1" if family == "openai" else url
    kwargs.setdefault("read_timeout", 5.0)
    kwargs.setdefault("connect_timeout", 2.0)
    return client_for(family, base, api_key=kwargs.pop("api_key", KEY), **kwargs)


@pytest.fixture
def other() -> Iterator[FakeModelServer]:
    """A second server on another port: another origin, which must receive nothing."""
    with FakeModelServer() as srv:
        yield srv


@pytest.fixture
def short_deadline(monkeypatch) -> float:
    monkeypatch.setenv("FASED_HTTP_DEADLINE", "1.5")
    return 1.5


def of_type(home: Path, *types: str) -> list[dict]:
    return [e["data"] for e in events(home) if e["type"] in types]


def utf8(text: str) -> str:
    text.encode("utf-8")  # raises on a lone surrogate
    return text


# -- invalid Unicode in what a server sends ---------------------------------------------------

@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_surrogate_halves_split_across_pieces_make_one_character(server, family, stream):
    server.script(Reply(chunks=SPLIT_EMOJI,
                        tool_calls=[("look\ud83d\ude00", '{"q": "\ud83d\ude00"}')]))
    pieces: list[str] = []
    with make(family, server.url) as client:
        result = client.chat("fake-model", HELLO, stream=stream, on_delta=pieces.append)
    assert result.text == "smile \U0001F600 done"
    assert "".join(utf8(p) for p in pieces) == result.text
    [call] = result.tool_calls
    assert call.name == "look\U0001F600"
    assert json.loads(call.arguments) == {"q": "\U0001F600"}
    assert result.replaced_chars == 0


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_lone_surrogates_become_replacement_characters_and_are_counted(server, family, stream):
    server.script(Reply(chunks=LONE_SURROGATES, tool_calls=[("bad\udc00name", '{"q": "\ud800"}')]))
    pieces: list[str] = []
    with make(family, server.url) as client:
        result = client.chat("fake-model", HELLO, stream=stream, on_delta=pieces.append)
    assert result.text == "bad \ufffd half and \ufffd end"
    assert "".join(utf8(p) for p in pieces) == result.text
    [call] = result.tool_calls
    assert call.name == "bad\ufffdname"
    assert json.loads(utf8(call.arguments)) == {"q": "\ufffd"}
    assert result.replaced_chars == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_lone_surrogates_in_error_messages_are_replaced(server, family):
    server.script(Status(400, body={"error": {"message": "no \ud800 way"}}),
                  StreamError(error_type="api_error", message="broke \udfff here"))
    with make(family, server.url) as client:
        with pytest.raises(ProviderError) as status_error:
            client.chat("fake-model", HELLO)
        with pytest.raises(ProviderError) as stream_error:
            client.chat("fake-model", HELLO)
    assert "no \ufffd way" in utf8(status_error.value.message)
    assert "broke \ufffd here" in utf8(stream_error.value.message)


def test_model_names_a_server_lists_are_made_safe(server):
    server.models = ["fine", "bad\ud800", 7]
    with make("openai", server.url) as client:
        assert client.list_models() == ["fine", "bad\ufffd"]


def test_run_once_completes_a_turn_whose_reply_holds_lone_surrogates(models, ok, server):
    server.script(Reply(chunks=LONE_SURROGATES))
    turn = ok("chat", "--queue", "hi").strip()

    first = run_process("run", "--once")

    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert "U+FFFD" in first.stderr
    [done] = [d for d in of_type(models, "turn.completed") if d["turn"] == turn]
    assert (done["reply"], done["replaced_chars"]) == ("bad \ufffd half and \ufffd end", 2)
    assert rows(models, "SELECT state FROM turns WHERE id = ?", (turn,)) == [
        {"state": "completed"}]
    before = len(events(models))

    second = run_process("run", "--once")

    assert (second.returncode, second.stderr) == (0, "")
    assert len(events(models)) == before


def test_chat_prints_a_reply_with_lone_surrogates_replaced(models, run, server):
    server.script(Reply(chunks=LONE_SURROGATES))
    result = run("chat", "--json", "hi")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["reply"], report["replaced_chars"]) == ("bad \ufffd half and \ufffd end", 2)
    assert "2 character(s)" in result.stderr and "U+FFFD" in result.stderr


def test_bytes_that_are_not_utf8_are_replaced_and_counted(models, run, server):
    body = b'{"model": "fake-model", "message": {"role": "assistant", "content": "caf\xe9 ok"},'
    server.script(Status(200, body=body + b' "done": true}'))
    result = run("chat", "--json", "hi")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["reply"], report["replaced_chars"]) == ("caf\ufffd ok", 1)


# -- any exception while answering ends the turn -----------------------------------------------

def test_a_bug_while_answering_fails_that_turn_and_the_runner_goes_on(models, run, ok, server,
                                                                      monkeypatch):
    import fased.loop

    real = fased.loop.build_request
    calls = []

    def buggy(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("weird-field")
        return real(*args, **kwargs)

    monkeypatch.setattr(fased.loop, "build_request", buggy)
    first, second = (ok("chat", "--queue", m).strip() for m in ("one", "two"))

    result = run("run", "--once")

    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    [failed] = of_type(models, "turn.failed")
    assert (failed["turn"], failed["error_class"]) == (first, "internal")
    assert "KeyError" in failed["message"] and "weird-field" in failed["message"]
    [done] = of_type(models, "turn.completed")
    assert (done["turn"], done["reply"]) == (second, DEFAULT_TEXT)
    assert rows(models, "SELECT state FROM turns ORDER BY queued_seq") == [
        {"state": "failed"}, {"state": "completed"}]
    assert f"{first} (main/s-1) failed: internal error: KeyError" in result.stderr


@pytest.mark.parametrize("failures", [1, 99])
def test_a_stray_network_error_puts_the_turn_back_a_bounded_number_of_times(
        models, run, ok, server, monkeypatch, failures):
    from fased.providers.http import HttpClient

    real = HttpClient.chat
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) <= failures:
            raise ConnectionResetError("reset by peer")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(HttpClient, "chat", flaky)
    turn = ok("chat", "--queue", "hi").strip()

    result = run("run", "--once")

    abandoned = of_type(models, "turn.abandoned")
    assert all("network error: ConnectionResetError" in a["reason"] for a in abandoned)
    [row] = rows(models, "SELECT state, claims, error_class FROM turns WHERE id = ?", (turn,))
    if failures == 1:
        assert result.exit_code == 0, result.stderr
        assert (len(abandoned), row["state"], row["claims"]) == (1, "completed", 2)
    else:
        assert result.exit_code == 1, result.stderr
        assert (len(abandoned), row["state"], row["claims"]) == (2, "failed", 3)
        assert row["error_class"] == "internal"


def test_a_malformed_reply_is_a_server_error_not_a_crash(models, run, server):
    server.script(Status(200, body={"model": "fake-model", "message": "oops", "done": True}))
    result = run("chat", "hi")
    assert result.exit_code == 5, result.stderr
    assert "malformed" in error_line(result)
    assert "internal error" not in result.stderr
    [failed] = of_type(models, "turn.failed")
    assert failed["error_class"] == "models_failed"


# What a reply of the wrong shape is called: the place in the API's own terms, never the
# Python exception a parser met. (family, a 200 body, what is wrong)
WHOLE_SHAPES = [
    *[(family, b"[1, 2, 3]", "not a JSON object") for family in FAMILIES],
    *[(family, b"null", "not a JSON object") for family in FAMILIES],
    ("openai", b'{"choices": [{"message": {"role": "assistant", "content": {"a": 1}}}]}',
     "choices[0].message.content is not a string"),
    ("loopback", b'{"choices": "none"}', "choices is not a list"),
    ("openai", b'{"choices": [7]}', "choices[0] is not an object"),
    ("openai", b'{"choices": [{"message": {"tool_calls": {"id": "x"}}}]}',
     "choices[0].message.tool_calls is not a list"),
    ("openai", b'{"choices": [{"message": {"tool_calls": [{"function": "f"}]}}]}',
     "choices[0].message.tool_calls[0].function is not an object"),
    ("ollama", b'{"message": {"role": "assistant", "content": {"a": 1}}, "done": true}',
     "message.content is not a string"),
    ("ollama", b'{"message": "hi", "done": true}', "message is not an object"),
    ("anthropic", b'{"content": [{"type": "text", "text": {"a": 1}}]}',
     "content[0].text is not a string"),
    ("anthropic", b'{"content": "hi"}', "content is not a list"),
]
STREAM_SHAPES = [
    ("openai", 'data: {"choices": [{"delta": {"content": {"a": 1}}}]}\n\ndata: [DONE]\n\n',
     "choices[0].delta.content is not a string"),
    ("openai", 'data: {"choices": [{"delta": [1]}]}\n\ndata: [DONE]\n\n',
     "choices[0].delta is not an object"),
    ("ollama", '{"message": {"content": [1]}, "done": false}\n', "message.content is not a string"),
    ("anthropic", 'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
     '"delta": {"type": "text_delta", "text": {"a": 1}}}\n\n', "delta.text is not a string"),
]
LIST_SHAPES = [
    ("openai", b"[1, 2, 3]", "item 0 is not an object"),
    ("openai", b"null", "not a JSON object or array"),
    ("openai", b'{"data": "fake-model"}', "data is not a list"),
    ("ollama", b"[1, 2, 3]", "not a JSON object"),
    ("ollama", b'{"models": [1]}', "models[0] is not an object"),
    ("anthropic", b'{"data": {"id": "fake-model"}}', "data is not a list"),
]


def assert_malformed(err: ProviderError, what: str) -> None:
    assert f" sent a malformed response ({what}) at " in err.message
    assert not re.search(r"[A-Z][a-z]+Error|non-JSON", err.message), err.message
    assert err.kind == "server"


@pytest.mark.parametrize("family, body, what", WHOLE_SHAPES)
def test_a_whole_reply_of_the_wrong_shape_says_what_is_wrong(server, family, body, what):
    server.script(Status(200, body=body))
    with make(family, server.url) as client, pytest.raises(ProviderError) as info:
        client.chat("fake-model", HELLO, stream=False)
    assert_malformed(info.value, what)


@pytest.mark.parametrize("family, body, what", STREAM_SHAPES)
def test_a_streamed_reply_of_the_wrong_shape_says_what_is_wrong(server, family, body, what):
    server.script(Status(200, body=body))  # text/plain: read as the stream it is
    with make(family, server.url) as client, pytest.raises(ProviderError) as info:
        client.chat("fake-model", HELLO, stream=True)
    assert_malformed(info.value, what)


@pytest.mark.parametrize("family, body, what", LIST_SHAPES)
def test_a_model_list_of_the_wrong_shape_says_what_is_wrong(server, family, body, what):
    server.script_models(Status(200, body=body))
    with make(family, server.url) as client, pytest.raises(ProviderError) as info:
        client.list_models()
    assert_malformed(info.value, what)


def test_a_probe_of_a_server_answering_the_wrong_shape_says_what_is_wrong(set_up, ok, run,
                                                                          server):
    ok("agent", "models", "providers", "add", "h", "--kind", "vllm", "--base-url",
       server.url + "/v1")
    ok("agent", "models", "set", "primary", "h/fake-model")
    server.script(Status(200, body=b"[1, 2, 3]"))
    result = run("agent", "models", "status", "--probe")
    assert result.exit_code != 0
    assert "vllm sent a malformed response (not a JSON object) at" in result.stdout + \
        result.stderr
    assert "AttributeError" not in result.stdout + result.stderr


def test_a_result_that_cannot_be_recorded_is_a_state_error(models, run, ok, server,
                                                            monkeypatch):
    original = Store.append_internal

    def full_disk(self, drafts):
        if callable(drafts):
            decide = drafts

            def drafts(con):
                out = decide(con)
                if any(d.type in ("turn.completed", "turn.failed") for d in out):
                    raise OSError(errno.ENOSPC, "No space left on device")
                return out

        return original(self, drafts)

    monkeypatch.setattr(Store, "append_internal", full_disk)
    ok("chat", "--queue", "hi")

    result = run("run", "--once")

    assert result.exit_code == 4, result.stderr
    line = error_line(result)
    assert "could not record" in line and "No space left on device" in line


# -- a total deadline on every outbound call ---------------------------------------------------

@pytest.mark.parametrize("family, headers", [("ollama", True), ("openai", False),
                                             ("anthropic", False)])
def test_a_drip_feeding_model_server_is_cut_off_by_the_deadline(server, family, headers,
                                                                short_deadline):
    server.script(Drip(interval=0.5, headers=headers))
    started = time.monotonic()
    client = make(family, server.url, read_timeout=30.0)
    with client, pytest.raises(ProviderError) as info:
        client.chat("fake-model", HELLO)
    assert time.monotonic() - started < CUT_OFF
    assert info.value.kind == "timeout"
    assert "1.5s total deadline" in info.value.message


def test_the_model_deadline_comes_from_the_config(models, run, ok, server):
    ok("config", "set", "agents.defaults.deadlineSeconds", "1")
    server.script(Drip(interval=0.5))
    started = time.monotonic()
    result = run("chat", "hi")
    assert time.monotonic() - started < CUT_OFF
    assert result.exit_code == 5, result.stderr
    assert "1s total deadline" in error_line(result)
    [attempt] = of_type(models, "turn.attempt_failed")
    assert attempt["kind"] == "timeout"


@pytest.mark.parametrize("kind", ["ollama", "openai-compatible"])
def test_a_drip_feeding_server_is_cut_off_in_a_probe(set_up, run, ok, server, kind,
                                                     short_deadline):
    base = server.url + ("/v1" if kind != "ollama" else "")
    ok("agent", "models", "providers", "add", "p", "--kind", kind, "--base-url", base)
    ok("agent", "models", "set", "primary", "p/fake-model")
    # Ollama is probed through its model list, the others with a one-token chat.
    (server.script_models if kind == "ollama" else server.script)(Drip(0.5, headers=True))
    started = time.monotonic()
    result = run("agent", "models", "status", "--probe", "--json")
    assert time.monotonic() - started < CUT_OFF
    assert result.exit_code == 1
    [primary] = [r for r in json.loads(result.stdout)["refs"] if r["role"] == "primary"]
    assert primary["probe"] == "timeout"


def test_a_drip_feeding_server_is_cut_off_in_a_catalog_refresh(set_up, run, ok, server,
                                                               short_deadline):
    ok("agent", "models", "providers", "add", "ollama", "--kind", "ollama", "--base-url",
       server.url)
    server.script_models(Drip(0.5))
    started = time.monotonic()
    result = run("agent", "models", "list", "--refresh")
    assert time.monotonic() - started < CUT_OFF
    assert "ollama: ollama timed out: hit the 1.5s total deadline" in result.stderr
    [fetched] = of_type(set_up, "models.catalog_fetched")
    assert "1.5s total deadline" in fetched["error"]


@pytest.fixture
def tasks(models, monkeypatch) -> Path:
    monkeypatch.setenv("FASED_NOW", T0)
    return models


def new_task(ok, target: str) -> str:
    return json.loads(ok("task", "new", "--every", "1h", "--message", "report", "--deliver",
                         target, "--json"))["task"]


def tick(run, monkeypatch, when: str = "2026-03-02T09:00:00Z"):
    monkeypatch.setenv("FASED_NOW", when)
    return run("run", "--once")


def test_a_drip_feeding_webhook_is_cut_off_by_the_deadline(tasks, run, ok, server, monkeypatch,
                                                           short_deadline):
    server.script_hook(Drip(0.5, headers=True), Drip(0.5, headers=True), Drip(0.5))
    new_task(ok, f"webhook:{server.url}/hook")
    started = time.monotonic()
    assert tick(run, monkeypatch).exit_code == 0
    assert time.monotonic() - started < CUT_OFF
    [delivered] = of_type(tasks, "task.delivered")
    assert delivered["ok"] is False
    assert "1.5s total deadline" in delivered["error"]


def test_a_body_over_the_cap_is_refused(server, monkeypatch):
    import fased.net

    monkeypatch.setattr(fased.net, "MAX_JSON_BYTES", 4096)
    monkeypatch.setattr(fased.net, "MAX_STREAM_BYTES", 8192)
    server.script(Reply("word " * 2000), Reply("word " * 2000))
    with make("ollama", server.url) as client:
        with pytest.raises(ProviderError) as whole:
            client.chat("fake-model", HELLO, stream=False)
        with pytest.raises(ProviderError) as streamed:
            client.chat("fake-model", HELLO, stream=True)
    assert "sent more than 4 KiB" in whole.value.message
    assert "sent more than 8 KiB" in streamed.value.message


# -- redirects ---------------------------------------------------------------------------------

def test_a_webhook_redirect_to_another_origin_is_a_failed_delivery(tasks, run, ok, server,
                                                                   other, monkeypatch):
    server.script_hook(*[Redirect(f"{other.url}/hook/elsewhere")] * 3)
    new_task(ok, f"webhook:{server.url}/hook")
    assert tick(run, monkeypatch).exit_code == 0
    [delivered] = of_type(tasks, "task.delivered")
    assert delivered["ok"] is False
    assert delivered["attempts"] == 1  # a redirect does not go away by trying again
    assert f"redirected to {other.url}/hook/elsewhere" in delivered["error"]
    assert "another origin" in delivered["error"]
    assert other.hooks == [] and other.connections_opened == 0
    assert [h["path"] for h in server.hooks] == ["/hook"]


def test_a_webhook_redirect_within_its_origin_is_followed(tasks, run, ok, server,
                                                          monkeypatch):
    server.script_hook(Redirect("/hook/moved"))
    new_task(ok, f"webhook:{server.url}/hook")
    assert tick(run, monkeypatch).exit_code == 0
    [delivered] = of_type(tasks, "task.delivered")
    assert (delivered["ok"], delivered["error"]) == (True, None)
    assert [h["path"] for h in server.hooks] == ["/hook", "/hook/moved"]
    assert server.hooks[0]["json"] == server.hooks[1]["json"]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_model_redirect_to_another_origin_is_refused(server, other, family):
    path = {"openai": "/v1/chat/completions", "loopback": "/v1/chat/completions",
            "ollama": "/api/chat",
            "anthropic": "/v1/messages"}[family]
    server.script(Redirect(other.url + path))
    with make(family, server.url) as client, pytest.raises(ProviderError) as info:
        client.chat("fake-model", HELLO)
    assert f"redirected to {other.url}{path}" in info.value.message
    assert "another origin" in info.value.message
    assert other.requests == [] and other.connections_opened == 0


def test_a_model_list_redirect_to_another_origin_is_refused(server, other):
    server.script_models(Redirect(other.url + "/api/tags"))
    with make("ollama", server.url) as client, pytest.raises(ProviderError) as info:
        client.list_models()
    assert f"redirected to {other.url}/api/tags" in info.value.message
    assert other.connections_opened == 0


def test_a_model_redirect_within_its_origin_is_followed(server):
    server.script(Redirect("/v1/chat/completions"))
    with client_for("openai", server.url + "/old/v1", api_key=KEY) as client:
        result = client.chat("fake-model", HELLO)
    assert result.text == DEFAULT_TEXT
    assert [r["path"] for r in server.requests] == ["/old/v1/chat/completions",
                                                    "/v1/chat/completions"]


# -- a failed delivery is a failed `task run` --------------------------------------------------

def test_task_run_exits_non_zero_when_its_delivery_fails(tasks, run, ok, server, monkeypatch):
    monkeypatch.setenv("FASED_WEBHOOK_ATTEMPTS", "1")
    server.script_hook(Status(500))
    task = new_task(ok, f"webhook:{server.url}/hook")

    result = run("task", "run", task)

    assert result.exit_code == 1, result.stderr
    assert result.stdout == DEFAULT_TEXT + "\n"
    assert error_line(result) == (f"Error: delivery to webhook:{server.url}/*** failed: "
                                  "HTTP 500")
    [delivered] = of_type(tasks, "task.delivered")
    assert delivered["ok"] is False


def test_task_run_json_reports_the_delivery(tasks, run, ok, server):
    task = new_task(ok, f"webhook:{server.url}/hook")
    result = run("task", "run", task, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["reply"] == DEFAULT_TEXT
    assert (report["delivery"]["ok"], report["delivery"]["target"]) == (
        True, f"webhook:{server.url}/***")
