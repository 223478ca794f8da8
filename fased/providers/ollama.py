"""Ollama native API: POST /api/chat streaming NDJSON, GET /api/tags."""

from __future__ import annotations

import time
from typing import Any

from .base import ChatResult, DeltaCallback, StreamParser, Usage, loads
from .calls import call_arguments, function_tools, invalid_arguments, result_text, wire_name
from .http import HttpClient, model_listed
from .openai import arguments_text
from .shape import as_object, document, items, objects, text


def ollama_messages(messages: list[dict]) -> list[dict]:
    """The neutral history in /api/chat form: calls carry their arguments as an object and
    no id (Ollama has none); a result names its tool and shows an error in its content."""
    invalid = invalid_arguments(messages)
    out = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            out.append({"role": "tool", "content": result_text(message, invalid, mark_error=True),
                        "tool_name": wire_name(message.get("name"))})
            continue
        wire = {"role": role, "content": message.get("content")}
        if role == "assistant":
            wire["content"] = wire["content"] or ""
            calls = message.get("tool_calls") or []
            if calls:
                wire["tool_calls"] = [{"function": {"name": wire_name(call.get("name")),
                                                    "arguments": call_arguments(call)}}
                                      for call in calls]
        out.append(wire)
    return out


class _OllamaStream(StreamParser):
    def feed(self, line: str) -> None:
        if line.strip():
            obj = loads(line)
            if isinstance(obj, dict):
                self.handle(obj)

    def handle(self, obj: dict[str, Any]) -> None:
        """Apply one NDJSON object (a stream line, or the whole non-streamed reply)."""
        if obj.get("error"):
            self.fail(obj)
        self.model = obj.get("model") or self.model
        message = as_object(obj.get("message"), "message")
        self.emit(text(message.get("content"), "message.content"))
        # each call comes whole, in whichever chunk (often one before the last, or the last)
        for where, call in objects(message.get("tool_calls"), "message.tool_calls"):
            function = as_object(call.get("function"), f"{where}.function")
            slot = self.tool(len(self.tools))
            slot["id"] = call.get("id")
            slot["name"] = function.get("name") or ""
            self.add_arguments(slot, arguments_text(function.get("arguments")))
        if obj.get("done"):
            self.done = True
            self.finish_reason = obj.get("done_reason")
            self.usage = Usage(obj.get("prompt_eval_count"), obj.get("eval_count"))


class OllamaClient(HttpClient):
    """Ollama's own API at the server root (a trailing /v1 or /api in base_url is dropped)."""

    family = "ollama"

    def _setup(self) -> None:
        super()._setup()
        # People often paste the OpenAI-compatible URL (…/v1); the native API lives at root.
        for suffix in ("/v1", "/api"):
            if self.base_url.endswith(suffix):
                self.base_url = self.base_url[: -len(suffix)]

    def _chat_request(
        self, model: str, messages: list[dict], stream: bool, max_tokens: int | None,
        tools: list[dict] | None,
    ) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {"model": model, "messages": ollama_messages(messages),
                                   "stream": stream}
        if max_tokens is not None:
            payload["options"] = {"num_predict": max_tokens}
        if tools:
            payload["tools"] = function_tools(tools)
        return "/api/chat", payload

    def _sampling(self, payload: dict[str, Any], options: dict[str, Any]) -> None:
        """Ollama takes sampling parameters in `options`, beside num_predict."""
        given = {k: v for k, v in options.items() if v is not None}
        if given:
            payload.setdefault("options", {}).update(given)

    def _stream_parser(
        self, model: str, on_delta: DeltaCallback | None, started: float
    ) -> StreamParser:
        return _OllamaStream(self, model, on_delta, started)

    def _parse_full(self, data: Any, model: str) -> ChatResult:
        parser = _OllamaStream(self, model, None, time.monotonic())
        parser.handle(document(data))
        result = parser.result()
        result.ttft_ms = None
        return result

    def _embed_request(self, model: str, texts: list[str]) -> tuple[str, dict[str, Any]]:
        return "/api/embed", {"model": model, "input": texts}

    def _parse_embeddings(self, data: Any) -> list[list[float]]:
        return items(document(data).get("embeddings"), "embeddings", required=True)

    def _list_models(self, timeout: tuple[float, float] | None) -> list[str]:
        data = document(self.get_json("/api/tags", timeout))
        return [m.get("name") or m.get("model") for _, m in objects(data.get("models"), "models")
                if m.get("name") or m.get("model")]

    def _probe(self, model: str | None, limits: tuple[float, float]) -> str:
        # A chat request would load the model into memory (seconds, gigabytes); the tag
        # list proves the server is up and the model pulled.
        names = self._list_models(limits)
        if model is not None and not model_listed(model, names):
            return "no_model"
        return "ok"
