"""OpenAI chat-completions wire format (OpenAI, OpenRouter, LM Studio, vLLM, LiteLLM, ...)."""

from __future__ import annotations

import json
from typing import Any

from .base import ChatResult, DeltaCallback, ProviderError, StreamParser, ToolCall, Usage, loads
from .calls import (
    OPENAI_ID,
    call_arguments_text,
    function_tools,
    invalid_arguments,
    result_text,
    wire_id,
    wire_name,
)
from .http import HttpClient
from .shape import Malformed, as_object, document, items, objects, position, text


def openai_messages(messages: list[dict]) -> list[dict]:
    """The neutral history in chat-completions form. An assistant message with tool calls
    carries content "" (never null: llama.cpp and LM Studio refuse null, OpenAI takes
    both); a result's error shows in its content, the API having no is_error."""
    invalid = invalid_arguments(messages)
    out = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            out.append({"role": "tool",
                         "tool_call_id": wire_id(message.get("tool_call_id"), OPENAI_ID),
                         "content": result_text(message, invalid, mark_error=True)})
            continue
        wire = {"role": role, "content": message.get("content")}
        if role == "assistant":
            wire["content"] = wire["content"] or ""
            calls = message.get("tool_calls") or []
            if calls:  # an empty list is refused by OpenAI
                wire["tool_calls"] = [{
                    "id": wire_id(call.get("id"), OPENAI_ID), "type": "function",
                    "function": {"name": wire_name(call.get("name")),
                                 "arguments": call_arguments_text(call)},
                } for call in calls]
        out.append(wire)
    return out


def arguments_text(value: Any) -> str:
    """Tool arguments as JSON text (some servers send an object instead of a string)."""
    if isinstance(value, str):
        return value
    return json.dumps(value if value is not None else {})


class SseDecoder:
    """Incremental text/event-stream decoder: feed lines, get (event, data) when one completes."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None  # comment, e.g. ": keep-alive"
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        return None

    def flush(self) -> tuple[str, str] | None:
        event, data = self.event or "message", self.data
        self.event, self.data = "", []
        return (event, "\n".join(data)) if data else None


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    return Usage(raw.get("prompt_tokens"), raw.get("completion_tokens"), raw.get("cost"))


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, list):
        # Some servers return content as a list of typed parts.
        return "".join(text(p.get("text"), f"{where}[{i}].text")
                       for i, p in enumerate(content) if isinstance(p, dict))
    return text(content, where)


class _OpenAIStream(StreamParser):
    def __init__(self, *args: Any):
        super().__init__(*args)
        self.sse = SseDecoder()
        self.positions: dict[Any, int] = {}  # the server's call index -> our slot

    def feed(self, line: str) -> None:
        event = self.sse.feed(line)
        if event is not None:
            self._data(event[1])

    def end(self) -> None:
        event = self.sse.flush()
        if event is not None:
            self._data(event[1])
        if not self.done and self.finish_reason is not None:
            # Some servers (older llama.cpp builds) close cleanly without [DONE]; a reply
            # that already has its finish_reason is complete.
            self.done = True

    def _data(self, data: str) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        obj = loads(data)
        if not isinstance(obj, dict):
            return
        if obj.get("error"):
            self.fail(obj)
        self.model = obj.get("model") or self.model
        if obj.get("usage"):
            self.usage = _usage(obj["usage"])
        for i, choice in enumerate(items(obj.get("choices"), "choices")):
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = as_object(choice.get("delta"), f"choices[{i}].delta")
            self.emit(_content_text(delta.get("content"), f"choices[{i}].delta.content"))
            for where, call in objects(delta.get("tool_calls"), f"choices[{i}].delta.tool_calls"):
                self._tool_delta(call, where)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def _tool_delta(self, call: dict[str, Any], where: str) -> None:
        function = as_object(call.get("function"), f"{where}.function")
        ident, name, key = call.get("id"), function.get("name"), call.get("index")
        position = self.positions.get(key)
        slot = None if position is None else self.tools[position]
        # A new call: a new index, another id at the same index (servers that number every
        # call 0), or, from servers that send each call whole without an index, a new name.
        if (slot is None or (ident and slot["id"] and ident != slot["id"])
                or (key is None and name and slot["name"])):
            position = self.positions[key] = len(self.tools)
            slot = self.tool(position)
        if ident and not slot["id"]:
            slot["id"] = ident
        if name and not slot["name"]:
            slot["name"] = name
        if function.get("arguments"):
            self.add_arguments(slot, arguments_text(function["arguments"]))


class OpenAIClient(HttpClient):
    """POST {base_url}/chat/completions; base_url already ends in /v1 where the server needs it."""

    family = "openai-compatible"

    def _setup(self) -> None:
        super()._setup()
        # Learned from 400 replies so later requests go right the first time.
        self._max_tokens_field = "max_tokens"
        self._stream_options = True

    def _chat_request(
        self, model: str, messages: list[dict], stream: bool, max_tokens: int | None,
        tools: list[dict] | None,
    ) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {"model": model, "messages": openai_messages(messages),
                                   "stream": stream}
        if stream and self._stream_options:
            payload["stream_options"] = {"include_usage": True}
        if max_tokens is not None:
            payload[self._max_tokens_field] = max_tokens
        if tools:
            payload["tools"] = function_tools(tools)
        return "/chat/completions", payload

    def _adapt(self, payload: dict[str, Any], err: ProviderError) -> bool:
        if err.kind != "bad_request":
            return False
        detail = (err.detail or "").lower()
        if "stream_options" in detail and "stream_options" in payload:
            # Older servers reject the field outright; usage is then simply not reported.
            del payload["stream_options"]
            self._stream_options = False
            return True
        if "max_completion_tokens" in detail and "max_tokens" in payload:
            # Newer OpenAI models refuse max_tokens and name its replacement.
            payload["max_completion_tokens"] = payload.pop("max_tokens")
            self._max_tokens_field = "max_completion_tokens"
            return True
        return False

    def _stream_parser(
        self, model: str, on_delta: DeltaCallback | None, started: float
    ) -> StreamParser:
        return _OpenAIStream(self, model, on_delta, started)

    def _parse_full(self, data: Any, model: str) -> ChatResult:
        data = document(data)
        choices = items(data.get("choices"), "choices")
        choice = as_object(choices[0], "choices[0]") if choices else {}
        message = as_object(choice.get("message"), "choices[0].message")
        calls = []
        for where, call in objects(message.get("tool_calls"), "choices[0].message.tool_calls"):
            function = as_object(call.get("function"), f"{where}.function")
            calls.append(
                ToolCall(
                    call.get("id"), function.get("name") or "",
                    arguments_text(function.get("arguments")),
                )
            )
        return ChatResult(
            text=_content_text(message.get("content"), "choices[0].message.content"),
            finish_reason=choice.get("finish_reason"),
            usage=_usage(data.get("usage")),
            model=data.get("model") or model,
            tool_calls=calls,
        )

    def _embed_request(self, model: str, texts: list[str]) -> tuple[str, dict[str, Any]]:
        return "/embeddings", {"model": model, "input": texts}

    def _parse_embeddings(self, data: Any) -> list[list[float]]:
        entries = []
        for where, entry in objects(document(data).get("data"), "data", required=True):
            if entry.get("embedding") is None:
                raise Malformed(f"{where}.embedding is missing")
            entries.append((position(entry.get("index"), f"{where}.index"), entry["embedding"]))
        return [vector for _, vector in sorted(entries, key=lambda e: e[0])]

    def _list_models(self, timeout: tuple[float, float] | None) -> list[str]:
        data = document(self.get_json("/models", timeout), arrays=True)
        listed = objects(data.get("data"), "data") if isinstance(data, dict) else objects(data, "")
        return [m["id"] for _, m in listed if "id" in m]
