"""A fake Telegram Bot API on 127.0.0.1 speaking the real JSON (stdlib only).

    with FakeBotAPI(token) as api:
        api.message(chat=42, text="hi")          # a private chat message, as an update
        ...  # point fased at api.url (--api-base)
        api.sent                                  # sendMessage bodies received, in order

`POST /bot<TOKEN>/<method>` with a JSON body (or a query string). Answers are
`{"ok": true, "result": ...}` or `{"ok": false, "error_code", "description", "parameters"}`,
as Telegram's. getUpdates keeps updates until a request confirms them (offset = last + 1),
waits up to `timeout` seconds for the first one (long polling), and answers 409 when another
getUpdates is still waiting. Scripted failures: `rate_limit(method, retry_after, times)` (429
with parameters.retry_after), `reject_entities` (400 "can't parse entities" for any
parse_mode), `fail(method, code, description, times)`, `cut(method, how, times)` (the call is
handled, so a sendMessage is sent, then the answer breaks after its headers: `reset` the
connection, close it `short` of Content-Length, a malformed `chunk`, a `gzip` body that is
not gzip). sendMessage refuses texts over 4096 characters and unbalanced legacy Markdown,
like Telegram.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

TOKEN = "123456789:AAFakeTokenForTests-abcdefghijklmnop"
BOT = {"id": 123456789, "is_bot": True, "first_name": "Fased Test", "username": "fased_test_bot"}


class FakeBotAPI:
    def __init__(self, token: str = TOKEN, bot: dict | None = None):
        self.token = token
        self.bot = bot or dict(BOT)
        self.updates: list[dict] = []
        self.confirmed = 0  # updates with a lower id are gone
        self.next_update = 100
        self.next_message = 1000
        self.requests: list[tuple[str, dict]] = []  # (method, body), every call
        self.sent: list[dict] = []  # sendMessage bodies that succeeded
        self.actions: list[dict] = []
        self.reject_entities = False
        self.failures: dict[str, list[tuple[int, str, dict]]] = {}
        self.cuts: dict[str, list[str]] = {}
        self.send_delay = 0.0
        self._cond = threading.Condition()
        self._polling = 0
        self._server: ThreadingHTTPServer | None = None

    # -- scripting --------------------------------------------------------------------------

    def message(self, chat: int = 42, text: str = "hello", *, sender: int | None = None,
                chat_type: str = "private", username: str = "alice", reply_to_bot=False) -> int:
        """Queue an update holding a message; returns its update_id."""
        with self._cond:
            self.next_update += 1
            self.next_message += 1
            msg = {"message_id": self.next_message, "date": int(time.time()),
                   "chat": {"id": chat, "type": chat_type},
                   "from": {"id": sender if sender is not None else chat, "is_bot": False,
                            "first_name": username.title(), "username": username},
                   "text": text}
            if chat_type != "private":
                msg["chat"]["title"] = "A group"
            if reply_to_bot:
                msg["reply_to_message"] = {"message_id": 1, "from": self.bot}
            self.updates.append({"update_id": self.next_update, "message": msg})
            self._cond.notify_all()
            return self.next_update

    def other_update(self) -> int:
        """An update fased does not handle (an edited message)."""
        with self._cond:
            self.next_update += 1
            self.updates.append({"update_id": self.next_update, "edited_message": {
                "message_id": 1, "date": 0, "chat": {"id": 42, "type": "private"},
                "text": "edited"}})
            self._cond.notify_all()
            return self.next_update

    def rate_limit(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        self.fail(method, 429, f"Too Many Requests: retry after {retry_after}", times,
                  {"retry_after": retry_after})

    def fail(self, method: str, code: int, description: str, times: int = 1,
             parameters: dict | None = None) -> None:
        self.failures.setdefault(method, []).extend(
            [(code, description, parameters or {})] * times)

    def cut(self, method: str, how: str = "reset", times: int = 1) -> None:
        assert how in ("reset", "short", "chunk", "gzip"), how
        with self._cond:
            self.cuts.setdefault(method, []).extend([how] * times)

    def _cut(self, path: str) -> str | None:
        with self._cond:
            queue = self.cuts.get(path.rpartition("/")[2])
            return queue.pop(0) if queue else None

    def texts(self, chat: int | None = None) -> list[str]:
        return [s["text"] for s in self.sent if chat is None or str(s["chat_id"]) == str(chat)]

    def calls(self, method: str) -> list[dict]:
        return [body for m, body in self.requests if m == method]

    # -- serving ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeBotAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                self._answer(raw)

            def do_GET(self):
                self._answer(b"")

            def _answer(self, raw: bytes):
                parts = urlsplit(self.path)
                body = dict(parse_qsl(parts.query))
                if raw:
                    try:
                        body.update(json.loads(raw))
                    except ValueError:
                        body.update(parse_qsl(raw.decode()))
                status, doc = api.handle(parts.path, body)
                data = json.dumps(doc).encode()
                how = api._cut(parts.path)
                if how:
                    self._broken(how, status, data)
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _broken(self, how: str, status: int, data: bytes):
                head = f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                body = data[:5]
                if how in ("reset", "short"):
                    head += f"Content-Length: {len(data)}\r\n"
                elif how == "chunk":
                    head += "Transfer-Encoding: chunked\r\n"
                    body = b"ZZZ\r\n" + data + b"\r\n0\r\n\r\n"
                else:
                    head += f"Content-Encoding: gzip\r\nContent-Length: {len(data)}\r\n"
                    body = data
                self.wfile.write(head.encode() + b"\r\n" + body)
                self.wfile.flush()
                if how == "reset":  # SO_LINGER 0: close sends a TCP reset, not an orderly end
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # -- the API ----------------------------------------------------------------------------

    @staticmethod
    def _error(code: int, description: str, parameters: dict | None = None) -> tuple[int, dict]:
        doc = {"ok": False, "error_code": code, "description": description}
        if parameters:
            doc["parameters"] = parameters
        return code, doc

    def handle(self, path: str, body: dict) -> tuple[int, dict]:
        prefix, _, method = path.lstrip("/").rpartition("/")
        if prefix != f"bot{self.token}":
            return self._error(401, "Unauthorized") if prefix.startswith("bot") else (
                self._error(404, "Not Found"))
        self.requests.append((method, body))
        queue = self.failures.get(method)
        if queue:
            code, description, parameters = queue.pop(0)
            return self._error(code, description, parameters)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return self._error(404, "Not Found: method not found")
        return handler(body)

    def _m_getMe(self, body):
        return 200, {"ok": True, "result": self.bot}

    def _m_getUpdates(self, body):
        offset = int(body.get("offset") or 0)
        timeout = float(body.get("timeout") or 0)
        limit = int(body.get("limit") or 100)
        with self._cond:
            if self._polling:
                return self._error(409, "Conflict: terminated by other getUpdates request; "
                                   "make sure that only one bot instance is running")
            if offset:
                self.confirmed = max(self.confirmed, offset)
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            self._polling += 1
            try:
                end = time.monotonic() + timeout
                while not self.updates and time.monotonic() < end:
                    self._cond.wait(end - time.monotonic())
                return 200, {"ok": True, "result": self.updates[:limit]}
            finally:
                self._polling -= 1

    def _m_sendMessage(self, body):
        text = body.get("text")
        if "chat_id" not in body:
            return self._error(400, "Bad Request: chat_id is empty")
        if not text:
            return self._error(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > 4096:  # Telegram counts UTF-16 code units
            return self._error(400, "Bad Request: message is too long")
        mode = body.get("parse_mode")
        if mode and (self.reject_entities or _unbalanced(text)):
            return self._error(400, "Bad Request: can't parse entities: Can't find end of the "
                               "entity starting at byte offset 0")
        if self.send_delay:
            time.sleep(self.send_delay)
        with self._cond:
            self.next_message += 1
            message = {"message_id": self.next_message, "date": int(time.time()),
                       "chat": {"id": int(body["chat_id"]), "type": "private"}, "text": text}
            self.sent.append(dict(body))
        return 200, {"ok": True, "result": message}

    def _m_sendChatAction(self, body):
        self.actions.append(dict(body))
        return 200, {"ok": True, "result": True}


def _unbalanced(text: str) -> bool:
    """Legacy Markdown Telegram cannot parse: an odd number of *, _ or ` marks."""
    return any(text.count(mark) % 2 for mark in ("*", "_", "`"))
