"""Agents, the selected agent, and the bootstrap files fased created in their workspaces."""

from __future__ import annotations

import json
import sqlite3

VERSION = 1

TABLES = {
    "agents": {
        "columns": {
            "id": str, "position": int, "name": str, "emoji": str, "workspace": str,
            "primary_model": str, "fallbacks": str, "task_model": str,
            "current_session": str, "config": str, "created_at": str, "updated_at": str,
            "created_seq": int,
            "deleted": int, "deleted_at": str,
        },
        "pk": "id",
        "defaults": {"deleted": 0, "fallbacks": "[]", "config": "{}"},
    },
    "kv": {"columns": {"key": str, "value": str}, "pk": "key"},
    "workspace_files": {
        "columns": {"workspace": str, "file": str, "agent": str, "bytes": int,
                    "created_at": str, "created_seq": int, "removed_seq": int},
        "pk": ("workspace", "file"),
    },
}


def _created(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    position = con.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM agents").fetchone()[0]
    con.execute(
        "INSERT INTO agents(id, position, name, emoji, workspace, primary_model, fallbacks,"
        " config, created_at, updated_at, created_seq, deleted)"
        " VALUES (?,?,?,?,?,?,'[]','{}',?,?,?,0)",
        (d["agent"], position, d["name"], d.get("emoji"), d.get("workspace"), d.get("model"),
         e["ts"], e["ts"], e["seq"]),
    )
    if con.execute("SELECT 1 FROM kv WHERE key = 'selected_agent'").fetchone() is None:
        set_kv(con, "selected_agent", d["agent"])


def _updated(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    for key in ("name", "emoji", "workspace"):
        if key in d:
            con.execute(f"UPDATE agents SET {key} = ?, updated_at = ? WHERE id = ?",
                        (d[key], e["ts"], d["agent"]))


def _selected(con: sqlite3.Connection, e: dict) -> None:
    set_kv(con, "selected_agent", e["data"]["agent"])


def _deleted(con: sqlite3.Connection, e: dict) -> None:
    agent = e["data"]["agent"]
    con.execute("UPDATE agents SET deleted = 1, deleted_at = ?, updated_at = ? WHERE id = ?",
                (e["ts"], e["ts"], agent))
    if get_kv(con, "selected_agent") == agent:
        row = con.execute("SELECT id FROM agents WHERE deleted = 0 ORDER BY position").fetchone()
        set_kv(con, "selected_agent", row[0] if row else None)


def _restored(con: sqlite3.Connection, e: dict) -> None:
    agent = e["data"]["agent"]
    con.execute("UPDATE agents SET deleted = 0, deleted_at = NULL, updated_at = ? WHERE id = ?",
                (e["ts"], agent))
    if get_kv(con, "selected_agent") is None:
        set_kv(con, "selected_agent", agent)


def _file_created(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT OR REPLACE INTO workspace_files(workspace, file, agent, bytes, created_at,"
        " created_seq) VALUES (?,?,?,?,?,?)",
        (d["workspace"], d["file"], d["agent"], d.get("bytes"), e["ts"], e["seq"]),
    )


def _file_removed(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("INSERT OR IGNORE INTO workspace_files(workspace, file, agent) VALUES (?,?,?)",
                (d["workspace"], d["file"], d["agent"]))
    con.execute("UPDATE workspace_files SET removed_seq = ? WHERE workspace = ? AND file = ?",
                (e["seq"], d["workspace"], d["file"]))


def set_kv(con: sqlite3.Connection, key: str, value: str | None) -> None:
    con.execute("INSERT INTO kv(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


def get_kv(con: sqlite3.Connection, key: str) -> str | None:
    row = con.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def set_agent_models(con: sqlite3.Connection, agent: str, ts: str, *, primary=..., fallbacks=...,
                     task=...) -> None:
    """Shared by the models events and config edits of agents.list[].model."""
    if primary is not ...:
        con.execute("UPDATE agents SET primary_model = ?, updated_at = ? WHERE id = ?",
                    (primary, ts, agent))
    if fallbacks is not ...:
        con.execute("UPDATE agents SET fallbacks = ?, updated_at = ? WHERE id = ?",
                    (json.dumps(list(fallbacks or [])), ts, agent))
    if task is not ...:
        con.execute("UPDATE agents SET task_model = ?, updated_at = ? WHERE id = ?",
                    (task, ts, agent))


HANDLERS = {
    "agent.created": _created,
    "agent.updated": _updated,
    "agent.selected": _selected,
    "agent.deleted": _deleted,
    "agent.restored": _restored,
    "workspace.file_created": _file_created,
    "workspace.file_removed": _file_removed,
}
