"""Approvals: tool calls waiting for the user (a parked turn), what was decided, and the exec
entries granted from them. A request parks its turn; a decision puts the turn back in the
queue, where the next runner resumes it. Built with the turns (fased.projections.GROUPS):
requests and decisions move a turn's state."""

from __future__ import annotations

import json
import sqlite3

VERSION = 1

TABLES = {
    "approvals": {
        "columns": {"id": str, "turn": str, "call": str, "agent": str, "session": str,
                    "tool": str, "command": str, "cwd": str, "reason": str,
                    "requested_seq": int, "requested_at": str, "expires_at": str,
                    "state": str, "decided_seq": int, "decided_at": str, "decided_by": str,
                    "note": str, "grant": str},
        "pk": "id",
        "indexes": [["state", "expires_at"], ["call"]],
    },
    "exec_grants": {
        "columns": {"id": str, "agent": str, "entry": str, "command": str, "cwd": str,
                    "expires_at": str, "approval": str, "created_seq": int, "created_at": str,
                    "created_by": str, "removed_seq": int},
        "pk": "id",
        "indexes": [["agent", "removed_seq"]],
    },
}


def _requested(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT INTO approvals(id, turn, call, agent, session, tool, command, cwd, reason,"
        " requested_seq, requested_at, expires_at, state) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,"
        "'pending')",
        (d["id"], d["turn"], d["call"], d["agent"], d["session"], d["tool"], d["command"],
         d.get("cwd"), d["reason"], e["seq"], e["ts"], d["expires_at"]))
    con.execute("UPDATE turns SET state = 'parked', lease_until = NULL WHERE id = ?",
                (d["turn"],))


def _decided(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE approvals SET state = ?, decided_seq = ?, decided_at = ?,"
                " decided_by = ?, note = ?, \"grant\" = ? WHERE id = ?",
                (d["decision"], e["seq"], e["ts"], e["meta"].get("actor"), d.get("reason"),
                 d.get("grant"), d["id"]))
    con.execute("UPDATE turns SET state = 'queued', runner = NULL WHERE id = ? AND"
                " state = 'parked'", (d["turn"],))


def _granted(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT INTO exec_grants(id, agent, entry, command, cwd, expires_at, approval,"
        " created_seq, created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (d["id"], d["agent"], json.dumps(d["entries"]), d.get("command"), d.get("cwd"),
         d.get("expires_at"),
         d.get("approval"), e["seq"], e["ts"], e["meta"].get("actor")))


def _grant_removed(con: sqlite3.Connection, e: dict) -> None:
    con.execute("UPDATE exec_grants SET removed_seq = ? WHERE id = ?",
                (e["seq"], e["data"]["id"]))


HANDLERS = {"approval.requested": _requested, "approval.decided": _decided,
            "exec.granted": _granted, "exec.grant_removed": _grant_removed}
