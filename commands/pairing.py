"""`fased pairing`: strangers who asked to talk to your bot, and your answer."""

from __future__ import annotations

import click

from fased.commands.main import FasedGroup
from fased.commands.output import echo_json, json_option, note, say, shown_time, store, table


@click.group(cls=FasedGroup)
def pairing() -> None:
    """Approve or deny people who wrote to a channel bot that does not know them.

    Under dmPolicy pairing (the default) a stranger's direct message is not answered: they
    get a one-time code (8 characters, valid for an hour; at most 3 wait per account) and
    you decide here. Approving adds them to channels.CHANNEL.allowFrom (a config change you
    can see in fased.json); denying keeps them refused until allowFrom lists them.

    \b
    Examples:
      fased pairing list
      fased pairing approve telegram K7MX3QPA
      fased pairing deny telegram K7MX3QPA
    """


@pairing.command("list")
@click.argument("channel", required=False)
@click.option("--all", "all_", is_flag=True, help="Decided and expired requests too.")
@json_option
def list_(channel: str | None, all_: bool, json_: bool) -> None:
    """Pairing requests that wait for you (oldest first)."""
    from fased.channels.pairing import listing

    st = store()
    rows = listing(st.db(), st.clock(), channel, all_=all_)
    if json_:
        echo_json(rows)
        return
    if not rows:
        note("No pairing request is waiting." if not all_ else "No pairing requests yet.")
        return
    table([(r["code"], r["state"], f"{r['channel']}/{r['account']}", r["sender"],
            shown_time(r["expires_at"]), r["name"] or "") for r in rows],
          ("CODE", "STATE", "CHANNEL", "SENDER", "EXPIRES (UTC)", "NAME"))


def _decide_command(name: str, decision: str, summary: str):
    @pairing.command(name, help=summary)
    @click.argument("channel")
    @click.argument("code")
    @json_option
    def command(channel: str, code: str, json_: bool) -> None:
        from fased.channels.pairing import decide

        row = decide(store(), channel, code, decision)
        if json_:
            echo_json(row)
            return
        who = row["sender"] + (f" ({row['name']})" if row["name"] else "")
        if decision == "approved":
            say(f"Approved {who} on {row['channel']}: their next message is answered.")
        else:
            say(f"Denied {who} on {row['channel']}: they are not answered.")

    return command


approve = _decide_command(
    "approve", "approved", "Let the sender of CODE talk to the bot: adds them to "
    "channels.CHANNEL.allowFrom (a config.set event).\n\n\b\nExamples:\n"
    "  fased pairing approve telegram K7MX3QPA\n  fased pairing approve telegram k7mx3qpa --json")
deny = _decide_command(
    "deny", "denied", "Refuse the sender of CODE: they get no answer and no new code (their "
    "messages are recorded as refused) until allowFrom lists them.\n\n\b\nExamples:\n"
    "  fased pairing deny telegram K7MX3QPA")
