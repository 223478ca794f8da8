"""Tool calls across the wire, both ways, for every API family.

Replies: `route_calls` is the one place where what a server sent becomes the ToolCalls the loop
sees: every call gets an id unique within the reply, a printable name, arguments as JSON text
("" becomes "{}"), and a reply over the caps (MAX_TOOL_CALLS calls, MAX_ARGUMENTS_BYTES of
arguments per call) is refused. Stream parsers check the same caps as pieces arrive.

Requests: the helpers each family's message mapping shares. The history may hold calls made
through another provider (a fallback model mid-turn) or written by a careless model, so ids,
names and arguments are made acceptable to the API at hand, the same way for a call and its
result, and deterministically (the request stays a pure function of the history).

Imports nothing heavy: base.py (loaded on every CLI start) imports the caps from here.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import TYPE_CHECKING, Any

from fased.safetext import one_line

if TYPE_CHECKING:
    from .base import ToolCall

MAX_TOOL_CALLS = 64
MAX_ARGUMENTS_BYTES = 1024 * 1024
TOO_MANY_CALLS = f"sent more than {MAX_TOOL_CALLS} tool calls in one reply"
TOO_BIG_ARGUMENTS = f"sent tool-call arguments over {MAX_ARGUMENTS_BYTES // (1024 * 1024)} MiB"
_NAME_MAX = 200
_RAW_SHOWN = 2000  # of invalid arguments, quoted back to the model
# a server's id is kept when it is printable ASCII of sane length (it is echoed back to the
# server, stored in the log and printed by replay)
_SERVER_ID = re.compile(r"[\x21-\x7e]{1,64}")
# what each API accepts in a request (OpenAI: at most 40 characters; Anthropic: this pattern)
OPENAI_ID = re.compile(r"[\x21-\x7e]{1,40}")
ANTHROPIC_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
_WIRE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NOT_NAME_CHAR = re.compile(r"[^A-Za-z0-9_-]")


class CallsRejected(Exception):
    """A reply whose tool calls break the caps; the message is the phrase for the error."""


def new_call_id(taken: set[str]) -> str:
    """A fresh id for a call the server sent without a usable one."""
    import secrets

    while True:
        ident = "call_" + secrets.token_hex(12)
        if ident not in taken:
            return ident


def route_calls(calls: list[ToolCall]) -> list[ToolCall]:
    """The calls of one reply as the loop gets them (see the module docstring)."""
    if len(calls) > MAX_TOOL_CALLS:
        raise CallsRejected(TOO_MANY_CALLS)
    taken: set[str] = set()
    out = []
    for call in calls:
        arguments = call.arguments if call.arguments.strip() else "{}"
        if len(arguments.encode("utf-8")) > MAX_ARGUMENTS_BYTES:
            raise CallsRejected(TOO_BIG_ARGUMENTS)
        ident = call.id
        if not (isinstance(ident, str) and _SERVER_ID.fullmatch(ident)) or ident in taken:
            ident = new_call_id(taken)
        taken.add(ident)
        name = one_line(call.name, _NAME_MAX) if call.name else ""
        out.append(dataclasses.replace(call, id=ident, name=name, arguments=arguments))
    return out


# -- requests ------------------------------------------------------------------------------


def _no_constants(value: str) -> Any:
    raise ValueError(value)  # NaN and Infinity: Python reads them, no server does


def arguments_object(text: Any) -> dict[str, Any] | None:
    """The arguments of a recorded call as a JSON object, None when they are not one."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def invalid_arguments(messages: list[dict]) -> dict[str, str]:
    """Raw arguments of each call in the history that are not a JSON object, by call id.

    Every API is sent `{}` for those (OpenAI-compatible servers such as llama.cpp and vLLM
    parse the arguments to render their chat template and fail on anything else; Ollama and
    Anthropic take an object only), and the call's result says what the model wrote."""
    out = {}
    for message in messages:
        if message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or []:
            if arguments_object(call.get("arguments")) is None:
                raw = call.get("arguments")
                out[str(call.get("id"))] = raw if isinstance(raw, str) else json.dumps(raw)
    return out


def call_arguments(call: dict[str, Any]) -> dict[str, Any]:
    """The arguments to send for a recorded call: its object, or {} (see invalid_arguments)."""
    return arguments_object(call.get("arguments")) or {}


def call_arguments_text(call: dict[str, Any]) -> str:
    """As call_arguments, as JSON text: what the model wrote when it is an object."""
    raw = call.get("arguments")
    if isinstance(raw, str) and arguments_object(raw) is not None:
        return raw  # byte for byte: servers that cache prompts see the same prefix
    return json.dumps(call_arguments(call))


def result_text(message: dict[str, Any], invalid: dict[str, str], *,
                mark_error: bool) -> str:
    """A tool result's content for the wire; `mark_error` for APIs without is_error (the
    content then says so), and a call sent as {} gets what the model wrote quoted back."""
    content = message.get("content")
    text = content if isinstance(content, str) else "" if content is None else str(content)
    if mark_error and message.get("is_error") and not text.startswith("Error:"):
        text = f"Error: {text}" if text else "Error"
    raw = invalid.get(str(message.get("tool_call_id")))
    if raw is not None:
        if len(raw) > _RAW_SHOWN:
            raw = raw[:_RAW_SHOWN] + f"... ({len(raw) - _RAW_SHOWN} more characters)"
        text += ("\n\n[The arguments of this call were not a JSON object, so the call shows {} "
                 f"instead. They were: {raw}]")
    return text


def wire_name(name: Any) -> str:
    """A tool name every API accepts ([A-Za-z0-9_-], at most 64): a recorded call may hold
    any name a model made up, and the server refuses the whole request over it."""
    text = name if isinstance(name, str) else ""
    if _WIRE_NAME.fullmatch(text):
        return text
    return (_NOT_NAME_CHAR.sub("_", text)[:64]) or "unnamed"


def wire_id(ident: Any, allowed: re.Pattern[str]) -> str:
    """A call id the API accepts: the recorded one when it fits `allowed`, else one derived
    from it (the same for the call and its result)."""
    import hashlib

    text = ident if isinstance(ident, str) else str(ident)
    if allowed.fullmatch(text):
        return text
    return "call_" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:24]


def function_tools(tools: list[dict]) -> list[dict]:
    """Tool specs in the OpenAI function form (OpenAI-compatible servers and Ollama): from
    the neutral form ({name, description, parameters}), or Anthropic's ({input_schema})."""
    out = []
    for tool in tools:
        if tool.get("type") == "function" and "function" in tool:
            out.append(tool)
            continue
        function = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        schema = tool.get("parameters", tool.get("input_schema"))
        if schema is not None:
            function["parameters"] = schema
        out.append({"type": "function", "function": function})
    return out
