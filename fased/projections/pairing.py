"""Pairing requests from channel senders and the refusals recorded for channel messages.

A request is pending until approved, denied or past its recorded `expires` (a projection has
no clock: readers compare `expires_at` with their own now). The allowlist itself is config
(`channels.<channel>.allowFrom`), changed by the config.set that `pairing approve` appends,
so an approval survives a rebuild like any other config change."""

from __future__ import annotations

import sqlite3

VERSION = 1

TABLES = {
    "pairings": {
        "columns": {"code": str, "channel": str, "account": str, "sender": str, "name": str,
                    "peer": str, "requested_seq": int, "requested_at": str, "expires_at": str,
                    "state": str, "decided_seq": int, "decided_at": str, "decided_by": str},
        "pk": "code",
        "indexes": [["channel", "account", "state"], ["channel", "sender"]],
    },
    "channel_refusals": {
        "columns": {"key": str, "channel": str, "account": str, "peer_kind": str, "peer": str,
                    "sender": str, "name": str, "reason": str, "first_at": str, "last_at": str,
                    "last_seq": int, "quiet_until": str, "records": int},
        "pk": "key",
    },
}


def refusal_key(channel: str, account: str, peer_kind: str, peer: str, sender: str,
                reason: str) -> str:
    """What one refusal record stands for: a DM sender, a group (whoever wrote in it), or,
    for messages whose ids are unusable, all of them (random junk must not flood the log)."""
    who = {"group": f"group:{peer}", "dm": f"dm:{sender}"}.get(peer_kind, "invalid")
    return f"{channel}/{account}/{who}/{reason}"


def _requested(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT OR REPLACE INTO pairings(code, channel, account, sender, name, peer,"
        " requested_seq, requested_at, expires_at, state) VALUES (?,?,?,?,?,?,?,?,?,'pending')",
        (d["code"], d["channel"], d["account"], d["sender"], d.get("name"), d["peer"], e["seq"],
         e["ts"], d["expires"]))


def _decided(state: str):
    def handler(con: sqlite3.Connection, e: dict) -> None:
        con.execute("UPDATE pairings SET state = ?, decided_seq = ?, decided_at = ?,"
                    " decided_by = ? WHERE code = ?",
                    (state, e["seq"], e["ts"], e["meta"].get("actor"), e["data"]["code"]))
    return handler


def _refused(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    key = refusal_key(d["channel"], d["account"], d["peer_kind"], d["peer"], d["sender"],
                      d["reason"])
    con.execute(
        "INSERT INTO channel_refusals(key, channel, account, peer_kind, peer, sender, name,"
        " reason, first_at, last_at, last_seq, quiet_until, records)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1) ON CONFLICT(key) DO UPDATE SET"
        " sender = excluded.sender, name = excluded.name, last_at = excluded.last_at,"
        " last_seq = excluded.last_seq, quiet_until = excluded.quiet_until,"
        " records = records + 1",
        (key, d["channel"], d["account"], d["peer_kind"], d["peer"], d["sender"], d.get("name"),
         d["reason"], e["ts"], e["ts"], e["seq"], d["quiet_until"]))


HANDLERS = {"pairing.requested": _requested, "pairing.approved": _decided("approved"),
            "pairing.denied": _decided("denied"), "channel.refused": _refused}
