"""Sessions: the working contexts under an agent, and each agent's current session."""

from __future__ import annotations

import sqlite3

VERSION = 3  # 3: a turn's tool steps count their tokens too

TABLES = {
    "sessions": {
        "columns": {
            "id": str, "agent": str, "name": str, "created_at": str, "updated_at": str,
            "created_seq": int, "deleted": int, "deleted_at": str, "messages": int,
            "input_tokens": int, "output_tokens": int, "model_override": str,
            "queue_mode": str,
        },
        "pk": "id",
        "defaults": {"deleted": 0, "messages": 0, "input_tokens": 0, "output_tokens": 0},
        "indexes": [["agent"]],
    },
}


def _created(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT INTO sessions(id, agent, name, created_at, updated_at, created_seq, deleted,"
        " messages, input_tokens, output_tokens) VALUES (?,?,?,?,?,?,0,0,0,0)",
        (d["session"], d["agent"], d.get("name"), e["ts"], e["ts"], e["seq"]),
    )


def _switched(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE agents SET current_session = ? WHERE id = ?", (d["session"], d["agent"]))


def _renamed(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE sessions SET name = ?, updated_at = ? WHERE id = ?",
                (d["name"], e["ts"], d["session"]))


def _deleted(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE sessions SET deleted = 1, deleted_at = ?, updated_at = ? WHERE id = ?",
                (e["ts"], e["ts"], d["session"]))
    con.execute("UPDATE agents SET current_session = NULL WHERE id = ? AND current_session = ?",
                (d["agent"], d["session"]))


def _restored(con: sqlite3.Connection, e: dict) -> None:
    con.execute("UPDATE sessions SET deleted = 0, deleted_at = NULL, updated_at = ? WHERE id = ?",
                (e["ts"], e["data"]["session"]))


def _model_set(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE sessions SET model_override = ?, updated_at = ? WHERE id = ?",
                (d["model"], e["ts"], d["session"]))


def _queue_mode_set(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE sessions SET queue_mode = ?, updated_at = ? WHERE id = ?",
                (d["mode"], e["ts"], d["session"]))


# The counters follow the session's messages (see the messages view in turns.py): a turn
# queued is a user message, a turn completed (or aborted with a partial reply) a reply.
_COUNT = ("UPDATE sessions SET messages = messages + 1, updated_at = ?,"
          " input_tokens = input_tokens + ?, output_tokens = output_tokens + ? WHERE id = ?")


def _counted_question(con: sqlite3.Connection, e: dict) -> None:
    con.execute(_COUNT, (e["ts"], 0, 0, e["data"]["session"]))


def _tokens(d: dict) -> tuple[int, int]:
    usage = d.get("usage") or {}
    return usage.get("input_tokens") or 0, usage.get("output_tokens") or 0


def _counted_reply(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(_COUNT, (e["ts"], *_tokens(d), d["session"]))


def _counted_step(con: sqlite3.Connection, e: dict) -> None:
    """A tool step's model call: its tokens count (as `fased usage` counts them), it is no
    message of its own."""
    d = e["data"]
    con.execute("UPDATE sessions SET input_tokens = input_tokens + ?, output_tokens = "
                "output_tokens + ? WHERE id = ?", (*_tokens(d), d["session"]))


def _counted_partial_reply(con: sqlite3.Connection, e: dict) -> None:
    if e["data"]["partial_reply"]:
        con.execute(_COUNT, (e["ts"], 0, 0, e["data"]["session"]))


HANDLERS = {
    "session.created": _created,
    "session.switched": _switched,
    "session.renamed": _renamed,
    "session.deleted": _deleted,
    "session.restored": _restored,
    "session.model_set": _model_set,
    "session.queue_mode_set": _queue_mode_set,
    "turn.queued": _counted_question,
    "turn.completed": _counted_reply,
    "turn.step": _counted_step,
    "turn.aborted": _counted_partial_reply,
}
