"""Plain HTTP to fased's own embedded server, with http.client instead of requests.

The embedded llama.cpp server (kind local) listens on 127.0.0.1 in this very process and
never redirects, compresses, proxies or asks for credentials: nothing requests does is
needed there, and importing requests and urllib3 (whose regular expressions compile at
import) cost ~50 ms of every one-shot chat with it. This is the part of requests.Session
that HttpClient.send uses; its failures are the OSError and http.client errors that
is_transport_error and classify_exception already know, and each socket is handed to the
call's deadline like requests' are (fased.net).
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from fased import net


class LoopbackSession:
    """A new connection per request (connecting on loopback costs ~0.1 ms)."""

    def __init__(self) -> None:
        self.params: dict[str, str] = {}

    def request(self, method: str, url: str, *, json: Any = None,
                headers: dict[str, str] | None = None, timeout: Any = None,
                **_ignored: Any) -> LoopbackResponse:
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        parts = urlsplit(url)
        query = "&".join(q for q in (parts.query, urlencode(self.params)) if q)
        target = (parts.path or "/") + (f"?{query}" if query else "")
        sent = dict(headers or {})
        body = None
        if json is not None:
            body = _encode(json)
            sent["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=connect)
        try:
            connection.connect()
            net._watch(connection.sock)
            connection.sock.settimeout(read)
            connection.request(method, target, body, sent)
            response = connection.getresponse()
            if 300 <= response.status < 400:
                raise _not_followed(url, response.getheader("Location") or "")
            return LoopbackResponse(connection, response)
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        """Nothing is pooled."""


class LoopbackResponse:
    """What HttpClient reads of a requests.Response: status, headers, the raw body."""

    def __init__(self, connection: http.client.HTTPConnection,
                 response: http.client.HTTPResponse):
        self.status_code = response.status
        self.headers = response.msg  # case-insensitive .get, like requests' headers
        self.raw = _Body(connection, response)

    def close(self) -> None:
        self.raw.response.close()
        self.raw.connection.close()


class _Body:
    def __init__(self, connection: http.client.HTTPConnection,
                 response: http.client.HTTPResponse):
        self.connection = connection  # .sock: where _expect_end_soon shortens the wait
        self.response = response

    def read1(self, size: int, decode_content: bool = True) -> bytes:
        left = self.response.length  # of a body with a Content-Length
        got = self.response.read1(size)
        if not got and size and left:  # http.client says b"" when the body is cut short
            raise http.client.IncompleteRead(b"", left)
        return got


def _not_followed(url: str, location: str) -> net.NetError:
    """A redirect: the embedded server makes none, and this transport follows none."""
    target = urljoin(url, location)
    if net.origin(target) != net.origin(url):
        return net.CrossOriginRedirect(target)
    return net.NetError(f"redirected to {target} (not followed)")


def _encode(payload: Any) -> bytes:
    """The JSON body, as requests would send it (NaN and infinities are not JSON)."""
    try:
        return json.dumps(payload, allow_nan=False).encode("utf-8")
    except ValueError as exc:  # a transport-level refusal, as requests' InvalidJSONError
        raise http.client.HTTPException(f"the request is not JSON: {exc}") from None
