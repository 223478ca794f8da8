"""Sending to a chat exactly once: every part of every message has an intent and an outcome.

A message (`out`: reply:<turn>, admit:<account>/<update_id>, approval:<id>, task:<turn>) is
cut into parts the channel takes (fased.chunker), and each part is sent like this, holding
`channel-send.lock` from the first event to the last:

1. append `channel.sending` (the intent),
2. call the channel,
3. append `channel.sent` with the channel's message id (or the failure).

So a part with a `channel.sent` is never sent again, and the reply of a turn counts as
delivered only once all its parts are recorded sent. A part found `sending` under the lock
belongs to a sender that died between 1 and 3: the message may or may not have arrived.
Telegram's sendMessage has no idempotency key, and nothing on the Bot API lists what a bot
sent, so there is no way to ask. We record it `unknown`, say so (stderr, `channel status`),
and never send it again: a reply missing from a chat is visible and can be asked for again,
while a reply sent twice (or a command's output, or an approval prompt) cannot be taken back.
The same holds for a send whose answer never came (a read timeout). A send the channel
refused, or that could not connect, delivered nothing: it is retried by later polls, at most
MAX_ATTEMPTS times.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fased.channels.base import ChannelError
from fased.errors import FasedError
from fased.store import Draft, Store

SEND_LOCK = "channel-send.lock"
MAX_ATTEMPTS = 5
EMPTY = "(empty reply)"
UNKNOWN = ("fased stopped while sending it; it may have arrived, so it is not sent again")


@contextmanager
def send_lock(home: Path) -> Iterator[None]:
    import fcntl

    fd = os.open(home / SEND_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def units(text: str) -> int:
    """A text's length as chat apps count it: UTF-16 code units (an emoji is two)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def split(text: str, limit: int) -> list[str]:
    """The parts of a message, each at most `limit` UTF-16 units (paragraphs kept whole when
    they fit, code fences balanced in each part)."""
    text = text if text.strip() else EMPTY
    return _fit(text, limit, limit)


def _fit(text: str, limit: int, chars: int) -> list[str]:
    """`text` in parts of at most `chars` characters, each cut again with proportionally
    fewer characters while it is longer than `limit` units (emoji count two)."""
    from fased.chunker import chunk_text

    if units(text) <= limit:
        return [text]
    parts: list[str] = []
    for part in chunk_text(text, min_chars=max(1, chars * 3 // 4), max_chars=chars):
        if not part.strip():
            continue
        if units(part) <= limit or len(part) <= 1:
            parts.append(part)
        else:
            parts.extend(_fit(part, limit, max(1, min(len(part) - 1,
                                                      len(part) * limit // units(part)))))
    return parts


def _stream(channel: str, account: str) -> str:
    return f"channel:{channel}/{account}"


def recover(store: Store, note: Callable[[str], None]) -> int:
    """Record every part left `sending` by a dead sender as `unknown` (see the module
    docstring); returns how many."""
    with send_lock(store.home):
        rows = store.db(check_files=False).execute(
            "SELECT * FROM channel_outbound WHERE state = 'sending' ORDER BY sending_seq"
        ).fetchall()
        for row in rows:
            _mark_unknown(store, row, note)
    return len(rows)


def _mark_unknown(store: Store, row: sqlite3.Row, note: Callable[[str], None]) -> None:
    store.append_internal([Draft("channel.sent", _stream(row["channel"], row["account"]), {
        "channel": row["channel"], "account": row["account"], "out": row["out"],
        "part": row["part"], "outcome": "unknown", "error": UNKNOWN})])
    note(f"fased: part {row['part'] + 1} of {row['parts']} of {row['out']} to "
         f"{row['channel']} chat {row['peer_id']}: {UNKNOWN}")


def send_message(store: Store, client, *, out: str, peer_id: str, text: str,
                 turn: str | None = None, note: Callable[[str], None] = lambda s: None) -> str:
    """Send `text` to `peer_id` as message `out`, each part at most once. Returns the
    message's state: sent, unknown (a part may not have arrived), failed (the channel
    refused; `retry` parts are tried again later) or retry."""
    parts = split(text, client.max_text)
    stream = _stream(client.name, client.account)
    base = {"channel": client.name, "account": client.account, "out": out}
    with send_lock(store.home):
        done = {r["part"]: r for r in store.db(check_files=False).execute(
            "SELECT * FROM channel_outbound WHERE out = ?", (out,))}
        for i, part in enumerate(parts):
            row = done.get(i)
            if row is not None and row["state"] == "sending":
                _mark_unknown(store, row, note)
                continue
            if row is not None and not _again(row):
                continue
            store.append_internal([Draft("channel.sending", stream, {
                **base, "part": i, "parts": len(parts), "peer_id": peer_id, "turn": turn,
                "chars": len(part)})])
            try:
                message_id, plain = client.send(peer_id, part)
            except ChannelError as exc:
                outcome = "unknown" if exc.unknown else "failed"
                store.append_internal([Draft("channel.sent", stream, {
                    **base, "part": i, "outcome": outcome, "error": exc.message[:1000],
                    "retry": bool(exc.retry and not exc.unknown)})])
                note(f"fased: sending {out} to {client.name} chat {peer_id} failed: "
                     f"{exc.message}")
                break  # later parts wait, so that a chat never reads them out of order
            store.append_internal([Draft("channel.sent", stream, {
                **base, "part": i, "outcome": "sent", "message_id": message_id,
                "plain": plain})])
        return out_state(store.db(check_files=False), out)


def _again(row: sqlite3.Row) -> bool:
    """A part whose send failed without delivering anything, with tries left."""
    return row["state"] == "failed" and bool(row["retry"]) and row["attempts"] < MAX_ATTEMPTS


def out_state(con: sqlite3.Connection, out: str) -> str | None:
    """sent (every part), unknown, failed, retry (tries left) or pending; None: never tried."""
    rows = con.execute("SELECT * FROM channel_outbound WHERE out = ?", (out,)).fetchall()
    if not rows:
        return None
    states = {r["state"] for r in rows}
    if any(_again(r) for r in rows):
        return "retry"
    if "failed" in states:
        return "failed"
    if "unknown" in states:
        return "unknown"
    if "sending" in states or len(rows) < max(r["parts"] for r in rows):
        return "pending"
    return "sent"


# -- what is waiting to go out ----------------------------------------------------------------

def _unfinished(column: str) -> str:
    """SQL: the message `column` names has parts still to send (or was never tried)."""
    return (f"(NOT EXISTS (SELECT 1 FROM channel_outbound o WHERE o.out = {column}) OR EXISTS "
            f"(SELECT 1 FROM channel_outbound o WHERE o.out = {column} AND o.state = 'failed'"
            f" AND o.retry = 1 AND o.attempts < {MAX_ATTEMPTS}) OR (SELECT COUNT(*) FROM "
            f"channel_outbound o WHERE o.out = {column}) < (SELECT MAX(parts) FROM "
            f"channel_outbound o WHERE o.out = {column}))")


REPLY_OUT = "'reply:' || t.id"
ADMIT_OUT = "'admit:' || i.account || '/' || i.update_id"
APPROVAL_OUT = "'approval:' || a.id"


def pending_replies(con: sqlite3.Connection, channel: str, account: str) -> list[sqlite3.Row]:
    """Finished channel turns whose reply has not gone out (completely) yet."""
    return con.execute(
        "SELECT i.update_id, i.peer_id, t.id AS turn, t.state, t.reply, t.error,"
        " t.error_class FROM channel_inbound i JOIN turns t ON t.id = i.turn WHERE"
        " i.channel = ? AND i.account = ? AND i.action = 'turn' AND t.state IN"
        f" ('completed', 'failed') AND {_unfinished(REPLY_OUT)}"
        " ORDER BY i.received_seq", (channel, account)).fetchall()


def pending_admission_replies(con: sqlite3.Connection, channel: str,
                              account: str) -> list[sqlite3.Row]:
    """Messages answered by routing itself (a pairing code) whose answer has not gone out."""
    return con.execute(
        "SELECT i.* FROM channel_inbound i WHERE i.channel = ? AND i.account = ? AND"
        " i.action = 'reply' AND i.reply IS NOT NULL AND"
        f" {_unfinished(ADMIT_OUT)} ORDER BY i.received_seq",
        (channel, account)).fetchall()


def pending_approvals(con: sqlite3.Connection, channel: str, account: str) -> list[sqlite3.Row]:
    """Parked calls of this account's sessions not announced in their chat yet."""
    return con.execute(
        "SELECT a.*, o.peer_id FROM approvals a JOIN session_origins o ON o.session ="
        " a.session WHERE o.channel = ? AND o.account = ? AND a.state = 'pending' AND"
        f" {_unfinished(APPROVAL_OUT)} ORDER BY"
        " a.requested_seq", (channel, account)).fetchall()


def reply_text(row: sqlite3.Row) -> str:
    if row["state"] == "completed":
        return row["reply"] or ""
    from fased.safetext import one_line

    return (f"Sorry, I could not answer that: {one_line(row['error'] or 'the turn failed', 200)}"
            f"\n(`fased replay --turn {row['turn']}` on the host shows why.)")


def approval_text(row: sqlite3.Row) -> str:
    from fased.safetext import one_line

    return (f"Approval needed ({row['id']}): {row['tool']} wants to run\n"
            f"`{one_line(row['command'], 300)}`\n{one_line(row['reason'] or '', 200)}\n"
            f"Approve on the host: fased approvals approve {row['id']}\n"
            f"Deny: fased approvals deny {row['id']}").replace("\n\n", "\n")


def send_pending(store: Store, client, note: Callable[[str], None]) -> int:
    """Send what waits for this account: routing's answers, replies, approval prompts.
    Returns the number of messages that went out completely."""
    con = store.db(check_files=False)
    sent = 0
    for row in pending_admission_replies(con, client.name, client.account):
        sent += send_message(store, client, out=f"admit:{row['account']}/{row['update_id']}",
                             peer_id=row["peer_id"], text=row["reply"], note=note) == "sent"
    for row in pending_replies(con, client.name, client.account):
        sent += send_message(store, client, out=f"reply:{row['turn']}", peer_id=row["peer_id"],
                             text=reply_text(row), turn=row["turn"], note=note) == "sent"
    for row in pending_approvals(con, client.name, client.account):
        sent += send_message(store, client, out=f"approval:{row['id']}",
                             peer_id=row["peer_id"], text=approval_text(row), turn=row["turn"],
                             note=note) == "sent"
    return sent


def deliver_task(store: Store, row) -> tuple[bool, str | None, int]:
    """A task's reply to the chat its session came from (task target `channel`):
    (ok, error, attempts), as fased.tasks.deliver answers."""
    from fased.channels.accounts import client, get_account

    con = store.db(check_files=False)
    origin = con.execute("SELECT * FROM session_origins WHERE session = ?",
                         (row["session"],)).fetchone()
    if origin is None:
        return False, f"session {row['session']} has no channel to deliver to", 1
    try:
        account = get_account(con, origin["channel"], origin["account"])
        state = send_message(store, client(store, account), out=f"task:{row['turn']}",
                             peer_id=origin["peer_id"], text=row["reply"] or "",
                             turn=row["turn"])
    except FasedError as exc:  # the channel failed, or the account was removed
        return False, exc.message, 1
    if state == "sent":
        return True, None, 1
    error = con.execute("SELECT error FROM channel_outbound WHERE out = ? AND error IS NOT NULL"
                        " ORDER BY part DESC LIMIT 1", (f"task:{row['turn']}",)).fetchone()
    return False, (error[0] if error else f"not sent ({state})"), 1
