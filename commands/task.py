"""`fased task ...`: scheduled work attached to an agent and its session."""

from __future__ import annotations

import click

from fased.commands.main import FasedGroup
from fased.commands.output import (
    agent_option,
    echo_json,
    json_option,
    note,
    say,
    shown_time,
    store,
    table,
)
from fased.commands.types import (
    Message,
    Name,
    complete_agents,
    complete_model_refs,
    complete_sessions,
    complete_tasks,
    count,
)
from fased.errors import FasedError, UsageError


@click.group(cls=FasedGroup)
def task() -> None:
    """Tasks: messages sent to an agent's session on a schedule; `fased run` fires them.

    A crontab line `* * * * * fased run --once` is enough to drive every task.

    \b
    Examples:
      fased task new --every 1h --message "check the build" --session ops
      fased task new --cron "0 9 * * 1-5" --tz Europe/Berlin --message "standup notes"
      fased task new --at 20m --message "remind me to stretch" --deliver stdout
      fased task new --every 1d --message "summary" --deliver webhook:https://example.com/hook
      fased task list
      fased task history task-1
      fased task run task-1
    """


def _schedule_options(fn):
    for option in reversed([
        click.option("--cron", metavar="EXPR", help="5-field cron expression."),
        click.option("--tz", metavar="ZONE", help="IANA zone for --cron and local --at times."),
        click.option("--every", metavar="DURATION", help="A fixed period: 30m, 1h, 1d."),
        click.option("--at", "at", metavar="TIME",
                     help="Once: RFC 3339, a local time (09:00), or from now (20m)."),
        click.option("--message", metavar="TEXT", type=Message(),
                     help="What to send to the agent."),
        click.option("--name", metavar="NAME", type=Name("the task name"),
                     help="A label for the task."),
        click.option("--model", metavar="REF", help="Model for this task (default: the agent's "
                     "task model, else its primary).", shell_complete=complete_model_refs),
        click.option("--deliver", metavar="TARGET",
                     help="Also send the reply to stdout, file:PATH, webhook:URL or channel "
                     "(the chat the session came from: the default for such a session; "
                     "none: no delivery). A webhook's URL is kept in credentials.json; the "
                     "log shows its origin."),
    ]):
        fn = option(fn)
    return fn


@task.command("new")
@agent_option
@click.option("--session", "-s", metavar="ID|NAME", help="Session (default: the current one).",
              shell_complete=complete_sessions)
@_schedule_options
@click.option("--keep-after-run", is_flag=True, help="Keep an --at task after it succeeds.")
@json_option
def new(agent, session, cron, tz, every, at, message, name, model, deliver, keep_after_run,
        json_):
    """Create a task: exactly one of --cron, --every, --at, and a --message.

    \b
    Examples:
      fased task new --every 1h --message "check the build" --session ops
      fased task new --cron "0 9 * * 1-5" --tz Europe/Berlin --message "standup notes"
      fased task new --at 09:00 --tz Europe/Berlin --message "call the bank"
      fased task new --at 20m --message "remind me to stretch" --deliver stdout
      fased task new --every 1d --message "summary" --deliver file:/tmp/summary.txt
    """
    from fased.schedule import parse_schedule
    from fased.tasks import check_target, create_drafts, keep_webhook, recorded_target

    if not message:
        raise UsageError("a task needs --message TEXT")
    st = store()
    now = st.clock()
    schedule = parse_schedule(cron=cron, every=every, at=at, tz=tz, now=now)
    deliver, webhook = recorded_target(check_target(deliver))
    made: list[str] = []

    def decide(con):
        task_id, drafts = create_drafts(con, now, agent=agent, session=session, schedule=schedule,
                                        message=message, name=name, model=model, deliver=deliver,
                                        keep=keep_after_run)
        made.append(task_id)
        return drafts

    with st.log.locked():  # the webhook's URL and the task that posts to it land together
        outcome = st.transact(decide)
        if webhook and not outcome.replayed:
            keep_webhook(st, made[-1], webhook)
    created = next(e["data"] for e in outcome.events if e["type"] == "task.created")
    if json_:
        echo_json({"task": created["task"], "agent": created["agent"],
                   "session": created["session"], "schedule": schedule.describe(),
                   "next_run": created["next_run"], "replayed": outcome.replayed})
        return
    say(f"Created {created['task']}: {schedule.describe()} in session "
        f"{created['agent']}/{created['session']}; next run {_next(created['next_run'])}.")


def schedule_from_chat(when: str, message: str, *, agent, session, tz, json_) -> None:
    """`fased chat --schedule WHEN MESSAGE`: a task for the current agent and session."""
    from fased.schedule import parse_schedule_phrase
    from fased.tasks import create_drafts

    st = store()
    now = st.clock()
    schedule = parse_schedule_phrase(when, now=now, tz=tz)

    def decide(con):
        return create_drafts(con, now, agent=agent, session=session, schedule=schedule,
                             message=message, name=None, model=None, deliver=None,
                             keep=False)[1]

    outcome = st.transact(decide)
    created = next(e["data"] for e in outcome.events if e["type"] == "task.created")
    if json_:
        echo_json({"task": created["task"], "schedule": schedule.describe(),
                   "next_run": created["next_run"], "session": created["session"]})
    else:
        say(f"Created {created['task']}: {schedule.describe()} in session "
            f"{created['session']}; next run {_next(created['next_run'])}.")


def _next(ts: str | None) -> str:
    return f"{shown_time(ts)} UTC" if ts else "none"


@task.command("list")
@agent_option
@click.option("--session", "-s", metavar="ID|NAME", help="Only this session's tasks.",
              shell_complete=complete_sessions)
@click.option("--all", "all_", is_flag=True, help="Include cancelled and done tasks, every agent.")
@json_option
def list_(agent, session, all_, json_):
    """List tasks with next run, last run status and whether they are enabled."""
    from fased.agents import get_agent
    from fased.sessions import get_session
    from fased.tasks import task_dict

    con = store().db()
    clauses, params = [], []
    if agent or session or not all_:
        agent_id = get_agent(con, agent)["id"]
        clauses.append("agent = ?")
        params.append(agent_id)
        if session:
            clauses.append("session = ?")
            params.append(get_session(con, agent_id, session, include_deleted=True)["id"])
    if not all_:
        clauses.append("state IN ('active', 'paused')")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = [task_dict(con, r) for r in con.execute(
        f"SELECT * FROM tasks {where} ORDER BY created_seq", params)]
    if json_:
        echo_json(rows)
        return
    if not rows:
        note("No tasks" + ("" if all_ else " (`--all` shows cancelled and done ones)")
             + ': `fased task new --every 1h --message "check the build"`.')
        return
    table([(r["id"], r["agent"], r["session"], _schedule(r), shown_time(r["next_run"]),
            _status(r["last_status"]), r["state"], r["name"] or r["message"][:40]) for r in rows],
          ("ID", "AGENT", "SESSION", "SCHEDULE", "NEXT RUN (UTC)", "LAST", "STATE", "TASK"))


def _status(last_status: str | None) -> str:
    """A run's status in the words `task history` uses for it (the projection says `ok`)."""
    return {"ok": "completed", None: "-"}.get(last_status, last_status)


def _schedule(task: dict) -> str:
    """The schedule for people: a one-off time to the second, like every time shown."""
    spec = task["schedule_spec"]
    return f"at {shown_time(spec['expr'])} UTC" if spec["kind"] == "at" else task["schedule"]


@task.command("show")
@click.argument("task_id", metavar="ID", shell_complete=complete_tasks)
@click.option("-n", "last", type=count(1), default=10, show_default=True,
              help="How many recent runs to show.")
@json_option
def show(task_id, last, json_):
    """Show a task and its recent runs."""
    from fased.tasks import get_task, history, task_dict

    con = store().db()
    row = get_task(con, task_id)
    detail = {**task_dict(con, row), "history": history(con, row["id"], last)}
    if json_:
        echo_json(detail)
        return
    say(f"{detail['id']}{' (' + detail['name'] + ')' if detail['name'] else ''}: "
        f"{detail['state']}")
    times = ("next_run", "retry_at", "last_run", "created_at")
    for label, key in (("Agent", "agent"), ("Session", "session"), ("Schedule", "schedule"),
                       ("Message", "message"), ("Model", "model"), ("Deliver", "deliver"),
                       ("Created", "created_at"), ("Next run", "next_run"),
                       ("Retry at", "retry_at"), ("Last run", "last_run"),
                       ("Last status", "last_status"), ("Failures", "failures"),
                       ("Runs", "runs")):
        value = detail[key]
        if value not in (None, ""):
            if key == "schedule":
                value = _schedule(detail)
            elif key == "last_status":
                value = _status(value)
            elif key in times:
                value = f"{shown_time(value)} UTC"
            say(f"  {label + ':':<13}{value}")
    _print_history(detail["history"])


def _print_history(runs: list[dict]) -> None:
    if not runs:
        return
    say("  Recent runs (UTC):")
    for r in runs:
        extra = []
        if r["skipped"]:
            extra.append(f"{r['skipped']} missed run(s) skipped")
        if r["manual"]:
            extra.append("manual")
        if r["retry"]:
            extra.append("retry")
        if r["error"]:
            extra.append(r["error"][:80])
        if r["delivery"]:
            extra.append(f"delivery {'ok' if r['delivery_ok'] else 'failed'} "
                         f"({r['delivery']})" + (f": {r['delivery_error']}"
                                                 if r["delivery_error"] else ""))
        say(f"    {shown_time(r['fired_at'])}  {r['turn']}  {r['status']}"
            + (f"  [{'; '.join(extra)}]" if extra else ""))


@task.command("next")
@click.option("--agent", "-a", "agent", metavar="ID", help="Only this agent's tasks (default: "
              "every agent's, as `fased run` fires them).", shell_complete=complete_agents)
@click.option("--at", "at", metavar="TIME", help="Look from this time instead of now: RFC "
              "3339, a local time (09:00 is its next occurrence) or from now (2h).")
@json_option
def next_(agent, at, json_):
    """When each active task fires next, and which missed runs fold into it. Changes nothing.

    With --at, what a `fased run --once` at that time would fire (if nothing ran before):
    the occurrence each due task runs for and how many missed runs fold into it; the others
    show when they fall due. It asks the same code that fires tasks in `fased run`.

    \b
    Examples:
      fased task next
      fased task next --at 09:00            # what would fire at 09:00?
      fased task next --at 2026-11-21T18:00Z --json
      fased run --dry-run                   # everything a run --once would do now
    """
    from fased.agents import get_agent
    from fased.preview import next_fires
    from fased.schedule import parse_future_time

    st = store()
    now = st.clock()
    when = now
    if at is not None:
        when = parse_future_time(at, now=now)
        if when < now:
            raise UsageError(f"--at {at!r} is in the past", hint="give a later time, or "
                             "leave --at out to look from now")
    if agent:
        agent = get_agent(st.db(), agent)["id"]
    rows = next_fires(st, when, agent=agent)
    if json_:
        echo_json(rows)
        return
    if not rows:
        note("No active tasks. Create one: fased task new --every 1h --message TEXT")
        return

    def fires(r: dict) -> str:
        if r["waits_for"]:
            return f"when {r['waits_for']} is answered"
        if r["due"]:
            return "now" if at is None else r["fires_at"][:19]
        return r["fires_at"][:19] if r["fires_at"] else "never"

    def what(r: dict) -> str:
        if r["retry"]:
            return "retry after a failure"
        if r["due"] and r["skipped"]:
            return f"for {r['occurrence'][:19]}, folding {r['skipped']} missed run(s)"
        return f"for {r['occurrence'][:19]}" if r["occurrence"] else ""

    table([(r["task"], r["agent"], r["session"], r["schedule"], fires(r), what(r))
           for r in rows], ("ID", "AGENT", "SESSION", "SCHEDULE", "FIRES (UTC)", "RUN"))


@task.command("deliver")
@click.argument("task_id", metavar="ID", shell_complete=complete_tasks)
@click.option("--turn", metavar="TURN", help="The run to deliver (default: the latest "
              "completed one); `fased task history ID` lists them.")
@json_option
def deliver_(task_id, turn, json_):
    """Deliver a run's reply to the task's target now.

    `fased run` delivers each reply itself and retries a failed delivery on later ticks, up
    to 5 tries. This sends it again whatever happened before: after a webhook was down for
    longer, or to resend a reply. Recorded like any delivery (`task.delivered`); a stdout
    target prints the reply here.

    \b
    Examples:
      fased task deliver task-1
      fased task deliver task-1 --turn t-0123456789ab --json

    \b
    Exit codes: 0 delivered, 1 the delivery failed (recorded) or no such run, 2 no target.
    """
    from fased.commands.output import echo_reply
    from fased.tasks import deliver_again

    replies: list[str] = []

    def emit(delivery: dict) -> None:
        if json_:
            replies.append(delivery["reply"])
        else:
            echo_reply(delivery["reply"])

    outcome = deliver_again(store(), task_id, turn, emit)
    if json_:
        echo_json({**outcome, **({"reply": replies[0]} if replies else {})})
    elif outcome["target"] != "stdout" and outcome["ok"]:
        say(f"Delivered turn {outcome['turn']} of {task_id} to {outcome['target']}.")
    if not outcome["ok"]:
        raise FasedError(f"delivery to {outcome['target']} failed: {outcome['error']}",
                         hint="the reply stays in the session and in `fased task history`")


@task.command("history")
@click.argument("task_id", metavar="ID", shell_complete=complete_tasks)
@click.option("-n", "last", type=count(1), help="Only the last N runs.")
@json_option
def history_(task_id, last, json_):
    """A task's runs: when it fired, skipped runs, status, delivery."""
    from fased.tasks import get_task, history

    con = store().db()
    runs = history(con, get_task(con, task_id)["id"], last)
    if json_:
        echo_json(runs)
        return
    if not runs:
        note(f"No runs of {task_id} yet: `fased run` fires it when it is due; "
             f"`fased task run {task_id}` fires it now.")
        return
    table([(shown_time(r["fired_at"]), r["turn"], r["status"], r["skipped"],
            "-" if r["delivery"] is None else ("ok" if r["delivery_ok"] else "failed"),
            r["error"] or "") for r in runs],
          ("FIRED (UTC)", "TURN", "STATUS", "SKIPPED", "DELIVERY", "ERROR"))


@task.command("run")
@click.argument("task_id", metavar="ID", shell_complete=complete_tasks)
@click.option("--queue", "queue_only", is_flag=True,
              help="Only queue the turn for `fased run`.")
@json_option
def run_(task_id, queue_only, json_):
    """Fire a task now, through the same path as a scheduled run, and print the reply.

    The reply then goes to the task's delivery target, as `fased run` would send it. A run
    by hand is outside the schedule: it never completes an --at task, a failure of it is not
    retried automatically, and the next scheduled run stays as it was.

    \b
    Exit codes: 0 answered (and delivered), 1 the turn or its delivery failed (the
    target's error on stderr; the reply stays in the session), 5 every model failed.
    """
    from fased.chat import Queued, answer, take_back
    from fased.commands.output import echo_reply, turn_json
    from fased.tasks import deliver_pending, fire_drafts, get_task, require_active

    if not queue_only:
        from fased.local import check_settings

        check_settings()  # the embedded model's, before the task fires
    from fased.runner import Stop, sigterm_stops
    from fased.signals import held

    st = store()

    def decide(con):
        row = get_task(con, task_id)
        require_active(row, "active", "paused")
        return fire_drafts(con, row, st.clock(), manual=True)

    queued = None
    try:
        # `timeout 30 fased task run ...` sends SIGTERM: the run's turn ends, as in chat
        with sigterm_stops():
            with held():  # a signal while the run is recorded comes once it can be withdrawn
                outcome = st.transact(decide)
                fired = next(e for e in outcome.events if e["type"] == "turn.queued")
                queued = Queued(fired["data"]["turn"], fired["data"]["agent"],
                                fired["data"]["session"], fired["seq"], outcome.replayed)
            if queue_only:
                click.echo(queued.turn)
                return
            result = answer(st, queued, note=note)
    except KeyboardInterrupt:
        # before its turn started (while an earlier turn of the session was answered first):
        # as `fased chat` does, the run is withdrawn so that no runner answers it later
        if queued is not None and not queue_only:
            take_back(st, queued, "interrupted", note)
        raise
    except Stop:
        answering = queued is not None and not queue_only
        if answering and not take_back(st, queued, "terminated", note):
            note(f"fased: terminated; turn {queued.turn} ended with what was said")
        raise click.exceptions.Exit(143) from None
    shown: list[str] = []

    def emit(delivery: dict) -> None:
        """A stdout target: this run's reply is the one the command prints (once); a pending
        reply of another task goes to stderr, so stdout holds only this run's."""
        if delivery["turn"] != queued.turn:
            note(delivery["reply"])
        elif not json_:
            echo_reply(delivery["reply"])
            shown.append(delivery["turn"])

    delivered = [d for d in deliver_pending(st, emit) if d["turn"] == queued.turn]
    if json_:
        echo_json({**turn_json(result, outcome.replayed),
                   **({"delivery": delivered[0]} if delivered else {})})
    elif result.state == "completed":
        if not shown:
            echo_reply(result.reply)
    else:
        say(f"Error: {result.error}")
    if result.state != "completed":
        raise click.exceptions.Exit(5 if result.error_class == "models_failed" else 1)
    if delivered and not delivered[0]["ok"]:
        raise FasedError(f"delivery to {delivered[0]['target']} failed: "
                         f"{delivered[0]['error']}",
                         hint="the reply stays in the session; `fased task deliver "
                         f"{task_id}` sends it again")


def _set_state(task_id: str, event: str, allowed: tuple[str, ...], verb: str) -> None:
    from datetime import UTC, datetime

    from fased.schedule import next_run
    from fased.store import Draft
    from fased.tasks import get_task, require_active, schedule_of
    from fased.timeparse import format_ts

    st = store()

    def decide(con):
        row = get_task(con, task_id)
        require_active(row, *allowed)
        data = {"task": row["id"], "agent": row["agent"]}
        if event == "task.resumed":
            schedule = schedule_of(row)
            when = next_run(schedule, st.clock())
            if when is None and schedule.kind == "at" and not row["last_occurrence"]:
                when = next_run(schedule, datetime.min.replace(tzinfo=UTC))  # overdue: now
            data["next_run"] = None if when is None else format_ts(when)
        if event == "task.cancelled":
            from fased.heartbeat import refuse_change

            refuse_change(row, "turn off")
            data["reason"] = "cancelled"
        return [Draft(event, f"task:{row['id']}", data)]

    st.transact(decide)
    click.echo(f"{verb} {task_id}.")


@task.command("cancel")
@click.argument("task_id", metavar="ID", shell_complete=complete_tasks)
def cancel(task_id):
    """Cancel a task for good (its history is kept)."""
    _set_state(task_id, "task.cancelled", ("active", "paused"), "Cancelled")


@task.command("pause")
@click.argument("task_id", metavar="ID", shell_complete=complete_tasks)
def pause(task_id):
    """Stop firing a task until it is resumed."""
    _set_state(task_id, "task.paused", ("active",), "Paused")


@task.command("resume")
@click.argument("task_id", metavar="ID", shell_complete=complete_tasks)
def resume(task_id):
    """Fire a paused task again (from its next occurrence; missed ones are not replayed)."""
    _set_state(task_id, "task.resumed", ("paused",), "Resumed")


@task.command("edit")
@click.argument("task_id", metavar="ID", shell_complete=complete_tasks)
@click.option("--session", "-s", metavar="ID|NAME", help="Move the task to another session.",
              shell_complete=complete_sessions)
@_schedule_options
@click.option("--keep-after-run/--no-keep-after-run", default=None,
              help="Keep an --at task after it succeeds.")
def edit(task_id, session, cron, tz, every, at, message, name, model, deliver, keep_after_run):
    """Change any of a task's settings (a new schedule starts from now)."""
    from fased.models import check_ref_for_agent
    from fased.schedule import next_run, parse_schedule
    from fased.sessions import get_session
    from fased.store import Draft
    from fased.tasks import (
        check_target,
        get_task,
        keep_webhook,
        recorded_target,
        require_active,
        schedule_of,
        session_target,
    )
    from fased.timeparse import format_ts

    st = store()
    now = st.clock()
    new_schedule = None
    if cron and tz is None:  # a new cron expression keeps the task's zone
        old = schedule_of(get_task(st.db(), task_id))
        tz = old.tz if old.kind == "cron" else None
    if cron or every or at:
        new_schedule = parse_schedule(cron=cron, every=every, at=at, tz=tz, now=now)
    elif tz:
        raise UsageError("--tz goes with --cron or --at")

    target, webhook = recorded_target(
        check_target(deliver) if deliver not in (None, "", "none") else None)

    def decide(con):
        from fased.heartbeat import refuse_change

        row = get_task(con, task_id)
        require_active(row, "active", "paused")
        refuse_change(row, "change")
        data: dict = {"task": row["id"], "agent": row["agent"]}
        if new_schedule is not None:
            data["schedule"] = new_schedule.to_dict()
            when = next_run(new_schedule, now)
            data["next_run"] = None if when is None else format_ts(when)
        if message is not None:
            if not message.strip():
                raise UsageError("--message must not be empty")
            data["message"] = message
        if name is not None:
            data["name"] = name or None
        if model is not None:
            data["model"] = check_ref_for_agent(con, model) if model else None
        if deliver is not None:
            data["deliver"] = target
        if keep_after_run is not None:
            data["keep_after_run"] = keep_after_run
        if session is not None:
            data["session"] = get_session(con, row["agent"], session)["id"]
        if data.get("deliver", row["deliver"]) == "channel":
            session_target(con, data.get("session", row["session"]), "channel")
        if len(data) == 2:
            raise UsageError("nothing to change", hint="give any option of `fased task new`")
        return [Draft("task.updated", f"task:{row['id']}", data)]

    with st.log.locked():  # a new webhook's URL and the change land together
        outcome = st.transact(decide)
        if deliver is not None and not outcome.replayed:
            keep_webhook(st, task_id, webhook)
    click.echo(f"Updated {task_id}.")
