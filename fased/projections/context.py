"""Content the model was sent, once per distinct sha256: workspace files as read, assembled
system prompts (literal text and slices of recorded files) and tool specs. Turns refer to
them by hash, so a 60 KB prompt is in the log once, not in every turn."""

from __future__ import annotations

import json
import sqlite3

VERSION = 1

TABLES = {
    "snapshots": {
        "columns": {"sha256": str, "kind": str, "agent": str, "name": str, "body": str,
                    "seq": int},
        "pk": "sha256",
    },
}


def _recorded(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    body = d.get("text") if d["kind"] == "file" else json.dumps(
        d.get("parts") if d["kind"] == "prompt" else d.get("tools"), ensure_ascii=False)
    con.execute("INSERT OR IGNORE INTO snapshots(sha256, kind, agent, name, body, seq)"
                " VALUES (?,?,?,?,?,?)",
                (d["sha256"], d["kind"], d.get("agent"), d.get("name"), body, e["seq"]))


HANDLERS = {"context.recorded": _recorded}
