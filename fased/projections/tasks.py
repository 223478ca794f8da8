"""Tasks: scheduled work owned by an agent and its session, and each task's run history.

Every time here comes from an event: next_run is decided when task events are written, and a
failed run's retry time is the failure's own timestamp plus the backoff.

A manual run (`fased task run`) is outside the schedule: it never completes a one-shot task,
a failure of it is not retried (whoever ran it saw it fail) and its success does not cancel
the retry of a failed scheduled run. `last_occurrence` is where missed runs are counted from:
the last scheduled occurrence fired (or skipped) or, after `task resume`, the moment of the
resume (what fell in the pause was not missed: it was not wanted).

A heartbeat task (kind `heartbeat`, fased.heartbeat) may skip an occurrence (`task.skipped`,
no turn), and a reply of its that only acknowledges (HEARTBEAT_OK) is marked `acknowledged`:
it is never delivered.
"""

from __future__ import annotations

import json
import sqlite3

from fased.timeparse import format_ts, parse_ts

VERSION = 3

TABLES = {
    "tasks": {
        "columns": {
            "id": str, "agent": str, "session": str, "name": str, "message": str,
            "schedule": str, "model": str, "deliver": str, "keep_after_run": int,
            "state": str, "created_at": str, "updated_at": str, "created_seq": int,
            "next_run": str, "last_run": str, "last_status": str, "last_occurrence": str,
            "failures": int, "runs": int, "retry_at": str, "kind": str, "skip_reason": str,
        },
        "pk": "id",
        "defaults": {"state": "active", "failures": 0, "runs": 0, "keep_after_run": 0},
        "indexes": [["agent"], ["session"]],
    },
    "task_runs": {
        "columns": {
            "turn": str, "task": str, "seq": int, "fired_at": str, "occurrence": str,
            "skipped": int, "manual": int, "retry": int, "status": str, "finished_at": str,
            "error": str, "delivery": str, "delivery_ok": int, "delivery_error": str,
            "delivery_attempts": int,
        },
        "pk": "turn",
        "defaults": {"skipped": 0, "manual": 0, "retry": 0, "delivery_attempts": 0},
        "indexes": [["task", "seq"]],
    },
}

_FIELDS = ("name", "message", "model", "deliver", "session")


def _created(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT INTO tasks(id, agent, session, name, message, schedule, model, deliver,"
        " keep_after_run, state, created_at, updated_at, created_seq, next_run, failures, runs,"
        " kind) VALUES (?,?,?,?,?,?,?,?,?,'active',?,?,?,?,0,0,?)",
        (d["task"], d["agent"], d["session"], d.get("name"), d["message"],
         json.dumps(d["schedule"]), d.get("model"), d.get("deliver"),
         int(d.get("keep_after_run", False)), e["ts"], e["ts"], e["seq"], d["next_run"],
         d.get("kind")),
    )


def _updated(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    for key in _FIELDS:
        if key in d:
            con.execute(f"UPDATE tasks SET {key} = ? WHERE id = ?", (d[key], d["task"]))
    if "schedule" in d:
        con.execute("UPDATE tasks SET schedule = ?, last_occurrence = NULL, retry_at = NULL"
                    " WHERE id = ?", (json.dumps(d["schedule"]), d["task"]))
    if "keep_after_run" in d:
        con.execute("UPDATE tasks SET keep_after_run = ? WHERE id = ?",
                    (int(d["keep_after_run"]), d["task"]))
    if "next_run" in d:
        con.execute("UPDATE tasks SET next_run = ? WHERE id = ?", (d["next_run"], d["task"]))
    con.execute("UPDATE tasks SET updated_at = ? WHERE id = ?", (e["ts"], d["task"]))


def _state(state: str):
    def handler(con: sqlite3.Connection, e: dict) -> None:
        d = e["data"]
        con.execute("UPDATE tasks SET state = ?, updated_at = ? WHERE id = ?",
                    (state, e["ts"], d["task"]))
        if state == "active":
            con.execute("UPDATE tasks SET next_run = ?, retry_at = NULL WHERE id = ?",
                        (d["next_run"], d["task"]))
            # an `at` task keeps its own: one not fired yet is still due
            con.execute("UPDATE tasks SET last_occurrence = ? WHERE id = ? AND"
                        " json_extract(schedule, '$.kind') != 'at'", (e["ts"], d["task"]))
        if state == "cancelled":
            con.execute("UPDATE tasks SET next_run = NULL, retry_at = NULL WHERE id = ?",
                        (d["task"],))
    return handler


def _fired(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute(
        "INSERT INTO task_runs(turn, task, seq, fired_at, occurrence, skipped, manual, retry,"
        " status, delivery_attempts) VALUES (?,?,?,?,?,?,?,?,'queued',0)",
        (d["turn"], d["task"], e["seq"], e["ts"], d.get("occurrence"), d.get("skipped", 0),
         int(d.get("manual", False)), int(d.get("retry", False))),
    )
    con.execute("UPDATE tasks SET runs = runs + 1, last_run = ?, last_status = 'queued',"
                " next_run = ?, updated_at = ? WHERE id = ?",
                (e["ts"], d["next_run"], e["ts"], d["task"]))
    if not d.get("manual"):
        con.execute("UPDATE tasks SET retry_at = NULL WHERE id = ?", (d["task"],))
        if d.get("occurrence"):
            con.execute("UPDATE tasks SET last_occurrence = ? WHERE id = ?",
                        (d["occurrence"], d["task"]))


def _skipped(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE tasks SET last_occurrence = ?, next_run = ?, retry_at = NULL,"
                " last_run = ?, last_status = 'skipped', skip_reason = ?, updated_at = ?"
                " WHERE id = ?",
                (d["occurrence"], d["next_run"], e["ts"], d["reason"], e["ts"], d["task"]))


def _task_of(con: sqlite3.Connection, turn: str) -> sqlite3.Row | None:
    """The task a turn ran for (with the run's `manual` flag)."""
    return con.execute("SELECT t.*, r.manual AS run_manual, r.occurrence AS run_occurrence"
                       " FROM task_runs r JOIN tasks t ON t.id = r.task WHERE r.turn = ?",
                       (turn,)).fetchone()


def _not_a_task_turn(e: dict) -> bool:
    """Turn end events say which task queued the turn (null for chat), so most of them need
    no lookup; events written before that field existed are looked up."""
    return "task" in e["data"] and e["data"]["task"] is None


def _turn_completed(con: sqlite3.Connection, e: dict) -> None:
    if _not_a_task_turn(e):
        return
    turn = e["data"]["turn"]
    if not con.execute("UPDATE task_runs SET status = 'completed', finished_at = ? WHERE turn = ?",
                       (e["ts"], turn)).rowcount:
        return
    task = _task_of(con, turn)
    if task["kind"] == "heartbeat":
        from fased.heartbeat import is_ack

        if is_ack(e["data"].get("reply")):
            con.execute("UPDATE task_runs SET delivery = 'acknowledged' WHERE turn = ?", (turn,))
    if task["run_manual"]:
        con.execute("UPDATE tasks SET last_status = 'ok' WHERE id = ?", (task["id"],))
        return
    # a one-shot task is done after its scheduled run (or that run's retry): a run for its
    # occurrence (older logs hold retries of manual runs, which had none)
    done = (json.loads(task["schedule"])["kind"] == "at" and not task["keep_after_run"]
            and task["run_occurrence"] is not None)
    con.execute("UPDATE tasks SET last_status = 'ok', failures = 0, retry_at = NULL,"
                " state = CASE WHEN ? AND state = 'active' THEN 'done' ELSE state END"
                " WHERE id = ?", (int(done), task["id"]))


def _turn_failed(con: sqlite3.Connection, e: dict) -> None:
    from fased.schedule import backoff_delay

    if _not_a_task_turn(e):
        return
    task = _task_of(con, e["data"]["turn"])
    if task is None:
        return
    d = e["data"]
    con.execute("UPDATE task_runs SET status = 'failed', finished_at = ?, error = ? WHERE turn = ?",
                (e["ts"], d.get("message"), d["turn"]))
    if task["run_manual"]:
        con.execute("UPDATE tasks SET last_status = 'failed' WHERE id = ?", (task["id"],))
        return
    failures = task["failures"] + 1
    retry_at = format_ts(parse_ts(e["ts"]) + backoff_delay(failures))
    if task["next_run"] is not None and task["next_run"] <= retry_at:
        retry_at = None  # the next scheduled run comes first; it is the retry
    con.execute("UPDATE tasks SET last_status = 'failed', failures = ?, retry_at = ? WHERE id = ?",
                (failures, retry_at, task["id"]))


def _turn_aborted(con: sqlite3.Connection, e: dict) -> None:
    if _not_a_task_turn(e):
        return
    if _task_of(con, e["data"]["turn"]) is not None:
        con.execute("UPDATE task_runs SET status = 'aborted', finished_at = ? WHERE turn = ?",
                    (e["ts"], e["data"]["turn"]))


def _delivered(con: sqlite3.Connection, e: dict) -> None:
    d = e["data"]
    con.execute("UPDATE task_runs SET delivery = ?, delivery_ok = ?, delivery_error = ?,"
                " delivery_attempts = delivery_attempts + ? WHERE turn = ?",
                (d["target"], int(d["ok"]), d.get("error"), d.get("attempts", 1), d["turn"]))


HANDLERS = {
    "task.created": _created,
    "task.updated": _updated,
    "task.paused": _state("paused"),
    "task.resumed": _state("active"),
    "task.cancelled": _state("cancelled"),
    "task.fired": _fired,
    "task.skipped": _skipped,
    "task.delivered": _delivered,
    "turn.completed": _turn_completed,
    "turn.failed": _turn_failed,
    "turn.aborted": _turn_aborted,
}
