"""Provider clients against FakeModelServer over real HTTP on 127.0.0.1."""

from __future__ import annotations

import email.utils
import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fased.errors import FasedError, UsageError
from fased.providers import (
    KINDS,
    AnthropicClient,
    Client,
    LocalClient,
    OllamaClient,
    OpenAIClient,
    ProviderError,
    client_for,
)
from fased.providers.base import (
    classify_error_object,
    classify_status,
    display_url,
    error_fields,
    parse_retry_after,
)
from fased.providers.loopback import LoopbackSession
from fased.providers.openai import SseDecoder

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import (
    DEFAULT_TEXT,
    Drop,
    Echo,
    FakeModelServer,
    Hang,
    Reply,
    Status,
    StreamError,
    error_body,
)

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-SECRET-0123456789"
# "loopback": the OpenAI wire over the embedded server's own transport (a socket)
FAMILIES = ["openai", "ollama", "anthropic", "loopback"]
HELLO = [{"role": "user", "content": "hello"}]
FINISH = {"openai": "stop", "loopback": "stop", "ollama": "stop", "anthropic": "end_turn"}
LENGTH = {"openai": "length", "loopback": "length", "ollama": "length", "anthropic": "max_tokens"}


def make(family: str, url: str, **kwargs) -> Client:
    if family == "loopback":
        client = make("openai", url, **kwargs)
        client._new_session = LoopbackSession
        return client
    base = url + "/v1" if family == "openai" else url
    kwargs.setdefault("read_timeout", 5.0)
    kwargs.setdefault("connect_timeout", 2.0)
    return client_for(family, base, api_key=kwargs.pop("api_key", KEY), **kwargs)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def fail(client: Client, model: str = "fake-model", **kwargs) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        client.chat(model, HELLO, **kwargs)
    err = info.value
    assert KEY not in str(err) and KEY not in repr(err)
    assert "\n" not in err.message
    return err


# -- streaming and replies ----------------------------------------------------------------


@pytest.mark.parametrize("framing", ["chunked", "close"])
@pytest.mark.parametrize("family", FAMILIES)
def test_stream_deltas_arrive_incrementally(server, family, framing):
    # 0.2 s between pieces: a stall of the loaded machine before the first piece must not
    # close the 0.6 s the pieces span down to the 0.15 s a buffering client is caught at
    server.script(Reply("one two three four", delay=0.2, framing=framing))
    seen: list[tuple[float, str]] = []
    result = make(family, server.url).chat(
        "fake-model", HELLO, on_delta=lambda piece: seen.append((time.monotonic(), piece))
    )
    assert [p for _, p in seen] == ["one ", "two ", "three ", "four"]
    assert result.text == "one two three four"
    # A buffering client would deliver every piece at the same instant.
    assert seen[-1][0] - seen[0][0] >= 0.15
    assert result.ttft_ms is not None and result.ttft_ms < result.latency_ms - 150


@pytest.mark.parametrize("family", FAMILIES)
def test_stream_usage_finish_and_model(server, family):
    server.script(Reply(chunks=3, usage=(12, 34)))
    result = make(family, server.url).chat("fake-model", HELLO)
    assert result.text == DEFAULT_TEXT
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 34)
    assert result.finish_reason == FINISH[family]
    assert result.model == "fake-model"
    assert result.tool_calls == [] and not result.truncated


@pytest.mark.parametrize("family", FAMILIES)
def test_non_stream(server, family):
    server.script(Reply("all at once", usage=(3, 4)))
    pieces: list[str] = []
    result = make(family, server.url).chat(
        "fake-model", HELLO, stream=False, on_delta=pieces.append
    )
    assert result.text == "all at once" and pieces == ["all at once"]
    assert (result.usage.input_tokens, result.usage.output_tokens) == (3, 4)
    assert result.finish_reason == FINISH[family]
    assert result.ttft_ms is None and result.latency_ms > 0
    assert server.requests[-1]["json"]["stream"] is False


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_max_tokens_truncates(server, family, stream):
    result = make(family, server.url).chat("fake-model", HELLO, stream=stream, max_tokens=2)
    assert result.text == "Hello from "
    assert result.finish_reason == LENGTH[family] and result.truncated
    sent = server.requests[-1]["json"]
    limit = sent["options"]["num_predict"] if family == "ollama" else sent["max_tokens"]
    assert limit == 2


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("family", FAMILIES)
def test_tool_calls(server, family, stream):
    calls = [("get_weather", '{"city": "Paris"}'), ("get_time", '{"tz": "UTC"}')]
    server.script(Reply("", tool_calls=calls))
    result = make(family, server.url).chat("fake-model", HELLO, stream=stream)
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == [
        (name, json.loads(args)) for name, args in calls
    ]
    if family != "ollama":
        assert all(c.id for c in result.tool_calls)
    assert result.finish_reason == {"openai": "tool_calls", "loopback": "tool_calls",
                                    "anthropic": "tool_use"}.get(
        family, "stop"
    )


def test_tools_are_converted_per_family(server):
    openai_shape = [{"type": "function", "function": {
        "name": "f", "description": "d", "parameters": {"type": "object"}}}]
    anthropic_shape = [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    make("anthropic", server.url).chat("fake-model", HELLO, tools=openai_shape)
    assert server.requests[-1]["json"]["tools"] == anthropic_shape
    make("openai", server.url).chat("fake-model", HELLO, tools=anthropic_shape)
    assert server.requests[-1]["json"]["tools"] == openai_shape


def test_wire_requests(server):
    messages = [{"role": "system", "content": "be brief"}, *HELLO]
    make("anthropic", server.url).chat("fake-model", messages)
    sent = server.requests[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == KEY
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["json"]["system"] == "be brief" and sent["json"]["messages"] == HELLO
    assert sent["json"]["max_tokens"] == 4096
    make("openai", server.url).chat("fake-model", messages)
    sent = server.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["json"]["stream_options"] == {"include_usage": True}
    assert sent["json"]["messages"] == messages
    make("ollama", server.url + "/v1").chat("fake-model", messages)  # /v1 is dropped
    assert server.requests[-1]["path"] == "/api/chat"


def test_echo_and_custom_headers(server):
    server.script(Echo())
    client = client_for("openrouter", server.url + "/v1", headers={"X-Title": "fased"})
    assert client.chat("fake-model", HELLO).text == "hello"
    assert server.requests[-1]["headers"]["x-title"] == "fased"
    assert "authorization" not in server.requests[-1]["headers"]


def test_stream_request_answered_with_plain_json(server):
    # Proxies that ignore "stream" answer with one JSON document.
    whole = {"model": "m", "choices": [{"index": 0, "message": {"content": "whole"},
                                        "finish_reason": "stop"}], "usage": {}}
    server.script(Status(200, body=whole))
    pieces: list[str] = []
    result = make("openai", server.url).chat("fake-model", HELLO, on_delta=pieces.append)
    assert result.text == "whole" and pieces == ["whole"]


def test_error_pickles():
    err = ProviderError("x 429", kind="rate_limit", status=429, retry_after=2.0)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.kind, copy.status, copy.retry_after, copy.message) == ("rate_limit", 429, 2.0,
                                                                          "x 429")


def test_session_reuses_connection(server):
    client = make("anthropic", server.url)
    for _ in range(3):
        client.chat("fake-model", HELLO)
    client.chat("fake-model", HELLO, stream=False)
    assert server.connections_opened == 1


@pytest.mark.parametrize("quirk", ["stream_options", "max_completion_tokens"])
def test_openai_adapts_to_rejected_fields(server, quirk):
    message = f"Unsupported parameter: '{quirk}' is not supported with this model."
    server.script(Status(400, body=error_body("openai", 400, message)))
    client = make("openai", server.url)
    assert client.chat("fake-model", HELLO, max_tokens=50).text == DEFAULT_TEXT
    retried = server.requests[-1]["json"]
    assert ("stream_options" in retried) == (quirk != "stream_options")
    assert ("max_completion_tokens" in retried) == (quirk == "max_completion_tokens")


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_rate_limit_retry_after_seconds(server, family):
    server.script(Status(429, retry_after=2))
    err = fail(make(family, server.url))
    assert (err.kind, err.status, err.retry_after) == ("rate_limit", 429, 2.0)
    assert err.retryable and not err.fallback_now
    assert "429 rate limited at" in err.message and "(retry after 2s)" in err.message


def test_rate_limit_message_line(server):
    server.script(Status(429, body="", retry_after=2))
    client = client_for("openai-compatible", server.url + "/v1", api_key=KEY)
    err = fail(client)
    assert err.message == f"openai-compatible 429 rate limited at {server.url}/v1 (retry after 2s)"


@pytest.mark.parametrize("family", FAMILIES)
def test_rate_limit_retry_after_http_date(server, family):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.script(Status(429, retry_after=when))
    err = fail(make(family, server.url))
    assert err.kind == "rate_limit" and 25 < err.retry_after <= 31


@pytest.mark.parametrize("family", FAMILIES)
def test_server_error_is_retryable(server, family):
    server.script(Status(500))
    err = fail(make(family, server.url))
    assert (err.kind, err.status, err.retryable, err.fallback_now) == ("server", 500, True, False)


@pytest.mark.parametrize(
    "step", [Status(529), Status(503, body=error_body("anthropic", 503, "busy") | {
        "error": {"type": "overloaded_error", "message": "Overloaded"}})]
)
def test_overloaded(server, step):
    server.script(step)
    err = fail(make("anthropic", server.url))
    assert err.kind == "overloaded" and err.retryable


@pytest.mark.parametrize("family", FAMILIES)
def test_auth_error_falls_back_now(server, family):
    server.script(Status(401))
    err = fail(make(family, server.url))
    assert (err.kind, err.status, err.retryable, err.fallback_now) == ("auth", 401, False, True)
    assert isinstance(err, FasedError) and err.hint


def test_wrong_key_is_auth(server):
    server.api_key = "the-right-key"
    assert fail(make("openai", server.url)).kind == "auth"
    assert make("openai", server.url, api_key="the-right-key").chat("fake-model", HELLO).text


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_model_not_found(server, family):
    err = fail(make(family, server.url), model="no-such-model")
    assert (err.kind, err.status, err.fallback_now) == ("not_found", 404, True)
    assert not err.retryable
    assert "no-such-model" in err.message


@pytest.mark.parametrize("family", FAMILIES)
def test_hang_times_out(server, family):
    server.script(Hang(5))
    started = time.monotonic()
    err = fail(make(family, server.url, read_timeout=0.3))
    assert err.kind == "timeout" and err.retryable
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("family", FAMILIES)
def test_connection_refused(family):
    err = fail(make(family, closed_port_url()))
    assert err.kind == "connection" and err.retryable and err.status is None
    assert "connection refused" in err.message


@pytest.mark.parametrize("framing", ["chunked", "close"])
@pytest.mark.parametrize("family", FAMILIES)
def test_drop_mid_stream(server, family, framing):
    server.script(Drop(after_chunks=2, framing=framing))
    seen: list[str] = []
    err = fail(make(family, server.url), on_delta=seen.append)
    assert err.kind == "stream_dropped" and err.retryable
    assert err.partial_text == "Hello from " == "".join(seen)


@pytest.mark.parametrize("family", FAMILIES)
def test_drop_non_stream_body(server, family):
    server.script(Drop())
    err = fail(make(family, server.url), stream=False)
    assert err.kind == "stream_dropped" and err.retryable and err.partial_text == ""


@pytest.mark.parametrize(
    ("family", "error_type", "kind"),
    [("anthropic", "overloaded_error", "overloaded"), ("anthropic", "rate_limit_error",
     "rate_limit"), ("openai", "server_error", "server"), ("ollama", "", "server")],
)
def test_error_event_in_stream(server, family, error_type, kind):
    server.script(StreamError(error_type, "went wrong", after_chunks=2))
    err = fail(make(family, server.url))
    assert err.kind == kind and err.partial_text == "Hello from "
    assert "went wrong" in err.message


@pytest.mark.parametrize(
    ("family", "message"),
    [("openai", "This model's maximum context length is 8192 tokens."),
     ("anthropic", "prompt is too long: 210000 tokens > 200000 maximum"),
     ("ollama", "input too long for the context window")],
)
def test_context_length(server, family, message):
    server.script(Status(400, body=error_body(family, 400, message)), Status(400))
    err = fail(make(family, server.url))
    assert err.kind == "context_length" and not err.retryable and not err.fallback_now
    plain = fail(make(family, server.url))
    assert plain.kind == "bad_request" and not plain.retryable


@pytest.mark.parametrize("family", ["openai", "loopback"])
def test_llamacpp_refusing_a_prompt_larger_than_its_context_is_context_length(server, family):
    """llama.cpp's server (and so the embedded model's) says "context size" and names its
    own error type; that was a plain bad request."""
    server.script(Status(400, body={"error": {
        "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 2995,
        "n_ctx": 1024, "message": "request (2995 tokens) exceeds the available context size "
        "(1024 tokens), try increasing it"}}))
    err = fail(make(family, server.url))
    assert err.kind == "context_length" and not err.retryable
    assert "2995 tokens" in err.message


def test_error_object_with_200(server):
    server.script(Status(200, body={"error": {"message": "upstream died", "code": 502}}))
    err = fail(make("openai", server.url), stream=False)
    assert (err.kind, err.status) == ("server", 502)


@pytest.mark.parametrize("family", FAMILIES)
def test_api_key_never_in_messages(server, family):
    echoed = error_body(family, 401, f"Incorrect API key provided: {KEY}")
    server.script(Status(401, body=echoed), Status(400, body=f"bad header Bearer {KEY}"))
    first, second = fail(make(family, server.url)), fail(make(family, server.url))
    assert "***" in first.message and "***" in second.message
    for err in (first, second):
        assert KEY not in f"{err} {err!r} {err.detail} {err.hint}"


def test_url_credentials_not_shown():
    err = fail(client_for("vllm", closed_port_url().replace("//", "//user:pw-secret@")))
    assert "pw-secret" not in err.message and "user" not in err.message


# -- model lists and probes ---------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_list_models(server, family):
    server.models = ["alpha", "beta:7b"]
    assert make(family, server.url).list_models() == ["alpha", "beta:7b"]


def _script_probe(server: FakeModelServer, family: str, step) -> None:
    # The Ollama probe only lists tags (a chat would load the model into memory).
    (server.script_models if family == "ollama" else server.script)(step)


@pytest.mark.parametrize("family", FAMILIES)
def test_probe_results(server, family):
    client = make(family, server.url, read_timeout=0.3)
    assert client.probe("fake-model") == "ok" and client.last_probe_error is None
    assert client.probe(None) == "ok"
    assert client.probe("missing-model") == "no_model"
    for step, expected in [(Status(401), "auth"), (Status(429, retry_after=1), "rate_limit"),
                           (Hang(3), "timeout"), (Status(500), "error")]:
        _script_probe(server, family, step)
        assert client.probe("fake-model") == expected
        assert client.last_probe_error is not None
    assert make(family, closed_port_url()).probe("fake-model") == "unreachable"


def test_probe_is_minimal(server):
    make("openai", server.url).probe("fake-model")
    assert server.requests[-1]["json"]["max_tokens"] == 1
    assert server.requests[-1]["json"]["stream"] is False


def test_probe_unknown_model_answered_with_400(server):
    server.script_for("ghost", Status(400, body="model ghost is not loaded"))
    assert make("lmstudio", server.url).probe("ghost") == "no_model"


def test_ollama_latest_tag(server):
    server.models = ["llama3:latest"]
    assert make("ollama", server.url).probe("llama3") == "ok"


# -- units and packaging ------------------------------------------------------------------


def test_client_for_kinds():
    for kind in KINDS:
        client = client_for(kind, "http://127.0.0.1:1", read_timeout=7)
        expected = {"ollama": OllamaClient, "anthropic": AnthropicClient,
                    "local": LocalClient}.get(kind, OpenAIClient)
        assert type(client) is expected and client.label == kind and client.read_timeout == 7
    with pytest.raises(UsageError):
        client_for("nope", "http://x")


def test_parse_retry_after():
    now = time.time()
    assert parse_retry_after("2") == 2.0 and parse_retry_after("1.5") == 1.5
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True)) == 0.0
    assert 9 <= parse_retry_after(email.utils.formatdate(now + 10, usegmt=True)) <= 11
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_classification_table():
    table = {401: "auth", 403: "auth", 404: "not_found", 408: "timeout", 409: "server",
             429: "rate_limit", 500: "server", 503: "server", 529: "overloaded",
             400: "bad_request", 413: "bad_request", 422: "bad_request"}
    for status, kind in table.items():
        assert classify_status(status) == kind, status
        err = ProviderError("x", kind=kind, status=status)
        assert err.retryable == (status in (408, 409, 429) or status >= 500)
    assert classify_status(400, message="context_length_exceeded") == "context_length"
    assert classify_status(413, message="Prompt is too long") == "context_length"
    assert classify_status(500, etype="overloaded_error") == "overloaded"
    assert error_fields('{"error": "model \'x\' not found"}') == ("", "model 'x' not found", "")
    assert display_url("https://u:p@h:1/v1?key=k") == "https://h:1/v1"
    assert classify_error_object({"error": {"code": "rate_limit_exceeded"}})[0] == "rate_limit"
    assert classify_error_object({"error": {"code": 503, "message": "x"}}) == ("server", 503, "x")
    too_long = {"error": {"type": "invalid_request_error", "message": "prompt is too long"}}
    assert classify_error_object(too_long)[0] == "context_length"


def test_sse_decoder():
    decoder = SseDecoder()
    lines = [": ping", "event: a", "data:{\"x\":1}", "data: more", "", "", "data: [DONE]", ""]
    events = [e for e in map(decoder.feed, lines) if e]
    assert events == [("a", '{"x":1}\nmore'), ("message", "[DONE]")]


def test_import_does_not_load_requests():
    code = (
        "import sys, fased.providers as p; "
        "p.client_for('openai', 'http://127.0.0.1:1/v1', api_key='k'); "
        "bad = [m for m in ('requests', 'urllib3') if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=30)


def test_standalone_process(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"kind": "status", "code": 429, "retry_after": 3}]))
    argv = [sys.executable, str(ROOT / "tests" / "fakeserver.py"), "--port", "0",
            "--print-url", "--script-json", str(script)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            with make("openai", url) as client:
                assert fail(client).retry_after == 3.0
                assert client.chat("fake-model", HELLO).text == DEFAULT_TEXT
                assert client.list_models() == ["fake-model", "fake-small"]
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# -- an unknown model, in every server's words ---------------------------------------------

# LiteLLM's proxy, verbatim: HTTP 400, the upstream error as a Python repr inside "message".
LITELLM_UNKNOWN_MODEL = {"error": {
    "message": "{'error': '/chat/completions: Invalid model name passed in model=nonexistent. "
    "Call `/v1/models` to view available models for your key.'}",
    "type": "None", "param": "None", "code": "400"}}
UNKNOWN_MODEL_ANSWERS = {
    "litellm": ("openai", 400, LITELLM_UNKNOWN_MODEL),
    "openrouter": ("openai", 400, {"error": {"message": "nonexistent is not a valid model ID",
                                             "code": 400}}),
    "lmstudio": ("openai", 400, {"error": {"message": "Model not found: nonexistent",
                                           "type": "invalid_request_error",
                                           "code": "model_not_found"}}),
    "vllm": ("openai", 404, {"object": "error", "message": "The model `nonexistent` does not "
                             "exist.", "type": "NotFoundError", "param": None, "code": 404}),
    "ollama": ("ollama", 404, {"error": "model 'nonexistent' not found"}),
    "ollama-v1": ("openai", 404, {"error": {"message": 'model "nonexistent" not found, try '
                                            "pulling it first", "type": "api_error",
                                            "param": None, "code": None}}),
    "anthropic": ("anthropic", 404, {"type": "error", "error": {
        "type": "not_found_error", "message": "model: nonexistent"}}),
}


@pytest.mark.parametrize("server_kind", list(UNKNOWN_MODEL_ANSWERS))
def test_an_unknown_model_is_not_found_in_chat_and_probe(server, server_kind):
    """Even when the server lists the model (a LiteLLM route whose upstream is gone), its own
    words decide: chat and probe classify the same answer the same way."""
    family, code, body = UNKNOWN_MODEL_ANSWERS[server_kind]
    server.models = ["fake-model", "nonexistent"]
    server.script_for("nonexistent", *[Status(code, body=body)] * 2)
    err = fail(make(family, server.url), model="nonexistent")
    assert (err.kind, err.status) == ("not_found", code)
    assert err.fallback_now and not err.retryable
    if family != "ollama":  # Ollama's probe reads the tag list, which names the model
        assert make(family, server.url).probe("nonexistent") == "no_model"


def test_a_bad_request_for_a_model_the_server_does_not_list_is_not_found(server):
    """A 400 in words no rule knows: the server's model list decides, for chat as for probe."""
    server.script_for("ghost", *[Status(400, body="model ghost is not loaded")] * 2)
    err = fail(make("lmstudio", server.url + "/v1"), model="ghost")
    assert (err.kind, err.status) == ("not_found", 400)
    assert make("lmstudio", server.url + "/v1").probe("ghost") == "no_model"
    server.script(Status(400, body="model fake-model is not loaded"))
    assert fail(make("lmstudio", server.url + "/v1")).kind == "bad_request"


def test_unknown_model_error_objects_without_a_status():
    litellm = classify_error_object(LITELLM_UNKNOWN_MODEL)
    assert litellm[:2] == ("not_found", 400) and "Invalid model name" in litellm[2]
    assert classify_error_object({"error": "model 'x' not found"})[0] == "not_found"
    assert classify_error_object({"error": {"code": "model_not_found"}})[0] == "not_found"
    assert classify_status(422, message="Unknown model: x") == "not_found"
    assert classify_status(400, message="this model's maximum context length is 8k"
                           ) == "context_length"
    assert classify_status(400, message="tool 'x' not found") == "bad_request"
