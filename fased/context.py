"""What a turn sends to the model: the session's messages, trimmed to the context window.

Tokens are estimated (4 characters a token, plus a little per message); when the history does
not fit, the oldest messages are dropped and the caller is told how many, never silently.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

DEFAULT_CONTEXT_WINDOW = 32768
REPLY_RESERVE = 1024


def estimate_tokens(text: str) -> int:
    return len(text) // 4 + 4


@dataclass
class Context:
    messages: list[dict]
    dropped: int
    window: int


def build_context(con: sqlite3.Connection, turn: sqlite3.Row, merged: list[str],
                  window: int | None = None, system: str | None = None) -> Context:
    """The messages for `turn` (and the turns merged into it): earlier complete messages of
    the session, then this turn's user message(s)."""
    own = [turn["id"], *merged]
    marks = ",".join("?" * len(own))
    first_seq = turn["queued_seq"]
    # earlier turns in queue order (merged turns count under the turn that answered them),
    # each question before its answer, whatever order the events were written in
    history = [
        {"role": r["role"], "content": r["content"]}
        for r in con.execute(
            "SELECT m.role, m.content FROM messages m JOIN turns t ON t.id = m.turn"
            " LEFT JOIN turns p ON p.id = t.merged_into"
            " WHERE m.session = ? AND m.status != 'aborted'"
            " AND (t.state = 'completed' OR (t.state = 'merged' AND p.state = 'completed'))"
            f" AND COALESCE(p.queued_seq, t.queued_seq) < ? AND m.turn NOT IN ({marks})"
            " ORDER BY COALESCE(p.queued_seq, t.queued_seq),"
            " CASE m.role WHEN 'user' THEN 0 ELSE 1 END, m.seq",
            (turn["session"], first_seq, *own))
    ]
    current = [
        {"role": "user", "content": r["message"]}
        for r in con.execute(f"SELECT message FROM turns WHERE id IN ({marks}) ORDER BY queued_seq",
                             own)
    ]
    window = window or DEFAULT_CONTEXT_WINDOW
    budget = window - REPLY_RESERVE
    prefix = [{"role": "system", "content": system}] if system else []
    fixed = sum(estimate_tokens(m["content"]) for m in prefix + current)
    kept: list[dict] = []
    used = fixed
    for message in reversed(history):
        cost = estimate_tokens(message["content"])
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    # a reply without the question it answers only confuses the model
    while kept and kept[0]["role"] == "assistant":
        kept.pop(0)
    return Context(prefix + kept + current, len(history) - len(kept), window)
