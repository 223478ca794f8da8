"""Anthropic Messages API: POST /v1/messages with server-sent events."""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import quote

from .base import ChatResult, DeltaCallback, StreamParser, ToolCall, Usage, loads
from .calls import (
    ANTHROPIC_ID,
    call_arguments,
    invalid_arguments,
    result_text,
    wire_id,
    wire_name,
)
from .http import HttpClient
from .openai import SseDecoder
from .shape import as_object, document, objects, position, text

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
_MAX_MODEL_PAGES = 20


def anthropic_tools(tools: list[dict]) -> list[dict]:
    """Tools in Anthropic shape, from the neutral form ({name, description, parameters}) or
    OpenAI's ({type: function, function: {...}})."""
    out = []
    for tool in tools:
        if "input_schema" in tool:
            out.append(tool)
            continue
        function = tool.get("function") if tool.get("type") == "function" else tool
        converted = {"name": function["name"]}
        if function.get("description"):
            converted["description"] = function["description"]
        converted["input_schema"] = function.get("parameters") or {
            "type": "object", "properties": {}}
        out.append(converted)
    return out


def anthropic_messages(messages: list[dict]) -> tuple[str, list[dict]]:
    """(system, messages) of the neutral history for the Messages API.

    System text goes to the top-level field. Results become tool_result blocks of a user
    message; roles must alternate, so consecutive messages of one role are one message
    (results first in it, as the API requires), and empty text, which the API refuses, is
    left out. A message of one text block stays a plain string."""
    system = "\n\n".join(str(m.get("content") or "") for m in messages
                          if m.get("role") == "system")
    invalid = invalid_arguments(messages)
    turns: list[dict[str, Any]] = []
    for message in messages:
        role, blocks = message.get("role"), []
        if role == "system":
            continue
        if role == "tool":
            role = "user"
            block = {"type": "tool_result",
                     "tool_use_id": wire_id(message.get("tool_call_id"), ANTHROPIC_ID),
                     "content": result_text(message, invalid, mark_error=False)}
            if message.get("is_error"):
                block["is_error"] = True
            blocks.append(block)
        else:
            text = message.get("content")
            if isinstance(text, list):  # content blocks already (an image, say)
                blocks.extend(text)
            elif isinstance(text, str) and text.strip():
                blocks.append({"type": "text", "text": text})
            for call in message.get("tool_calls") or [] if role == "assistant" else []:
                blocks.append({"type": "tool_use", "id": wire_id(call.get("id"), ANTHROPIC_ID),
                               "name": wire_name(call.get("name")),
                               "input": call_arguments(call)})
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        blocks = turn["content"]
        blocks.sort(key=lambda b: b.get("type") != "tool_result")  # stable: results first
        if len(blocks) == 1 and blocks[0].get("type") == "text":
            turn["content"] = blocks[0]["text"]
    return system, turns


def _merge_usage(usage: Usage, raw: Any) -> None:
    if not isinstance(raw, dict):
        return
    # Cached prompt tokens are reported apart from input_tokens; all of them were input.
    parts = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    if any(raw.get(p) is not None for p in parts):
        usage.input_tokens = sum(raw.get(p) or 0 for p in parts)
    if raw.get("output_tokens") is not None:
        usage.output_tokens = raw["output_tokens"]


class _AnthropicStream(StreamParser):
    def __init__(self, *args: Any):
        super().__init__(*args)
        self.sse = SseDecoder()
        self.inputs: dict[int, Any] = {}

    def feed(self, line: str) -> None:
        event = self.sse.feed(line)
        if event is not None:
            self._event(*event)

    def end(self) -> None:
        event = self.sse.flush()
        if event is not None:
            self._event(*event)

    def _event(self, name: str, data: str) -> None:
        obj = loads(data)
        if not isinstance(obj, dict):
            return
        kind = obj.get("type") or name
        index = position(obj.get("index"), "index")
        if kind == "message_start":
            message = as_object(obj.get("message"), "message")
            self.model = message.get("model") or self.model
            _merge_usage(self.usage, message.get("usage"))
        elif kind == "content_block_start":
            block = as_object(obj.get("content_block"), "content_block")
            if block.get("type") == "text":
                self.emit(text(block.get("text"), "content_block.text"))
            elif block.get("type") == "tool_use":
                slot = self.tool(index)
                slot["id"], slot["name"] = block.get("id"), block.get("name") or ""
                self.inputs[index] = block.get("input")
        elif kind == "content_block_delta":
            delta = as_object(obj.get("delta"), "delta")
            if delta.get("type") == "text_delta":
                self.emit(text(delta.get("text"), "delta.text"))
            elif delta.get("type") == "input_json_delta" and index in self.tools:
                self.add_arguments(self.tools[index],
                                   text(delta.get("partial_json"), "delta.partial_json"))
        elif kind == "content_block_stop":
            if index in self.tools and not self.tools[index]["parts"]:
                # no input_json_delta came: the input was whole in content_block_start
                self.add_arguments(self.tools[index], json.dumps(self.inputs.get(index) or {}))
        elif kind == "message_delta":
            delta = as_object(obj.get("delta"), "delta")
            self.finish_reason = delta.get("stop_reason") or self.finish_reason
            _merge_usage(self.usage, obj.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.fail(obj)


class AnthropicClient(HttpClient):
    """POST {base_url}/v1/messages; a base_url given with a trailing /v1 is accepted too."""

    family = "anthropic"
    #: the Messages API has no seed, and its temperature goes from 0 to 1
    TAKES_OPTIONS = ("temperature", "top_p", "max_tokens")
    OPTION_RANGE: ClassVar[dict[str, tuple[float, float]]] = {"temperature": (0.0, 1.0)}
    DEFAULT_MAX_TOKENS = DEFAULT_MAX_TOKENS  # it must be given: the API has no default

    def _setup(self) -> None:
        super()._setup()
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers

    def _chat_request(
        self, model: str, messages: list[dict], stream: bool, max_tokens: int | None,
        tools: list[dict] | None,
    ) -> tuple[str, dict[str, Any]]:
        system, turns = anthropic_messages(messages)
        payload: dict[str, Any] = {
            "model": model,
            "messages": turns,
            "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
            "stream": stream,
        }
        if system:
            payload["system"] = system
        if tools:
            payload["tools"] = anthropic_tools(tools)
        return "/v1/messages", payload


    def _stream_parser(
        self, model: str, on_delta: DeltaCallback | None, started: float
    ) -> StreamParser:
        return _AnthropicStream(self, model, on_delta, started)

    def _parse_full(self, data: Any, model: str) -> ChatResult:
        data = document(data)
        texts, calls = [], []
        for where, block in objects(data.get("content"), "content"):
            if block.get("type") == "text":
                texts.append(text(block.get("text"), f"{where}.text"))
            elif block.get("type") == "tool_use":
                arguments = json.dumps(block.get("input") or {})
                calls.append(ToolCall(block.get("id"), block.get("name") or "", arguments))
        usage = Usage()
        _merge_usage(usage, data.get("usage"))
        return ChatResult(
            text="".join(texts),
            finish_reason=data.get("stop_reason"),
            usage=usage,
            model=data.get("model") or model,
            tool_calls=calls,
        )

    def _list_models(self, timeout: tuple[float, float] | None) -> list[str]:
        names: list[str] = []
        path = "/v1/models?limit=1000"
        for _ in range(_MAX_MODEL_PAGES):
            data = document(self.get_json(path, timeout))
            names += [m["id"] for _, m in objects(data.get("data"), "data") if "id" in m]
            if not (isinstance(data, dict) and data.get("has_more") and data.get("last_id")):
                break
            # the id comes from the server: it must stay one query value
            path = f"/v1/models?limit=1000&after_id={quote(str(data['last_id']), safe='')}"
        return names
