"""The embedded server's transport (fased.providers.loopback) against raw HTTP/1.1 replies:
each test's server on 127.0.0.1 reads the request and sends scripted bytes, then closes."""

from __future__ import annotations

import socket
import threading

import pytest

from fased.providers.loopback import MAX_HEAD, LoopbackSession, ProtocolError


class RawServer:
    """Answers each connection with the next scripted bytes, then closes it."""

    def __init__(self, *replies: bytes):
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.replies:
            conn, _ = self.sock.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(self.replies.pop(0))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw():
    made: list[RawServer] = []

    def _raw(*replies: bytes) -> RawServer:
        made.append(RawServer(*replies))
        return made[-1]

    yield _raw
    for server in made:
        server.close()


def fetch(server: RawServer, **kwargs) -> tuple[int, dict, bytes]:
    reply = LoopbackSession().request("POST", server.url + "/v1/x?a=1", timeout=(5, 5),
                                      **kwargs)
    try:
        return reply.status_code, reply.headers, reply.raw.read()
    finally:
        reply.close()


def test_a_request_is_plain_http_with_its_json_body(raw):
    server = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    status, got, body = fetch(server, json={"q": "é"}, headers={"X-Key": "v"})
    assert (status, body, got.get("Content-Length")) == (200, b"ok", "2")
    head, _, sent = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/x?a=1 HTTP/1.1"
    assert b"X-Key: v" in lines and b"Content-Type: application/json" in lines
    assert sent == b'{"q": "\\u00e9"}'


def test_chunked_bodies_with_extensions_and_trailers_and_interim_answers(raw):
    server = raw(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                 b"\r\nX-Folded: one\r\n two\r\nSet-Thing: a\r\nset-thing: b\r\n\r\n"
                 b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    status, headers, body = fetch(server)
    assert (status, body) == (200, b"hello world")
    assert headers.get("x-folded") == "one two" and headers["SET-THING"] == "a, b"
    assert "Transfer-Encoding" in headers and headers.get("missing", "-") == "-"


def test_a_body_that_ends_at_the_close(raw):
    assert fetch(raw(b"HTTP/1.0 200 OK\r\n\r\nall of it"))[2] == b"all of it"


@pytest.mark.parametrize("reply, says", [
    (b"", "closed the connection before it answered"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "headers were cut off"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "did not answer in HTTP/1.1"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "more than 100 headers"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * MAX_HEAD + b"\r\n\r\n", "bytes of headers"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
    # latin-1's superscript two: a digit to str.isdigit(), not to int()
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", "invalid Content-Length"),
])
def test_what_no_server_sends_is_a_protocol_error(raw, reply, says):
    with pytest.raises(ProtocolError, match=says):
        fetch(raw(reply))


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX3\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000,
])
def test_a_body_cut_short_or_mangled_is_an_error_not_an_end(raw, reply):
    with pytest.raises(ProtocolError, match=r"cut short|invalid chunk"):
        fetch(raw(reply))


def test_headers_that_would_split_the_request_are_refused(raw):
    server = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ValueError, match="invalid header"):
        fetch(server, headers={"X-Evil": "a\r\nInjected: yes"})
    assert fetch(server)[0] == 200  # nothing of the refused one reached the server
    assert b"Injected" not in b"".join(server.requests)
