"""Heartbeat: an optional periodic check-in turn per agent, driven by its HEARTBEAT.md.

`agents.defaults.heartbeat` with an agent's own `agents.list[].heartbeat` over it, key by key:
`every` (a duration; absent or zero: off) and `activeHours` ({start, end, timezone?}, local
times `HH:MM`, `end` may be `24:00`; the zone defaults to agents.defaults.userTimezone, else
UTC).

A heartbeat is a task of kind `heartbeat`, so it fires exactly like every task does (under the
log lock, once per due time across runners and crashes, missed runs folded into one): each
scheduler tick first makes the agent's heartbeat task agree with its settings (created in the
agent's main session, the one named `main`, made when missing; its schedule and session
kept up to date; cancelled when turned off), appending only what changed. At a due
time the heartbeat
- does nothing outside activeHours (the next tick inside them fires it);
- is skipped without calling a model when HEARTBEAT.md is effectively empty (blank, only
  headings and comments, or the template setup wrote): one `task.skipped` per due time;
- otherwise queues a turn with PROMPT. A reply that is only the acknowledgement (ACK, with
  whitespace, punctuation or Markdown emphasis around it) is recorded like any reply and
  never delivered; any other reply is delivered as a task's `stdout` reply is.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, time
from pathlib import Path

from fased.store import Draft

KIND = "heartbeat"
FILE = "HEARTBEAT.md"
ACK = "HEARTBEAT_OK"
PROMPT = ("Read HEARTBEAT.md if it exists (workspace context). Follow it strictly. Do not infer "
          "or repeat old tasks from prior chats. If nothing needs attention, reply HEARTBEAT_OK.")
TARGET = "stdout"  # a main session that no chat reaches: `fased run` prints the reply

_ACK_AROUND = re.compile(r"[\s\W_]*")  # whitespace, punctuation, `**`, backticks...


@dataclass(frozen=True)
class Settings:
    """An agent's heartbeat settings, defaults filled in (every None: off)."""

    every: str | None
    start: str | None
    end: str | None
    zone: str

    @property
    def window(self) -> str | None:
        return f"{self.start}-{self.end} {self.zone}" if self.start and self.end else None


def settings_of(con: sqlite3.Connection, agent_id: str) -> Settings:
    """agents.defaults.heartbeat with the agent's own keys over it (values the config checks
    passed; a duration of zero, `0m`, is off)."""
    import json

    from fased.config import config_doc
    from fased.errors import UsageError
    from fased.timeparse import parse_duration

    defaults = (config_doc(con).get("agents") or {}).get("defaults") or {}
    row = con.execute("SELECT config FROM agents WHERE id = ?", (agent_id,)).fetchone()
    own = json.loads(row[0] or "{}") if row else {}
    merged = {**(defaults.get("heartbeat") or {}), **(own.get("heartbeat") or {})}
    every = merged.get("every")
    if every is not None:
        every = "".join(str(every).split()).lower()
        try:
            parse_duration(every)
        except UsageError:  # zero (`0m`) is off; the config schema refused anything else
            every = None
    hours = merged.get("activeHours") or {}
    zone = hours.get("timezone") or defaults.get("userTimezone") or "UTC"
    return Settings(every, hours.get("start"), hours.get("end"), zone)


def in_active_hours(s: Settings, when: datetime) -> bool:
    """Whether `when` is inside activeHours (always, without them). `start` > `end` spans
    midnight; `start` == `end` is an empty window."""
    if not s.window:
        return True
    from fased.errors import UsageError
    from fased.timeparse import zone_info

    try:
        zone = zone_info(s.zone) or UTC
    except UsageError:  # a name that is no zone: UTC, as for the user's days (fased.usage)
        zone = UTC
    local = when.astimezone(zone).time()
    start, end = _clock(s.start), _clock(s.end)
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def _clock(text: str) -> time:
    hours, minutes = (int(p) for p in text.split(":"))
    return time.max if hours == 24 else time(hours, minutes)


def is_ack(reply: str | None) -> bool:
    """A reply that only acknowledges: ACK at its start or end, nothing but whitespace,
    punctuation or markup besides (`HEARTBEAT_OK`, `**HEARTBEAT_OK**.`, ` HEARTBEAT_OK!\\n`)."""
    if not reply or ACK not in reply:
        return False
    return _ACK_AROUND.fullmatch(reply.replace(ACK, "")) is not None


def file_reason(con: sqlite3.Connection, home: Path, agent: sqlite3.Row) -> str | None:
    """Why HEARTBEAT.md gives the heartbeat nothing to do: `empty` (blank, or only headings
    and comments), `template` (what setup wrote, untouched); None when it has something (or
    is missing: the prompt says "if it exists", so the model decides)."""
    from fased.agents import render_template, workspace_for
    from fased.bounds import NotRegularFile, read_head

    path = workspace_for(con, home, agent) / FILE
    try:
        data = read_head(path, 1 << 20)
    except NotRegularFile as exc:  # a FIFO waited for a writer, forever
        return f"unreadable ({exc.strerror})"
    except OSError:
        return None
    text = re.sub(r"<!--.*?(-->|\Z)", "", data.decode("utf-8", "replace"), flags=re.S)
    if all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()):
        return "empty"
    if data.strip() == render_template(FILE, agent).strip():
        return "template"
    return None


def describe(reason: str) -> str:
    """file_reason's word, for people (and for `task.skipped`)."""
    return f"{FILE} is " + {"template": "the untouched template"}.get(reason, reason)


# -- the task that carries it --------------------------------------------------------------------

def heartbeat_task(con: sqlite3.Connection, agent_id: str) -> sqlite3.Row | None:
    """The agent's heartbeat task that is still on (active or paused)."""
    return con.execute("SELECT * FROM tasks WHERE agent = ? AND kind = ? AND state IN"
                       " ('active', 'paused') ORDER BY created_seq DESC LIMIT 1",
                       (agent_id, KIND)).fetchone()


def agent_ids(con: sqlite3.Connection, agent: str | None = None) -> list[str]:
    """The agents a tick keeps heartbeats for: `agent`, else every agent not deleted."""
    clause, params = ("AND id = ?", [agent]) if agent else ("", [])
    return [r[0] for r in con.execute(f"SELECT id FROM agents WHERE deleted = 0 {clause}"
                                      " ORDER BY id", params)]


def main_session(con: sqlite3.Connection, agent_id: str) -> tuple[str, list[Draft]]:
    """The agent's main session (the one named `main`, as channel routing's dmScope main
    names it) and the drafts that create it when it has none (made current when the agent
    has no current session, so chat and heartbeat meet there)."""
    from fased.channels.routing import MAIN_SESSION
    from fased.sessions import current_session, new_session

    row = con.execute("SELECT id FROM sessions WHERE agent = ? AND name = ? AND deleted = 0"
                      " ORDER BY created_seq LIMIT 1", (agent_id, MAIN_SESSION)).fetchone()
    if row is not None:
        return row[0], []
    return new_session(con, agent_id, MAIN_SESSION,
                       switch=current_session(con, agent_id) is None)


def _target(con: sqlite3.Connection, session: str) -> str:
    """Where a reply that needs attention goes: the chat the main session came from
    (session.dmScope main), else stdout."""
    from fased.tasks import session_target

    return session_target(con, session, None) or TARGET


def sync_drafts(con: sqlite3.Connection, now: datetime, agent_id: str) -> list[Draft]:
    """What makes the agent's heartbeat task agree with its settings and run in its main
    session: none when it already does."""
    from fased.schedule import Schedule, next_run
    from fased.tasks import schedule_of
    from fased.timeparse import format_ts

    s, task = settings_of(con, agent_id), heartbeat_task(con, agent_id)
    if s.every is None:
        return [] if task is None else [Draft("task.cancelled", f"task:{task['id']}", {
            "task": task["id"], "agent": agent_id, "reason": "heartbeat turned off"})]
    session, drafts = main_session(con, agent_id)
    target = _target(con, session)
    schedule = Schedule("every", s.every, anchor=format_ts(now))
    if task is None:
        count = con.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        task_id = f"task-{count + 1}"
        drafts.append(Draft("task.created", f"task:{task_id}", {
            "task": task_id, "agent": agent_id, "session": session, "message": PROMPT,
            "schedule": schedule.to_dict(), "next_run": format_ts(next_run(schedule, now)),
            "name": KIND, "deliver": target, "kind": KIND}, expect=0))
        return drafts
    change: dict = {}
    if schedule_of(task).expr != s.every:
        change.update(schedule=schedule.to_dict(), next_run=format_ts(next_run(schedule, now)))
    if session != task["session"]:
        change["session"] = session
    if target != task["deliver"]:
        change["deliver"] = target
    if change:
        drafts.append(Draft("task.updated", f"task:{task['id']}",
                            {"task": task["id"], "agent": agent_id, **change}))
    return drafts


def sync(store, now: datetime, agent: str | None = None) -> None:
    """Before a tick fires tasks: bring heartbeat tasks up to date, one agent at a time
    (decided again under the lock, so two runners never create two; nothing is written when
    nothing changed)."""
    con = store.db(check_files=False)
    for agent_id in agent_ids(con, agent):
        if sync_drafts(con, now, agent_id):
            store.append_internal(lambda con, a=agent_id: sync_drafts(con, now, a))
            con = store.db(check_files=False)


def due_drafts(con: sqlite3.Connection, home: Path, task: sqlite3.Row,
               now: datetime) -> list[Draft] | None:
    """For a due heartbeat task: [] outside activeHours, a task.skipped when HEARTBEAT.md
    gives it nothing to do, None to fire it as any task fires."""
    from fased.agents import get_agent
    from fased.schedule import due_occurrences, next_run
    from fased.tasks import previous_turn_pending, schedule_of
    from fased.timeparse import format_ts, parse_ts

    s = settings_of(con, task["agent"])
    if not in_active_hours(s, now):
        return []
    agent = get_agent(con, task["agent"], include_deleted=True)
    reason = file_reason(con, home, agent)
    if reason is None or previous_turn_pending(con, task["id"]):
        return None
    schedule = schedule_of(task)
    last = parse_ts(task["last_occurrence"]) if task["last_occurrence"] else None
    occurrence, skipped = due_occurrences(schedule, last, now)
    if occurrence is None:
        return None  # a retry of a failed run: fire_drafts decides
    return [Draft("task.skipped", f"task:{task['id']}", {
        "task": task["id"], "agent": task["agent"], "occurrence": format_ts(occurrence),
        "skipped": skipped, "reason": describe(reason),
        "next_run": format_ts(next_run(schedule, now))})]


def status(con: sqlite3.Connection, home: Path, agent: sqlite3.Row, now: datetime) -> dict:
    """What `fased agent heartbeat` shows: settings, the task, when it is due next and what
    its last due time did."""
    s = settings_of(con, agent["id"])
    task = heartbeat_task(con, agent["id"])
    last = None
    if task is not None:
        run = con.execute(
            "SELECT r.turn, r.fired_at, r.status, r.delivery, r.delivery_ok, r.error,"
            " t.reply FROM task_runs r LEFT JOIN turns t ON t.id = r.turn WHERE r.task = ?"
            " ORDER BY r.seq DESC LIMIT 1", (task["id"],)).fetchone()
        if task["last_status"] == "skipped":
            last = {"at": task["last_run"], "result": "skipped", "reason": task["skip_reason"],
                    "turn": None}
        elif run is not None:
            result = {"queued": "waiting", "completed": _delivered(run)}.get(
                run["status"], run["status"])
            last = {"at": run["fired_at"], "result": result, "turn": run["turn"],
                    "reason": run["error"]}
    file = file_reason(con, home, agent)
    nxt = task["next_run"] if task is not None and task["state"] == "active" else None
    return {"agent": agent["id"], "enabled": s.every is not None, "every": s.every,
            "active_hours": s.window, "task": task["id"] if task else None,
            "state": task["state"] if task else None,
            "session": task["session"] if task else None, "next_due": nxt,
            "active_now": in_active_hours(s, now), "file": describe(file) if file else None,
            "last": last}


def _delivered(run: sqlite3.Row) -> str:
    if run["delivery"] == "acknowledged":
        return "acknowledged (HEARTBEAT_OK, not delivered)"
    if run["delivery_ok"] is None:
        return "answered, not delivered yet"
    return "delivered" if run["delivery_ok"] else "delivery failed"


def refuse_change(row: sqlite3.Row, what: str) -> None:
    """`task edit` and `task cancel` leave a heartbeat's task to its settings."""
    from fased.errors import ConflictError

    if row["kind"] == KIND:
        raise ConflictError(
            f"task {row['id']} is agent {row['agent']}'s heartbeat: {what} it in fased.json",
            hint=f"fased config unset 'agents.list[N].heartbeat' (N: {row['agent']}'s index), "
                 "or `fased task pause` it")


