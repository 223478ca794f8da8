"""Channel accounts: adding one (the token checked with the channel first), listing, removing,
and the client of an account. Tokens live only in credentials.json (`channels` entries, 0600,
written under the log lock); the log records a fingerprint or the env variable's name."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

from fased.channels.base import ChannelError
from fased.errors import NotFoundError, UsageError
from fased.store import Draft, Store

CHANNELS = ("telegram",)
ACCOUNT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")


def check_channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise UsageError(f"unknown channel {channel!r}", hint="channels: " + ", ".join(CHANNELS))
    return channel


def check_account(account: str) -> str:
    if not ACCOUNT.match(account):
        raise UsageError(f"invalid account name {account!r}",
                         hint="1-64 of a-z, 0-9, '-' and '_', starting with a letter or digit")
    return account


def key_of(channel: str, account: str) -> str:
    return f"{channel}/{account}"


def stream_of(channel: str, account: str) -> str:
    return f"channel:{channel}/{account}"


def get_account(con: sqlite3.Connection, channel: str, account: str) -> sqlite3.Row:
    row = con.execute("SELECT * FROM channel_accounts WHERE key = ? AND removed = 0",
                      (key_of(channel, account),)).fetchone()
    if row is None:
        raise NotFoundError(f"no {channel} account {account!r}",
                            hint=f"add one: fased channel add {channel} --account {account} "
                            "--token-stdin")
    return row


def accounts(con: sqlite3.Connection, channel: str | None = None) -> list[sqlite3.Row]:
    where, params = ("AND channel = ?", (channel,)) if channel else ("", ())
    return con.execute(f"SELECT * FROM channel_accounts WHERE removed = 0 {where} "
                       "ORDER BY channel, account", params).fetchall()


def api_base(con: sqlite3.Connection, row: sqlite3.Row | None, given: str | None = None) -> str:
    """The Bot API base: given, else the account's own, else channels.telegram.apiBase, else
    Telegram's."""
    from fased.bounds import parse_plain_url
    from fased.channels.telegram import DEFAULT_API_BASE
    from fased.config import config_doc

    if given:
        return parse_plain_url(given, "--api-base").rstrip("/")
    if row is not None and row["api_base"]:
        return row["api_base"]
    configured = ((config_doc(con).get("channels") or {}).get("telegram") or {}).get("apiBase")
    return (configured or DEFAULT_API_BASE).rstrip("/")


def _credentials(home: Path) -> dict:
    from fased.models import load_credentials

    data = load_credentials(home)
    data.setdefault("channels", {})
    return data


def token_of(home: Path, row: sqlite3.Row) -> str:
    """The account's token; ChannelError (never showing it) when it cannot be had."""
    from fased.models import fingerprint

    if row["token_kind"] == "env":
        value = os.environ.get(row["env"] or "")
        if not value:
            raise ChannelError(f"${row['env']} is not set (the token of {row['key']})",
                               hint=f"export {row['env']}=... before polling")
        return value.strip()
    token = _credentials(home)["channels"].get(row["key"], {}).get("token")
    if not token or fingerprint(token) != row["fingerprint"]:
        raise ChannelError(f"the token of {row['key']} is missing from credentials.json",
                           hint=f"add it again: fased channel add {row['channel']} --account "
                           f"{row['account']} --token-stdin")
    return token


def client(store: Store, row: sqlite3.Row, sleep=None):
    """The channel client of an account."""
    from fased.channels.telegram import TelegramChannel

    con = store.db(check_files=False)
    kwargs = {"sleep": sleep} if sleep is not None else {}
    return TelegramChannel(token_of(store.home, row), api_base(con, row), account=row["account"],
                           bot={"id": row["bot_id"], "username": row["bot_username"]}, **kwargs)


def add(store: Store, channel: str, account: str, *, token: str | None, env: str | None,
        given_base: str | None) -> dict:
    """Check the token with the channel (getMe), then record the account and keep the token.
    A bad token records nothing."""
    from fased.channels.telegram import TelegramChannel, check_token
    from fased.models import fingerprint

    check_channel(channel)
    check_account(account)
    if env is not None:
        from fased.bounds import check_env_name

        check_env_name(env, "variable name")
        value = os.environ.get(env)
        if not value:
            raise UsageError(f"${env} is not set", hint=f"export {env}=<the bot token> first")
        token = value
    if not token:
        raise UsageError("no token given", hint="pipe it: fased channel add telegram "
                         "--token-stdin < token.txt, or --token-env VAR")
    token = check_token(token)
    con = store.db()
    base = api_base(con, None, given_base)
    me = TelegramChannel(token, base, account=account).identify()
    data = {"channel": channel, "account": account, "token_kind": "env" if env else "stored",
            "bot_id": me["id"], "bot_username": me.get("username"), "bot_name": me.get("name")}
    if given_base:
        data["api_base"] = base
    if env:
        data["env"] = env
    else:
        data["fingerprint"] = fingerprint(token)
    key = key_of(channel, account)

    def decide(con):
        return [Draft("channel.added", stream_of(channel, account), data)]

    with store.log.locked():  # the token and its event land together, or neither
        outcome = store.transact(decide)
        if not outcome.replayed:
            from fased.models import set_credentials_entry

            set_credentials_entry(store.home, "channels", key, None if env else {"token": token})
    return {**data, "key": key, "replayed": outcome.replayed}


def remove(store: Store, channel: str, account: str) -> None:
    """Record the account removed and delete its stored token."""
    from fased.models import set_credentials_entry

    def decide(con):
        get_account(con, channel, account)
        return [Draft("channel.removed", stream_of(channel, account),
                      {"channel": channel, "account": account})]

    with store.log.locked():
        store.transact(decide)
        set_credentials_entry(store.home, "channels", key_of(channel, account), None)


def account_dict(con: sqlite3.Connection, row: sqlite3.Row) -> dict:
    """An account as `channel list|show --json` print it (never the token)."""
    last = con.execute("SELECT (SELECT update_id FROM channel_inbound WHERE channel = ?1 AND"
                       " account = ?2 ORDER BY received_seq DESC LIMIT 1), COUNT(*),"
                       " MAX(received_at) FROM channel_inbound WHERE channel = ?1 AND"
                       " account = ?2", (row["channel"], row["account"])).fetchone()
    sessions = con.execute("SELECT COUNT(*) FROM session_origins WHERE channel = ? AND "
                           "account = ?", (row["channel"], row["account"])).fetchone()[0]
    unknown = con.execute("SELECT COUNT(*) FROM channel_outbound WHERE channel = ? AND "
                          "account = ? AND state = 'unknown'",
                          (row["channel"], row["account"])).fetchone()[0]
    return {"channel": row["channel"], "account": row["account"],
            "bot": {"id": row["bot_id"], "username": row["bot_username"],
                    "name": row["bot_name"]},
            "token": f"env:{row['env']}" if row["token_kind"] == "env" else "stored",
            "api_base": api_base(con, row), "added_at": row["added_at"],
            "offset": last[0], "updates": last[1], "last_update_at": last[2],
            "sessions": sessions, "unknown_sends": unknown}
