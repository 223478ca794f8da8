"""Turns (queued, running, completed, failed) and the messages of each session."""

from __future__ import annotations

VERSION = 1

TABLES = {
    "messages": {
        "columns": {
            "id": str, "session": str, "agent": str, "turn": str, "role": str,
            "content": str, "parent": str, "ts": str, "model": str, "input_tokens": int,
            "output_tokens": int, "seq": int, "status": str,
        },
        "pk": "id",
        "indexes": [["session", "seq"]],
    },
}

HANDLERS: dict = {}
