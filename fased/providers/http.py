"""Shared HTTP machinery: a lazy requests.Session, line streaming, transport-error handling.

Every call runs under fased.net's limits: a total deadline (the chat deadline, or a probe's
or model list's own short one), a cap on the bytes read, no redirect to another origin. What
the server sent is made safe before anyone sees it: lines that are not UTF-8 and lone
surrogates become U+FFFD (counted in ChatResult.replaced_chars), and a reply whose shape
makes no sense is a "malformed response" server error, never an exception from our parser.

`requests` is imported inside functions only: importing it costs ~90 ms and most CLI
commands never talk to a model.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fased import net
from fased.redact import client_secrets, mask_secrets, mask_url
from fased.safetext import decode_utf8

from .base import (
    ChatResult,
    Client,
    DeltaCallback,
    ProviderError,
    StreamParser,
    as_cost,
    classify_error_object,
    classify_status,
    display_url,
    error_fields,
    refuses_tools,
    retry_after_from,
    safe_names,
    safe_result,
)
from .calls import CallsRejected, route_calls
from .shape import Malformed

if TYPE_CHECKING:
    import requests

_DETAIL_MAX = 200
COST_HEADER = "x-litellm-response-cost"
_DRAIN_TIMEOUT = 1.0
_PHRASES = {
    "auth": "authentication failed",
    "rate_limit": "rate limited",
    "overloaded": "overloaded",
    "server": "server error",
    "timeout": "timed out",
    "connection": "connection failed",
    "bad_request": "bad request",
    "context_length": "context length exceeded",
    "not_found": "not found",
    "stream_dropped": "stream dropped",
    "no_tools": "model does not accept tools",
}
_STATUS_PHRASES = {402: "payment required", 403: "forbidden", 409: "conflict"}
# What a parser raises when a server's JSON has the wrong shape (a string where an object
# belongs, a missing key, absurd nesting).
_MALFORMED = (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError)
_PROBE_KINDS = {
    "auth": "auth",
    "rate_limit": "rate_limit",
    "connection": "unreachable",
    "timeout": "timeout",
    "not_found": "no_model",
}


def is_transport_error(exc: BaseException) -> bool:
    """True for network-level failures (as opposed to bugs or callback errors)."""
    import http.client

    import urllib3.exceptions

    # requests.RequestException subclasses OSError.
    return isinstance(exc, (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError))


def classify_exception(exc: BaseException, *, mid_stream: bool) -> tuple[str, str]:
    """(kind, phrase) for a transport exception raised by requests or urllib3."""
    import socket
    import ssl

    import requests.exceptions as rex
    import urllib3.exceptions as u3

    if isinstance(exc, net.NetError):
        return exc.kind, exc.phrase
    causes = list(net.causes(exc))
    if isinstance(exc, rex.TooManyRedirects):
        return "connection", "redirected too many times"
    if isinstance(exc, rex.ConnectTimeout):
        return "timeout", "connect timed out"
    if isinstance(exc, rex.ReadTimeout) or any(
        isinstance(c, (u3.ReadTimeoutError, TimeoutError)) for c in causes
    ):
        return "timeout", "read timed out"
    if isinstance(exc, (rex.InvalidURL, rex.MissingSchema, rex.InvalidSchema)):
        return "connection", "invalid base URL"
    if mid_stream or isinstance(exc, rex.ChunkedEncodingError):
        return "stream_dropped", "stream dropped"
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return "connection", "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection", "connection closed by server"
        if isinstance(cause, (socket.gaierror, u3.NameResolutionError)):
            return "connection", "cannot resolve host"
        if isinstance(cause, ssl.SSLError):
            return "connection", "TLS error"
    return "connection", "connection failed"


def _keep_headers(request: Any) -> Any:
    return request


def _expect_end_soon(resp: requests.Response) -> None:
    # Only the end-of-body marker should follow the terminator; a server that holds the
    # stream open must not keep the caller waiting a whole read timeout. urllib3 resets the
    # socket timeout before the connection's next request.
    sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(_DRAIN_TIMEOUT)


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}s"


class HttpClient(Client):
    """Client base: one pooled requests.Session, uniform errors, shared chat/probe flow."""

    def _setup(self) -> None:
        self._session: requests.Session | None = None
        #: Query parameters of every request (a base URL's key: client_for sets them).
        self.params: dict[str, str] = {}
        self._session_lock = threading.Lock()

    # -- hooks each API family fills in -------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        """A bearer key when there is one: what OpenAI-compatible servers want, and what
        hosted Ollama and auth proxies in front of a plain Ollama expect."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _chat_request(
        self, model: str, messages: list[dict], stream: bool, max_tokens: int | None,
        tools: list[dict] | None,
    ) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _stream_parser(
        self, model: str, on_delta: DeltaCallback | None, started: float
    ) -> StreamParser:
        raise NotImplementedError

    def _parse_full(self, data: Any, model: str) -> ChatResult:
        raise NotImplementedError

    def _list_models(self, timeout: tuple[float, float] | None) -> list[str]:
        raise NotImplementedError

    def _sampling(self, payload: dict[str, Any], options: dict[str, Any]) -> None:
        """Put the sampling options (temperature, top_p, seed) where the API takes them."""
        payload.update({k: v for k, v in options.items() if v is not None})

    def _adapt(self, payload: dict[str, Any], err: ProviderError) -> bool:
        """Rewrite the payload after a 400 that a known server quirk explains; True to resend."""
        return False

    # -- public API ----------------------------------------------------------------------

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
        """Send one chat request; with stream=True, `on_delta` gets each text piece on arrival.

        With stream=False, `on_delta` (if given) is called once with the whole text.
        `options` are model parameters (fased.params): max_tokens, temperature, top_p, seed.
        """
        options = self.sent_options({"max_tokens": max_tokens, **(options or {})})
        max_tokens = options.pop("max_tokens", None)
        return self._chat(model, messages, stream, on_delta, max_tokens, tools, None, options)

    def list_models(self) -> list[str]:
        """Model names the server offers."""
        with self._reading(None):
            return safe_names(self._list_models(None))

    def probe(self, model: str | None, *, timeout: float = 10.0) -> str:
        """Cheapest real request that proves the provider (and model) usable; see PROBE_RESULTS.

        `timeout` bounds each request of the probe in total, not only each read. The failing
        ProviderError, if any, is kept in `last_probe_error`.
        """
        limits = (min(self.connect_timeout, timeout), min(self.read_timeout, timeout))
        self.last_probe_error = None
        try:
            with self._reading(model):
                return self._probe(model, limits)
        except ProviderError as err:
            self.last_probe_error = err
            return _PROBE_KINDS.get(err.kind, "error")

    def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def _embed_request(self, model: str, texts: list[str]) -> tuple[str, dict[str, Any]]:
        """The path and body of an embeddings request; an API without one says so."""
        raise self.make_error("bad_request", phrase="has no embeddings endpoint", model=model)

    def _parse_embeddings(self, data: Any) -> list[list[float]]:
        raise NotImplementedError

    def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order, from the server's embeddings endpoint (memory
        search); within the model deadline and the JSON byte cap like any request."""
        path, payload = self._embed_request(model, texts)
        with net.Deadline(self.deadline):
            data = self.json_body(self.send("POST", path, payload, model=model), model)
            with self._reading(model):
                # as sent: the caller checks the values (fased.memory.embed), and float()
                # would have made true a 1.0
                return [list(v) for v in self._parse_embeddings(data)]

    # -- shared flow ---------------------------------------------------------------------

    def _probe(self, model: str | None, limits: tuple[float, float]) -> str:
        if model is None:
            self._list_models(limits)
            return "ok"
        ping = [{"role": "user", "content": "ping"}]
        self._chat(model, ping, False, None, 1, None, limits)
        return "ok"

    @contextlib.contextmanager
    def _reading(self, model: str | None, parser: StreamParser | None = None) -> Iterator[None]:
        """Turn a parser's surprise at the server's data into a server error."""
        try:
            yield
        except _MALFORMED as exc:
            if parser is not None and exc is parser.callback_error:
                raise
            # a shape check says where; anything else a parser met is not worth naming
            where = f" ({exc})" if isinstance(exc, Malformed) else ""
            raise self.make_error("server", phrase=f"sent a malformed response{where}",
                                  model=model) from None

    def _chat(
        self, model: str, messages: list[dict], stream: bool, on_delta: DeltaCallback | None,
        max_tokens: int | None, tools: list[dict] | None, timeout: tuple[float, float] | None,
        options: dict[str, Any] | None = None,
    ) -> ChatResult:
        try:
            return self._chat_once(model, messages, stream, on_delta, max_tokens, tools, timeout,
                                   options)
        except ProviderError as err:
            if tools and refuses_tools(err):
                # its own kind: the caller may send the request again without tools
                raise self.make_error("no_tools", status=err.status, detail=err.detail,
                                      partial_text=err.partial_text, model=model) from None
            if err.kind == "bad_request" and self._unlisted(model, timeout):
                # Many OpenAI-compatible servers answer an unknown model with a 400 in words
                # of their own; the model list says what they mean.
                raise self.make_error("not_found", status=err.status, detail=err.detail,
                                      partial_text=err.partial_text, model=model) from None
            raise

    def _unlisted(self, model: str, limits: tuple[float, float] | None) -> bool:
        """Whether the server's model list leaves `model` out (False when it gives none)."""
        try:
            with self._reading(model):
                return not model_listed(model, safe_names(self._list_models(limits)))
        except ProviderError:
            return False

    def _chat_once(
        self, model: str, messages: list[dict], stream: bool, on_delta: DeltaCallback | None,
        max_tokens: int | None, tools: list[dict] | None, timeout: tuple[float, float] | None,
        options: dict[str, Any] | None = None,
    ) -> ChatResult:
        path, payload = self._chat_request(model, messages, stream, max_tokens, tools)
        self._sampling(payload, options or {})
        started = time.monotonic()
        # A probe's limits bound its whole request; a chat has the (long) chat deadline.
        with net.Deadline(self.deadline if timeout is None else timeout[1]):
            try:
                resp = self.send("POST", path, payload, stream=stream, timeout=timeout,
                                 model=model)
            except ProviderError as err:
                if not self._adapt(payload, err):
                    raise
                resp = self.send("POST", path, payload, stream=stream, timeout=timeout,
                                 model=model)
            if stream and resp.headers.get("content-type", "").startswith("application/json"):
                # Some proxies ignore "stream" and answer with one JSON document.
                stream = False
            if stream:
                parser = self._stream_parser(model, on_delta, started)
                self._consume(resp, parser, model, timeout)
                with self._reading(model, parser):
                    result = safe_result(parser.result())
            else:
                data, replaced = self._json_data(resp, model)
                with self._reading(model):
                    result = safe_result(self._parse_full(data, model))
                result.replaced_chars += replaced
                if result.usage.cost is None:
                    # a LiteLLM proxy prices each call; a stream's headers leave before the
                    # price is known, so only a whole reply's header is read
                    result.usage.cost = as_cost(resp.headers.get(COST_HEADER))
            try:
                result.tool_calls = route_calls(result.tool_calls)
            except CallsRejected as exc:
                raise self.make_error("server", phrase=str(exc), partial_text=result.text,
                                      model=model) from None
        if not stream and on_delta is not None and result.text:
            on_delta(result.text)
        result.latency_ms = (time.monotonic() - started) * 1000.0
        return result

    def _consume(
        self, resp: requests.Response, parser: StreamParser, model: str,
        limits: tuple[float, float] | None,
    ) -> None:
        try:
            with self._reading(model, parser):
                for raw in self._lines(resp, model, limits):
                    line, replaced = decode_utf8(raw)
                    parser.replaced += replaced
                    # Keep reading after the terminator: reaching the end of the body puts
                    # the connection back in the pool for the next turn.
                    if not parser.done:
                        parser.feed(line)
                        if parser.done:
                            _expect_end_soon(resp)
                if not parser.done:
                    parser.end()
        except ProviderError as err:
            if parser.done:
                return
            if err.kind == "stream_dropped":
                phrase = f"stream dropped after {len(parser.text)} chars"
                err = self.make_error(err.kind, phrase=phrase, model=model)
            err.partial_text = parser.text
            raise err from None
        finally:
            resp.close()
        if not parser.done:
            raise self.make_error(
                "stream_dropped",
                phrase=f"stream ended early after {len(parser.text)} chars",
                partial_text=parser.text,
                model=model,
            )

    def _lines(
        self, resp: requests.Response, model: str, limits: tuple[float, float] | None
    ) -> Iterator[bytes]:
        """Body lines as they arrive (never the whole body at once), without their ends."""
        chunks = net.chunks(resp, net.MAX_STREAM_BYTES)
        buf = b""
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            except Exception as exc:
                if not is_transport_error(exc):
                    raise
                raise self._transport_error(exc, True, model, limits) from None
            buf += chunk
            while (cut := buf.find(b"\n")) >= 0:
                line, buf = buf[:cut], buf[cut + 1 :]
                yield line.rstrip(b"\r")
        if buf:
            yield buf.rstrip(b"\r")

    def session(self) -> requests.Session:
        """The pooled session, built on first use (see fased.net.session_for)."""
        with self._session_lock:
            if self._session is None:
                session = self._new_session()
                session.params = dict(self.params)
                self._session = session
            return self._session

    def _new_session(self) -> requests.Session:
        return net.session_for(self.base_url)

    def send(
        self, method: str, path: str, payload: dict[str, Any] | None = None, *,
        stream: bool = False, timeout: tuple[float, float] | None = None,
        model: str | None = None,
    ) -> requests.Response:
        """One request; any failure (transport or HTTP status) becomes a ProviderError.

        The body is left unread: json_body() or the stream parser reads it, within the
        caller's net.Deadline and the byte caps."""
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if stream:
            # Compression makes servers and decoders buffer, which defeats streaming.
            headers["Accept-Encoding"] = "identity"
        headers.update(self._auth_headers())
        headers.update(self.headers)
        limits = timeout or (self.connect_timeout, self.read_timeout)
        deadline = net.current()
        try:
            resp = self.session().request(
                method,
                self.base_url + path,
                json=payload,
                headers=headers,
                stream=True,  # requests would read a whole body unbounded
                timeout=deadline.timeouts(*limits) if deadline else limits,
                # Credentials in the URL are left to requests; otherwise any auth object
                # stops requests from swapping our key for a ~/.netrc entry.
                auth=None if "@" in urlsplit(self.base_url).netloc else _keep_headers,
            )
        except Exception as exc:
            exc = net.explain(exc)
            if not is_transport_error(exc):
                raise
            raise self._transport_error(exc, False, model, timeout) from None
        if resp.status_code >= 400:
            raise self._status_error(resp, model)
        return resp

    def get_json(self, path: str, timeout: tuple[float, float] | None = None) -> Any:
        """GET a JSON document; a model list or probe has a short total deadline."""
        with net.Deadline(min(timeout[1] if timeout else self.read_timeout, net.LIST_DEADLINE)):
            return self.json_body(self.send("GET", path, timeout=timeout), None)

    def json_body(self, resp: requests.Response, model: str | None) -> Any:
        """Parsed JSON of a complete response; a 200 carrying an error object still raises."""
        return self._json_data(resp, model)[0]

    def _json_data(self, resp: requests.Response, model: str | None) -> tuple[Any, int]:
        """(parsed JSON, characters that were not UTF-8) of a complete response."""
        try:
            # JSON is UTF-8; resp.text would run (slow) charset detection without a charset.
            text, replaced = decode_utf8(net.read_body(resp, net.MAX_JSON_BYTES))
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            # the headers came: a failure now cuts the body off
            raise self._transport_error(exc, True, model, None) from None
        finally:
            resp.close()
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise self.make_error(
                "server", status=resp.status_code, phrase="sent a non-JSON response", model=model
            ) from None
        # JSON of the wrong shape (null, an array) is the parser's to name
        if isinstance(data, dict) and data.get("error"):
            kind, status, detail = classify_error_object(data)
            raise self.make_error(kind, status=status, detail=detail, model=model)
        return data, replaced

    def _status_error(self, resp: requests.Response, model: str | None) -> ProviderError:
        try:
            body = net.read_body(resp, net.MAX_ERROR_BYTES, truncate=True)
            body = body.decode("utf-8", "replace")
        except Exception as exc:
            if not is_transport_error(exc):
                raise
            body = ""
        finally:
            resp.close()
        etype, message, code = error_fields(body)
        return self.make_error(
            classify_status(resp.status_code, etype, message, code),
            status=resp.status_code,
            detail=message or etype,
            retry_after=retry_after_from(resp.headers),
            model=model,
        )

    def _transport_error(
        self, exc: BaseException, mid_stream: bool, model: str | None,
        limits: tuple[float, float] | None,
    ) -> ProviderError:
        kind, phrase = classify_exception(exc, mid_stream=mid_stream)
        if kind == "timeout" and not isinstance(exc, net.NetError):
            connect, read = limits or (self.connect_timeout, self.read_timeout)
            phrase += f" after {_seconds(connect if phrase.startswith('connect') else read)}"
        return self.make_error(kind, phrase=phrase, model=model)

    def make_error(
        self, kind: str, *, status: int | None = None, phrase: str | None = None,
        detail: str | None = None, retry_after: float | None = None, partial_text: str = "",
        model: str | None = None,
    ) -> ProviderError:
        """A ProviderError with a one-line message free of every secret the client holds."""
        phrase = phrase or _STATUS_PHRASES.get(status or 0) or _PHRASES[kind]
        head = f"{self.label} {status} {phrase}" if status else f"{self.label} {phrase}"
        # The label is exempt from redaction: local servers take keys like "ollama". The URL
        # loses its credentials even when malformed (a password with an unescaped '/').
        message = f"{head} at {self._where()}"
        if retry_after is not None:
            message += f" (retry after {_seconds(retry_after)})"
        if detail:
            detail = self._redact(" ".join(detail.split()))
            if len(detail) > _DETAIL_MAX:
                detail = detail[: _DETAIL_MAX - 3] + "..."
            message += f"; server says: {detail}"
        return ProviderError(
            " ".join(message.split()),
            kind=kind,
            status=status,
            retry_after=retry_after,
            partial_text=partial_text,
            provider=self.label,
            model=model,
            detail=detail or None,
        )

    def _where(self) -> str:
        """Where the client's requests go, for its messages."""
        return self._redact(display_url(mask_url(self.base_url)))

    def _redact(self, text: str) -> str:
        """`text` without any form of the key, secret header values or URL credentials."""
        secrets = client_secrets(self.api_key, self.headers, self.base_url, self.params)
        return mask_secrets(text, secrets)


def model_listed(model: str, names: list[str]) -> bool:
    # Ollama lists "llama3:latest" for a model requested as "llama3".
    return model in names or (":" not in model and f"{model}:latest" in names)
