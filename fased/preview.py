"""Previews that change nothing: what `fased run --once` would do now (`run --dry-run`) and
when each task fires (`task next`).

They ask the run loop's own decisions rather than a copy of them: fased.tasks.due_task_ids
and fire_due choose and fire tasks, fased.approvals.expired_drafts expires approvals,
Runner._pick claims turns, and the projections' own handlers apply what those return. For
`run --dry-run` that happens on scratch copies of the rows the loop changes (TEMP tables,
which shadow state.db's tables on this connection only), behind an authorizer that refuses
any write to state.db itself; nothing is appended to the log.

What no preview can know is assumed: every turn it answers completes (a real one may park
for an approval or fail), and the clock stands still (a task that falls due while a real run
works fires in that run too).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache

from fased.store import Draft, Store
from fased.timeparse import format_ts

# the rows a run --once changes, copied with the filter that keeps every row it reads
_SCRATCH = {
    "turns": "state IN ('queued', 'running', 'parked')",
    "tasks": "1",
    "task_runs": "turn IN (SELECT id FROM temp.turns)",
    "approvals": "state = 'pending'",
}
_WRITES = (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)


@cache
def _handlers() -> dict:
    """The projection handlers of the modules whose tables the scratch copy holds."""
    from fased.projections import Projector

    return Projector(("turns", "tasks", "approvals")).handlers


def _read_only(action: int, arg1, arg2, db: str | None, trigger) -> int:
    if action in _WRITES and db != "temp":
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


class _Scratch:
    """Applies drafts to the scratch tables as if they had been appended."""

    def __init__(self, con: sqlite3.Connection, now: datetime):
        self.con, self.now = con, now
        self.seq = con.execute("SELECT COALESCE(MAX(queued_seq), 0) FROM main.turns").fetchone()[0]

    def apply(self, drafts: list[Draft]) -> None:
        for draft in drafts:
            self.seq += 1
            event = {"seq": self.seq, "id": f"preview-{self.seq}", "type": draft.type, "v": 1,
                     "ts": format_ts(self.now), "stream": draft.stream, "data": draft.data,
                     "meta": {"actor": "preview"}}
            for handler in _handlers().get(draft.type, ()):
                handler(self.con, event)


@contextmanager
def _scratch(con: sqlite3.Connection, now: datetime) -> Iterator[_Scratch]:
    for table, where in _SCRATCH.items():
        con.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM main.{table} WHERE {where}")
    con.set_authorizer(_read_only)
    try:
        yield _Scratch(con, now)
    finally:
        con.set_authorizer(None)
        for table in _SCRATCH:
            con.execute(f"DROP TABLE IF EXISTS temp.{table}")


def _fired(data: dict) -> dict:
    return {"task": data["task"], "agent": data["agent"], "session": data["session"],
            "occurrence": data["occurrence"], "skipped": data["skipped"],
            "retry": bool(data.get("retry")), "next_run": data["next_run"]}


def plan_run(store: Store, now: datetime, *, agent: str | None = None,
             max_turns: int | None = None) -> dict:
    """What `fased run --once [--agent A] [--max-turns N]` would do at `now`, in order:
    the replies it delivers, the tasks it fires (with the missed runs each folds) or skips
    (a heartbeat with nothing to do), the approvals it expires and the turns it answers.
    Changes nothing."""
    from fased.approvals import expired_drafts
    from fased.heartbeat import agent_ids, sync_drafts
    from fased.runner import Runner
    from fased.tasks import due_task_ids, fire_due, pending_deliveries, previous_turn_pending

    con = store.db()
    deliveries = [{"task": r["task"], "turn": r["turn"], "target": r["deliver"]}
                  for r in pending_deliveries(con)]
    existing = {r[0] for r in con.execute("SELECT id FROM turns WHERE state IN"
                                          " ('queued', 'running', 'parked')")}
    runner = Runner(store, agent=agent, clock=lambda: now)
    fires: list[dict] = []
    skips: list[dict] = []  # heartbeats with nothing to do (fased.heartbeat)
    expired: list[dict] = []
    turns: list[dict] = []
    held: dict[str, str] = {}  # due tasks that wait for their previous turn -> that turn
    with _scratch(con, now) as scratch:
        for agent_id in agent_ids(con, agent):  # heartbeat tasks, as the tick makes them
            scratch.apply(sync_drafts(con, now, agent_id))
        while True:  # the loop of `fased run` (commands/run.py), one pass per turn
            for task_id in due_task_ids(con, now, agent):
                drafts = fire_due(con, task_id, now, store.home)
                scratch.apply(drafts)
                fires += [_fired(d.data) for d in drafts if d.type == "task.fired"]
                skips += [{"task": d.data["task"], "agent": d.data["agent"],
                           "occurrence": d.data["occurrence"], "reason": d.data["reason"]}
                          for d in drafts if d.type == "task.skipped"]
                pending = None if drafts else previous_turn_pending(con, task_id)
                if pending:
                    held[task_id] = pending
                else:
                    held.pop(task_id, None)
            drafts = expired_drafts(con, format_ts(now))
            scratch.apply(drafts)
            expired += [{"approval": d.data["id"], "turn": d.data["turn"],
                         "agent": d.data["agent"], "session": d.data["session"]}
                        for d in drafts]
            runner.waiting = False
            claim = runner._pick(con, None, None)
            if claim is None:
                break
            row = con.execute("SELECT message, task FROM turns WHERE id = ?",
                              (claim.turn,)).fetchone()
            turns.append({"turn": claim.turn if claim.turn in existing else None,
                          "agent": claim.agent, "session": claim.session, "task": row["task"],
                          "message": row["message"], "merged": claim.merged,
                          "models": claim.models})
            done = [claim.turn, *claim.merged]
            con.execute(f"UPDATE temp.turns SET state = 'completed' WHERE id IN "
                        f"({','.join('?' * len(done))})", done)
            if max_turns and len(turns) >= max_turns:
                break
        targets = dict(con.execute("SELECT id, deliver FROM tasks WHERE deliver IS NOT NULL"))
    deliveries += [{"task": t["task"], "turn": t["turn"], "target": targets[t["task"]]}
                   for t in turns if t["task"] in targets]
    return {"now": format_ts(now), "deliveries": deliveries, "fires": fires, "skips": skips,
            "held": [{"task": t, "waits_for": turn} for t, turn in held.items()],
            "expired_approvals": expired,
            "turns": turns, "waiting": runner.waiting}


def next_fires(store: Store, at: datetime, *, agent: str | None = None) -> list[dict]:
    """Each active task (of `agent`, else every agent): when a `fased run` fires it next,
    seen from `at`, and for one due by then the occurrence it runs for and how many missed
    runs fold into it. Changes nothing (fire_due only decides)."""
    from fased.tasks import due_task_ids, fire_due, previous_turn_pending, schedule_of

    con = store.db()
    due = due_task_ids(con, at, agent)
    clause, params = ("AND agent = ?", [agent]) if agent else ("", [])
    out = []
    for row in con.execute(f"SELECT * FROM tasks WHERE state = 'active' {clause}"
                           " ORDER BY created_seq", params).fetchall():
        entry = {"task": row["id"], "name": row["name"], "agent": row["agent"],
                 "session": row["session"], "schedule": schedule_of(row).describe(),
                 "due": False, "fires_at": None, "occurrence": None, "skipped": 0,
                 "retry": False, "waits_for": None, "next_run": row["next_run"]}
        if row["id"] in due:
            fired = [d.data for d in fire_due(con, row["id"], at, store.home)
                     if d.type == "task.fired"]
            if fired:
                entry.update(_fired(fired[0]), due=True, fires_at=format_ts(at))
            else:
                entry["waits_for"] = previous_turn_pending(con, row["id"])
        else:
            times = [t for t in (row["next_run"], row["retry_at"]) if t]
            entry["fires_at"] = min(times) if times else None
            entry["retry"] = bool(row["retry_at"]) and entry["fires_at"] == row["retry_at"]
            entry["occurrence"] = None if entry["retry"] else row["next_run"]
        out.append(entry)
    order = {t: n for n, t in enumerate(due)}  # due together: in the order a tick fires them
    out.sort(key=lambda e: (e["fires_at"] is None, e["fires_at"] or "",
                            order.get(e["task"], len(order)), e["task"]))
    return out
