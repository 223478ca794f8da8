"""Pairing: a stranger who writes to the bot gets a one-time code; the owner decides.

A code is 8 characters from an alphabet without look-alikes (no 0/O, 1/I/L), drawn with
`secrets`, valid for an hour; at most MAX_PENDING codes wait per channel account, so a crowd
of strangers cannot bury the owner's list. Writing again while a code waits sends the same code.
`approve` appends pairing.approved and the config.set that adds the sender to allowFrom (so
fased.json shows who may talk, and a hand edit can take it back); `deny` keeps the sender
refused (recorded, never answered) until allowFrom lists them.
"""

from __future__ import annotations

import secrets
import sqlite3
from datetime import datetime, timedelta

from fased.channels.base import Inbound, shown_id
from fased.channels.routing import DEFAULT_ACCOUNT, config_draft, normalize_id
from fased.errors import NotFoundError, UsageError
from fased.store import Draft
from fased.timeparse import format_ts

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
CODE_TTL = timedelta(hours=1)
MAX_PENDING = 3


def new_code(con: sqlite3.Connection) -> str:
    """A code no request ever had (so approving one can never meet an older request)."""
    while True:
        code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        if con.execute("SELECT 1 FROM pairings WHERE code = ?", (code,)).fetchone() is None:
            return code


def request(con: sqlite3.Connection, inbound: Inbound, now: datetime) -> tuple[str, Draft]:
    """A new code for the inbound's sender and the pairing.requested that records it."""
    code = new_code(con)
    data = {"channel": inbound.channel, "account": inbound.account, "code": code,
            "sender": inbound.sender_id, "peer": inbound.peer_id,
            "expires": format_ts(now + CODE_TTL)}
    if inbound.sender_name:
        data["name"] = shown_id(inbound.sender_name, 100)
    return code, Draft("pairing.requested", f"pairing:{inbound.channel}", data)


def message(channel: str, sender: str, code: str) -> str:
    """What the stranger is sent: their id and code, and what the owner runs."""
    return (f"This bot answers only people its owner has approved.\n"
            f"Your {channel} user id: {sender}\nPairing code: {code} (valid for one hour)\n"
            f"Ask the owner to run: fased pairing approve {channel} {code}")


def pending_for(con: sqlite3.Connection, channel: str, account: str, sender: str,
                now: str) -> str | None:
    row = con.execute(
        "SELECT code FROM pairings WHERE channel = ? AND account = ? AND sender = ? AND"
        " state = 'pending' AND expires_at > ? ORDER BY requested_seq DESC LIMIT 1",
        (channel, account, sender, now)).fetchone()
    return row[0] if row else None


def pending_count(con: sqlite3.Connection, channel: str, account: str, now: str) -> int:
    return con.execute(
        "SELECT COUNT(*) FROM pairings WHERE channel = ? AND account = ? AND state = 'pending'"
        " AND expires_at > ?", (channel, account, now)).fetchone()[0]


def is_denied(con: sqlite3.Connection, channel: str, sender: str) -> bool:
    return con.execute("SELECT 1 FROM pairings WHERE channel = ? AND sender = ? AND"
                       " state = 'denied' LIMIT 1", (channel, sender)).fetchone() is not None


def listing(con: sqlite3.Connection, now: datetime, channel: str | None = None,
            all_: bool = False) -> list[dict]:
    """Pairing requests as `fased pairing list` shows them (waiting ones by default)."""
    stamp = format_ts(now)
    query, params = "SELECT * FROM pairings WHERE 1 = 1", []
    if channel is not None:
        query += " AND channel = ?"
        params.append(channel)
    if not all_:
        query += " AND state = 'pending' AND expires_at > ?"
        params.append(stamp)
    out = []
    for r in con.execute(query + " ORDER BY requested_seq", params):
        state = "expired" if r["state"] == "pending" and r["expires_at"] <= stamp else r["state"]
        out.append({"code": r["code"], "channel": r["channel"], "account": r["account"],
                    "sender": r["sender"], "name": r["name"], "state": state,
                    "requested_at": r["requested_at"], "expires_at": r["expires_at"],
                    "decided_at": r["decided_at"], "decided_by": r["decided_by"]})
    return out


def decide(store, channel: str, code: str, decision: str) -> dict:
    """Approve or deny a waiting code; returns the request as listing() shows it."""
    wanted = code.strip().upper()
    if len(wanted) != CODE_LENGTH or any(c not in ALPHABET for c in wanted):
        raise UsageError(f"invalid pairing code {shown_id(code)!r}",
                         hint=f"a code is {CODE_LENGTH} letters and digits, as the sender got it")

    def drafts(con: sqlite3.Connection) -> list[Draft]:
        row = con.execute("SELECT * FROM pairings WHERE code = ? AND channel = ?",
                          (wanted, channel)).fetchone()
        if row is None:
            raise NotFoundError(f"no pairing code {wanted} for {channel}",
                                hint="`fased pairing list` shows the waiting ones")
        if row["state"] != "pending":
            raise NotFoundError(f"pairing code {wanted} was already {row['state']}")
        if row["expires_at"] <= format_ts(store.clock()):
            raise NotFoundError(f"pairing code {wanted} expired at "
                                f"{row['expires_at'][:19].replace('T', ' ')} UTC",
                                hint="the sender gets a new code by writing again")
        data = {"channel": channel, "account": row["account"], "code": wanted,
                "sender": row["sender"]}
        out = [Draft(f"pairing.{decision}", f"pairing:{channel}", data)]
        if decision == "approved":
            out += allow_drafts(con, channel, row["account"], row["sender"])
        return out

    store.transact(drafts)
    return next(r for r in listing(store.db(), store.clock(), channel, all_=True)
                if r["code"] == wanted)


def allow_drafts(con: sqlite3.Connection, channel: str, account: str, sender: str) -> list:
    """The config.set that adds `sender` to the account's allowFrom (the channel's own list
    for the default account); none when the sender is already allowed there."""
    from fased.channels.routing import access, channel_settings
    from fased.config import config_doc

    doc = config_doc(con)
    if sender in access(doc, channel, account).allow_from:
        return []
    top = channel_settings(doc, channel)
    if account == DEFAULT_ACCOUNT:
        parts, current = ["channels", channel, "allowFrom"], top.get("allowFrom", [])
    else:
        own = top.get("accounts", {}).get(account, {})
        parts = ["channels", channel, "accounts", account, "allowFrom"]
        current = own.get("allowFrom", [])
    kept = [v for v in current if normalize_id(v) != sender]
    return [config_draft(con, parts, [*kept, sender])]
