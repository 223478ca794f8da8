"""Hooks: which hooks exist since which seq, and each hook's cursor and deliveries.

The hook list follows the config: after every event that can change fased.json's hooks (a
config change, an agent deleted or restored) the hooks the config and agents hold now are
compared with the table. A hook that appears is added at that event's seq, and its cursor
starts there: a new hook gets the events after it was added, not the history. A hook whose
`on` or `run` changed under the same `id` keeps its cursor.

The cursor is the seq of the last event the hook is done with (delivered, or failed after its
last attempt); the runner delivers the next matching event after it. A delivery in flight
(hook.started without its hook.finished) and a retry that waits are on the hook's row.
Replays (`fased hooks replay`) are counted, and move nothing.
"""

from __future__ import annotations

import sqlite3

from fased.hooks.spec import specs_in_state

VERSION = 1

TABLES = {
    "hooks": {
        "columns": {
            "name": str, "spec": str, "active": int, "added_seq": int, "added_at": str,
            "removed_seq": int, "cursor": int, "delivered": int, "failed": int, "replays": int,
            "last_seq": int, "last_at": str, "last_error": str, "inflight_seq": int,
            "inflight_type": str, "inflight_attempt": int, "inflight_runner": str,
            "inflight_lease": str, "retry_seq": int, "retry_type": str, "retry_attempt": int,
            "retry_at": str,
        },
        "pk": "name",
        "defaults": {"active": 1, "delivered": 0, "failed": 0, "replays": 0},
    },
    "hook_failures": {
        "columns": {"hook": str, "event_seq": int, "event_type": str, "attempts": int,
                    "error": str, "failed_at": str, "seq": int},
        "pk": ("hook", "event_seq"),
    },
}


def _sync(con: sqlite3.Connection, e: dict) -> None:
    """Add the hooks the config now holds that the table does not, retire those it lost."""
    specs = {s.name: s for s in specs_in_state(con)}
    rows = {r[0]: (r[1], r[2]) for r in con.execute("SELECT name, spec, active FROM hooks")}
    for name, spec in specs.items():
        text = spec.dumps()
        if name not in rows:
            con.execute("INSERT INTO hooks(name, spec, active, added_seq, added_at, cursor)"
                        " VALUES (?,?,1,?,?,?)", (name, text, e["seq"], e["ts"], e["seq"]))
        elif not rows[name][1]:  # back after a removal: from now on again, nothing pending
            con.execute(
                "UPDATE hooks SET spec = ?, active = 1, added_seq = ?, added_at = ?,"
                " removed_seq = NULL, cursor = ?, inflight_seq = NULL, retry_seq = NULL"
                " WHERE name = ?", (text, e["seq"], e["ts"], e["seq"], name))
        elif rows[name][0] != text:
            con.execute("UPDATE hooks SET spec = ? WHERE name = ?", (text, name))
    for name, (_, active) in rows.items():
        if active and name not in specs:
            con.execute("UPDATE hooks SET active = 0, removed_seq = ? WHERE name = ?",
                        (e["seq"], name))


def _started(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    if d.get("replay"):
        return
    con.execute(
        "UPDATE hooks SET inflight_seq = ?, inflight_type = ?, inflight_attempt = ?,"
        " inflight_runner = ?, inflight_lease = ?, retry_seq = NULL WHERE name = ?",
        (d["event_seq"], d["event_type"], d["attempt"], d["runner"], d["lease_until"],
         d["hook"]))


def _finished(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    if d.get("replay"):
        con.execute("UPDATE hooks SET replays = replays + 1 WHERE name = ?", (d["hook"],))
        return
    con.execute("UPDATE hooks SET inflight_seq = NULL, inflight_runner = NULL,"
                " inflight_lease = NULL WHERE name = ?", (d["hook"],))
    if d["outcome"] == "delivered":
        con.execute("UPDATE hooks SET cursor = MAX(cursor, ?), delivered = delivered + 1,"
                    " last_seq = ?, last_at = ? WHERE name = ?",
                    (d["event_seq"], d["event_seq"], e["ts"], d["hook"]))
    elif d["outcome"] == "retry":
        con.execute("UPDATE hooks SET retry_seq = ?, retry_type = ?, retry_attempt = ?,"
                    " retry_at = ?, last_error = ? WHERE name = ?",
                    (d["event_seq"], d["event_type"], d["attempt"], d["retry_at"],
                     d.get("error"), d["hook"]))
    else:
        con.execute("UPDATE hooks SET cursor = MAX(cursor, ?), failed = failed + 1,"
                    " last_error = ? WHERE name = ?",
                    (d["event_seq"], d.get("error"), d["hook"]))
        con.execute(
            "INSERT OR REPLACE INTO hook_failures(hook, event_seq, event_type, attempts, error,"
            " failed_at, seq) VALUES (?,?,?,?,?,?,?)",
            (d["hook"], d["event_seq"], d["event_type"], d["attempt"], d.get("error"),
             e["ts"], e["seq"]))


HANDLERS = {
    "config.set": _sync,
    "config.unset": _sync,
    "config.edited": _sync,
    "agent.deleted": _sync,
    "agent.restored": _sync,
    "hook.started": _started,
    "hook.finished": _finished,
}
