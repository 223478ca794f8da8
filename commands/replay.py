"""`fased replay`: the audit trail, and rebuilding or verifying the projections."""

from __future__ import annotations

import json
import time

import click

from fased.commands.output import (
    columns_of,
    echo_json,
    echo_jsonl,
    json_option,
    note,
    say,
    shown_time,
    store,
    table,
    table_line,
)
from fased.commands.types import complete_agents, complete_sessions, count
from fased.errors import EXIT_ERROR, UsageError


def _bound(ctx: click.Context, param: click.Parameter, value: str | None):
    """Parse --since/--until: a seq, an RFC 3339 time or a duration ago."""
    if value is None:
        return None
    from fased.audit import parse_bound
    from fased.timeparse import utc_now

    now = utc_now()  # a bad FASED_NOW is an error of its own, not of this option's value
    try:
        return parse_bound(value, now=now)
    except UsageError as exc:
        raise click.BadParameter(
            f"{exc.message} ({exc.hint})" if exc.hint else exc.message) from None


@click.command()
@click.option("--since", metavar="SEQ|TIME", callback=_bound,
              help="From this seq, RFC 3339 time, or this long ago (30m, 2h, 1d).")
@click.option("--until", metavar="SEQ|TIME", callback=_bound,
              help="Up to this seq or time: a time means up to the last event stamped at or "
              "before it, and everything before that in the log.")
@click.option("types", "--type", "-t", metavar="GLOB", multiple=True,
              help="Event type, e.g. 'turn.*' (repeatable).")
@click.option("streams", "--stream", metavar="GLOB", multiple=True,
              help="Stream, e.g. 'session:*' (repeatable).")
@click.option("--agent", "-a", metavar="ID", help="Events of this agent and its sessions.",
              shell_complete=complete_agents)
@click.option("--session", "-s", metavar="ID", help="Events of this session.",
              shell_complete=complete_sessions)
@click.option("-n", "last", type=count(), metavar="N", help="Only the last N.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new events (Ctrl-C stops: exit 130).")
@click.option("--rebuild", is_flag=True,
              help="Rebuild all projections (state.db, transcripts, fased.json) from the log; "
                   "a big log uses two processes.")
@click.option("--verify", is_flag=True,
              help="Rebuild into a temporary place and compare with the live projections.")
@click.option("--at", "at", metavar="SEQ|TIME",
              help="Show agents, sessions and tasks as they were at this point (a time: the "
              "same point as --until TIME).")
@click.option("--turn", "turn", metavar="ID", help="Events of this turn (its steps and calls).")
@click.option("--request", "request", is_flag=True,
              help="With --turn: every model call of the turn exactly as it was sent "
              "(messages, tools, options), rebuilt from the log.")
@json_option
def replay(since, until, types, streams, agent, session, last, follow, rebuild, verify, at,
           turn, request, json_):
    """Show what happened, exactly: the event log, filtered.

    \b
    Examples:
      fased replay -n 20                  # the last 20 events
      fased replay --since 1d --type 'turn.*'
      fased replay --agent main --json | jq .data
      fased replay --since 120 --until 180
      fased replay --follow               # like tail -f
      fased replay --at 2026-11-20T18:00:00Z
      fased replay --verify               # exit 1 if state.db differs from the log
      fased replay --rebuild
      fased replay --turn t-1a2b3c4d5e6f --request   # what the model was sent

    Times: a seq number, an RFC 3339 time, a local time ('2026-11-21 09:00'), or a
    duration meaning that long ago (30m, 2h, 1d). The log is in seq order; a writer's clock
    may have stepped back, so stamps need not be. --until TIME and --at TIME both mean the
    log up to its last event stamped at or before TIME, with every event before that one
    whatever its stamp; --since TIME shows every event stamped at or after TIME.
    """
    modes = [m for m, on in (("--rebuild", rebuild), ("--verify", verify), ("--at", at),
                             ("--follow", follow)) if on]
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} cannot be combined")
    st = store()
    if rebuild:
        return _rebuild(st, json_)
    con = st.db(check_files=False)  # the log is verified first: damage anywhere is exit 4
    if request:
        if not turn:
            raise UsageError("--request goes with --turn ID")
        return _requests(st, con, turn, json_)
    if verify:
        return _verify(st, json_)
    if at:
        return _at(st, at, json_)
    from fased.audit import EventFilter, select_events

    if until is not None and not isinstance(until, int):
        until = _seq_at(st, until)  # as --at: a prefix of the log, in seq order

    flt = EventFilter(since=since, until=until, types=list(types), streams=list(streams),
                      agent=agent, session=session, turn=turn)
    start = 1
    if since is not None and not isinstance(since, int) and last is None:
        start = _first_seq_since(st, since)
    shown = list(select_events(st.log, flt, last, start))
    if not follow:
        _print(shown, json_, header=True)
        return
    columns = None if json_ else _Columns(st.log.head().seq)
    _print(shown, json_, header=True, columns=columns)
    _follow(st, flt, shown[-1]["seq"] if shown else st.log.head().seq, json_, not shown, columns)


def _seq_at(st, when) -> int:
    """The seq the log stood at at `when` (fased.audit.last_seq_at), helped by state.db's
    time blocks when it can be caught up; else by reading the whole log."""
    import sqlite3

    from fased.audit import last_seq_at
    from fased.errors import FasedError

    try:
        con = st.db(check_files=False)
    except (FasedError, sqlite3.Error, OSError):
        con = None
    return last_seq_at(st.log, when, con)


def _first_seq_since(st, since) -> int:
    """Where --since TIME can start reading (state.db knows each block's time range); from
    the start when state.db cannot be caught up (a home we may only read): still correct."""
    import sqlite3

    from fased.audit import first_seq_since
    from fased.errors import FasedError

    try:
        return first_seq_since(st.db(check_files=False), since)
    except (FasedError, sqlite3.Error, OSError):
        return 1


HEADERS = ("SEQ", "TIME (UTC)", "TYPE", "STREAM", "ACTOR", "DATA")


def _print(events: list[dict], json_: bool, header: bool, columns=None) -> None:
    from fased.redact import mask_event

    # what an older fased logged that is secret by today's rules is not printed again
    events = [mask_event(e) for e in events]
    if json_:
        for e in events:
            echo_jsonl(e)
        return
    rows = [(e["seq"], shown_time(e["ts"]), e["type"], e["stream"],
             e["meta"].get("actor", ""), _summary(e["data"])) for e in events]
    if columns is None:
        table(rows, HEADERS)
        return
    columns.print(rows, header)


class _Columns:
    """--follow's table: the first page and every row followed after it share one set of
    column widths, wide enough for what the log is likely to bring (every known event type,
    seqs ten times the head's), so a followed row lines up under the header. A cell longer
    than its column still shows whole, pushing the rest of its row only."""

    def __init__(self, head: int):
        from fased.schema import current_versions

        self.widths = [max(3, len(str(head * 10))), 19,
                       max(len(t) for t in current_versions()), 16, 8]

    def print(self, rows: list[tuple], header: bool) -> None:
        import shutil
        import sys

        from fased.bounds import printable

        if not rows:
            return
        cells = [["" if c is None else printable(str(c)) for c in row] for row in rows]
        if header:  # the first page: its own cells may widen the columns, once
            for row in cells:
                for i, cell in enumerate(row[:-1]):
                    self.widths[i] = max(self.widths[i], columns_of(cell))
            cells.insert(0, list(HEADERS))
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 0
        for row in cells:
            click.echo(table_line(row, self.widths, width))


def _requests(st, con, turn: str, json_: bool) -> None:
    from fased.audit import turn_requests

    calls = turn_requests(con, st.log, turn)
    if json_:
        echo_json(calls)
        return
    for c in calls:
        what = f"step {c['step']}" if c["step"] else "final answer"
        say(f"== model call {c['call']} of {c['of']} ({what}) · {c['model']} · "
                   f"seq {c['seq']} ==")
        names = ", ".join(t["name"] for t in c["tools"]) or "none"
        say(f"tools: {names}")
        if c["options"]:
            say("options: " + json.dumps(c["options"], ensure_ascii=False, sort_keys=True))
        for m in c["messages"]:
            head = m["role"]
            if m["role"] == "tool":
                head += f" {m['tool_call_id']} {m['name']}" + (" (error)" if m["is_error"]
                                                               else "")
            say(f"--- {head}")
            if m.get("content"):
                say(m["content"].rstrip("\n"))
            for call in m.get("tool_calls") or ():
                say(f"  -> {call['id']} {call['name']} {call['arguments']}")
        say("")


def _summary(data: dict) -> str:
    parts = []
    for key, value in data.items():
        if key == "request":  # hashes a person does not read; --turn ID --request shows it
            continue
        if key == "calls" and isinstance(value, list):
            value = " ".join(f"{c.get('name')}:{c.get('id')}" for c in value if isinstance(c, dict))
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        text = text.replace("\n", "⏎")
        parts.append(f"{key}={text[:60] + '…' if len(text) > 60 else text}")
    return " ".join(parts)


def _follow(st, flt, after: int, json_: bool, header: bool, columns) -> None:
    try:
        while True:
            new = [e for e in st.log.read(after + 1) if flt.matches(e)]
            if new:
                _print(new, json_, header, columns)
                header = False
                after = new[-1]["seq"]
            else:
                head = st.log.head().seq
                after = max(after, head) if not flt.selects_everything else after
                time.sleep(0.5)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None  # Ctrl-C is how it ends: no message


def _rebuild(st, json_: bool) -> None:
    started = time.perf_counter()
    count = st.rebuild()
    seconds = time.perf_counter() - started
    rate = count / seconds if seconds else 0.0
    if json_:
        echo_json({"events": count, "seconds": round(seconds, 3), "events_per_second": int(rate)})
    else:
        click.echo(f"Rebuilt projections from {count} events in {seconds:.2f} s "
                   f"({rate:,.0f} events/s).")


def _verify(st, json_: bool) -> None:
    from fased.audit import differences_from_log

    differences = differences_from_log(st.db(), st.log)
    if json_:
        echo_json({"ok": not differences, "differences": differences})
    elif differences:
        for line in differences:
            note(f"differs: {line}")
        note("Projections differ from the log; `fased replay --rebuild` fixes them.")
    else:
        click.echo("Projections match the log.")
    if differences:
        raise SystemExit(EXIT_ERROR)


def _at(st, at: str, json_: bool) -> None:
    from fased.audit import build_at, require_point, snapshot

    point = require_point(at)
    seq = min(point, st.log.head().seq) if isinstance(point, int) else _seq_at(st, point)
    con, path = build_at(st.log, seq)
    try:
        state = snapshot(con)
    finally:
        con.close()
        path.unlink(missing_ok=True)
    if json_:
        echo_json({"seq": seq, **state})
        return
    say(f"State at seq {seq}:")
    for name, rows in state.items():
        say(f"\n{name.upper()} ({len(rows)})")
        if name in _AT_TABLES:
            headers, cells = _AT_TABLES[name]
            table([cells(r) for r in rows], headers)
        elif rows:
            table([list(r.values()) for r in rows], [c.upper() for c in rows[0]])


def _deleted(row: dict) -> str:
    # whether a row was deleted or cancelled then is the point of looking back
    return "deleted" if row["deleted"] else ""


def _task_schedule(row: dict) -> str:
    spec = json.loads(row["schedule"])
    if spec.get("kind") == "at":
        return f"at {shown_time(spec.get('expr'))} UTC"
    from fased.schedule import Schedule

    return Schedule.from_dict(spec).describe()


# `replay --at` shows each kind as its own list command does, in the same words
_AT_TABLES = {
    "agents": (("ID", "NAME", "PRIMARY MODEL", "STATE", "CREATED (UTC)"), lambda r: (
        r["id"], r["name"], r["primary_model"] or "-", _deleted(r), shown_time(r["created_at"]))),
    "sessions": (("ID", "NAME", "AGENT", "MESSAGES", "STATE", "UPDATED (UTC)"), lambda r: (
        r["id"], r["name"] or "", r["agent"], r["messages"], _deleted(r),
        shown_time(r["updated_at"]))),
    "tasks": (("ID", "AGENT", "SESSION", "SCHEDULE", "NEXT RUN (UTC)", "STATE", "TASK"),
              lambda r: (r["id"], r["agent"], r["session"], _task_schedule(r),
                         shown_time(r["next_run"]), r["state"], r["name"] or r["message"][:40])),
}
