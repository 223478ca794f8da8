"""Provider-neutral parts: results, the provider error, the Client interface, reply
accumulation, and classification of what a server answered.

Nothing here imports `requests`; the CLI imports this module on every start.
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from fased.errors import FasedError
from fased.net import MODEL_DEADLINE
from fased.safetext import SurrogateJoiner, one_line, repair, repair_json_text

from .calls import MAX_ARGUMENTS_BYTES, MAX_TOOL_CALLS, TOO_BIG_ARGUMENTS, TOO_MANY_CALLS

if TYPE_CHECKING:
    from .http import HttpClient

ERROR_KINDS = (
    "auth",
    "rate_limit",
    "overloaded",
    "server",
    "timeout",
    "connection",
    "bad_request",
    "context_length",
    "not_found",
    "stream_dropped",
    "no_tools",  # the model refused a request because it carried tools
)
PROBE_RESULTS = ("ok", "auth", "rate_limit", "unreachable", "timeout", "no_model", "error")

_RETRYABLE_KINDS = frozenset(
    {"connection", "timeout", "rate_limit", "overloaded", "server", "stream_dropped"}
)
_FINAL_KINDS = frozenset({"auth", "bad_request", "context_length", "not_found", "no_tools"})
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_FIELD_MAX = 2000  # of one error field; messages cut the detail much shorter

_HINTS = {
    "auth": "check the API key configured for this provider",
    "not_found": "check the model name and base URL (`fased agent models list`)",
    "connection": "is the model server running and the base URL right?",
    "context_length": "the conversation is too long for this model; shorten it or use a bigger one",
    "no_tools": "this model cannot call tools: use a model that can, or run without tools",
}


@dataclass
class Usage:
    """Token counts and cost as reported by the server (None when it did not say). `cost` is
    US dollars: LiteLLM's `x-litellm-response-cost` header, or `usage.cost` in the body
    (LiteLLM's streamed usage, OpenRouter)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None


@dataclass
class ToolCall:
    """One tool call requested by the model; `arguments` is the raw JSON text. A client's
    result always has an id here, unique within the reply (calls.route_calls)."""

    id: str | None
    name: str
    arguments: str


@dataclass
class ChatResult:
    """The outcome of one chat request."""

    text: str
    finish_reason: str | None
    usage: Usage
    model: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    #: characters the server sent that could not be decoded (now U+FFFD)
    replaced_chars: int = 0

    @property
    def truncated(self) -> bool:
        """True when the reply stopped at the output-token limit (any API family)."""
        return self.finish_reason in ("length", "max_tokens")


class ProviderError(FasedError):
    """A failed model request, classified so the caller can retry or fall back."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int | None = None,
        retry_after: float | None = None,
        partial_text: str = "",
        provider: str | None = None,
        model: str | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown provider error kind {kind!r}")
        super().__init__(message, hint=hint if hint is not None else _HINTS.get(kind))
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        # Text already shown to the user before the failure; lets the caller keep or resume it.
        self.partial_text = partial_text
        self.provider = provider
        self.model = model
        self.detail = detail

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if sent again later."""
        if self.kind in _FINAL_KINDS:
            return False
        if self.kind in _RETRYABLE_KINDS:
            return True
        return self.status is not None and (
            self.status in _RETRYABLE_STATUS or self.status >= 500
        )

    @property
    def fallback_now(self) -> bool:
        """Retrying cannot help (bad key, unknown model): move to the next model at once."""
        return self.kind in ("auth", "not_found")

    def __repr__(self) -> str:
        return f"ProviderError(kind={self.kind!r}, status={self.status!r}, {self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle through their args; ours has keyword-only state as well.
        return (_rebuild_error, (self.message, self.__dict__))


def _rebuild_error(message: str, state: dict[str, Any]) -> ProviderError:
    err = ProviderError(message, kind=state["kind"])
    err.__dict__.update(state)
    return err


DeltaCallback = Callable[[str], None]


class Client(ABC):
    """One model server speaking one API family over HTTP."""

    #: API family name used in error messages when no label is given.
    family = "provider"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        *,
        label: str | None = None,
        deadline: float | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self.headers = dict(headers or {})
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        #: total seconds one chat request may take, however steadily the server sends
        self.deadline = deadline or MODEL_DEADLINE
        self.label = label or self.family
        #: The error behind the last non-"ok" probe, for `models status` to show.
        self.last_probe_error: ProviderError | None = None
        self._setup()

    #: the model parameters (fased.params.OPTIONS) this kind's API takes; None: every one
    TAKES_OPTIONS: tuple[str, ...] | None = None
    #: parameter -> (low, high), where the API takes a narrower range than fased.params
    OPTION_RANGE: ClassVar[dict[str, tuple[float, float]]] = {}
    #: the reply's cap sent when no max_tokens is given (None: the server's own)
    DEFAULT_MAX_TOKENS: int | None = None

    def sent_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """The parameters this kind sends of `options` (fased.params.model_params): those
        its API takes, each within the range it takes, max_tokens defaulted. What a turn
        records as sent, and what `chat` puts on the wire."""
        sent = {k: v for k, v in (options or {}).items()
                if v is not None and (self.TAKES_OPTIONS is None or k in self.TAKES_OPTIONS)}
        for name, (low, high) in self.OPTION_RANGE.items():
            if name in sent:
                sent[name] = type(sent[name])(min(max(sent[name], low), high))
        if self.DEFAULT_MAX_TOKENS is not None:
            sent.setdefault("max_tokens", self.DEFAULT_MAX_TOKENS)
        return sent

    def _setup(self) -> None:  # noqa: B027 (optional hook, deliberately not abstract)
        """Subclass hook run at the end of __init__ (keeps one constructor signature)."""

    @abstractmethod
    def chat(
        self,
        model: str,
        messages: list[dict],
        *,
        stream: bool = True,
        on_delta: DeltaCallback | None = None,
        max_tokens: int | None = None,
        tools: list[dict] | None = None,
        options: dict[str, Any] | None = None,
    ) -> ChatResult:
        """Send one chat request; stream text pieces to `on_delta` as they arrive. `options`
        are model parameters (fased.params: max_tokens, temperature, top_p, seed).

        `messages` and `tools` are in the neutral forms (calls.py maps them to the API);
        a request whose tools the model refuses raises ProviderError kind "no_tools"."""

    @abstractmethod
    def list_models(self) -> list[str]:
        """Model names the server offers."""

    @abstractmethod
    def probe(self, model: str | None) -> str:
        """Cheap liveness check; returns one of PROBE_RESULTS."""

    def close(self) -> None:  # noqa: B027 (optional hook, deliberately not abstract)
        """Release pooled connections (optional; clients also work without it)."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # Deliberately leaves out the key, headers and URL credentials.
        return f"{type(self).__name__}({self.label!r}, {display_url(self.base_url)!r})"


def loads(text: str) -> Any:
    """json.loads that returns None for malformed input (stream noise is skipped)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None


def safe_result(result: ChatResult) -> ChatResult:
    """The result with what the server chose made safe to log: strings without lone
    surrogates (counted in replaced_chars), counts that are counts. A reply text that is not
    text at all is a malformed reply."""
    from .shape import Malformed

    if not isinstance(result.text, str):
        raise Malformed("the reply text is not a string")
    result.text, replaced = repair(result.text)
    calls = []
    for call in result.tool_calls:
        name, n = repair(call.name if isinstance(call.name, str) else str(call.name or ""))
        arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(
            call.arguments)
        arguments, m = repair_json_text(arguments)
        ident = None if call.id is None else repair(str(call.id))[0]
        calls.append(ToolCall(ident, name, arguments))
        replaced += n + m
    result.tool_calls = calls
    if result.finish_reason is not None:
        result.finish_reason = repair(str(result.finish_reason))[0]
    result.model = repair(result.model)[0] if isinstance(result.model, str) else ""
    result.usage = Usage(_count(result.usage.input_tokens), _count(result.usage.output_tokens),
                         as_cost(result.usage.cost))
    result.replaced_chars += replaced
    return result


def safe_names(names: list[Any]) -> list[str]:
    """Model names from a server's list: strings only, repaired; a name no ref can hold is
    left out (fased.models.check_ref_text: blank, a control character, longer than a ref
    may be with its provider's id)."""
    from fased.bounds import has_control
    from fased.models import REF_CHARS

    repaired = (repair(n)[0] for n in names if isinstance(n, str) and n)
    return [n for n in repaired
            if n.strip() and len(n) <= REF_CHARS - 2 and not has_control(n)]


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


MAX_COST = 1e9  # dollars for one call: anything above is not a price


def as_cost(value: Any) -> float | None:
    """A cost a server reported (a number, or a header's decimal text) as dollars; None for
    anything that is not a finite amount from 0 to MAX_COST."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        if len(value) > 40:
            return None
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not 0 <= value <= MAX_COST:
        return None  # NaN fails the comparison too
    return float(value)


class StreamParser:
    """Accumulates one streamed reply; each API family overrides `feed`."""

    def __init__(
        self, client: HttpClient, model: str, on_delta: DeltaCallback | None, started: float
    ):
        self.client = client
        self.requested = model
        self.model: str | None = None
        self.on_delta = on_delta
        self.started = started
        self.parts: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.ttft_ms: float | None = None
        self.done = False
        self.joiner = SurrogateJoiner()
        #: bytes that were not UTF-8, counted by whoever decodes the lines
        self.replaced = 0
        #: an exception raised by on_delta: the caller's, never a sign of a malformed reply
        self.callback_error: BaseException | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def emit(self, piece: str | None) -> None:
        if not piece:
            return
        # surrogate halves may be split across pieces: shown once joined
        piece = self.joiner.feed(piece)
        if piece:
            self._show(piece)

    def _show(self, piece: str) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.monotonic() - self.started) * 1000.0
        self.parts.append(piece)
        if self.on_delta is not None:
            try:
                self.on_delta(piece)
            except BaseException as exc:
                self.callback_error = exc
                raise

    def tool(self, index: Any) -> dict[str, Any]:
        """The call at `index`, started when new; a reply may hold MAX_TOOL_CALLS."""
        slot = self.tools.get(index)
        if slot is None:
            if len(self.tools) >= MAX_TOOL_CALLS:
                self.refuse(TOO_MANY_CALLS)
            slot = self.tools[index] = {"id": None, "name": "", "parts": [], "size": 0}
        return slot

    def add_arguments(self, slot: dict[str, Any], piece: str) -> None:
        """Append a piece of a call's arguments (kept as a list: joining once at the end
        stays linear however finely a server splits them)."""
        slot["size"] += len(piece)  # characters, at most the UTF-8 bytes: checked exactly later
        if slot["size"] > MAX_ARGUMENTS_BYTES:
            self.refuse(TOO_BIG_ARGUMENTS)
        slot["parts"].append(piece)

    def refuse(self, phrase: str) -> None:
        """Stop reading a reply that breaks a cap on tool calls."""
        raise self.client.make_error("server", phrase=phrase, model=self.requested)

    def fail(self, error_object: Any) -> None:
        """Raise the error the server reported inside the stream."""
        kind, status, detail = classify_error_object(error_object)
        raise self.client.make_error(kind, status=status, detail=detail, model=self.requested)

    def feed(self, line: str) -> None:
        raise NotImplementedError

    def end(self) -> None:
        """Called at a clean end of body, before checking that the reply was complete."""

    def result(self) -> ChatResult:
        tail = self.joiner.flush()
        if tail:
            self._show(tail)
        # in order of arrival: an index is only a key (some servers repeat or omit it)
        calls = [ToolCall(t["id"], t["name"], "".join(t["parts"])) for t in self.tools.values()]
        return ChatResult(
            text=self.text,
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model or self.requested,
            tool_calls=calls,
            ttft_ms=self.ttft_ms,
            replaced_chars=self.replaced + self.joiner.replaced,
        )


# -- classifying what a server said (status, error body, Retry-After) -----------------------

_CONTEXT_MARKERS = (
    "context_length_exceeded",
    "exceed_context_size",  # llama.cpp's server: "... exceeds the available context size"
    "context size",
    "maximum context length",
    "context length",
    "context window",
    "prompt is too long",
    "too long",
)

# How servers that answer 400 (or an error object without a status) instead of 404 say that
# they serve no such model: LiteLLM ("Invalid model name passed in model=x"), OpenRouter ("x is
# not a valid model ID"), OpenAI and LM Studio (code "model_not_found"), Ollama ("model 'x' not
# found"), vLLM ("The model `x` does not exist."). A server in other words is asked for its
# model list (HttpClient._chat): probe and chat reach the same verdict either way.
_NO_MODEL = re.compile(r"invalid model name|not a valid model|model_not_found|unknown model|"
                       r"no such model|\bmodel\b[^.;]{0,80}?\b(?:not found|does not exist)")

# Error "type" values (Anthropic and OpenAI) for errors that arrive without an HTTP status.
_TYPE_KINDS = {
    "authentication_error": "auth",
    "permission_error": "auth",
    "not_found_error": "not_found",
    "rate_limit_error": "rate_limit",
    "overloaded_error": "overloaded",
    "api_error": "server",
    "server_error": "server",
    "timeout_error": "timeout",
    "invalid_request_error": "bad_request",
    "request_too_large": "bad_request",
}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), else None."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        import email.utils  # only needed for the rare HTTP-date form; keeps CLI start fast
        from datetime import UTC

        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def retry_after_from(headers: Any) -> float | None:
    """Retry delay from response headers; the millisecond variant wins when both are sent."""
    millis = headers.get("retry-after-ms")
    if millis:
        parsed = parse_retry_after(millis)
        if parsed is not None:
            return parsed / 1000.0
    return parse_retry_after(headers.get("retry-after"))


def error_fields(body: str) -> tuple[str, str, str]:
    """(type, message, code) from an error body: OpenAI, Anthropic, Ollama or FastAPI shape."""
    text = body.strip()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        # An HTML error page from a proxy says nothing useful in one line.
        if not text or text.startswith("<"):
            return "", "", ""
        return "", one_line(text.splitlines()[0], _FIELD_MAX), ""
    return _fields_of(data)


def _fields_of(data: Any) -> tuple[str, str, str]:
    err = data.get("error", data) if isinstance(data, dict) else data
    # the server's words end up in messages, on terminals and in the log
    if isinstance(err, str):
        return "", one_line(err, _FIELD_MAX), ""
    if not isinstance(err, dict):
        return "", "", ""
    message = err.get("message") or err.get("detail") or ""
    return tuple(one_line(str(v), _FIELD_MAX) for v in (  # type: ignore[return-value]
        err.get("type") or "", message, err.get("code") or ""))


def classify_error_object(data: Any) -> tuple[str, int | None, str]:
    """(kind, status, detail) for an error object sent with a 200 or inside a stream."""
    etype, message, code = _fields_of(data)
    status = as_int(code)
    if status is not None and 400 <= status <= 599:
        return classify_status(status, etype, message, code), status, message or etype
    blob = f"{etype} {code} {message}".lower()
    kind = _TYPE_KINDS.get(etype) or (
        "rate_limit" if "rate_limit" in blob else "overloaded" if "overloaded" in blob else "server"
    )
    if "context_length_exceeded" in blob or (
        kind == "bad_request" and any(m in blob for m in _CONTEXT_MARKERS)
    ):
        kind = "context_length"
    elif kind in ("bad_request", "server") and _NO_MODEL.search(blob):
        kind = "not_found"
    return kind, None, message or etype


# What servers answer to a request with tools for a model that takes none: Ollama ("... does
# not support tools"), OpenRouter ("No endpoints found that support tool use"), llama.cpp
# ("tools param requires --jinja flag", older "Unsupported param: tools"), vLLM ('"auto" tool
# choice requires --enable-auto-tool-choice ...').
_NO_TOOLS_MARKERS = ("support tool", "tools param", "param: tools", "tool choice requires",
                     "tool_choice requires", "tool calling is not supported",
                     "tools are not supported", "function calling is not supported")


def refuses_tools(err: ProviderError) -> bool:
    """Whether a failed request that carried tools failed because of them."""
    if err.kind not in ("bad_request", "not_found", "server"):
        return False
    detail = (err.detail or "").lower()
    return any(marker in detail for marker in _NO_TOOLS_MARKERS)


def classify_status(status: int, etype: str = "", message: str = "", code: str = "") -> str:
    """Map an HTTP status plus error body fields to a ProviderError kind."""
    blob = f"{etype} {code} {message}".lower()
    if "overloaded" in etype.lower() or status == 529 or (status >= 500 and "overloaded" in blob):
        return "overloaded"
    if status in (401, 402, 403):
        # 402 (out of credits) is an account problem like a bad key: retrying cannot help.
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:
        return "timeout"
    if status == 429:
        return "rate_limit"
    if status == 409 or status >= 500:
        return "server"
    if 400 <= status < 500:
        if _NO_MODEL.search(blob):
            return "not_found"
        return "context_length" if any(m in blob for m in _CONTEXT_MARKERS) else "bad_request"
    return "server"


def display_url(url: str) -> str:
    """The URL without credentials or query string, safe to print."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
