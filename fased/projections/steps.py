"""The tool loop of each turn: its model calls with tool calls (`steps`) and every tool call
with its one terminal state (`tool_calls`).

A call row exists from the step that asked for it (state `pending`), becomes `running` at
`tool.started` and ends at `tool.finished` (ok, error, denied, skipped, interrupted). The
context builder renders every call of a step with its result, so a request can never hold a
call without one. Built in the same process as the turns (fased.projections.GROUPS).
"""

from __future__ import annotations

import json
import sqlite3

VERSION = 1

TABLES = {
    "steps": {
        "columns": {"turn": str, "step": int, "seq": int, "ts": str, "session": str,
                    "model": str, "text": str, "request": str, "input_tokens": int,
                    "output_tokens": int, "finish_reason": str, "latency_ms": float},
        "pk": ("turn", "step"),
        "indexes": [["session", "turn", "step"], ["seq"]],
    },
    "tool_calls": {
        "columns": {"id": str, "turn": str, "session": str, "agent": str, "step": int,
                    "idx": int, "name": str, "arguments": str, "wire_id": str,
                    "source": str, "state": str, "result": str, "data": str,
                    "step_seq": int, "started_seq": int, "finished_seq": int,
                    "finished_at": str, "duration_ms": float},
        "pk": "id",
        "indexes": [["turn", "step", "idx"], ["session", "state"], ["finished_seq"],
                    ["step_seq"]],
    },
}


def _step(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    usage = d.get("usage") or {}
    con.execute(
        "INSERT OR REPLACE INTO steps(turn, step, seq, ts, session, model, text, request,"
        " input_tokens, output_tokens, finish_reason, latency_ms)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (d["turn"], d["step"], e["seq"], e["ts"], d["session"], d["model"], d["text"],
         json.dumps(d["request"], sort_keys=True), usage.get("input_tokens"),
         usage.get("output_tokens"), d.get("finish_reason"), d.get("latency_ms")))
    con.executemany(
        "INSERT OR REPLACE INTO tool_calls(id, turn, session, agent, step, idx, name, arguments,"
        " wire_id, source, state, step_seq) VALUES (?,?,?,?,?,?,?,?,?,?,'pending',?)",
        [(c["id"], d["turn"], d["session"], d["agent"], d["step"], i, c["name"],
          c["arguments"], c.get("wire_id"), c.get("source", "api"), e["seq"])
         for i, c in enumerate(d["calls"])])


def _started(con: sqlite3.Connection, e: dict) -> None:
    con.execute("UPDATE tool_calls SET state = 'running', started_seq = ? WHERE id = ?",
                (e["seq"], e["data"]["call"]))


def _finished(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE tool_calls SET state = ?, result = ?, data = ?, finished_seq = ?,"
                " finished_at = ?, duration_ms = ? WHERE id = ?",
                (d["status"], d["result"], json.dumps(d["data"]) if d.get("data") else None,
                 e["seq"], e["ts"], d.get("duration_ms"), d["call"]))


HANDLERS = {"turn.step": _step, "tool.started": _started, "tool.finished": _finished}
