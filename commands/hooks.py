"""`fased hooks`: the commands fased.json's hooks run on events, and how their deliveries went."""

from __future__ import annotations

import click

from fased.commands.main import FasedGroup
from fased.commands.output import echo_json, echo_jsonl, json_option, note, shown_time, store, table
from fased.errors import EXIT_ERROR, FasedError, NotFoundError, UsageError


@click.group(cls=FasedGroup)
def hooks() -> None:
    """Your own commands, run on the agent's events (fased.json `hooks`).

    A hook is `{"on": "task.*", "run": "COMMAND"}` in fased.json's `hooks` or an agent's
    `agents.list[].hooks` (optional: id, agent, session, timeoutSeconds, backoffSeconds).
    `fased run` delivers each matching event to it once, in order (`fased hooks run --once`
    from cron); the command gets the event as JSON on stdin and FASED_EVENT, FASED_SEQ,
    FASED_AGENT, FASED_SESSION, FASED_HOME, FASED_HOOK, and runs in the agent's workspace
    without credentials. A new hook starts with the events after it was added.

    \b
    Examples:
      fased config set hooks '[{"id": "notify", "on": "turn.failed", "run": "notify-send fased"}]'
      fased hooks list
      fased hooks status
      fased hooks test notify                 # on the latest turn.failed; records nothing
      fased hooks replay notify --since 1d    # deliver the last day's events again
      fased hooks run --once                  # crontab: * * * * * fased hooks run --once
    """


def _spec(con, name: str):
    from fased.hooks.deliver import hook_row
    from fased.hooks.spec import HookSpec

    row = hook_row(con, name)
    if row is None or not row["active"]:
        known = [r[0] for r in con.execute("SELECT name FROM hooks WHERE active = 1")]
        raise NotFoundError(f"no hook {name!r}",
                            hint=f"hooks: {', '.join(known)}" if known else
                            "add one to fased.json `hooks`; `fased hooks --help` shows how")
    return HookSpec.loads(row["spec"]), row


def _report(json_: bool):
    def report(d, run, outcome) -> None:
        if json_:
            echo_jsonl({"hook": d.spec.name, "event_seq": d.event_seq,
                        "event_type": d.event_type, "attempt": d.attempt, "replay": d.replay,
                        "outcome": outcome, "exit_code": run.exit_code,
                        "timed_out": run.timed_out, "duration_ms": run.duration_ms})
            return
        what = {"delivered": "delivered", "retry": "failed, to be retried",
                "failed": "marked failed", None: "taken over by another runner"}
        note(f"fased: hook {d.spec.name}: seq {d.event_seq} ({d.event_type}) "
             f"{what.get(outcome, outcome)}" + ("" if run.ok else f" ({run.describe()})"))
    return report


@hooks.command("list")
@json_option
def list_(json_: bool) -> None:
    """The hooks fased.json holds, and since which seq each gets events."""
    from fased.hooks.deliver import hook_rows
    from fased.hooks.spec import HookSpec

    st = store()
    found = []
    for row in hook_rows(st.db()):
        found.append({**HookSpec.loads(row["spec"]).to_dict(), "added_seq": row["added_seq"],
                      "added_at": row["added_at"]})
    if json_:
        echo_json(found)
        return
    if not found:
        note("No hooks. Add one: fased config set hooks "
             "'[{\"on\": \"turn.failed\", \"run\": \"COMMAND\"}]'")
        return
    table([(h["hook"], h["on"], h["scope"] or "-", h["agent"] or "*", h["session"] or "*",
            f"{h['timeoutSeconds']:g}s", h["added_seq"], h["run"]) for h in found],
          ("HOOK", "ON", "IN", "AGENT", "SESSION", "TIMEOUT", "SINCE SEQ", "RUN"))


@hooks.command("status")
@json_option
def status(json_: bool) -> None:
    """Each hook's cursor, last delivery, retries and the events marked failed."""
    from fased.hooks.deliver import hook_rows

    st = store()
    con = st.db()
    report = []
    for row in hook_rows(con, active_only=False):
        failures = [dict(f) for f in con.execute(
            "SELECT event_seq, event_type, attempts, error, failed_at FROM hook_failures "
            "WHERE hook = ? ORDER BY event_seq", (row["name"],))]
        report.append({
            "hook": row["name"], "active": bool(row["active"]), "cursor": row["cursor"],
            "delivered": row["delivered"], "failed": row["failed"], "replays": row["replays"],
            "last_delivered": {"seq": row["last_seq"], "at": row["last_at"]}
            if row["last_seq"] is not None else None,
            "in_flight": {"seq": row["inflight_seq"], "attempt": row["inflight_attempt"],
                          "runner": row["inflight_runner"], "lease_until": row["inflight_lease"]}
            if row["inflight_seq"] is not None else None,
            "retry": {"seq": row["retry_seq"], "attempt": row["retry_attempt"] + 1,
                      "at": row["retry_at"]} if row["retry_seq"] is not None else None,
            "last_error": row["last_error"], "failures": failures})
    if json_:
        echo_json(report)
        return
    if not report:
        note("No hooks. `fased hooks --help` shows how to add one.")
        return

    def now_doing(h: dict) -> str:
        if h["in_flight"]:
            return f"running seq {h['in_flight']['seq']} (attempt {h['in_flight']['attempt']})"
        if h["retry"]:
            return (f"retry seq {h['retry']['seq']} (attempt {h['retry']['attempt']}) at "
                    f"{shown_time(h['retry']['at'])}")
        return "idle" if h["active"] else "removed"

    table([(h["hook"], h["cursor"],
            f"{h['last_delivered']['seq']} at {shown_time(h['last_delivered']['at'])}"
            if h["last_delivered"] else "-", h["delivered"], h["failed"], now_doing(h))
           for h in report],
          ("HOOK", "CURSOR", "LAST DELIVERED", "DELIVERED", "FAILED", "NOW"))
    for h in report:
        for f in h["failures"]:
            note(f"failed: {h['hook']} seq {f['event_seq']} ({f['event_type']}) after "
                 f"{f['attempts']} attempt(s): {f['error']}")


@hooks.command("test")
@click.argument("name", metavar="HOOK")
@click.option("--event", "seq", type=click.IntRange(1), metavar="SEQ",
              help="Run it on this event (default: the latest event it takes).")
@json_option
def test(name: str, seq: int | None, json_: bool) -> None:
    """Run a hook now on one past event and show what it did; records nothing.

    Its output goes to stdout, its exit code to stderr; fased exits 1 when the command
    failed.

    \b
    Examples:
      fased hooks test notify
      fased hooks test notify --event 1234
    """
    from fased.hooks.command import hook_environment, run_command, workspace_of
    from fased.hooks.spec import matches
    from fased.upcast import upcast

    st = store()
    con = st.db()
    spec, _ = _spec(con, name)
    event = None
    if seq is not None:
        if seq > st.log.head().seq:
            raise UsageError(f"no event {seq}: the log ends at seq {st.log.head().seq}")
        event = upcast(next(iter(st.log.read(seq, seq))))
        if not matches(spec, event):
            note(f"fased: note: hook {name} does not take event {seq} ({event['type']}); "
                 "running it anyway")
    else:
        for e in st.log.read_reverse():
            e = upcast(e)
            if matches(spec, e):
                event = e
                break
        if event is None:
            raise NotFoundError(f"no event in the log matches hook {name} (on {spec.on})",
                                hint="give one with --event SEQ")
    env = hook_environment(con, st.home, spec, event)
    run = run_command(spec, event, cwd=workspace_of(con, st.home, spec, event), env=env)
    if json_:
        echo_json({"hook": name, "event_seq": event["seq"], "event_type": event["type"],
                   "exit_code": run.exit_code, "timed_out": run.timed_out,
                   "duration_ms": run.duration_ms, "output": run.output,
                   "output_bytes": run.output_bytes, "error": run.error})
    else:
        click.echo(run.output, nl=False)
        note(f"fased: hook {name} on seq {event['seq']} ({event['type']}): {run.describe()} "
             f"after {run.duration_ms} ms (nothing recorded)")
    if not run.ok:
        raise click.exceptions.Exit(EXIT_ERROR)


def _since(ctx, param, value):
    from fased.commands.replay import _bound

    return _bound(ctx, param, value)


@hooks.command("replay")
@click.argument("name", metavar="HOOK")
@click.option("--since", required=True, metavar="SEQ|TIME", callback=_since,
              help="Deliver again the events it takes from this seq, RFC 3339 time, or this "
              "long ago (30m, 2h, 1d).")
@click.option("json_", "--json", is_flag=True, help="One JSON line per delivery on stdout.")
def replay(name: str, since, json_: bool) -> None:
    """Deliver a hook's events since TIME again, now, each once (recorded).

    Events from before the hook was added are delivered too. Replays are recorded
    (hook.started and hook.finished with replay: true) and do not move the hook's cursor;
    a failure is reported, not retried. Exits 1 when any delivery failed.

    \b
    Examples:
      fased hooks replay notify --since 1d
      fased hooks replay notes --since 2026-11-01T00:00:00Z --json
    """
    from fased.audit import EventFilter, select_events
    from fased.commands.replay import _first_seq_since
    from fased.hooks.deliver import replay as replay_events
    from fased.hooks.spec import matches
    from fased.runner import runner_id
    from fased.upcast import upcast

    st = store()
    spec, _ = _spec(st.db(), name)
    head = st.log.head().seq
    start = 1 if isinstance(since, int) else _first_seq_since(st, since)
    flt = EventFilter(since=since, until=head)
    chosen = [e for e in (upcast(x) for x in select_events(st.log, flt, None, start))
              if matches(spec, e)]
    if not chosen:
        note(f"fased: no event since then matches hook {name} (on {spec.on})")
        return
    done = replay_events(st, spec, chosen, runner_id(), _report(json_), st.clock)
    failed = sum(1 for _, _, outcome in done if outcome != "delivered")
    note(f"fased: hook {name}: {len(done) - failed} event(s) delivered again, {failed} failed")
    if failed:
        raise click.exceptions.Exit(EXIT_ERROR)


@hooks.command("run")
@click.option("--once", is_flag=True, required=True,
              help="Deliver what can be delivered now, then exit (for cron).")
@click.option("json_", "--json", is_flag=True, help="One JSON line per delivery on stdout.")
def run_(once: bool, json_: bool) -> None:
    """Deliver pending events to every hook, then exit; `fased run` does this as it goes.

    Retries that are not due yet wait for the next run. Exits 0 whatever the hooks did
    (`fased hooks status` shows failures).

    \b
    Examples:
      fased hooks run --once
      * * * * * fased hooks run --once      # crontab, beside `fased run --once`
    """
    from fased.hooks.deliver import Dispatcher
    from fased.safetext import describe

    st = store()
    hooks_ = Dispatcher(st.home, command=st.command, report=_report(json_), clock=st.clock)
    hooks_.drain(lambda: st.db(check_files=False), lambda: st.log.head().seq)
    for exc in hooks_.errors:
        if isinstance(exc, FasedError):
            raise exc
        raise FasedError(f"a hook delivery stopped: {describe(exc)}",
                         hint="its lease runs out and the next run takes it over")
