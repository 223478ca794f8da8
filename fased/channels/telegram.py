"""Telegram through the Bot API over HTTPS (`requests` via fased.net; no SDK).

Calls are `POST <apiBase>/bot<TOKEN>/<method>` with a JSON body; answers are
`{"ok": true, "result": ...}` or `{"ok": false, "error_code", "description", "parameters"}`.
The token sits in the URL path, so every error that leaves this module is masked for it
(fased.redact.mask_secrets) and URLs are shown without it.

- 429 waits `parameters.retry_after` seconds (at most MAX_RETRY_AFTER) and tries again, up to
  RATE_ATTEMPTS times; a longer wait is a retryable failure for the next poll.
- 409 on getUpdates: another poller (or a webhook) reads this bot's updates.
- sendMessage goes out as legacy Markdown (model Markdown mapped onto what it knows); when
  Telegram answers 400 "can't parse entities", the same text goes again as plain text.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable

from fased.channels.base import ChannelError, Inbound, Update, shown_id

DEFAULT_API_BASE = "https://api.telegram.org"
MAX_TEXT = 4096
MAX_RETRY_AFTER = 30.0
RATE_ATTEMPTS = 3
TOKEN = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}\Z")
# Room for every id and name a server sends, kept whole (cut to 64, an invalid id of 100
# characters would become a valid one): routing refuses ids longer than 64 itself.
KEPT_CHARS = 256


def check_token(token: str) -> str:
    """A token as BotFather gives it (`123456:ABC...`); ChannelError otherwise (the token is
    never part of the message)."""
    token = token.strip()
    if not TOKEN.match(token):
        raise ChannelError("that is not a Telegram bot token (BotFather gives one like "
                           "123456789:AA...)", hint="copy it again from @BotFather")
    return token


def markdown(text: str) -> str:
    """Model Markdown as Telegram's legacy Markdown: **bold** and __bold__ become *bold*,
    a heading line becomes a bold line; code, links and the rest pass as they are."""
    out = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"*\1*", text)
    out = re.sub(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)", r"*\1*", out)
    return re.sub(r"(?m)^#{1,6}[ \t]+(.+?)[ \t#]*$", r"*\1*", out)


class TelegramChannel:
    """A client of one bot. `bot` ({"id", "username"}) tells mentions apart in groups."""

    name = "telegram"
    max_text = MAX_TEXT

    def __init__(self, token: str, api_base: str | None = None, *, account: str = "default",
                 bot: dict | None = None, sleep: Callable[[float], None] = time.sleep):
        self._token = token
        self.account = account
        self.api_base = (api_base or DEFAULT_API_BASE).rstrip("/")
        self.bot = bot or {}
        self.sleep = sleep

    # -- the wire ---------------------------------------------------------------------------

    def _mask(self, text: str) -> str:
        from fased.redact import mask_secrets

        return mask_secrets(text, [self._token])

    def call(self, method: str, body: dict, *, wait: float = 0.0) -> object:
        """One Bot API method (429 waited out); its `result`, or ChannelError."""
        for attempt in range(1, RATE_ATTEMPTS + 1):
            try:
                return self._once(method, body, wait)
            except ChannelError as exc:
                after = getattr(exc, "retry_after", None)
                if exc.code != 429 or after is None or after > MAX_RETRY_AFTER or (
                        attempt == RATE_ATTEMPTS):
                    raise
                self.sleep(after)
        raise AssertionError("unreachable")

    def _once(self, method: str, body: dict, wait: float) -> object:
        import requests

        from fased import net

        url = f"{self.api_base}/bot{self._token}/{method}"
        session = net.session_for(url)
        try:
            with net.Deadline(wait + 30.0) as deadline:
                try:
                    resp = session.post(url, json=body, timeout=deadline.timeouts(10, wait + 15),
                                        stream=True)
                    raw = net.read_body(resp, net.MAX_JSON_BYTES)
                except (requests.RequestException, OSError) as exc:
                    raise self._network_error(method, net.explain(exc)) from None
        finally:
            session.close()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or "ok" not in doc:
            raise ChannelError(f"Telegram {method}: HTTP {resp.status_code} without a Bot API "
                               "answer", hint=f"is {net.display(self.api_base)} the Bot API?",
                               code=resp.status_code, retry=resp.status_code >= 500)
        if doc.get("ok") is True:
            return doc.get("result")
        raise self._api_error(method, doc, resp.status_code)

    def _network_error(self, method: str, exc: BaseException) -> ChannelError:
        from fased.net import describe, display, never_sent

        what, where = describe(exc), display(self.api_base)
        hint = "check the network (and channels.telegram.apiBase)"
        if method == "sendMessage" and not never_sent(exc):
            # the request went out: Telegram may have delivered it before the answer was lost
            return ChannelError(
                self._mask(f"Telegram {method} to {where}: {what}; it may have arrived, so it "
                           "is not sent again"), hint=hint, retry=True, unknown=True)
        return ChannelError(self._mask(f"Telegram {method}: cannot reach {where}: {what}"),
                            hint=hint, retry=True)

    def _api_error(self, method: str, doc: dict, status: int) -> ChannelError:
        from fased.safetext import one_line

        code = doc.get("error_code") if isinstance(doc.get("error_code"), int) else status
        description = self._mask(one_line(str(doc.get("description") or ""), 300))
        params = doc.get("parameters") if isinstance(doc.get("parameters"), dict) else {}
        hint = None
        if code == 409:
            message = (f"Telegram {method}: 409 Conflict: another poller or a webhook is "
                       f"reading this bot's updates ({description})")
            hint = ("stop the other `fased channel poll` / bot instance, or delete the "
                    "bot's webhook (deleteWebhook)")
        elif code in (401, 404) and method in ("getMe", "getUpdates"):
            message = f"Telegram rejected the bot token ({code} {description})"
            hint = "check the token with @BotFather, then `fased channel add telegram` again"
        else:
            message = f"Telegram {method}: {code} {description}"
        error = ChannelError(message, hint, code=code,
                             retry=code in (409, 429) or code >= 500)
        after = params.get("retry_after")
        if code == 429 and isinstance(after, (int, float)) and after >= 0:
            error.retry_after = float(after)
        return error

    # -- the protocol -----------------------------------------------------------------------

    def identify(self) -> dict:
        me = self.call("getMe", {})
        if not isinstance(me, dict) or "id" not in me:
            raise ChannelError("Telegram getMe: the answer names no bot")
        # what the server says is kept and printed: one line of printable text, as every
        # field of an update is
        return {"id": shown_id(me["id"], KEPT_CHARS),
                "username": shown_id(me["username"], KEPT_CHARS) if me.get("username")
                else None,
                "name": shown_id(me["first_name"], KEPT_CHARS) if me.get("first_name")
                else None}

    def receive(self, offset: int | None, timeout: float) -> list[Update]:
        body: dict = {"timeout": int(timeout), "allowed_updates": ["message"]}
        if offset is not None:
            body["offset"] = offset + 1  # confirms every update up to `offset`
        result = self.call("getUpdates", body, wait=int(timeout))
        if not isinstance(result, list):
            raise ChannelError("Telegram getUpdates: the answer is not a list of updates")
        updates = []
        for item in result:
            if isinstance(item, dict) and isinstance(item.get("update_id"), int):
                updates.append(Update(item["update_id"], self.parse(item)))
        return updates

    def parse(self, update: dict) -> Inbound | None:
        """The message in an update, or None for anything fased does not handle."""
        msg = update.get("message")
        if not isinstance(msg, dict) or not isinstance(msg.get("chat"), dict):
            return None
        chat, sender = msg["chat"], msg.get("from") or {}
        kind = {"private": "dm", "group": "group", "supergroup": "group"}.get(chat.get("type"))
        text = msg.get("text") if isinstance(msg.get("text"), str) else msg.get("caption")
        if kind is None or not isinstance(text, str) or "id" not in chat:
            return None
        username = self.bot.get("username")
        replied = (msg.get("reply_to_message") or {}).get("from") or {}
        mentioned = kind == "dm" or bool(
            (username and f"@{username}".lower() in text.lower())
            or (self.bot.get("id") and str(replied.get("id")) == str(self.bot["id"])))
        name = sender.get("username")
        name = f"@{name}" if name else " ".join(
            str(p) for p in (sender.get("first_name"), sender.get("last_name")) if p)
        return Inbound(self.name, self.account, kind, shown_id(chat["id"], KEPT_CHARS),
                       shown_id(sender.get("id", chat["id"]), KEPT_CHARS),
                       shown_id(name, KEPT_CHARS), text, mentioned,
                       shown_id(msg.get("message_id", ""), KEPT_CHARS), str(update["update_id"]))

    def send(self, peer_id: str, text: str) -> tuple[str, bool]:
        formatted = markdown(text)
        try:
            result = self.call("sendMessage", {"chat_id": peer_id, "text": formatted,
                                               "parse_mode": "Markdown"})
            plain = False
        except ChannelError as exc:
            if exc.code != 400 or "parse entities" not in exc.message.lower():
                raise
            result = self.call("sendMessage", {"chat_id": peer_id, "text": text})
            plain = True
        message_id = result.get("message_id") if isinstance(result, dict) else None
        return str(message_id) if message_id is not None else "", plain

    def typing(self, peer_id: str) -> None:
        with contextlib.suppress(ChannelError):  # a courtesy; the reply is what matters
            self.call("sendChatAction", {"chat_id": peer_id, "action": "typing"})
