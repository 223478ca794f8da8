"""`fased usage`: tokens and cost of model calls, summed by day, model, agent or session."""

from __future__ import annotations

import click

from fased.commands.output import echo_json, json_option, note, store, table
from fased.errors import UsageError

BY = ("day", "model", "agent", "session")


@click.command()
@click.option("--agent", "-a", metavar="ID", help="Only the model calls of this agent.")
@click.option("--session", "-s", metavar="ID|NAME",
              help="Only those of this session (of --agent, else of the selected agent).")
@click.option("--since", metavar="TIME",
              help="From this time (from the start of its quarter of an hour): RFC 3339, a "
                   "date in your zone (2026-11-01), or this long ago (30m, 2h, 7d).")
@click.option("--by", type=click.Choice(BY), help="One row per day, model, agent or session.")
@json_option
def usage(agent, session, since, by, json_):
    """Tokens and cost of model calls (every step of every turn), from the projections.

    A call's cost is what its server reported (a LiteLLM proxy sends it), else what a price
    you set computes (`models.prices` in fased.json: US dollars per million input and output
    tokens); a call with neither is counted apart, never as free. Days are those of
    `agents.defaults.userTimezone`, else UTC.

    \b
    Examples:
      fased usage                             # everything, one line
      fased usage --by day --since 7d
      fased usage --agent main --by model --json
      fased usage --session ops --by day
      fased config set models.prices '{"litellm/gpt-4o": {"input": 2.5, "output": 10}}'
    """
    from fased import usage as usage_lib
    from fased.timeparse import format_ts

    con = store().db()
    zone = usage_lib.user_zone(con)
    session_id = None
    if agent is not None or session is not None:
        from fased.agents import get_agent

        # a session id names its agent; a name is looked up in the selected agent's
        owner = None if agent is not None else con.execute(
            "SELECT agent FROM sessions WHERE id = ?", (session,)).fetchone()
        agent_row = get_agent(con, agent or (owner[0] if owner else None),
                              include_deleted=True)
        if session is not None:
            from fased.sessions import get_session

            session_id = get_session(con, agent_row["id"], session, include_deleted=True)["id"]
        if agent is not None:
            agent = agent_row["id"]
    start = _since(since, usage_lib.zone_name(zone))
    if start is not None:  # calls are summed per quarter of an hour
        start = usage_lib.quarter_start(start)
    groups = usage_lib.summarize(con, agent=agent, session=session_id, by=by, zone=zone,
                                 since=start)
    everything = usage_lib.Totals()
    for _, totals in groups:
        everything.add(totals)
    if json_:
        echo_json({"by": by, "since": None if start is None else format_ts(start),
                   "zone": usage_lib.zone_name(zone),
                   "rows": [{by: key, **t.to_dict()} for key, t in groups] if by else [],
                   "total": everything.to_dict()})
        return
    rows = [(key, *_cells(t, usage_lib)) for key, t in groups] if by else []
    rows.append(("total", *_cells(everything, usage_lib)))
    table(rows, ((by or "").upper(), "CALLS", "INPUT", "OUTPUT", "COST"))
    if everything.uncosted:
        note(f"fased: *: {everything.uncosted:,} call(s) have no cost: their server reported "
             "none and models.prices has no price for their model (`--by model` shows which)")


def _cells(totals, usage_lib) -> tuple[str, ...]:
    if not totals.cost_known:
        cost = "-"
    else:
        cost = usage_lib.amount(totals.cost, "cost") + ("*" if totals.uncosted else "")
    return (f"{totals.calls:,}", f"{totals.input_tokens:,}", f"{totals.output_tokens:,}", cost)


def _since(text: str | None, zone: str):
    if text is None:
        return None
    from fased.timeparse import parse_time

    try:
        return parse_time(text, tz=zone)
    except UsageError as exc:
        raise click.BadParameter(f"{exc.message} ({exc.hint})" if exc.hint else exc.message,
                                 param_hint="'--since'") from None
