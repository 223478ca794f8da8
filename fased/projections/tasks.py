"""Tasks: scheduled work owned by an agent and its session."""

from __future__ import annotations

VERSION = 1

TABLES = {
    "tasks": {
        "columns": {
            "id": str, "agent": str, "session": str, "name": str, "message": str,
            "schedule": str, "model": str, "deliver": str, "keep_after_run": int,
            "state": str, "created_at": str, "updated_at": str, "created_seq": int,
            "next_run": str, "last_run": str, "last_status": str, "last_occurrence": str,
            "failures": int, "runs": int, "retry_at": str,
        },
        "pk": "id",
        "defaults": {"state": "active", "failures": 0, "runs": 0, "keep_after_run": 0},
        "indexes": [["agent"], ["session"]],
    },
}

HANDLERS: dict = {}
