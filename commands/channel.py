"""`fased channel ...`: chat accounts fased talks through (Telegram), polling them, and (from
channel_routes.py) which agent answers which chat."""

from __future__ import annotations

import click

from fased.bounds import LEASE_SECONDS, LONG_POLL_SECONDS
from fased.commands.main import FasedGroup
from fased.commands.output import (
    echo_json,
    json_option,
    note,
    read_secret,
    say,
    shown_time,
    store,
    table,
)
from fased.commands.types import seconds
from fased.errors import UsageError


@click.group(cls=FasedGroup)
def channel() -> None:
    """Channels: talk to your agents from a chat app (Telegram), and who may talk.

    Add a bot account, then poll it from cron (`fased channel poll`) or keep a foreground
    runner that also polls (`fased run --channels`). Every update, admission and message
    sent is an event; an update is processed once and a reply is sent once, across crashes.
    Bindings say which agent answers which chat; dmPolicy and groupPolicy who may talk.

    \b
    Examples:
      fased channel add telegram --token-stdin < bot-token.txt
      fased channel add telegram --account work --token-env WORK_BOT_TOKEN
      fased channel list
      fased channel status --probe
      fased channel poll              # crontab: * * * * * fased channel poll
      fased run --channels            # foreground: answer turns, fire tasks, poll
      fased channel bind --channel telegram --peer dm:123456789 --agent ops
      fased channel routes --explain telegram/dm:123456789
    """


def account_option(fn):
    return click.option("--account", default="default", show_default=True, metavar="NAME",
                        help="The account (one bot each).")(fn)


def channel_argument(required: bool = True):
    return click.argument("channel_name", metavar="CHANNEL",
                          type=click.Choice(["telegram"]), required=required,
                          default=None if required else "telegram")


class _Unlisted(click.Argument):
    """An argument that usage and help do not show (it exists to refuse what it catches)."""

    def get_usage_pieces(self, ctx):
        return []


@channel.command("add")
@channel_argument()
@click.argument("given_token", cls=_Unlisted, required=False)
@account_option
@click.option("--token-stdin", is_flag=True, help="Read the bot token from standard input.")
@click.option("--token-env", metavar="VAR", help="Read the token from $VAR at each poll "
              "(nothing stored).")
@click.option("--api-base", metavar="URL", help="The Bot API base URL (default: "
              "channels.telegram.apiBase, else https://api.telegram.org).")
@json_option
def add(channel_name, given_token, account, token_stdin, token_env, api_base, json_):
    """Add a bot account: the token is checked with Telegram (getMe) first.

    The token goes to credentials.json (0600), never to the log or the screen; with
    --token-env only the variable's name is recorded. A token Telegram rejects records
    nothing. On a terminal with neither option, the token is asked for (hidden).

    \b
    Examples:
      fased channel add telegram --token-stdin < bot-token.txt
      pass show telegram-bot | fased channel add telegram --token-stdin
      fased channel add telegram --account work --token-env WORK_BOT_TOKEN
      fased channel add telegram --api-base http://127.0.0.1:8081 --token-stdin < t.txt
    """
    from fased.channels.accounts import add as add_account
    from fased.channels.accounts import check_account

    check_account(account)  # before the token is read: a typo costs no paste
    if given_token is not None:
        # said without echoing it: a token on the command line is in the shell's history
        raise UsageError("the token is not taken as an argument (it would stay in your shell "
                         "history and in `ps`); nothing was recorded",
                         hint="fased channel add telegram --token-stdin < bot-token.txt")
    if token_stdin and token_env:
        raise UsageError("give either --token-stdin or --token-env, not both")
    token = None if token_env else read_secret(
        token_stdin, "token", "Bot token", "pipe it with --token-stdin, or use --token-env VAR")
    done = add_account(store(), channel_name, account, token=token, env=token_env,
                       given_base=api_base)
    if json_:
        echo_json({k: done.get(k) for k in ("channel", "account", "bot_id", "bot_username",
                                            "token_kind", "env", "fingerprint", "replayed")})
        return
    who = f"@{done['bot_username']}" if done.get("bot_username") else f"bot {done['bot_id']}"
    where = f"${token_env}" if token_env else f"credentials.json (fingerprint " \
                                              f"{done['fingerprint']})"
    say(f"Added {channel_name}/{account}: {who}; its token is read from {where}.")
    say("Next: `fased channel poll` (or `fased run --channels`) answers its messages.")


@channel.command("list")
@json_option
def list_(json_):
    """The chat accounts, with their bot and how far they have read.

    \b
    Examples:
      fased channel list
      fased channel list --json | jq -r '.[].bot.username'
    """
    from fased.channels.accounts import account_dict, accounts

    con = store().db()
    items = [account_dict(con, r) for r in accounts(con)]
    if json_:
        echo_json(items)
        return
    if not items:
        note("No channel accounts. Add one: fased channel add telegram --token-stdin")
        return
    table([(f"{i['channel']}/{i['account']}", _bot(i), i["token"], i["updates"],
            i["sessions"], shown_time(i["last_update_at"])) for i in items],
          ["ACCOUNT", "BOT", "TOKEN", "UPDATES", "SESSIONS", "LAST UPDATE"])


def _bot(item: dict) -> str:
    bot = item["bot"]
    return f"@{bot['username']}" if bot.get("username") else str(bot["id"])


@channel.command("show")
@channel_argument(required=False)
@account_option
@json_option
def show(channel_name, account, json_):
    """One account: its bot, token source, API base, offset and sessions.

    \b
    Examples:
      fased channel show
      fased channel show telegram --account work --json
    """
    from fased.channels.accounts import account_dict, get_account

    con = store().db()
    item = account_dict(con, get_account(con, channel_name, account))
    sessions = [dict(r) for r in con.execute(
        "SELECT session, agent, peer_kind, peer_id FROM session_origins WHERE channel = ? AND"
        " account = ? ORDER BY seq", (channel_name, account))]
    item["session_list"] = sessions
    if json_:
        echo_json(item)
        return
    for label, value in (("Account", f"{item['channel']}/{item['account']}"),
                         ("Bot", f"{_bot(item)} ({item['bot']['id']})"),
                         ("Token", item["token"]), ("API base", item["api_base"]),
                         ("Offset", item["offset"] if item["offset"] is not None else "-"),
                         ("Updates", item["updates"]),
                         ("Unknown sends", item["unknown_sends"])):
        say(f"{label + ':':<15}{value}")
    for s in sessions:
        say(f"  {s['agent']}/{s['session']}  {s['peer_kind']} {s['peer_id']}")


@channel.command("remove")
@channel_argument()
@account_option
def remove(channel_name, account):
    """Stop using an account and delete its stored token (its history stays in the log).

    \b
    Examples:
      fased channel remove telegram
      fased channel remove telegram --account work
    """
    from fased.channels.accounts import remove as remove_account

    remove_account(store(), channel_name, account)
    say(f"Removed {channel_name}/{account}; its token is deleted from credentials.json.")


@channel.command("status")
@click.option("--probe", is_flag=True, help="Ask each bot who it is (getMe): is the token "
              "still good?")
@json_option
def status(probe, json_):
    """Is each account ready? Token found, and (--probe) accepted by Telegram; sends whose
    outcome is unknown (fased stopped while sending) are listed.

    \b
    Examples:
      fased channel status
      fased channel status --probe --json

    \b
    Exit codes: 0 every account is ready, 1 one is not.
    """
    from fased.channels.accounts import account_dict, accounts, client
    from fased.channels.base import ChannelError

    st = store()
    con = st.db()
    items, ready_all = [], True
    for row in accounts(con):
        item = account_dict(con, row)
        problem = None
        try:
            cl = client(st, row)
            if probe:
                cl.identify()
        except ChannelError as exc:
            problem = exc.message
        item.update(ready=problem is None, problem=problem, probed=probe)
        item["unknown"] = [dict(r) for r in con.execute(
            "SELECT out, part, parts, peer_id, sent_at FROM channel_outbound WHERE channel = ?"
            " AND account = ? AND state = 'unknown' ORDER BY sending_seq",
            (row["channel"], row["account"]))]
        ready_all &= problem is None
        items.append(item)
    if json_:
        echo_json(items)
    elif not items:
        note("No channel accounts. Add one: fased channel add telegram --token-stdin")
    for item in items if not json_ else ():
        state = "ready" if item["ready"] else f"not ready: {item['problem']}"
        say(f"{item['channel']}/{item['account']} ({_bot(item)}): {state}"
            + (" (probed)" if probe and item["ready"] else ""))
        for u in item["unknown"]:
            say(f"  may not have arrived: part {u['part'] + 1}/{u['parts']} of {u['out']} "
                f"to chat {u['peer_id']} ({shown_time(u['sent_at'])}); not sent again")
    if not ready_all:
        raise click.exceptions.Exit(1)


@channel.command("poll")
@channel_argument(required=False)
@account_option
@click.option("--timeout", type=seconds(LONG_POLL_SECONDS), default=0.0, show_default=True,
              metavar="SECONDS", help="Wait this long for the first update (long polling).")
@click.option("--lease", type=seconds(LEASE_SECONDS), default=60.0, show_default=True,
              metavar="SECONDS", help="How long a claimed turn is ours without a heartbeat.")
@click.option("--no-answer", is_flag=True, help="Record and queue only; leave the turns to "
              "`fased run`.")
@json_option
def poll(channel_name, account, timeout, lease, no_answer, json_):
    """Poll once: fetch new messages, queue them as turns, answer the ready ones, send the
    replies, and exit (for cron).

    Each update is recorded before anything acts on it; the next poll continues after the
    highest one recorded, so a crash loses nothing and repeats nothing. Replies are
    recorded with Telegram's message id; a send cut off by a crash is reported (`channel
    status`), not sent twice.

    \b
    Examples:
      fased channel poll                     # crontab: * * * * * fased channel poll
      fased channel poll telegram --account work --json
      fased channel poll --timeout 25        # long-poll up to 25 s for the first message

    \b
    Exit codes: 0 ok, 1 Telegram could not be reached or refused (what was recorded is
    still answered), 3 another poller is reading this account (or Telegram answered 409
    Conflict), 5 a turn failed because every model failed, 143 on SIGTERM (the current
    turn goes back to the queue).
    """
    from fased.channels.poll import poll_once
    from fased.runner import Runner, Stop, sigterm_stops

    st = store()
    runner = None if no_answer else Runner(st, lease=lease, note=note)

    def on_result(r):
        note(f"fased: {r.turn} ({r.agent}/{r.session}) {r.state}"
             + (f" via {r.model}" if r.model else "") + (f": {r.error}" if r.error else "")
             + (f": waits for approval {r.approval} (fased approvals approve {r.approval})"
                if r.approval else ""))

    try:
        with sigterm_stops():
            result = poll_once(st, channel_name, account, runner=runner, timeout=timeout,
                               note=note, on_result=on_result)
    except Stop:
        note("fased: terminated; the current turn went back to the queue")
        raise click.exceptions.Exit(143) from None
    if json_:
        echo_json(result.to_dict())
    else:
        admitted = ", ".join(f"{n} {a}" for a, n in sorted(result.admitted.items()))
        note(f"fased: {result.account}: {result.received} update(s) received"
             + (f" ({admitted})" if admitted else "")
             + f", {len(result.answered)} turn(s) answered, {result.sent} message(s) sent")
    if result.error is not None:
        from fased.commands.failures import print_error
        from fased.errors import EXIT_CONFLICT, EXIT_ERROR

        print_error(result.error.message, result.error.hint)
        raise click.exceptions.Exit(EXIT_CONFLICT if result.error.code == 409 else EXIT_ERROR)
    if any(r.error_class == "models_failed" for r in result.answered):
        from fased.errors import EXIT_MODELS_FAILED

        raise click.exceptions.Exit(EXIT_MODELS_FAILED)


def _add_route_commands() -> None:
    """bind, unbind, routes (commands/channel_routes.py) belong to this group too."""
    from fased.commands.channel_routes import ROUTE_COMMANDS

    for command in ROUTE_COMMANDS:
        channel.add_command(command)


_add_route_commands()
