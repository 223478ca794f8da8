"""Tasks: scheduled messages to an agent's session, fired by `fased run`, with delivery.

Firing happens under the log lock: the tick re-reads the task, computes the latest occurrence
that has not fired (missed runs after downtime fold into one, counted as skipped) and appends
`task.fired` plus the `turn.queued` it causes in one batch, so two runners never fire the same
occurrence twice. Replies are delivered on the next tick; a failed delivery is recorded and
retried, and the reply itself is always in the session.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from fased.agents import get_agent
from fased.chat import new_turn_id
from fased.errors import ConflictError, FasedError, NotFoundError, UsageError
from fased.schedule import Schedule, due_occurrences, next_run, parse_schedule
from fased.sessions import ensure_session
from fased.store import Draft, Store
from fased.timeparse import format_ts, parse_ts

MAX_DELIVERY_ATTEMPTS = 5
ACTIVE = ("active", "paused")


def check_target(target: str | None) -> str | None:
    """`stdout`, `channel` (the chat the session came from), `file:PATH` (made absolute),
    `webhook:URL` (fased.bounds.parse_url), or `none` (no delivery, where one is the
    default)."""
    from fased.bounds import check_kept_path, has_control, parse_url

    if target is None or target in ("stdout", "channel", "none"):
        return target
    kind, sep, rest = target.partition(":")
    if sep and kind == "file" and rest.strip() and not has_control(rest):
        try:
            check_kept_path(rest, hint="give an absolute path, or run from another folder")
        except UsageError as exc:  # the working directory's name
            raise UsageError(f"invalid delivery target: {exc.message}", hint=exc.hint) from None
        return f"file:{Path(rest).expanduser().absolute()}"
    hint = "use stdout, channel, file:PATH or webhook:https://host/path"
    if sep and kind == "webhook":
        try:
            return f"webhook:{parse_url(rest, 'webhook URL')}"
        except UsageError as exc:
            raise UsageError(f"invalid delivery target: {exc.message}", hint=hint) from None
    raise UsageError(f"invalid delivery target {target!r}", hint=hint)


def recorded_target(target: str | None) -> tuple[str | None, str | None]:
    """(the target the log records, the webhook URL credentials.json keeps, or None).

    A webhook's URL is a credential (fased.redact.mask_webhook): the log, and so `task
    show`, `replay` and each delivery's record, holds its origin (`webhook:https://host/
    ***`), and credentials.json (0600) the URL, under the task, as it holds provider keys
    and bot tokens."""
    from fased.redact import mask_webhook

    if not target or not target.startswith("webhook:"):
        return target, None
    url = target.partition(":")[2]
    shown = mask_webhook(url)
    return f"webhook:{shown}", (None if shown == url else url)


def keep_webhook(store: Store, task_id: str, url: str | None) -> None:
    """Keep a task's webhook URL in credentials.json, or forget it (None). The caller holds
    the log lock, so the URL and the event that refers to it land together."""
    from fased.models import set_credentials_entry

    set_credentials_entry(store.home, "tasks", task_id, {"webhook": url} if url else None)


def webhook_url(home: Path, task_id: str, recorded: str) -> str:
    """The URL a task's reply is posted to: credentials.json's, when its origin is the one
    recorded; else the recorded URL itself (fased 0.4.0 and older recorded it whole)."""
    from fased.models import load_credentials
    from fased.redact import MASK, mask_webhook

    kept = ((load_credentials(home).get("tasks") or {}).get(task_id) or {}).get("webhook")
    if isinstance(kept, str) and mask_webhook(kept) == recorded:
        return kept
    if recorded.endswith(f"/{MASK}"):
        raise FasedError(f"the webhook URL of {task_id} is missing from credentials.json",
                         hint=f"give it again: fased task edit {task_id} --deliver webhook:URL")
    return recorded


def session_target(con: sqlite3.Connection, session: str, deliver: str | None) -> str | None:
    """A task's target in `session`: `channel` by default when the session came from a chat
    (fased.channels; `none` says no delivery), and `channel` refused for a session that did
    not."""
    if deliver == "none":
        return None
    origin = con.execute("SELECT channel FROM session_origins WHERE session = ?",
                         (session,)).fetchone()
    if deliver is None and origin is not None:
        return "channel"
    if deliver == "channel" and origin is None:
        raise UsageError(f"session {session} did not come from a channel: --deliver channel "
                         "has nowhere to go", hint="use stdout, file:PATH or webhook:URL")
    return deliver


def get_task(con: sqlite3.Connection, task: str) -> sqlite3.Row:
    row = con.execute("SELECT * FROM tasks WHERE id = ?", (task,)).fetchone()
    if row is None:
        raise NotFoundError(f"no task {task!r}", hint="`fased task list --all` shows them")
    return row


def schedule_of(row: sqlite3.Row) -> Schedule:
    return Schedule.from_dict(json.loads(row["schedule"]))


def _ts(when: datetime | None) -> str | None:
    return None if when is None else format_ts(when)


def create_drafts(con: sqlite3.Connection, now: datetime, *, agent: str | None,
                  session: str | None, schedule: Schedule, message: str, name: str | None,
                  model: str | None, deliver: str | None, keep: bool) -> tuple[str, list[Draft]]:
    """Drafts for a new task (and the session it needs, when there is none yet)."""
    from fased.models import check_ref_for_agent

    if not message.strip():
        raise UsageError("a task needs a --message")
    a = get_agent(con, agent)
    sid, drafts = ensure_session(con, a["id"], session)
    count = con.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
    task_id = f"task-{count + 1}"
    data = {"task": task_id, "agent": a["id"], "session": sid, "message": message,
            "schedule": schedule.to_dict(), "next_run": _ts(next_run(schedule, now))}
    if name:
        data["name"] = name
    if model:
        data["model"] = check_ref_for_agent(con, model)
    deliver = session_target(con, sid, deliver)
    if deliver:
        data["deliver"] = deliver
    if keep:
        data["keep_after_run"] = True
    drafts.append(Draft("task.created", f"task:{task_id}", data, expect=0))
    return task_id, drafts


def fire_drafts(con: sqlite3.Connection, task: sqlite3.Row, now: datetime, *,
                manual: bool = False) -> list[Draft]:
    """task.fired and its turn.queued, for a due occurrence, a due retry, or `task run`.

    Returns [] when nothing is due, or when the task's previous turn is still waiting."""
    schedule = schedule_of(task)
    if not manual and previous_turn_pending(con, task["id"]):
        return []
    occurrence, skipped, retry = None, 0, False
    if not manual:
        last = parse_ts(task["last_occurrence"]) if task["last_occurrence"] else None
        occurrence, skipped = due_occurrences(schedule, last, now)
        if occurrence is None and task["retry_at"] and task["retry_at"] <= format_ts(now):
            occurrence, retry = (parse_ts(task["last_occurrence"])
                                 if task["last_occurrence"] else None), True
        elif occurrence is None:
            return []
    agent = get_agent(con, task["agent"], include_deleted=True)
    turn = new_turn_id()
    fired = {"task": task["id"], "agent": task["agent"], "session": task["session"],
             "turn": turn, "occurrence": _ts(occurrence), "skipped": skipped,
             "next_run": _ts(next_run(schedule, now))}
    if manual:
        fired["manual"] = True
    if retry:
        fired["retry"] = True
    queued = {"turn": turn, "agent": task["agent"], "session": task["session"],
              "message": task["message"], "task": task["id"], "source": "task"}
    model = task["model"] or agent["task_model"]
    if model:
        queued["model"] = model
    return [Draft("task.fired", f"task:{task['id']}", fired),
            Draft("turn.queued", f"session:{task['session']}", queued)]


def previous_turn_pending(con: sqlite3.Connection, task_id: str) -> str | None:
    """The task's turn that is still queued or running (a scheduled run waits for it)."""
    row = con.execute("SELECT r.turn FROM task_runs r JOIN turns t ON t.id = r.turn WHERE"
                      " r.task = ? AND t.state IN ('queued', 'running')", (task_id,)).fetchone()
    return row[0] if row else None


def due_task_ids(con: sqlite3.Connection, now: datetime, agent: str | None) -> list[str]:
    """The tasks a tick at `now` tries to fire, in the order it fires them; fire_drafts then
    decides for each (under the log lock) whether it fires. fased.preview asks the same."""
    now_ts = format_ts(now)
    agent_clause, params = ("AND agent = ?", [agent]) if agent else ("", [])
    return [r["id"] for r in con.execute(
        f"SELECT id FROM tasks WHERE state = 'active' {agent_clause} AND ((next_run IS NOT NULL"
        " AND next_run <= ?) OR (retry_at IS NOT NULL AND retry_at <= ?)) ORDER BY next_run",
        [*params, now_ts, now_ts])]


def fire_due(con: sqlite3.Connection, task_id: str, now: datetime, home: Path) -> list[Draft]:
    """What a tick appends for one task of due_task_ids (re-read under the lock); a
    heartbeat's task may wait for its active hours or skip (fased.heartbeat.due_drafts)."""
    task = get_task(con, task_id)
    if task["state"] != "active":
        return []
    if task["kind"] == "heartbeat":
        from fased.heartbeat import due_drafts

        drafts = due_drafts(con, home, task, now)
        if drafts is not None:
            return drafts
    return fire_drafts(con, task, now)


def fire_due_tasks(store: Store, runner, emit: Callable[[dict], None] | None = None) -> list[str]:
    """One scheduler tick: deliver finished replies, then fire what is due. Returns the turn
    ids queued."""
    from fased.heartbeat import sync

    deliver_pending(store, emit or _print, runner.note)
    now = runner.clock()
    sync(store, now, runner.agent)
    due = due_task_ids(store.db(check_files=False), now, runner.agent)
    queued: list[str] = []
    for task_id in due:
        def decide(con, task_id=task_id):
            return fire_due(con, task_id, now, store.home)

        outcome = store.append_internal(decide)
        for e in outcome.events:
            if e["type"] == "task.skipped":
                runner.note(f"fased: heartbeat of agent {e['data']['agent']} skipped "
                            f"({task_id}): {e['data']['reason']}")
            if e["type"] == "task.fired":
                queued.append(e["data"]["turn"])
                skipped = e["data"].get("skipped")
                runner.note(f"fased: task {task_id} fired"
                            + (f" ({skipped} missed run(s) folded into this one)"
                               if skipped else ""))
    return queued


def _print(delivery: dict) -> None:
    reply = delivery["reply"]  # fased/ never imports click
    print(reply, end="\n" if reply and not reply.endswith("\n") else "", flush=True)


# -- delivery ---------------------------------------------------------------------------------

_DELIVERY_ROWS = (
    "SELECT r.turn, r.task, t.deliver, t.agent, t.session, r.occurrence, tu.reply,"
    " tu.model_used FROM task_runs r JOIN tasks t ON t.id = r.task JOIN turns tu ON"
    " tu.id = r.turn WHERE r.status = 'completed' AND t.deliver IS NOT NULL")


def deliver_pending(store: Store, emit: Callable[[dict], None],
                    note: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Deliver replies of finished task turns not yet delivered (or whose delivery failed,
    up to MAX_DELIVERY_ATTEMPTS). Returns what was recorded for each (task.delivered data);
    `note` hears of each failure.

    What is pending is read under `delivery.lock`, held until the outcomes are recorded, so
    two runners never deliver a reply twice; the log lock stays free while a webhook is slow."""
    with _delivery_lock(store.home):
        pending = pending_deliveries(store.db(check_files=False))
        outcomes = [_deliver_and_record(store, row, emit) for row in pending]
    for d in outcomes:
        if not d["ok"]:
            note(f"fased: delivery of turn {d['turn']} ({d['task']}) to {d['target']} failed: "
                 f"{d['error']}")
    return outcomes


def pending_deliveries(con: sqlite3.Connection) -> list[sqlite3.Row]:
    """Finished task runs whose reply a tick delivers: never tried, or failed fewer than
    MAX_DELIVERY_ATTEMPTS times."""
    return con.execute(
        f"{_DELIVERY_ROWS} AND r.delivery IS NOT 'acknowledged' AND (r.delivery_ok IS NULL OR"
        " (r.delivery_ok = 0 AND r.delivery_attempts < ?)) ORDER BY r.seq",
        (MAX_DELIVERY_ATTEMPTS,)).fetchall()


def deliver_again(store: Store, task_id: str, turn: str | None,
                  emit: Callable[[dict], None]) -> dict:
    """Deliver a run's reply now (the latest completed run, or the run of `turn`), whatever
    happened to its delivery before: after `fased run` gave up, or to send it again. Records
    task.delivered like any delivery; returns what it recorded."""
    with _delivery_lock(store.home):
        con = store.db(check_files=False)
        task = get_task(con, task_id)
        if task["deliver"] is None:
            raise UsageError(f"task {task_id} has no delivery target",
                             hint=f"set one: fased task edit {task_id} --deliver TARGET")
        where, params = (" AND r.turn = ?", (task_id, turn)) if turn else ("", (task_id,))
        row = con.execute(f"{_DELIVERY_ROWS} AND r.task = ?{where} ORDER BY r.seq DESC LIMIT 1",
                          params).fetchone()
        if row is None:
            raise NotFoundError(
                f"task {task_id} has no completed run" + (f" {turn}" if turn else ""),
                hint=f"`fased task history {task_id}` lists its runs")
        return _deliver_and_record(store, row, emit)


def _deliver_and_record(store: Store, row, emit: Callable[[dict], None]) -> dict:
    try:
        if row["deliver"] == "channel":
            from fased.channels.outbox import deliver_task

            ok, error, attempts = deliver_task(store, row)
        else:
            ok, error, attempts = deliver(row, emit, store.home)
    except Exception as exc:
        # a failed delivery, recorded like any other: it must not take the runner down
        from fased.safetext import describe

        ok, error, attempts = False, f"internal error: {describe(exc)}", 1
    data = {"task": row["task"], "agent": row["agent"], "turn": row["turn"],
            "target": row["deliver"], "ok": ok, "error": error, "attempts": attempts}
    store.append_internal([Draft("task.delivered", f"task:{row['task']}", data)])
    return data


@contextmanager
def _delivery_lock(home: Path) -> Iterator[None]:
    import fcntl

    fd = os.open(home / "delivery.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_target(path: str) -> int:
    """A file target opened to append: a FIFO only while something reads it (one nobody
    reads made the runner wait for a reader, forever), then written as usual."""
    import errno

    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OSError(exc.errno, "a FIFO nobody reads") from None
        raise
    os.set_blocking(fd, True)
    return fd


def deliver(row, emit: Callable[[dict], None], home: Path) -> tuple[bool, str | None, int]:
    """Send one reply to its target: (ok, error, attempts made)."""
    target = row["deliver"]
    if target == "stdout":
        emit({"task": row["task"], "turn": row["turn"], "reply": row["reply"]})
        return True, None, 1
    kind, _, rest = target.partition(":")
    if kind == "file":
        try:
            fd = _open_target(rest)
            with open(fd, "a", encoding="utf-8") as f:
                f.write(row["reply"] if row["reply"].endswith("\n") else row["reply"] + "\n")
            return True, None, 1
        except OSError as exc:
            return False, f"{rest}: {exc.strerror}", 1
    try:
        url = webhook_url(home, row["task"], rest)
    except FasedError as exc:  # counts as a try, so that ticks give up on it in time
        return False, exc.message, 1
    return _post(url, {
        "task": row["task"], "agent": row["agent"], "session": row["session"],
        "turn": row["turn"], "occurrence": row["occurrence"], "model": row["model_used"],
        "reply": row["reply"]})


def _post(url: str, body: dict) -> tuple[bool, str | None, int]:
    """POST JSON with retries (tenacity): connection errors, timeouts, 408/429/5xx.

    The whole delivery, every attempt and pause, has fased.net.WEBHOOK_DEADLINE: every runner
    waits on the delivery lock meanwhile. Only a 2xx is a delivery; a redirect is followed
    within the hook's origin, never to another one."""
    import requests
    import tenacity

    from fased import net

    attempts = 0

    class Retryable(Exception):
        pass

    def once():
        nonlocal attempts
        attempts += 1
        try:
            resp = session.post(url, json=body, timeout=deadline.timeouts(5, 15), stream=True)
        except (requests.RequestException, OSError) as exc:
            exc = net.explain(exc)
            if isinstance(exc, net.NetError):
                return exc.phrase  # the deadline is spent, or a redirect will not go away
            if isinstance(exc, requests.TooManyRedirects):
                return "redirected too many times"
            raise Retryable(net.describe(exc)) from None  # in words: "connection refused"
        resp.close()  # the status is the answer; the body is not read
        if resp.status_code in (408, 429) or resp.status_code >= 500:
            raise Retryable(f"HTTP {resp.status_code}")
        if not 200 <= resp.status_code < 300:
            return f"HTTP {resp.status_code}"
        return None

    from fased.settings import env_int

    most = env_int("FASED_WEBHOOK_ATTEMPTS", 3, 1, 100)
    session = net.session_for(url)
    with net.Deadline(net.WEBHOOK_DEADLINE) as deadline:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(most)
            | (lambda state: deadline.left() <= 0),
            wait=lambda state: min(deadline.left(), tenacity.wait_random_exponential(
                multiplier=0.2, max=5)(state)),
            retry=tenacity.retry_if_exception_type(Retryable), reraise=True)
        try:
            error = retrying(once)
        except Retryable as exc:
            error = str(exc)
        finally:
            session.close()
    return error is None, error, attempts


# -- views ------------------------------------------------------------------------------------

def task_dict(con: sqlite3.Connection, row: sqlite3.Row) -> dict:
    return {
        "id": row["id"], "name": row["name"], "agent": row["agent"], "session": row["session"],
        "message": row["message"], "schedule": schedule_of(row).describe(),
        "schedule_spec": json.loads(row["schedule"]), "model": row["model"],
        "deliver": row["deliver"], "keep_after_run": bool(row["keep_after_run"]),
        "state": row["state"], "enabled": row["state"] == "active",
        "next_run": row["next_run"], "retry_at": row["retry_at"], "last_run": row["last_run"],
        "last_status": row["last_status"], "failures": row["failures"], "runs": row["runs"],
        "created_at": row["created_at"],
    }


def history(con: sqlite3.Connection, task: str, last: int | None = None) -> list[dict]:
    rows = con.execute(
        "SELECT r.*, tu.model_used, tu.reply FROM task_runs r LEFT JOIN turns tu ON"
        " tu.id = r.turn WHERE r.task = ? ORDER BY r.seq DESC LIMIT ?",
        (task, -1 if last is None else last)).fetchall()
    out = [{
        "turn": r["turn"], "fired_at": r["fired_at"], "occurrence": r["occurrence"],
        "skipped": r["skipped"], "manual": bool(r["manual"]), "retry": bool(r["retry"]),
        "status": r["status"], "finished_at": r["finished_at"], "error": r["error"],
        "model": r["model_used"], "reply": r["reply"], "delivery": r["delivery"],
        "delivery_ok": None if r["delivery_ok"] is None else bool(r["delivery_ok"]),
        "delivery_error": r["delivery_error"]} for r in rows]
    out.reverse()
    return out


def require_active(row: sqlite3.Row, *states: str) -> None:
    if row["state"] not in states:
        raise ConflictError(f"task {row['id']} is {row['state']}")


# -- /task in interactive chat ----------------------------------------------------------------

def split_when(text: str) -> tuple[str, str]:
    """`/task new WHEN MESSAGE`: WHEN is as many words as its form takes (`every 1h`, `in 20m`,
    `at 09:00`, `at 2026-11-21 09:00`, `cron */5 * * * *`, a bare 5-field cron expression), or
    a quoted phrase; MESSAGE is the rest, as typed."""
    text = text.strip()
    if text[:1] in ("'", '"'):
        end = text.find(text[0], 1)
        if end < 0:
            raise UsageError(f"WHEN has no closing {text[0]}",
                             hint="/task new every 1h MESSAGE (quotes are optional)")
        return text[1:end], text[end + 1:].strip()
    words = text.split()
    head = words[0].lower() if words else ""
    count = {"every": 2, "in": 2, "at": 2, "cron": 6}.get(head, 1)
    if head == "at" and len(words) > 2 and re.fullmatch(
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}", words[1]) and re.fullmatch(
            r"[0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?", words[2]):
        count = 3  # a local date and time: at 2026-11-21 09:00
    elif head not in ("every", "in", "at", "cron") and re.fullmatch(r"[0-9*/,-]+", head):
        count = 5  # a bare cron expression starts with its minute field
    if len(words) <= count:
        return text, ""
    end = list(re.finditer(r"\S+", text))[count - 1].end()
    return " ".join(words[:count]), text[end:].strip()


def repl_task_command(store: Store, agent: str, session: str, text: str) -> str:
    """`/task new WHEN MESSAGE | list | show ID | run ID | cancel ID` for the current session
    (`text` is what follows `/task`)."""
    import shlex

    from fased.schedule import parse_schedule_phrase

    sub, _, rest = text.strip().partition(" ")
    sub = sub.lower() or "list"
    con = store.db()
    if sub == "new":
        when, message = split_when(rest)
        if not when or not message.strip():
            raise UsageError("usage: /task new WHEN MESSAGE  (WHEN: every 1h, in 20m, "
                             "at 09:00, cron */5 * * * *)")
        now = store.clock()
        schedule = parse_schedule_phrase(when, now=now)
        made: list[str] = []

        def decide(con):
            task_id, drafts = create_drafts(
                con, now, agent=agent, session=session, schedule=schedule,
                message=message, name=None, model=None, deliver=None, keep=False)
            made.append(task_id)
            return drafts

        store.transact(decide)
        return f"Task {made[-1]}: {schedule.describe()} in session {session}."
    if sub == "list":
        rows = con.execute("SELECT * FROM tasks WHERE session = ? AND state IN ('active',"
                           " 'paused') ORDER BY created_seq", (session,)).fetchall()
        return "\n".join(f"{r['id']}  {schedule_of(r).describe()}  next {r['next_run'] or '-'}"
                         f"  {r['state']}  {r['message'][:40]}" for r in rows) or "No tasks."
    try:
        args = [sub, *shlex.split(rest)]
    except ValueError as exc:
        raise UsageError(f"cannot parse the command: {exc}") from None
    if sub in ("show", "run", "cancel") and len(args) == 2:
        row = get_task(con, args[1])
        if sub == "show":
            d = task_dict(con, row)
            runs = history(con, row["id"], 5)
            lines = [f"{d['id']}: {d['schedule']}, {d['state']}, next {d['next_run'] or '-'}",
                     f"  message: {d['message']}"]
            lines += [f"  {r['fired_at'][:16]} {r['status']}" for r in runs]
            return "\n".join(lines)

        def decide(con):
            task = get_task(con, row["id"])
            require_active(task, "active", "paused")  # as `fased task cancel|run` do
            if sub == "cancel":
                from fased.heartbeat import refuse_change

                refuse_change(task, "turn off")
                return [Draft("task.cancelled", f"task:{task['id']}", {
                    "task": task["id"], "agent": task["agent"], "reason": "cancelled"})]
            return fire_drafts(con, task, store.clock(), manual=True)

        store.transact(decide)
        if sub == "cancel":
            return f"Cancelled task {row['id']}."
        return f"Task {row['id']} queued; its reply arrives with the next `fased run`."
    raise UsageError("usage: /task new WHEN MESSAGE | list | show ID | run ID | cancel ID")


__all__ = ["ACTIVE", "check_target", "create_drafts", "fire_due_tasks", "parse_schedule"]
