"""A fake model server speaking the OpenAI, Ollama and Anthropic wire formats over real HTTP.

Stdlib only. In tests:

    with FakeModelServer() as server:
        server.script(Status(429, retry_after=1), Reply("hi"))
        ...  # point a client at server.url (+ "/v1" for OpenAI-compatible clients)

Hostile servers: `Drip` answers one byte at a time (headers too, if asked), `Redirect` sends a
3xx elsewhere, and replies whose pieces hold surrogate halves (`SPLIT_EMOJI`) or lone
surrogates (`LONE_SURROGATES`) go out as JSON \\u escapes, as a real server's would. POSTs
to paths under /hook make the server a webhook receiver (`script_hook`, `hooks`).

As a process: `python tests/fakeserver.py --port 0 --print-url [--script-json FILE]` prints
the URL on the first stdout line, then serves until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DEFAULT_TEXT = "Hello from the fake model."
# One emoji (U+1F600) whose UTF-16 surrogate halves end one piece and start the next.
SPLIT_EMOJI = ["smile \ud83d", "\ude00 done"]
# Surrogates that pair with nothing: no client can decode them.
LONE_SURROGATES = ["bad \ud800 half", " and \udfff end"]


@dataclass
class Reply:
    """A successful reply, streamed when the request asks for it.

    chunks: number of pieces, or the explicit pieces (default: one per word).
    delay: seconds to wait before each piece. framing: "chunked" or "close" (no length,
    the body ends when the connection closes).
    """

    text: str = DEFAULT_TEXT
    chunks: int | list[str] | None = None
    delay: float = 0.0
    usage: tuple[int, int] | None = None
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, JSON arguments)
    framing: str = "chunked"
    # Tool-call quirks of real servers: `call_ids` replaces the ids (None: sent without one;
    # Ollama sends ids only when given); `arg_chunks` is how many streamed pieces each call's
    # arguments come in (OpenAI, Anthropic); `tool_index=False` streams each OpenAI call whole
    # without an "index"; `calls_in_final` puts Ollama's tool calls in the done chunk.
    call_ids: list[str | None] | None = None
    arg_chunks: int = 3
    tool_index: bool = True
    calls_in_final: bool = False
    # What a LiteLLM proxy reports about cost: `cost` goes in the OpenAI usage object (a
    # streamed reply's last chunk, a whole reply's body) as `usage.cost`; `headers` are sent
    # with the response (`{"x-litellm-response-cost": "0.0012"}`).
    cost: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def pieces(self) -> list[str]:
        if isinstance(self.chunks, list):
            return list(self.chunks)
        if self.chunks:
            size = max(1, math.ceil(len(self.text) / self.chunks))
            return [self.text[i : i + size] for i in range(0, len(self.text), size)]
        return re.findall(r"\S+\s*|\s+", self.text)


@dataclass
class Status:
    """An HTTP error in the endpoint's own error shape (or `body` verbatim: dict, str or
    bytes)."""

    code: int
    body: Any = None
    retry_after: float | str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hang:
    """Read the request, then never answer (until `seconds` pass or the server stops)."""

    seconds: float = 30.0


@dataclass
class Drop:
    """Stream `after_chunks` pieces of `text`, then close the socket mid-body.

    With framing="close" the cut looks like a clean end of body; only the missing
    terminator ([DONE], done:true, message_stop) tells the client.
    """

    after_chunks: int = 2
    text: str = DEFAULT_TEXT
    framing: str = "chunked"


@dataclass
class Echo:
    """Reply with the last user message's content."""

    delay: float = 0.0


@dataclass
class StreamError:
    """Stream some pieces, then an in-stream error event (e.g. Anthropic `event: error`)."""

    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    after_chunks: int = 1
    text: str = DEFAULT_TEXT


@dataclass
class Drip:
    """Send the answer `then` (default: what the request would get anyway) one byte every
    `interval` seconds: the body, and with headers=True the status line and headers too."""

    interval: float = 1.0
    headers: bool = False
    then: Any = None


@dataclass
class Redirect:
    """Answer `code` with `Location: location`: a URL (another origin) or a path (this one)."""

    location: str
    code: int = 307


Step = Reply | Status | Hang | Drop | Echo | StreamError | Drip | Redirect
STEP_KINDS: dict[str, type] = {
    "reply": Reply, "status": Status, "hang": Hang, "drop": Drop, "echo": Echo,
    "stream_error": StreamError, "drip": Drip, "redirect": Redirect,
}
_NOT_FOUND = object()
_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404:
                 "invalid_request_error", 429: "requests"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 529: "overloaded_error"}
_FINISH = {  # (normal, tool calls, hit max tokens) per API
    "openai": ("stop", "tool_calls", "length"),
    "ollama": ("stop", "stop", "length"),
    "anthropic": ("end_turn", "tool_use", "max_tokens"),
}


def step_from_dict(data: dict[str, Any]) -> Step:
    """A step from JSON: {"kind": "status", "code": 429, "retry_after": 1}."""
    args = dict(data)
    cls = STEP_KINDS[args.pop("kind")]
    if "usage" in args and args["usage"] is not None:
        args["usage"] = tuple(args["usage"])
    if "tool_calls" in args:
        args["tool_calls"] = [tuple(c) for c in args["tool_calls"]]
    if isinstance(args.get("then"), dict):
        args["then"] = step_from_dict(args["then"])
    return cls(**args)


def error_body(api: str, code: int, message: str | None = None) -> dict[str, Any]:
    """An error object shaped the way each API sends it."""
    if message is None:
        message = HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "Overloaded"
    if api == "ollama":
        return {"error": message}
    if api == "anthropic":
        etype = _ANTHROPIC_TYPES.get(code, "api_error")
        return {"type": "error", "error": {"type": etype, "message": message}}
    etype = _OPENAI_TYPES.get(code, "server_error")
    return {"error": {"message": message, "type": etype, "param": None, "code": None}}


def _split3(text: str, parts: int = 3) -> list[str]:
    size = max(1, math.ceil(len(text) / max(1, parts)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _call_id(ids: list[str | None] | None, i: int, default: str) -> str | None:
    return default if ids is None else ids[i]


def _ollama_calls(calls: list[tuple[str, str]], ids: list[str | None] | None) -> list[dict]:
    out = []
    for i, (name, args) in enumerate(calls):
        call: dict[str, Any] = {"function": {"name": name, "arguments": json.loads(args)}}
        if ids is not None and ids[i] is not None:
            call["id"] = ids[i]
        out.append(call)
    return out


def stream_events(api: str, model: str, pieces: list[str], calls: list[tuple[str, str]],
                  usage: tuple[int, int], finish: str, include_usage: bool = True,
                  quirks: Reply | None = None) -> list[tuple[bool, str]]:
    """Wire events of one streamed reply, flagged True where a text piece is carried."""
    quirks = quirks or Reply()
    ids, parts = quirks.call_ids, quirks.arg_chunks
    if api == "ollama":
        def line(message: dict[str, Any], **extra: Any) -> str:
            obj = {"model": model, "created_at": "2024-01-01T00:00:00Z", "message":
                   {"role": "assistant", "content": "", **message}, "done": False, **extra}
            return json.dumps(obj) + "\n"

        out = [(True, line({"content": p})) for p in pieces]
        final: dict[str, Any] = {}
        if calls:
            tool_calls = {"tool_calls": _ollama_calls(calls, ids)}
            if quirks.calls_in_final:
                final = tool_calls
            else:
                out.append((False, line(tool_calls)))
        out.append((False, line(final, done=True, done_reason=finish, total_duration=1000,
                                prompt_eval_count=usage[0], eval_count=usage[1])))
        return out
    if api == "anthropic":
        def sse(event: str, **data: Any) -> str:
            return f"event: {event}\ndata: {json.dumps({'type': event, **data})}\n\n"

        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                   "content": [], "stop_reason": None,
                   "usage": {"input_tokens": usage[0], "output_tokens": 1}}
        out = [(False, sse("message_start", message=message)),
               (False, sse("content_block_start", index=0,
                           content_block={"type": "text", "text": ""})),
               (False, sse("ping"))]
        out += [(True, sse("content_block_delta", index=0,
                           delta={"type": "text_delta", "text": p})) for p in pieces]
        out.append((False, sse("content_block_stop", index=0)))
        for i, (name, args) in enumerate(calls, start=1):
            block = {"type": "tool_use", "id": _call_id(ids, i - 1, f"toolu_{i}"), "name": name,
                     "input": {}}
            out.append((False, sse("content_block_start", index=i, content_block=block)))
            out += [(False, sse("content_block_delta", index=i, delta={
                "type": "input_json_delta", "partial_json": part}))
                for part in _split3(args, parts)]
            out.append((False, sse("content_block_stop", index=i)))
        out.append((False, sse("message_delta", delta={"stop_reason": finish},
                               usage={"output_tokens": usage[1]})))
        out.append((False, sse("message_stop")))
        return out
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
            "model": model}

    def chunk(delta: dict[str, Any], reason: str | None = None, sep: str = " ") -> str:
        body = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
        return f"data:{sep}{json.dumps(body)}\n\n"

    # A comment and one "data:" without its space, as some servers send them.
    out = [(False, ": keep-alive\n\n"), (False, chunk({"role": "assistant", "content": ""}))]
    out += [(True, chunk({"content": p}, sep="" if i == 0 else " "))
            for i, p in enumerate(pieces)]
    for i, (name, args) in enumerate(calls):
        ident = _call_id(ids, i, f"call_{i}")
        first: dict[str, Any] = {"index": i, "type": "function",
                                 "function": {"name": name, "arguments": ""}}
        if ident is not None:
            first["id"] = ident
        if not quirks.tool_index:
            del first["index"]
            first["function"]["arguments"] = args
            out.append((False, chunk({"tool_calls": [first]})))
            continue
        out.append((False, chunk({"tool_calls": [first]})))
        out += [(False, chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
                for part in _split3(args, parts)]
    out.append((False, chunk({}, finish)))
    if include_usage:
        tokens = {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                  "total_tokens": sum(usage)}
        if quirks.cost is not None:
            tokens["cost"] = quirks.cost
        out.append((False, f"data: {json.dumps({**base, 'choices': [], 'usage': tokens})}\n\n"))
    out.append((False, "data: [DONE]\n\n"))
    return out


def full_reply(api: str, model: str, text: str, calls: list[tuple[str, str]],
               usage: tuple[int, int], finish: str,
               ids: list[str | None] | None = None, cost: Any = None) -> dict[str, Any]:
    """The non-streamed reply body (`ids` as Reply.call_ids, `cost` as Reply.cost)."""
    if api == "ollama":
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = _ollama_calls(calls, ids)
        return {"model": model, "created_at": "2024-01-01T00:00:00Z", "message": message,
                "done": True, "done_reason": finish, "prompt_eval_count": usage[0],
                "eval_count": usage[1]}
    if api == "anthropic":
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        content += [{"type": "tool_use", "id": _call_id(ids, i - 1, f"toolu_{i}"), "name": n,
                     "input": json.loads(a)} for i, (n, a) in enumerate(calls, start=1)]
        return {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": finish,
                "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}
    message = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [{"type": "function", "function": {"name": n, "arguments": a}}
                                 for n, a in calls]
        for i, call in enumerate(message["tool_calls"]):
            if (ident := _call_id(ids, i, f"call_{i}")) is not None:
                call["id"] = ident
    tokens = {"prompt_tokens": usage[0], "completion_tokens": usage[1],
              "total_tokens": sum(usage)}
    if cost is not None:
        tokens["cost"] = cost
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": tokens}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus the
        # client's delayed ACK adds ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        with contextlib.suppress(OSError):  # the client may already have gone away
            super().finish()

    def do_GET(self) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path
        api = "ollama" if path.startswith("/api/") else (
            "anthropic" if "anthropic-version" in self.headers else "openai")
        if not fake._authorized(self.headers):
            if fake.unauthorized is not None:
                return self._special(api, fake.unauthorized)
            return self._json(401, error_body(api, 401, "invalid api key"))
        step = self._unwrap(fake._next_models_step())
        if step is not None and self._special(api, step):
            return
        if path == "/api/v0/models":  # LM Studio's own API: which models are loaded
            data = [{"id": m, "object": "model", "type": "llm", "publisher": "fake",
                     "state": "loaded" if m in fake.loaded else "not-loaded"}
                    for m in fake.models]
            return self._json(200, {"object": "list", "data": data})
        if path == "/api/ps":  # Ollama: the models loaded in memory now
            return self._json(200, {"models": [{"name": m, "model": m, "size": 0,
                                                "expires_at": "2024-01-01T00:05:00Z"}
                                               for m in fake.loaded]})
        if path.endswith("/models"):
            data = [{"id": m, "object": "model", "type": "model", "display_name": m,
                     "created": 0, "created_at": "2024-01-01T00:00:00Z", "owned_by": "fake"}
                    for m in fake.models]
            return self._json(200, {"object": "list", "data": data, "has_more": False,
                                    "first_id": fake.models[0] if fake.models else None,
                                    "last_id": fake.models[-1] if fake.models else None})
        if path == "/api/tags":
            return self._json(200, {"models": [{"name": m, "model": m, "size": 0}
                                               for m in fake.models]})
        if path == "/api/version":
            return self._json(200, {"version": "0.0.0-fake"})
        return self._json(404, error_body(api, 404))

    def do_POST(self) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path
        api = ("openai" if path.endswith("/chat/completions") else "ollama"
               if path == "/api/chat" else "anthropic" if path == "/v1/messages" else None)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if api is None and path.startswith("/hook"):
            return self._hook(path, raw)
        if api is None and (path.endswith("/embeddings") or path == "/api/embed"):
            return self._embed("ollama" if path == "/api/embed" else "openai", path, raw)
        if api is None:
            return self._json(404, error_body("openai", 404))
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            return self._json(400, error_body(api, 400, "request body is not JSON"))
        model = payload.get("model")
        fake._record(path, {k.lower(): v for k, v in self.headers.items()}, payload, model,
                     dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True)))
        if not fake._authorized(self.headers):
            return self._json(401, error_body(api, 401, "invalid api key"))
        step = fake._next_step(model)
        if isinstance(step, Drip):
            step = self._unwrap(step) or fake.default
        if step is _NOT_FOUND:
            message = {"openai": f"The model `{model}` does not exist or you do not have "
                       "access to it.", "ollama": f"model '{model}' not found",
                       "anthropic": f"model: {model}"}[api]
            body = error_body(api, 404, message)
            if api == "openai":
                body["error"]["code"] = "model_not_found"
            return self._json(404, body)
        if not self._special(api, step):
            self._chat(api, payload, model, step)

    def _special(self, api: str, step: Any) -> bool:
        """Handle steps that are not replies; False when `step` is a reply to stream."""
        if isinstance(step, Status):
            headers = dict(step.headers)
            if step.retry_after is not None:
                value = step.retry_after
                headers["Retry-After"] = str(int(value)) if isinstance(value, float) and \
                    value.is_integer() else str(value)
            body = step.body if step.body is not None else error_body(api, step.code)
            self._json(step.code, body, headers)
            return True
        if isinstance(step, Hang):
            self.server.fake._stopping.wait(step.seconds)
            self.close_connection = True
            return True
        if isinstance(step, Redirect):
            self._json(step.code, {"moved": step.location}, {"Location": step.location})
            return True
        return False

    def _unwrap(self, step: Any) -> Any:
        """A Drip step slows this response's writes down; what it drips is returned."""
        if not isinstance(step, Drip):
            return step
        self.wfile = _DripWriter(self.wfile, step.interval, step.headers,
                                 self.server.fake._stopping)
        self.close_connection = True
        return step.then

    def _embed(self, api: str, path: str, raw: bytes) -> None:
        """OpenAI-compatible /v1/embeddings (llama.cpp's server too) or Ollama's /api/embed:
        recorded, then answered with the next script_embed() step, else with vectors."""
        fake = self.server.fake
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            return self._json(400, error_body(api, 400, "request body is not JSON"))
        model = payload.get("model")
        fake._record(path, {k.lower(): v for k, v in self.headers.items()}, payload, model)
        if not fake._authorized(self.headers):
            return self._json(401, error_body(api, 401, "invalid api key"))
        step = self._unwrap(fake._next_embed_step())
        if step is not None and self._special(api, step):
            return
        if model not in fake.models:
            return self._json(404, error_body(api, 404, f"model '{model}' not found"))
        texts = payload.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        vectors = [fake.embedding(t) for t in texts]
        if api == "ollama":
            return self._json(200, {"model": model, "embeddings": vectors})
        return self._json(200, {"object": "list", "model": model, "usage": {
            "prompt_tokens": 0, "total_tokens": 0}, "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]})

    def _hook(self, path: str, raw: bytes) -> None:
        """A webhook delivery: recorded, then answered with the next script_hook() step."""
        fake = self.server.fake
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = raw.decode("utf-8", "replace")
        fake._record_hook(path, {k.lower(): v for k, v in self.headers.items()}, body)
        step = self._unwrap(fake._next_hook_step())
        if step is None or not self._special("openai", step):
            self._json(200, {"ok": True})

    def _chat(self, api: str, payload: dict[str, Any], model: str, step: Step) -> None:
        messages = payload.get("messages") or []
        if isinstance(step, Echo):
            users = [m.get("content") for m in messages if m.get("role") == "user"]
            step = Reply(text=str(users[-1]) if users else "", delay=step.delay)
        quirks = step if isinstance(step, Reply) else Reply()
        if isinstance(step, (Drop, StreamError)):
            pieces, calls, delay, usage = Reply(step.text).pieces(), [], 0.0, None
            framing = step.framing if isinstance(step, Drop) else "chunked"
        else:
            pieces, calls, delay, framing, usage = step.pieces(), list(step.tool_calls), \
                step.delay, step.framing, step.usage
        limit = payload.get("max_tokens") or payload.get("max_completion_tokens") or \
            (payload.get("options") or {}).get("num_predict")
        normal, tools_reason, length_reason = _FINISH[api]
        finish = tools_reason if calls else normal
        if limit and limit < len(pieces):
            pieces, calls, finish = pieces[:limit], [], length_reason
        if usage is None:
            words = sum(len(str(m.get("content", "")).split()) for m in messages)
            usage = (words, len(pieces))
        stream = payload.get("stream", api == "ollama")  # Ollama streams unless told not to
        if not stream:
            if delay:
                time.sleep(delay * len(pieces))
            body = full_reply(api, model, "".join(pieces), calls, usage, finish, quirks.call_ids,
                              quirks.cost)
            return self._json(200, body, dict(quirks.headers), cut=isinstance(step, Drop))
        include_usage = api != "openai" or bool(
            (payload.get("stream_options") or {}).get("include_usage"))
        events = stream_events(api, model, pieces, calls, usage, finish, include_usage, quirks)
        content_type = {"ollama": "application/x-ndjson"}.get(api, "text/event-stream")
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        for name, value in quirks.headers.items():
            self.send_header(name, value)
        if framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        sent = 0
        try:
            for carries_text, event in events:
                if carries_text:
                    if isinstance(step, (Drop, StreamError)) and sent >= step.after_chunks:
                        break
                    if delay and self.server.fake._stopping.wait(delay):
                        return
                    sent += 1
                self._write(event, framing)
                if carries_text:
                    self.server.fake.pieces_sent += 1
            if isinstance(step, Drop):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)  # no terminating chunk
                return
            if isinstance(step, StreamError):
                self._write(self._error_event(api, step), framing)
            if framing == "chunked":
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # client hung up; nothing more to do

    @staticmethod
    def _error_event(api: str, step: StreamError) -> str:
        err = {"type": step.error_type, "message": step.message}
        if api == "anthropic":
            return f"event: error\ndata: {json.dumps({'type': 'error', 'error': err})}\n\n"
        if api == "ollama":
            return json.dumps({"error": step.message}) + "\n"
        return f"data: {json.dumps({'error': err})}\n\n"

    def _write(self, data: str, framing: str) -> None:
        raw = data.encode()
        if framing == "chunked":
            raw = b"%x\r\n%s\r\n" % (len(raw), raw)
        self.wfile.write(raw)
        self.wfile.flush()

    def _json(self, code: int, body: Any, headers: dict[str, str] | None = None,
              cut: bool = False) -> None:
        """Send a complete body, or with `cut` only half of it before closing the socket.

        A str body goes as text/plain; bytes go verbatim as application/json (JSON that is
        not UTF-8, say)."""
        text = isinstance(body, str)
        raw = body if isinstance(body, bytes) else (body if text else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw[: len(raw) // 2] if cut else raw)
        if cut:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


class _DripWriter:
    """Stands in for a handler's wfile: every byte waits `interval` seconds (the first write,
    the status line and headers, only with `headers`). Once the client has gone, or the
    server stops, writes go nowhere."""

    def __init__(self, inner: Any, interval: float, headers: bool, stopping: threading.Event):
        self.inner, self.interval, self.headers, self.stopping = inner, interval, headers, stopping
        self.writes = 0
        self.dead = False

    def write(self, data: bytes) -> int:
        first, self.writes = self.writes == 0, self.writes + 1
        try:
            if first and not self.headers:
                self.inner.write(data)
                return len(data)
            for i in range(len(data)):
                if self.dead or self.stopping.wait(self.interval):
                    self.dead = True
                    break
                self.inner.write(data[i : i + 1])
        except OSError:
            self.dead = True
        return len(data)

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            self.inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for hanging handlers
    fake: FakeModelServer

    def handle_error(self, request, client_address) -> None:
        # a client that hangs up mid-reply (a deadline, a byte cap, Ctrl-C) is what tests
        # do on purpose: not worth a traceback on stderr
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeModelServer:
    """Serves chat and model-list endpoints of three API families on 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 models: list[str] | None = None):
        self.host, self.port = host, port
        self.api_key = api_key
        self.models: list[str] = list(models or ["fake-model", "fake-small"])
        #: what Ollama's /api/ps and LM Studio's /api/v0/models report as loaded
        self.loaded: list[str] = []
        #: a Status sent instead of the default 401 to a request without the api_key (the
        #: exact answers of servers such as LiteLLM)
        self.unauthorized: Status | None = None
        self.default: Step = Reply()
        self.requests: list[dict[str, Any]] = []
        #: pieces of reply text written so far, all requests together (a test waits for
        #: some of a reply to have arrived before it signals, instead of sleeping)
        self.pieces_sent = 0
        self.url = ""
        self._lock = threading.Lock()
        self._queue: deque[Step] = deque()
        self._per_model: dict[str, deque[Step]] = {}
        self._models_queue: deque[Step] = deque()
        self._hook_queue: deque[Step] = deque()
        self.hooks: list[dict[str, Any]] = []  # webhook deliveries received under /hook
        self._embed_queue: deque[Step] = deque()
        #: words the embeddings endpoints treat as one meaning ({"automobile": "car"}): texts
        #: that share no word can still get close vectors
        self.synonyms: dict[str, str] = {}
        self.embedding_dims = 32
        self._connections: set[socket.socket] = set()
        self.connections_opened = 0  # lets tests check that clients reuse connections
        self._stopping = threading.Event()
        self._handlers: set[threading.Thread] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeModelServer:
        self._httpd = _Server((self.host, self.port), _Handler)
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            # shutdown() waits for serve_forever to notice, forever if its thread is gone:
            # bounded, so a broken server fails its test instead of hanging the suite
            stopper = threading.Thread(target=self._httpd.shutdown, daemon=True)
            stopper.start()
            stopper.join(5.0)
            self._httpd.server_close()
            self._httpd = None
        with self._lock:
            # Kept-alive connections would otherwise keep answering after stop().
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            handlers = list(self._handlers)
        # Every handler wakes on _stopping or its shut connection: wait for them (bounded),
        # so that no thread of this server outlives it into the next test (a rebuild forks
        # only in a process with no other thread).
        deadline = time.monotonic() + 2.0
        for thread in handlers:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeModelServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *steps: Step) -> None:
        """Queue behaviours, one per chat request (any model), before falling back to default."""
        with self._lock:
            self._queue.extend(steps)

    def script_for(self, model: str, *steps: Step) -> None:
        """Queue behaviours only for chat requests naming `model` (they win over script())."""
        with self._lock:
            self._per_model.setdefault(model, deque()).extend(steps)

    def script_models(self, *steps: Step) -> None:
        """Queue Status/Hang/Drip/Redirect behaviours for the model-list endpoints."""
        with self._lock:
            self._models_queue.extend(steps)

    def script_hook(self, *steps: Step) -> None:
        """Queue Status/Hang/Drip/Redirect answers for webhook POSTs (default: 200)."""
        with self._lock:
            self._hook_queue.extend(steps)

    def script_embed(self, *steps: Step) -> None:
        """Queue Status/Hang/Drip/Redirect answers for embeddings requests (default: vectors)."""
        with self._lock:
            self._embed_queue.extend(steps)

    def _next_embed_step(self) -> Step | None:
        with self._lock:
            return self._embed_queue.popleft() if self._embed_queue else None

    def embedding(self, text: str) -> list[float]:
        """A deterministic vector: each word (after `synonyms`) counts in a hashed bucket."""
        import hashlib
        import re

        vector = [0.0] * self.embedding_dims
        for word in re.findall(r"\w+", text.lower()):
            word = self.synonyms.get(word, word)
            bucket = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big")
            vector[bucket % self.embedding_dims] += 1.0
        return vector

    def _next_hook_step(self) -> Step | None:
        with self._lock:
            return self._hook_queue.popleft() if self._hook_queue else None

    def _record_hook(self, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.hooks.append({"path": path, "headers": headers, "json": body})

    def _next_step(self, model: str | None) -> Any:
        with self._lock:
            own = self._per_model.get(model or "")
            if own:
                return own.popleft()
            if model not in self.models:
                return _NOT_FOUND
            return self._queue.popleft() if self._queue else self.default

    def _next_models_step(self) -> Step | None:
        with self._lock:
            return self._models_queue.popleft() if self._models_queue else None

    def _record(self, path: str, headers: dict[str, str], payload: Any, model: Any,
                query: dict[str, str] | None = None) -> None:
        with self._lock:
            self.requests.append(
                {"path": path, "headers": headers, "json": payload, "model": model,
                 "query": query or {}}
            )

    def _authorized(self, headers: Any) -> bool:
        if self.api_key is None:
            return True
        bearer = headers.get("Authorization", "")
        return bearer == f"Bearer {self.api_key}" or headers.get("x-api-key") == self.api_key

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
                self._handlers.add(threading.current_thread())
                self.connections_opened += 1
            else:
                self._connections.discard(conn)  # its thread is joined by stop()


def load_script(server: FakeModelServer, spec: Any) -> None:
    """Apply a JSON script: a list of steps, or {steps, per_model, default, models, api_key}."""
    if isinstance(spec, list):
        spec = {"steps": spec}
    server.script(*(step_from_dict(s) for s in spec.get("steps", [])))
    for model, steps in (spec.get("per_model") or {}).items():
        server.script_for(model, *(step_from_dict(s) for s in steps))
    if spec.get("default"):
        server.default = step_from_dict(spec["default"])
    if spec.get("models"):
        server.models = list(spec["models"])
    if spec.get("api_key"):
        server.api_key = spec["api_key"]


def main(argv: list[str] | None = None) -> int:
    """Run the fake server as a process until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--print-url", action="store_true", help="print the URL first")
    parser.add_argument("--script-json", help="file with steps, see load_script()")
    parser.add_argument("--api-key", help="require this key (Bearer or x-api-key)")
    parser.add_argument("--models", help="comma-separated model names")
    args = parser.parse_args(argv)
    server = FakeModelServer(args.host, args.port, api_key=args.api_key,
                             models=args.models.split(",") if args.models else None)
    if args.script_json:
        with open(args.script_json, encoding="utf-8") as fh:
            load_script(server, json.load(fh))
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.print_url:
        print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
