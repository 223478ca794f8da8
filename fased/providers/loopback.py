"""Plain HTTP/1.1 to fased's own embedded server, spoken over a socket.

The embedded llama.cpp server (kind local) listens on 127.0.0.1 in this very process and
never redirects, compresses, proxies or asks for credentials: nothing requests does is
needed there. Importing requests and urllib3 cost ~50 ms of every one-shot chat with it,
and http.client ~20 ms more (it parses headers with the email package and imports ssl for
HTTPS). This is the part of requests.Session that HttpClient.send uses, and the part of
HTTP/1.1 a server answers with: a status line, headers, then a body of Content-Length
bytes, chunked, or up to the close. Its failures are OSErrors (ProtocolError for what a
server must not send, or a body cut short), which is_transport_error and
classify_exception already know; each socket is handed to the call's deadline like
requests' are (fased.net).
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from fased import net

MAX_HEAD = 64 * 1024  # the status line and headers of one response
MAX_HEADERS = 100
MAX_CHUNK_LINE = 1024  # a chunk's size line (hex digits and extensions)
READ_SIZE = 64 * 1024
_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: [^\r\n]*)?")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_UNSAFE = re.compile(r"[\r\n\0]")


class ProtocolError(ConnectionError):
    """A reply no HTTP/1.1 server sends, or a body cut short."""


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
        body = b"" if json is None else _encode(json)
        sent = {"Host": parts.netloc.rpartition("@")[2], "Accept-Encoding": "identity",
                "Connection": "close", **(headers or {})}
        if json is not None:
            sent["Content-Type"] = "application/json"
        if body or method not in ("GET", "HEAD", "DELETE"):
            sent["Content-Length"] = str(len(body))
        lines = [f"{method} {target} HTTP/1.1"]
        for name, value in sent.items():
            if _UNSAFE.search(f"{name}{value}") or not name or ":" in name:
                raise ValueError(f"invalid header {name!r}")
            lines.append(f"{name}: {value}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=connect)
        try:
            net._watch(sock)
            sock.settimeout(read)
            sock.sendall(request)
            reader = _Reader(sock)
            status, got = reader.head()
            while 100 <= status < 200:  # an interim answer: the real one follows
                status, got = reader.head()
            if 300 <= status < 400:
                raise _not_followed(url, got.get("location") or "")
            return LoopbackResponse(sock, status, got, _Body(sock, reader, _framing(
                method, status, got)))
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        """Nothing is pooled."""


class Headers(dict):
    """Response headers by lower-case name (a repeated one joined with ', ')."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class LoopbackResponse:
    """What HttpClient reads of a requests.Response: status, headers, the raw body."""

    def __init__(self, sock: socket.socket, status: int, headers: Headers, body: _Body):
        self.status_code = status
        self.headers = headers
        self.raw = body

    def close(self) -> None:
        self.raw.sock.close()


class _Reader:
    """Bytes from the socket, through a buffer the head and the body share."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()

    def fill(self) -> bool:
        """Read once more; False at the end of the stream."""
        got = self.sock.recv(READ_SIZE)
        self.buffer += got
        return bool(got)

    def head(self) -> tuple[int, Headers]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise ProtocolError(f"the server sent more than {MAX_HEAD} bytes of headers")
            if not self.fill():
                raise ProtocolError("the server closed the connection before it answered"
                                    if not self.buffer else "the server's headers were cut off")
        if end > MAX_HEAD:
            raise ProtocolError(f"the server sent more than {MAX_HEAD} bytes of headers")
        block = bytes(self.buffer[:end])
        del self.buffer[:end + 4]
        first, *rest = block.split(b"\r\n")
        status = _STATUS.fullmatch(first)
        if status is None:
            raise ProtocolError("the server did not answer in HTTP/1.1")
        if len(rest) > MAX_HEADERS:
            raise ProtocolError(f"the server sent more than {MAX_HEADERS} headers")
        headers = Headers()
        last = None
        for line in rest:
            text = line.decode("latin-1")
            if text[:1] in (" ", "\t") and last is not None:  # a folded line goes on
                headers[last] = f"{dict.__getitem__(headers, last)} {text.strip()}"
                continue
            name, colon, value = text.partition(":")
            if not colon or not name or name != name.strip():
                raise ProtocolError("the server sent a malformed header")
            last = name.lower()
            value = value.strip()
            old = dict.get(headers, last)
            dict.__setitem__(headers, last, value if old is None else f"{old}, {value}")
        return int(status.group(1)), headers

    def take(self, size: int) -> bytes:
        got = bytes(self.buffer[:size])
        del self.buffer[:size]
        return got


def _framing(method: str, status: int, headers: Headers) -> int | str | None:
    """How the body ends: its length, "chunked", or None (at the close)."""
    if method == "HEAD" or status in (204, 304):
        return 0
    if "chunked" in (headers.get("transfer-encoding") or "").lower():
        return "chunked"
    length = headers.get("content-length")
    if length is None:
        return None
    values = {v.strip() for v in length.split(",")}
    value = values.pop() if len(values) == 1 else ""
    if not (value.isascii() and value.isdigit()):  # "²" is a digit to isdigit()
        raise ProtocolError("the server sent an invalid Content-Length")
    return int(value)


class _Body:
    """The body, decoded from its framing, as requests' raw response gives it (read1)."""

    def __init__(self, sock: socket.socket, reader: _Reader, framing: int | str | None):
        self.sock = sock  # where _expect_end_soon shortens the wait
        self.connection = self
        self.reader = reader
        self.chunked = framing == "chunked"
        self.left = None if self.chunked else framing  # bytes of the body (or chunk) left
        self.done = framing == 0

    def read1(self, size: int, decode_content: bool = True) -> bytes:
        """Up to `size` bytes that have arrived (one read of the socket at most); b"" at
        the end of the body."""
        if self.done or size <= 0:
            return b""
        if self.chunked and not self.left:
            self._next_chunk()
            if self.done:
                return b""
        reader = self.reader
        if not reader.buffer and not reader.fill():
            if self.left is None:  # the body ends at the close
                self.done = True
                return b""
            raise ProtocolError("the server's body was cut short")
        want = size if self.left is None else min(size, self.left)
        got = reader.take(want)
        if self.left is not None:
            self.left -= len(got)
            if not self.left:
                if self.chunked:
                    self._expect(b"\r\n")
                else:
                    self.done = True
        return got

    def read(self) -> bytes:
        parts = []
        while piece := self.read1(READ_SIZE):
            parts.append(piece)
        return b"".join(parts)

    def _next_chunk(self) -> None:
        line = self._line()
        size = _HEX.fullmatch(line.partition(b";")[0].strip())
        if size is None:
            raise ProtocolError("the server sent an invalid chunk size")
        self.left = int(size.group(0), 16)
        if not self.left:  # the last chunk: trailers, then an empty line
            while self._line():
                pass
            self.done = True

    def _line(self) -> bytes:
        reader = self.reader
        while (end := reader.buffer.find(b"\r\n")) < 0:
            if len(reader.buffer) > MAX_CHUNK_LINE:
                raise ProtocolError("the server sent an invalid chunk")
            if not reader.fill():
                raise ProtocolError("the server's body was cut short")
        if end > MAX_CHUNK_LINE:
            raise ProtocolError("the server sent an invalid chunk")
        line = reader.take(end)
        reader.take(2)
        return line

    def _expect(self, marker: bytes) -> None:
        reader = self.reader
        while len(reader.buffer) < len(marker):
            if not reader.fill():
                raise ProtocolError("the server's body was cut short")
        if reader.take(len(marker)) != marker:
            raise ProtocolError("the server sent an invalid chunk")


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
        raise ProtocolError(f"the request is not JSON: {exc}") from None
