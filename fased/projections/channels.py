"""Channels: chat accounts (a Telegram bot), every update received and what became of it, every
part of every message sent (intent, then outcome), and the chat each channel session talks to.
Built with the second group (fased.projections.GROUPS): nothing here reads the turns' tables."""

from __future__ import annotations

import sqlite3

VERSION = 1

TABLES = {
    "channel_accounts": {
        "columns": {"key": str, "channel": str, "account": str, "api_base": str,
                    "token_kind": str, "fingerprint": str, "env": str, "bot_id": str,
                    "bot_username": str, "bot_name": str, "added_seq": int, "added_at": str,
                    "removed": int},
        "pk": "key",
    },
    "channel_inbound": {
        "columns": {"channel": str, "account": str, "update_id": int, "kind": str,
                    "peer_kind": str, "peer_id": str, "sender_id": str, "sender_name": str,
                    "text": str, "mentioned": int, "message_id": str, "received_seq": int,
                    "received_at": str, "action": str, "agent": str, "session": str,
                    "turn": str, "reply": str, "reason": str, "admitted_seq": int},
        "pk": ("channel", "account", "update_id"),
        "indexes": [["turn"], ["action"], ["channel", "account", "received_seq"]],
    },
    "channel_outbound": {
        "columns": {"out": str, "part": int, "parts": int, "channel": str, "account": str,
                    "peer_id": str, "turn": str, "state": str, "message_id": str,
                    "plain": int, "error": str, "retry": int, "attempts": int,
                    "sending_seq": int, "sent_at": str},
        "pk": ("out", "part"),
        "indexes": [["state"]],
    },
    "session_origins": {
        "columns": {"session": str, "agent": str, "channel": str, "account": str,
                    "peer_kind": str, "peer_id": str, "seq": int},
        "pk": "session",
        "indexes": [["channel", "account", "peer_id"]],
    },
}


def _added(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT OR REPLACE INTO channel_accounts(key, channel, account, api_base, token_kind,"
        " fingerprint, env, bot_id, bot_username, bot_name, added_seq, added_at, removed)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0)",
        (f"{d['channel']}/{d['account']}", d["channel"], d["account"], d.get("api_base"),
         d["token_kind"], d.get("fingerprint"), d.get("env"), d["bot_id"],
         d.get("bot_username"), d.get("bot_name"), e["seq"], e["ts"]))


def _removed(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE channel_accounts SET removed = 1 WHERE key = ?",
                (f"{d['channel']}/{d['account']}",))


def _received(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT OR IGNORE INTO channel_inbound(channel, account, update_id, kind, peer_kind,"
        " peer_id, sender_id, sender_name, text, mentioned, message_id, received_seq,"
        " received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (d["channel"], d["account"], d["update_id"], d["kind"], d.get("peer_kind"),
         d.get("peer_id"), d.get("sender_id"), d.get("sender_name"), d.get("text"),
         int(bool(d.get("mentioned"))), d.get("message_id"), e["seq"], e["ts"]))


def _admitted(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "UPDATE channel_inbound SET action = ?, agent = ?, session = ?, turn = ?, reply = ?,"
        " reason = ?, admitted_seq = ? WHERE channel = ? AND account = ? AND update_id = ?",
        (d["action"], d.get("agent"), d.get("session"), d.get("turn"), d.get("reply"),
         d.get("reason"), e["seq"], d["channel"], d["account"], d["update_id"]))


def _sending(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT INTO channel_outbound(out, part, parts, channel, account, peer_id, turn, state,"
        " attempts, sending_seq) VALUES (?,?,?,?,?,?,?,'sending',1,?) ON CONFLICT(out, part)"
        " DO UPDATE SET state = 'sending', attempts = attempts + 1, sending_seq = excluded."
        "sending_seq, error = NULL",
        (d["out"], d["part"], d["parts"], d["channel"], d["account"], d["peer_id"],
         d.get("turn"), e["seq"]))


def _sent(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "UPDATE channel_outbound SET state = ?, message_id = ?, plain = ?, error = ?, retry = ?,"
        " sent_at = ? WHERE out = ? AND part = ?",
        (d["outcome"], d.get("message_id"), int(bool(d.get("plain"))), d.get("error"),
         int(bool(d.get("retry"))), e["ts"], d["out"], d["part"]))


def _origin(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT OR REPLACE INTO session_origins(session, agent, channel, account, peer_kind,"
        " peer_id, seq) VALUES (?,?,?,?,?,?,?)",
        (d["session"], d["agent"], d["channel"], d["account"], d["peer_kind"], d["peer_id"],
         e["seq"]))


HANDLERS = {
    "channel.added": _added,
    "channel.removed": _removed,
    "channel.received": _received,
    "channel.admitted": _admitted,
    "channel.sending": _sending,
    "channel.sent": _sent,
    "session.origin_set": _origin,
}
