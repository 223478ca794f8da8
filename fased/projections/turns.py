"""Turns (queued -> running -> completed | failed | aborted), session messages, model
cooldowns, and the session transcripts (a file projection).

A session's messages are not stored twice: `messages` is a view over `turns` (a turn's user
message, and its reply once there is one). A rebuild of a million events writes each turn's text
once instead of twice, and the turns module touches no other module's tables, so a rebuild can
build it in a process of its own (see fased.projections.GROUPS).

A turn whose runner stops renewing its lease stays `running` in the rows; runners treat an
expired lease as claimable, which keeps this projection free of any clock.
"""

from __future__ import annotations

import sqlite3
from json.encoder import encode_basestring as _encode_string
from pathlib import Path

VERSION = 2

TABLES = {
    "turns": {
        "columns": {
            "id": str, "agent": str, "session": str, "state": str, "message": str,
            "model_override": str, "task": str, "source": str, "queued_seq": int,
            "queued_at": str, "started_at": str, "runner": str, "lease_until": str,
            "claims": int, "finished_at": str, "model_used": str, "reply": str,
            "input_tokens": int, "output_tokens": int, "finish_reason": str,
            "latency_ms": float, "ttft_ms": float, "attempts": int, "error_class": str,
            "error": str, "merged_into": str, "context_dropped": int, "reply_seq": int,
        },
        "pk": "id",
        "defaults": {"claims": 0, "attempts": 0},
        "indexes": [["state", "queued_seq"], ["session", "queued_seq"]],
    },
    "cooldowns": {"columns": {"model": str, "until": str, "reason": str}, "pk": "model"},
}

# One row per message, in the shape the messages were once stored in: the user message of
# every turn (`<turn>:u`), and the reply of every turn that has one (`<turn>:a`), including the
# partial reply of an aborted turn. `seq` is the seq of the event that produced the message.
VIEWS = [
    """CREATE VIEW IF NOT EXISTS messages AS
    SELECT id || ':u' AS id, session, agent, id AS turn, 'user' AS role, message AS content,
        queued_at AS ts, NULL AS model, NULL AS input_tokens, NULL AS output_tokens,
        queued_seq AS seq, 'sent' AS status
    FROM turns
    UNION ALL
    SELECT id || ':a', session, agent, id, 'assistant', reply, finished_at, model_used,
        input_tokens, output_tokens, reply_seq,
        CASE state WHEN 'aborted' THEN 'aborted' ELSE 'complete' END
    FROM turns WHERE reply_seq IS NOT NULL""",
]


def _queued(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT INTO turns(id, agent, session, state, message, model_override, task, source,"
        " queued_seq, queued_at, claims, attempts) VALUES (?,?,?,'queued',?,?,?,?,?,?,0,0)",
        (d["turn"], d["agent"], d["session"], d["message"], d.get("model"), d.get("task"),
         d.get("source"), e["seq"], e["ts"]),
    )


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
        " attempts = ?, context_dropped = ?, lease_until = NULL, reply_seq = ? WHERE id = ?",
        (e["ts"], d["model"], d["reply"], usage.get("input_tokens"), usage.get("output_tokens"),
         d.get("finish_reason"), d.get("latency_ms"), d.get("ttft_ms"), d.get("attempts", 1),
         d.get("context_dropped", 0), e["seq"], d["turn"]),
    )


def _failed(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE turns SET state = 'failed', finished_at = ?, error_class = ?, error = ?,"
                " attempts = ?, lease_until = NULL WHERE id = ?",
                (e["ts"], d["error_class"], d["message"], d["attempts"], d["turn"]))


def _aborted(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE turns SET state = 'aborted', finished_at = ?, reply = ?, model_used = ?,"
                " lease_until = NULL, reply_seq = ? WHERE id = ?",
                (e["ts"], d["partial_reply"], d.get("model"),
                 e["seq"] if d["partial_reply"] else None, d["turn"]))


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
