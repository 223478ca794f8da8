"""What every channel is: inbound messages in one neutral shape (what it hands the routing
layer, already identified), and a client that receives,
sends, shows typing and knows its limits. A channel is one module (fased.channels.telegram);
routing, pairing, the outbox and delivery speak only these types.

A channel that needs a live connection (Slack Socket Mode, Discord's gateway) implements the
same protocol: `receive(offset, timeout)` returns what arrived within `timeout` (from a queue
its connection thread fills), with an increasing `update_id` the log can hold as its offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fased.errors import FasedError


def shown_id(text: object, limit: int = 64) -> str:
    """An untrusted id or name as it may be recorded (every field fased keeps from a
    channel's server): escaped, on one line, cut short. A valid id is unchanged by it."""
    from fased.bounds import printable

    value = ("" if text is None else str(text)).encode("utf-8", "backslashreplace").decode(
        "utf-8")
    return printable(value)[:limit]


@dataclass(frozen=True)
class Inbound:
    channel: str          # "telegram"
    account: str          # account name, "default" unless --account
    peer_kind: str        # "dm" | "group"
    peer_id: str          # chat id as string
    sender_id: str        # user id as string
    sender_name: str      # display name / @username, for humans only
    text: str
    mentioned: bool       # bot @mentioned or replied-to (groups)
    message_id: str       # channel's message id
    update_id: str        # channel's update/offset id, for the log


@dataclass(frozen=True)
class Update:
    """One update as received: its id (the offset), and the message in it, if fased handles
    that kind of update (None: an edit, a join, a reaction...)."""

    update_id: int
    inbound: Inbound | None


class ChannelError(FasedError):
    """The channel refused a call or could not be reached. `retry`: a later try may work
    (and nothing was delivered); `unknown`: the request may have arrived (a read timeout)."""

    def __init__(self, message: str, hint: str | None = None, *, code: int | None = None,
                 retry: bool = False, unknown: bool = False):
        super().__init__(message, hint)
        self.code, self.retry, self.unknown = code, retry, unknown


class Channel(Protocol):
    """A client of one channel account."""

    name: str              # "telegram"
    max_text: int          # the longest message text the channel takes

    def identify(self) -> dict:
        """Who the account is ({"id", "username", "name"}); ChannelError for a bad token."""

    def receive(self, offset: int | None, timeout: float) -> list[Update]:
        """Updates after `offset` (the highest update id recorded, or None), waiting up to
        `timeout` seconds for the first one."""

    def send(self, peer_id: str, text: str) -> tuple[str, bool]:
        """Send one message of at most max_text characters: (message id, sent as plain text)."""

    def typing(self, peer_id: str) -> None:
        """Show that a reply is being written (best effort: errors are ignored)."""
