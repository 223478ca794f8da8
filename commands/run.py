"""`fased run`: the foreground loop that answers queued turns and fires due tasks."""

from __future__ import annotations

import time

import click

from fased.bounds import LEASE_SECONDS, POLL_SECONDS
from fased.commands.output import (
    agent_option,
    echo_json,
    echo_jsonl,
    echo_reply,
    note,
    say,
    store,
    turn_json,
)
from fased.commands.types import count, seconds
from fased.errors import EXIT_ERROR, EXIT_MODELS_FAILED
from fased.safetext import describe


@click.command()
@click.option("--once", is_flag=True,
              help="Fire what is due, answer what is queued, then exit (for cron and CI).")
@click.option("--until-idle", is_flag=True,
              help="Keep going until nothing is queued or running anywhere, then exit.")
@agent_option
@click.option("--max-turns", type=count(1), metavar="N", help="Stop after N turns.")
@click.option("--poll", type=seconds(POLL_SECONDS), default=1.0, show_default=True,
              metavar="SECONDS", help="How often to look for new work when idle.")
@click.option("--lease", type=seconds(LEASE_SECONDS), default=60.0, show_default=True,
              metavar="SECONDS", help="How long a claimed turn is ours without a heartbeat; "
              "after a crash, another runner takes it over then.")
@click.option("--dry-run", is_flag=True,
              help="Say what `run --once` would do now (deliveries, tasks fired with the "
              "missed runs they fold, turns answered in order) and change nothing.")
@click.option("--channels", is_flag=True,
              help="Also poll the chat accounts (`fased channel list`) while idle: "
              "long-polls up to --poll seconds, so due tasks wait at most that long.")
@click.option("json_", "--json", is_flag=True, help="One JSON line per finished turn on stdout "
              "(with --dry-run: the plan as one JSON document).")
def run(once, until_idle, agent, max_turns, poll, lease, dry_run, channels, json_):
    """Answer queued turns (oldest first, one at a time per session) and fire due tasks.

    Each tick also keeps every agent's heartbeat task in step with its heartbeat settings
    (`fased agent heartbeat`); a heartbeat's HEARTBEAT_OK reply is never printed.

    Several runners may run at once; each turn is answered exactly once. A runner that is
    killed loses its turns to the others when their lease runs out, or at once when it ran
    on the same host and its process is gone. SIGINT or SIGTERM gives the current turn back
    to the queue (recorded), then exits.

    \b
    Examples:
      fased run                      # in the foreground, until Ctrl-C
      fased run --once               # crontab: * * * * * fased run --once
      fased run --until-idle --json  # CI: drain the queue, one JSON line per turn
      fased run --agent ops --max-turns 10
      fased run --dry-run            # what --once would do now; claims and records nothing
      fased run --channels           # and answer Telegram (fased channel add telegram)

    Hooks (fased.json `hooks`, see `fased hooks --help`) run as the loop goes, each in a
    worker thread so a slow one never holds up a turn; --once and --until-idle wait for the
    deliveries they started before exiting.

    A turn that hits a bug in fased (or any error nothing classified) fails alone, recorded
    with error class `internal`; the runner goes on with the next one.

    \b
    Exit codes: 0 ok, 1 a turn failed with an internal error, 4 a result could not be
    recorded (the home is unusable), 5 a turn failed because every model failed, 130/143 on
    a signal.
    """
    if dry_run:
        _dry_run(agent, max_turns, json_)
        return
    from fased.local import check_settings
    from fased.runner import Runner, Stop, sigterm_stops

    check_settings()  # the embedded model's, before a turn is claimed
    counts = {"completed": 0, "failed": 0, "models_failed": 0, "internal": 0}
    try:
        with sigterm_stops():
            st = store()
            runner = Runner(st, agent=agent, lease=lease, note=note)
            with runner.letting_go():
                _loop(st, runner, once, until_idle, max_turns, poll, json_, counts,
                      _ticker(st) if channels else None)
    except Stop:
        note("fased: terminated; the current turn went back to the queue")
        raise click.exceptions.Exit(143) from None
    if counts["completed"] or counts["failed"]:
        note(f"fased: {counts['completed']} turn(s) answered, {counts['failed']} failed")
    if counts["models_failed"]:
        raise click.exceptions.Exit(EXIT_MODELS_FAILED)
    if counts["internal"]:
        raise click.exceptions.Exit(EXIT_ERROR)


def _ticker(st):
    from fased.channels.poll import Ticker

    return Ticker(st, note)


def _loop(st, runner, once, until_idle, max_turns, poll, json_, counts, ticker=None) -> None:
    import contextlib

    from fased.commands.approve import show_tool
    from fased.tasks import deliver_pending, fire_due_tasks

    def emit(delivery: dict) -> None:
        """A task's reply for --deliver stdout: the text, or a JSON line with --json."""
        if json_:
            echo_jsonl({"delivery": "stdout", **delivery})
        else:
            echo_reply(delivery["reply"])

    from fased.approvals import expire_due
    from fased.hooks.deliver import Dispatcher

    hooks = Dispatcher(st.home, command=st.command, report=_hook_report, clock=st.clock)

    def tick_hooks() -> None:
        """Hooks run in worker threads, so a slow one never holds up a turn."""
        hooks.tick(st.db(check_files=False), st.log.head().seq)

    def drain_hooks() -> None:
        hooks.drain(lambda: st.db(check_files=False), lambda: st.log.head().seq)
        for exc in hooks.errors:
            note(f"fased: a hook delivery stopped: {describe(exc)}; its lease runs out and "
                 "another run takes it over")

    processed = 0
    while True:
        fire_due_tasks(st, runner, emit)
        expire_due(st)  # approvals nobody decided in time: their turns go on, denied
        claim = runner.claim_next()
        if claim is not None:
            typing = contextlib.nullcontext()
            if ticker is not None:
                from fased.channels.poll import typing_for

                typing = typing_for(st, claim.session, ticker.clients)
            with typing:
                result = runner.run(claim, None, interrupt="abandon", on_tool=show_tool)
            if ticker is not None:
                ticker.tick(0)  # its reply (or approval prompt) goes out now
            processed += 1
            if result.state in ("completed", "failed"):
                counts[result.state] += 1
            if result.error_class == "models_failed":
                counts["models_failed"] += 1
            if result.state == "failed" and result.error_class in ("internal", "error"):
                counts["internal"] += 1
            if json_:
                echo_jsonl(turn_json(result))
            note(f"fased: {result.turn} ({result.agent}/{result.session}) {result.state}"
                 + (f" via {result.model}" if result.model else "")
                 + (f": {result.error}" if result.error else "")
                 + (f": waits for approval {result.approval} (fased approvals approve "
                    f"{result.approval})" if result.approval else ""))
            tick_hooks()
            if max_turns and processed >= max_turns:
                deliver_pending(st, emit)
                drain_hooks()
                return
            continue
        tick_hooks()
        if ticker is not None:
            received = ticker.tick(0 if once or until_idle else min(poll, 0.2)
                                   if runner.waiting else poll)
            if received and (once or until_idle):
                continue  # what the poll queued is answered before exiting
        if once and not runner.waiting:
            drain_hooks()
            return
        if until_idle and not runner.waiting:
            queued, running = runner.pending()
            if queued == 0 and running == 0:
                drain_hooks()
                return
        if ticker is None:
            time.sleep(min(poll, 0.2) if runner.waiting else poll)


def _hook_report(d, run, outcome) -> None:
    """A line on stderr for each hook delivery that ended (from its worker thread)."""
    if outcome == "delivered":
        return
    what = {"retry": "failed, to be retried", "failed": "marked failed",
            None: "was taken over by another runner"}[outcome]
    note(f"fased: hook {d.spec.name} on seq {d.event_seq} ({d.event_type}) {what}: "
         f"{run.describe()}")


def _dry_run(agent, max_turns, json_) -> None:
    """Print what `fased run --once` would do now (fased.preview.plan_run)."""
    from fased.agents import get_agent
    from fased.preview import plan_run

    st = store()
    if agent:
        agent = get_agent(st.db(), agent)["id"]
    plan = plan_run(st, st.clock(), agent=agent, max_turns=max_turns)
    if json_:
        echo_json(plan)
        return
    say(f"Dry run at {_t(plan['now'])}: nothing is claimed or recorded. `fased run --once` would:")
    for d in plan["deliveries"]:
        say(f"  deliver  the reply of {d['turn'] or 'its new turn'} ({d['task']}) to "
            f"{d['target']}")
    for f in plan["fires"]:
        folded = f", folding {f['skipped']} missed run(s)" if f["skipped"] else ""
        what = "retry" if f["retry"] else f"fire for {_t(f['occurrence']) or 'now'}"
        say(f"  {what}  {f['task']} ({f['agent']}/{f['session']}){folded}; next run "
            f"{_t(f['next_run']) or '-'}")
    for k in plan["skips"]:
        say(f"  skip  {k['task']} (heartbeat of {k['agent']}) for {_t(k['occurrence'])}: "
            f"{k['reason']}")
    for h in plan["held"]:
        say(f"  hold  {h['task']}: due, but its turn {h['waits_for']} is not answered yet")
    for a in plan["expired_approvals"]:
        say(f"  expire  approval {a['approval']} (turn {a['turn']}): the call is denied")
    for n, t in enumerate(plan["turns"], 1):
        merged = f" + {len(t['merged'])} merged" if t["merged"] else ""
        say(f"  answer {n}.  {t['turn'] or 'new turn of ' + t['task']} ({t['agent']}/"
            f"{t['session']}{merged}) with {t['models'][0] if t['models'] else '?'}: "
            f"{' '.join(t['message'].split())[:60]}")
    if plan["waiting"]:
        say("  wait  for the debounce of a collect-mode session, then answer its turns")
    if not any(plan[k] for k in ("deliveries", "fires", "skips", "held", "expired_approvals",
                                 "turns", "waiting")):
        say("  nothing: no reply to deliver, no task due, no turn queued.")


def _t(ts: str | None) -> str:
    """A time for people, to the second (--json keeps full precision)."""
    return f"{ts[:19]}Z" if ts else ""
