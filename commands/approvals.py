"""`fased approvals`: tool calls waiting for you, and the commands you allowed from them."""

from __future__ import annotations

import click

from fased.commands.main import FasedGroup
from fased.commands.output import echo_json, json_option, note, say, shown_time, store, table


@click.group(cls=FasedGroup)
def approvals() -> None:
    """Approve or deny what an agent asked to run where nobody could be asked.

    A call that needs approval in cron, CI, `fased run` or a pipe parks its turn; the request
    waits here until you decide (or it expires after tools.exec.approvalTimeout, 3600 s by
    default, and is denied). A decision is an event; the next `fased run`, or the `fased chat`
    that is waiting for it, resumes the turn.

    \b
    Examples:
      fased approvals list
      fased approvals approve a-1a2b3c4d
      fased approvals approve a-1a2b3c4d --always      # and allow that command from now on
      fased approvals approve a-1a2b3c4d --for 30m     # ... for half an hour
      fased approvals deny a-1a2b3c4d --reason "not on the build box"
      fased approvals allowlist
    """


@approvals.command("list")
@click.option("--all", "all_", is_flag=True, help="Decided and expired requests too.")
@json_option
def list_(all_: bool, json_: bool) -> None:
    """Pending approval requests (oldest first)."""
    from fased.approvals import listing

    st = store()
    rows = listing(st.db(), st.clock(), all_=all_)
    if json_:
        echo_json(rows)
        return
    if not rows:
        note("No approval is waiting." if not all_ else "No approval requests yet.")
        return
    table([(r["id"], r["state"], f"{r['agent']}/{r['session']}", shown_time(r["expires_at"]),
            r["command"]) for r in rows], ("ID", "STATE", "AGENT/SESSION", "EXPIRES (UTC)",
                                           "COMMAND"))


@approvals.command("approve")
@click.argument("approval_id", metavar="ID")
@click.option("--always", is_flag=True,
              help="Also allow exactly this command line for this agent from now on.")
@click.option("for_", "--for", metavar="DURATION",
              help="Also allow exactly this command line for a while (30m, 2h, 1d).")
@json_option
def approve(approval_id: str, always: bool, for_: str | None, json_: bool) -> None:
    """Let a waiting call run; its turn goes on at the next `fased run`."""
    from fased.approvals import decide
    from fased.errors import UsageError
    from fased.timeparse import parse_duration

    if always and for_:
        raise UsageError("--always and --for cannot be combined",
                         hint="--always allows it until you remove it; --for for a while")
    seconds = parse_duration(for_).total_seconds() if for_ else None
    row = decide(store(), approval_id, "approved", always=always, for_seconds=seconds)
    if json_:
        echo_json(row)
        return
    say(f"Approved {row['id']}: `{row['command']}` ({row['agent']}/{row['session']}); the next "
        "`fased run`, or the chat that waits for it, runs it.")
    if row["grant"]:
        say(f"Allowed from now on as {row['grant']}"
            + (f" for {for_}" if for_ else "") + " (`fased approvals allowlist`).")


@approvals.command("deny")
@click.argument("approval_id", metavar="ID")
@click.option("--reason", metavar="TEXT", help="Why, for the agent (it gets it as the result).")
@json_option
def deny(approval_id: str, reason: str | None, json_: bool) -> None:
    """Refuse a waiting call: it does not run, and the agent is told so."""
    from fased.approvals import decide

    row = decide(store(), approval_id, "denied", reason=reason)
    if json_:
        echo_json(row)
        return
    say(f"Denied {row['id']}: `{row['command']}` will not run.")


@approvals.group("allowlist", invoke_without_command=True)
@json_option
@click.pass_context
def allowlist(ctx: click.Context, json_: bool) -> None:
    """Exec allowlist entries: tools.exec.allowlist patterns from fased.json, and the exact
    commands allowed with `approve --always` or `--for` (removable by id)."""
    if ctx.invoked_subcommand is not None:
        return
    from fased.approvals import grants
    from fased.settings import merge_tools

    st = store()
    con = st.db()
    from fased.config import config_doc

    doc = config_doc(con)
    layers = merge_tools(doc.get("tools", {}), doc.get("agents", {}).get("defaults", {})
                         .get("tools", {}))
    patterns = [{"id": None, "agent": "*", "entry": e, "source": "fased.json",
                 "expires_at": None} for e in (layers.get("exec") or {}).get("allowlist", [])]
    granted = [{**g, "source": f"approval {g['approval']}"} for g in grants(con, st.clock())]
    rows = patterns + granted
    if json_:
        echo_json(rows)
        return
    if not rows:
        note("No allowlist entries (tools.exec.allowlist is empty and nothing was granted).")
        return
    table([(r["id"] or "-", r["agent"], shown_time(r["expires_at"], "never"), r["source"],
            r["entry"]) for r in rows], ("ID", "AGENT", "EXPIRES (UTC)", "SOURCE", "ENTRY"))


@allowlist.command("remove")
@click.argument("grant_id", metavar="ID")
def remove(grant_id: str) -> None:
    """Remove an entry granted from an approval (fased.json patterns: `fased config`)."""
    from fased.approvals import remove_grant

    remove_grant(store(), grant_id)
    say(f"Removed {grant_id}.")
