"""Outbound HTTP, for every call fased makes (model chat, probe, catalog, detection, webhook):
a total deadline per call, a cap on the bytes read, and no redirect to another origin.

Why a total deadline: the (connect, read) timeouts of requests bound each read, so a server
that sends a byte every few seconds never times out. A call runs inside `Deadline(seconds)`;
when the time is up a timer shuts the call's socket down, which ends whatever read is blocked
(status line, headers, body, TLS handshake), and the call fails saying which limit it hit.

Why not follow a redirect to another origin (scheme, host, port): requests re-sends a 307 or
308 POST with its body and every custom header, so an API key in `x-api-key` (or a reply
meant for a webhook) would go to whatever host the Location names. Redirects within the
origin are followed (at most MAX_REDIRECTS): they reach the server that already has the key,
and servers use them for moved paths and trailing slashes.

`requests` is imported inside functions only (it costs ~100 ms at start-up).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit, urlunsplit

if TYPE_CHECKING:
    import requests

#: Total seconds for one model request (agents.defaults.deadlineSeconds overrides it): a long
#: generation takes minutes, not hours.
MODEL_DEADLINE = 600.0
#: A model list, a probe or a detection must answer within its read timeout in total, and
#: never take longer than this.
LIST_DEADLINE = 30.0
#: One webhook delivery, all its attempts together.
WEBHOOK_DEADLINE = 30.0
#: Body caps, far above what a real server sends: a JSON document, a streamed reply (ten
#: minutes of tokens is a few MiB of SSE), the part of an error or redirect body we read.
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_STREAM_BYTES = 256 * 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024
MAX_REDIRECTS = 5
#: Caps every deadline above, in seconds (tests, or a user who wants tighter bounds).
DEADLINE_ENV = "FASED_HTTP_DEADLINE"

_READ_SIZE = 65536
_local = threading.local()


class NetError(OSError):
    """A limit of ours that a server ran into; `kind` is the ProviderError kind it maps to."""

    kind = "connection"

    def __init__(self, phrase: str):
        super().__init__(phrase)
        self.phrase = phrase


class DeadlineExceeded(NetError, TimeoutError):
    kind = "timeout"


class BodyTooLarge(NetError):
    kind = "server"


class BrokenBody(ConnectionError):
    """A body that could not be read to its end once the headers had come: the connection
    broke, the body was cut short, or it could not be decoded. net.chunks raises it (its
    __cause__ is the original) for every transport failure, so no caller ever meets one of
    urllib3's own errors; `phrase` says what happened."""

    def __init__(self, phrase: str):
        super().__init__(phrase)
        self.phrase = phrase


class BodyTimedOut(BrokenBody, TimeoutError):
    """The server stopped sending a body for longer than the read timeout."""


class CrossOriginRedirect(NetError):
    kind = "connection"

    def __init__(self, location: str):
        super().__init__(f"redirected to {location} (another origin; not followed)")
        self.location = location


def seconds_text(value: float) -> str:
    """`2.5s`, `600s`."""
    return f"{round(value, 1):g}s"


def size_text(limit: int) -> str:
    """`16 MiB`, `64 KiB`."""
    return f"{limit // 1048576} MiB" if limit >= 1048576 else f"{limit // 1024} KiB"


def capped(seconds: float) -> float:
    """`seconds`, or less when FASED_HTTP_DEADLINE says so."""
    try:
        cap = float(os.environ.get(DEADLINE_ENV) or "inf")
    except ValueError:
        cap = float("inf")
    return min(seconds, cap) if cap > 0 else seconds


class Deadline:
    """The wall-clock budget of one outbound call, for the thread that makes it."""

    def __init__(self, seconds: float):
        self.seconds = capped(seconds)
        self.expired = False
        self._end = 0.0
        self._socks: list[Any] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._outer: Deadline | None = None

    def __enter__(self) -> Deadline:
        self._end = time.monotonic() + self.seconds
        self._outer = getattr(_local, "deadline", None)
        _local.deadline = self
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._socks.clear()
        _local.deadline = self._outer

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            _shut(sock)

    def watch(self, sock: Any) -> None:
        """Shut `sock` down when the time is up (at once if it is up already)."""
        with self._lock:
            self._socks.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def left(self) -> float:
        """Seconds until the deadline (0 once it passed)."""
        return max(0.0, self._end - time.monotonic())

    def timeouts(self, connect: float, read: float) -> tuple[float, float]:
        """Per-read timeouts that never outlast the deadline."""
        left = max(self.left(), 0.001)
        return min(connect, left), min(read, left)

    def error(self) -> DeadlineExceeded:
        """The error of a call that ran out of time (it names the limit)."""
        return DeadlineExceeded(f"timed out: hit the {seconds_text(self.seconds)} total deadline")


def _shut(sock: Any) -> None:
    import socket

    # socket.socket's own shutdown: an SSLSocket's would unwrap TLS under a reading thread
    with contextlib.suppress(OSError, TypeError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def current() -> Deadline | None:
    """The deadline of the call this thread is making, if any."""
    return getattr(_local, "deadline", None)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests and urllib3 nest several levels)."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None)])
        stack.extend(item.args)


def _loaded(module: str, *names: str) -> tuple[type, ...]:
    """Exception classes of `module` (urllib3.exceptions, requests.exceptions) if it was
    imported: nothing raised them otherwise, and importing it costs start-up time."""
    import sys

    found = sys.modules.get(module)
    return tuple(getattr(found, name) for name in names) if found is not None else ()


def _among(seen: list[BaseException], *types: type) -> bool:
    return any(isinstance(c, types) for c in seen)


def _broken(exc: BaseException) -> BrokenBody:
    """The BrokenBody that a transport failure while reading a body was."""
    import http.client

    seen = list(causes(exc))
    if _among(seen, TimeoutError, *_loaded("urllib3.exceptions", "ReadTimeoutError")):
        return BodyTimedOut("read timed out")
    if _among(seen, *_loaded("urllib3.exceptions", "DecodeError"),
              *_loaded("requests.exceptions", "ContentDecodingError")):
        return BrokenBody("sent a body that cannot be decompressed")
    # http.client reports a chunk size it cannot parse as an IncompleteRead from ValueError
    if _among(seen, *_loaded("urllib3.exceptions", "InvalidChunkLength")) or any(
            isinstance(c, http.client.IncompleteRead) and isinstance(c.__context__, ValueError)
            for c in seen):
        return BrokenBody("sent a malformed chunk")
    if _among(seen, http.client.IncompleteRead):  # urllib3's IncompleteRead subclasses it
        return BrokenBody("the connection closed before the whole body came")
    return BrokenBody("the connection broke")


def _is_transport(exc: BaseException) -> bool:
    import http.client

    return isinstance(exc, (OSError, http.client.HTTPException,
                            *_loaded("urllib3.exceptions", "HTTPError")))


def describe(exc: BaseException) -> str:
    """What went wrong with a call, in words, for any transport failure (requests', urllib3's
    or ours): never a class name."""
    import socket
    import ssl

    if isinstance(exc, (NetError, BrokenBody)):
        return exc.phrase
    seen = list(causes(exc))
    if _among(seen, *_loaded("requests.exceptions", "TooManyRedirects")):
        return "redirected too many times"
    if _among(seen, *_loaded("requests.exceptions", "InvalidURL", "MissingSchema",
                             "InvalidSchema")):
        return "the URL is not valid"
    if _among(seen, ConnectionRefusedError):
        return "connection refused"
    if _among(seen, socket.gaierror, *_loaded("urllib3.exceptions", "NameResolutionError")):
        return "cannot resolve the host"
    if _among(seen, ssl.SSLError):
        return "TLS error"
    connecting = never_sent(exc)
    # urllib3's NewConnectionError (refused, unreachable) subclasses its ConnectTimeoutError
    failed_to_connect = _loaded("urllib3.exceptions", "NewConnectionError")
    if any(isinstance(c, (TimeoutError, *_loaded("urllib3.exceptions", "TimeoutError")))
           and not isinstance(c, failed_to_connect) for c in seen):
        return "connect timed out" if connecting else "read timed out"
    return "cannot connect" if connecting else "the connection broke"


def never_sent(exc: BaseException) -> bool:
    """True for a failure while connecting, before any byte of the request left: the server
    cannot have acted on it."""
    return _among(list(causes(exc)),
                  *_loaded("urllib3.exceptions", "NewConnectionError", "ConnectTimeoutError"),
                  *_loaded("requests.exceptions", "ConnectTimeout", "InvalidURL",
                           "MissingSchema", "InvalidSchema"))


def explain(exc: BaseException) -> BaseException:
    """What a failure really was: an error from a socket that the deadline shut down is the
    deadline's."""
    deadline = current()
    if deadline is not None and deadline.expired and not isinstance(exc, NetError):
        return deadline.error()
    return exc


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def display(url: str) -> str:
    """A URL without credentials or query, short and printable (it may come from a server)."""
    from fased.safetext import one_line

    parts = urlsplit(url)
    shown = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    return one_line(shown, 200)


def is_loopback(url: str) -> bool:
    """True for a server on this machine."""
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def session_for(url: str) -> requests.Session:
    """A session for calls to `url`'s server: deadline-aware connections, same-origin
    redirects only, no HTTP(S)_PROXY for a server on this machine."""
    session = _classes()["session"]()
    session.trust_env = not is_loopback(url)
    session.max_redirects = MAX_REDIRECTS
    adapter = _classes()["adapter"]()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def chunks(resp: requests.Response, limit: int) -> Iterator[bytes]:
    """The body as it arrives (decoded if compressed), at most `limit` bytes; a read cut off
    by the deadline raises DeadlineExceeded, any other transport failure BrokenBody."""
    read1 = getattr(resp.raw, "read1", None)
    if read1 is not None:
        # read1 returns whatever is available, so a close-delimited stream arrives piece by
        # piece; iter_content would wait until its chunk size filled up
        source: Iterator[bytes] = iter(lambda: read1(_READ_SIZE, decode_content=True), b"")
    else:
        source = resp.iter_content(chunk_size=None)
    total = 0
    while True:
        try:
            chunk = next(source)
        except StopIteration:
            break
        except Exception as exc:
            real = explain(exc)
            if real is not exc:
                raise real from None
            if isinstance(exc, (NetError, BrokenBody)) or not _is_transport(exc):
                raise
            raise _broken(exc) from exc
        total += len(chunk)
        if total > limit:
            resp.close()
            raise BodyTooLarge(f"sent more than {size_text(limit)}")
        yield chunk
    deadline = current()
    if deadline is not None and deadline.expired:
        raise deadline.error()  # the socket was shut: what looked like an end was not


def read_body(resp: requests.Response, limit: int, *, truncate: bool = False) -> bytes:
    """The whole body, or BodyTooLarge past `limit` (with `truncate`: its first bytes)."""
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in chunks(resp, limit if not truncate else limit + _READ_SIZE):
            parts.append(chunk)
            size += len(chunk)
            if truncate and size >= limit:
                break
    finally:
        if truncate:
            resp.close()
    return b"".join(parts)[:limit] if truncate else b"".join(parts)


def _watch(sock: Any) -> None:
    deadline = current()
    if deadline is not None and sock is not None:
        deadline.watch(sock)


@cache
def _classes() -> dict[str, type]:
    """The requests and urllib3 subclasses, built on first use (requests loads lazily)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Watched:
        """Hands each socket to the current call's deadline: a new one as soon as it is
        connected (before a TLS handshake), a pooled one when a request starts on it."""

        def _new_conn(self):
            sock = super()._new_conn()
            _watch(sock)
            return sock

        def request(self, *args, **kwargs):
            _watch(self.sock)
            return super().request(*args, **kwargs)

    class Conn(Watched, HTTPConnection):
        pass

    class TLSConn(Watched, HTTPSConnection):
        pass

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConn

    pools = {"http": Pool, "https": TLSPool}

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy, **kwargs):
            manager = super().proxy_manager_for(proxy, **kwargs)
            if not proxy.lower().startswith("socks"):  # SOCKS brings its own connections
                manager.pool_classes_by_scheme = pools
            return manager

    class Session(requests.Session):
        def get_redirect_target(self, resp):
            # Called several times per response; the first call decides.
            if not resp.is_redirect or getattr(resp, "_fased_target", None):
                return getattr(resp, "_fased_target", None)
            location = resp.headers["location"]
            try:
                location = location.encode("latin-1").decode("utf-8")
            except UnicodeError:
                resp.close()
                raise NetError("sent a redirect whose Location is not UTF-8") from None
            target = urljoin(resp.url, location)
            if origin(target) != origin(resp.url):
                resp.close()
                raise CrossOriginRedirect(display(target))
            # requests reads a redirect's body before following it, without a limit
            read_body(resp, MAX_ERROR_BYTES)
            resp._fased_target = location
            return location

    return {"session": Session, "adapter": Adapter}


def is_network_error(exc: BaseException) -> bool:
    """A failure of the network itself (not of a file, not a bug): worth trying again later."""
    import http.client
    import socket
    import sys

    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror,
                        http.client.HTTPException)):
        return True
    # only when loaded: nothing raised them otherwise
    requests = sys.modules.get("requests")
    urllib3 = sys.modules.get("urllib3")
    return bool(
        (requests is not None and isinstance(exc, requests.RequestException))
        or (urllib3 is not None and isinstance(exc, urllib3.exceptions.HTTPError)))
