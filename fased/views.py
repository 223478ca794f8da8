"""Read models for the CLI: agents, sessions and their counts, as plain dicts."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from fased.agents import selected_agent, workspace_for

ACTIVE_TASK_STATES = ("active", "paused")


def active_task_ids(con: sqlite3.Connection, *, agent: str | None = None,
                    session: str | None = None) -> list[str]:
    """Tasks that still run (or are paused) for an agent or a session."""
    column, value = ("agent", agent) if agent is not None else ("session", session)
    return [r[0] for r in con.execute(
        f"SELECT id FROM tasks WHERE {column} = ? AND state IN ('active', 'paused') ORDER BY id",
        (value,))]


def _counts(con: sqlite3.Connection, sql: str) -> dict[str, int]:
    return dict(con.execute(sql).fetchall())


def agent_rows(con: sqlite3.Connection, home: Path, include_deleted: bool = False) -> list[dict]:
    sessions = _counts(con, "SELECT agent, COUNT(*) FROM sessions WHERE deleted = 0 GROUP BY agent")
    tasks = _counts(con, "SELECT agent, COUNT(*) FROM tasks WHERE state IN ('active', 'paused') "
                         "GROUP BY agent")
    sel = selected_agent(con)
    where = "" if include_deleted else "WHERE deleted = 0"
    return [
        _agent_dict(con, home, row, sel, sessions.get(row["id"], 0), tasks.get(row["id"], 0))
        for row in con.execute(f"SELECT * FROM agents {where} ORDER BY position")
    ]


def _agent_dict(con, home, row, sel, sessions: int, tasks: int) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "emoji": row["emoji"],
        "selected": row["id"] == sel,
        "deleted": bool(row["deleted"]),
        "workspace": str(workspace_for(con, home, row)),
        "model": {"primary": row["primary_model"],
                  "fallbacks": json.loads(row["fallbacks"] or "[]"),
                  "task": row["task_model"]},
        "current_session": row["current_session"],
        "sessions": sessions,
        "tasks": tasks,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def agent_detail(con: sqlite3.Connection, home: Path, row: sqlite3.Row) -> dict:
    sessions = con.execute("SELECT COUNT(*) FROM sessions WHERE agent = ? AND deleted = 0",
                           (row["id"],)).fetchone()[0]
    task_rows = [dict(r) for r in con.execute(
        "SELECT id, session, schedule, state FROM tasks WHERE agent = ? AND state IN "
        "('active', 'paused') ORDER BY id", (row["id"],))]
    detail = _agent_dict(con, home, row, selected_agent(con), sessions, len(task_rows))
    extra = json.loads(row["config"] or "{}")
    detail["skills"] = _skills_policy(extra.get("skills"))
    detail["tools"] = _policy(extra.get("tools"))
    detail["task_list"] = [{**t, "schedule": _schedule_text(t["schedule"])} for t in task_rows]
    return detail


def _policy(policy: dict | None) -> str:
    if not policy:
        return "all allowed (no policy)"
    parts = []
    if policy.get("allow"):
        parts.append("allow " + ", ".join(policy["allow"]))
    if policy.get("deny"):
        parts.append("deny " + ", ".join(policy["deny"]))
    return "; ".join(parts) or "all allowed (no policy)"


def _skills_policy(skills: list | None) -> str:
    """An agent's own skills list (agents.list[].skills) in words."""
    if skills is None:
        return "all allowed (no policy)"
    return "only " + ", ".join(skills) if skills else "none ([])"


def _schedule_text(schedule: str | None) -> str:
    if not schedule:
        return "-"
    try:
        from fased.schedule import Schedule

        return Schedule.from_dict(json.loads(schedule)).describe()
    except (ImportError, ValueError, KeyError, TypeError):
        return schedule


def session_rows(con: sqlite3.Connection, agent: str | None, include_deleted: bool) -> list[dict]:
    tasks = _counts(con, "SELECT session, COUNT(*) FROM tasks WHERE state IN ('active', 'paused') "
                         "GROUP BY session")
    current = dict(con.execute("SELECT id, current_session FROM agents").fetchall())
    clauses, params = [], []
    if agent is not None:
        clauses.append("agent = ?")
        params.append(agent)
    if not include_deleted:
        clauses.append("deleted = 0")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return [
        {
            "id": r["id"], "agent": r["agent"], "name": r["name"],
            "current": current.get(r["agent"]) == r["id"],
            "created_at": r["created_at"], "updated_at": r["updated_at"],
            "messages": r["messages"],
            "tokens": {"input": r["input_tokens"], "output": r["output_tokens"]},
            "tasks": tasks.get(r["id"], 0),
            "model_override": r["model_override"],
            "queue_mode": r["queue_mode"],
            "deleted": bool(r["deleted"]),
        }
        for r in con.execute(f"SELECT * FROM sessions {where} ORDER BY created_seq", params)
    ]


def transcript_path(home: Path, agent: str, session: str) -> Path:
    """Where a session's transcript projection lives."""
    return home / "agents" / agent / "sessions" / f"{session}.jsonl"


def session_detail(con: sqlite3.Connection, home: Path, row: sqlite3.Row, last: int) -> dict:
    base = next(r for r in session_rows(con, row["agent"], include_deleted=True)
                if r["id"] == row["id"])
    tasks = [dict(r) for r in con.execute(
        "SELECT id, schedule, state FROM tasks WHERE session = ? AND state IN "
        "('active', 'paused') ORDER BY id", (row["id"],))]
    messages = [dict(r) for r in con.execute(
        "SELECT id, role, content, ts, model, status FROM messages WHERE session = ? "
        "ORDER BY seq DESC LIMIT ?", (row["id"], last))]
    messages.reverse()
    return {
        **base,
        "transcript": str(transcript_path(home, row["agent"], row["id"])),
        "task_list": [{**t, "schedule": _schedule_text(t["schedule"])} for t in tasks],
        "last_messages": messages,
    }
