"""Turns (queued -> running -> completed | failed | aborted), session messages, model
cooldowns, and the session transcripts (a file projection).

A turn whose runner stops renewing its lease stays `running` in the rows; runners treat an
expired lease as claimable, which keeps this projection free of any clock.
"""

from __future__ import annotations

import sqlite3
from json.encoder import encode_basestring as _encode_string
from pathlib import Path

VERSION = 1

TABLES = {
    "turns": {
        "columns": {
            "id": str, "agent": str, "session": str, "state": str, "message": str,
            "model_override": str, "task": str, "source": str, "queued_seq": int,
            "queued_at": str, "started_at": str, "runner": str, "lease_until": str,
            "claims": int, "finished_at": str, "model_used": str, "reply": str,
            "input_tokens": int, "output_tokens": int, "finish_reason": str,
            "latency_ms": float, "ttft_ms": float, "attempts": int, "error_class": str,
            "error": str, "merged_into": str, "context_dropped": int,
        },
        "pk": "id",
        "defaults": {"claims": 0, "attempts": 0},
        "indexes": [["state", "queued_seq"], ["session", "queued_seq"]],
    },
    "messages": {
        "columns": {
            "id": str, "session": str, "agent": str, "turn": str, "role": str,
            "content": str, "ts": str, "model": str, "input_tokens": int,
            "output_tokens": int, "seq": int, "status": str,
        },
        # no primary key: messages are only read by session and seq, and a rowid table
        # takes an insert into one B-tree instead of two
        "indexes": [["session", "seq"]],
    },
    "cooldowns": {"columns": {"model": str, "until": str, "reason": str}, "pk": "model"},
}

# Session counters follow the messages in SQLite itself: one statement per message instead of
# two Python round trips (rebuilding a million events is mostly this).
TRIGGERS = [
    """CREATE TRIGGER IF NOT EXISTS messages_count AFTER INSERT ON messages BEGIN
        UPDATE sessions SET messages = messages + 1, updated_at = NEW.ts,
            input_tokens = input_tokens + COALESCE(NEW.input_tokens, 0),
            output_tokens = output_tokens + COALESCE(NEW.output_tokens, 0)
        WHERE id = NEW.session;
    END""",
]


def _add_message(con, e: dict, role: str, content: str, suffix: str, status: str,
                 model=None, usage=None) -> None:
    d = e["data"]
    usage = usage or {}
    con.execute(
        "INSERT INTO messages(id, session, agent, turn, role, content, ts, model, input_tokens,"
        " output_tokens, seq, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (f"{d['turn']}:{suffix}", d["session"], d["agent"], d["turn"], role, content, e["ts"],
         model, usage.get("input_tokens"), usage.get("output_tokens"), e["seq"], status),
    )


def _queued(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT INTO turns(id, agent, session, state, message, model_override, task, source,"
        " queued_seq, queued_at, claims, attempts) VALUES (?,?,?,'queued',?,?,?,?,?,?,0,0)",
        (d["turn"], d["agent"], d["session"], d["message"], d.get("model"), d.get("task"),
         d.get("source"), e["seq"], e["ts"]),
    )
    _add_message(con, e, "user", d["message"], "u", "sent")


def _started(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE turns SET state = 'running', started_at = ?, runner = ?, lease_until = ?,"
                " claims = ? WHERE id = ?",
                (e["ts"], d["runner"], d["lease_until"], d["claim"], d["turn"]))
    for merged in d.get("merged") or ():
        con.execute("UPDATE turns SET state = 'merged', merged_into = ? WHERE id = ?",
                    (d["turn"], merged))


def _lease_extended(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE turns SET lease_until = ? WHERE id = ? AND runner = ?",
                (d["lease_until"], d["turn"], d["runner"]))


def _attempt_failed(con: sqlite3.Connection, e: dict) -> None:
    con.execute("UPDATE turns SET attempts = attempts + 1 WHERE id = ?", (e["data"]["turn"],))


def _completed(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    usage = d.get("usage") or {}
    con.execute(
        "UPDATE turns SET state = 'completed', finished_at = ?, model_used = ?, reply = ?,"
        " input_tokens = ?, output_tokens = ?, finish_reason = ?, latency_ms = ?, ttft_ms = ?,"
        " attempts = ?, context_dropped = ?, lease_until = NULL WHERE id = ?",
        (e["ts"], d["model"], d["reply"], usage.get("input_tokens"), usage.get("output_tokens"),
         d.get("finish_reason"), d.get("latency_ms"), d.get("ttft_ms"), d.get("attempts", 1),
         d.get("context_dropped", 0), d["turn"]),
    )
    _add_message(con, e, "assistant", d["reply"], "a", "complete", d["model"], usage)


def _failed(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE turns SET state = 'failed', finished_at = ?, error_class = ?, error = ?,"
                " attempts = ?, lease_until = NULL WHERE id = ?",
                (e["ts"], d["error_class"], d["message"], d["attempts"], d["turn"]))


def _aborted(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE turns SET state = 'aborted', finished_at = ?, reply = ?, model_used = ?,"
                " lease_until = NULL WHERE id = ?",
                (e["ts"], d["partial_reply"], d.get("model"), d["turn"]))
    if d["partial_reply"]:
        _add_message(con, e, "assistant", d["partial_reply"], "a", "aborted", d.get("model"))


def _abandoned(con: sqlite3.Connection, e: dict) -> None:
    con.execute("UPDATE turns SET state = 'queued', runner = NULL, lease_until = NULL"
                " WHERE id = ?", (e["data"]["turn"],))
    con.execute("UPDATE turns SET state = 'queued', merged_into = NULL WHERE merged_into = ?"
                " AND state = 'merged'", (e["data"]["turn"],))


def _cooldown(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("INSERT INTO cooldowns(model, until, reason) VALUES (?,?,?) ON CONFLICT(model)"
                " DO UPDATE SET until = excluded.until, reason = excluded.reason",
                (d["model"], d["until"], d["reason"]))


def _model_set(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE sessions SET model_override = ?, updated_at = ? WHERE id = ?",
                (d["model"], e["ts"], d["session"]))


def _queue_mode_set(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE sessions SET queue_mode = ?, updated_at = ? WHERE id = ?",
                (d["mode"], e["ts"], d["session"]))


HANDLERS = {
    "turn.queued": _queued,
    "turn.started": _started,
    "turn.lease_extended": _lease_extended,
    "turn.attempt_failed": _attempt_failed,
    "turn.completed": _completed,
    "turn.failed": _failed,
    "turn.aborted": _aborted,
    "turn.abandoned": _abandoned,
    "model.cooldown": _cooldown,
    "session.model_set": _model_set,
    "session.queue_mode_set": _queue_mode_set,
}

# -- transcripts ------------------------------------------------------------------------------

_TRANSCRIPT_TYPES = ("turn.queued", "turn.completed", "turn.aborted", "session.created",
                     "session.renamed")


def write_transcript(con: sqlite3.Connection, home: Path, session: str) -> None:
    """Render one session's transcript: a header line, then one line per message. A user
    message's parent is the message before it; a reply's parent is the (last) question it
    answers, which for merged turns is the last one merged in.

    Lines are put together from encoded strings rather than json.dumps of a dict: a rebuild
    renders every message ever sent, and this is several times faster for the same bytes.
    """
    from fased.home import write_private

    cur = con.cursor()
    cur.row_factory = None
    row = cur.execute("SELECT agent, name, created_at FROM sessions WHERE id = ?",
                      (session,)).fetchone()
    if row is None:
        return
    agent, name, created_at = row
    asked_last = dict(cur.execute(
        "SELECT merged_into, id FROM turns WHERE session = ? AND merged_into IS NOT NULL"
        " ORDER BY queued_seq", (session,)).fetchall())
    s = _json_text
    out = [f'{{"type": "session", "version": 1, "id": {s(session)}, "agent": {s(agent)}, '
           f'"name": {s(name)}, "created_at": {s(created_at)}}}\n']
    previous = None
    for msg_id, role, content, ts, turn, model, tokens_in, tokens_out, status in cur.execute(
            "SELECT id, role, content, ts, turn, model, input_tokens, output_tokens, status"
            " FROM messages WHERE session = ? ORDER BY seq", (session,)):
        if role == "assistant":
            parent = f"{asked_last.get(turn, turn)}:u"
            tail = (f', "model": {s(model)}, "usage": {{"input_tokens": {_json_int(tokens_in)}'
                    f', "output_tokens": {_json_int(tokens_out)}}}'
                    + (', "aborted": true' if status == "aborted" else ""))
        else:
            parent = previous
            tail = ""
        out.append(f'{{"type": "message", "id": {s(msg_id)}, "parent": {s(parent)}, '
                   f'"role": {s(role)}, "content": {s(content)}, "ts": {s(ts)}, '
                   f'"turn": {s(turn)}{tail}}}\n')
        previous = msg_id
    path = home / "agents" / agent / "sessions" / f"{session}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, "".join(out).encode())


def _json_text(value: str | None) -> str:
    return "null" if value is None else _encode_string(value)


def _json_int(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def sync_files(con: sqlite3.Connection, home: Path, events: list[dict]) -> None:
    sessions = {e["data"]["session"] for e in events if e["type"] in _TRANSCRIPT_TYPES}
    for session in sorted(sessions):
        write_transcript(con, home, session)


def rebuild_files(con: sqlite3.Connection, home: Path) -> None:
    for (session,) in con.execute("SELECT id FROM sessions ORDER BY created_seq").fetchall():
        write_transcript(con, home, session)
