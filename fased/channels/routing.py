"""Who answers a channel message, in which session, and whether anyone does at all.

`admit(store, inbound)` is the one door: it validates the ids (they are untrusted text), picks
the agent from `bindings` (peer, then account, then channel, then the default agent), names the
session (`session.dmScope`), and applies the channel's DM and group policy. Whatever it decides
that the log must remember (a pairing code sent, a refusal) it appends itself, under the log
lock, so two pollers never hand out a fourth pending code; the caller records the message.

Refusals are recorded at most once per channel, account, sender (DMs) or group, and reason per
REFUSAL_QUIET (an hour): `channel.refused` carries its `quiet_until`, and the count of records
stays in the projection. A stranger who writes a thousand times leaves one record an hour.
A group message that does not mention the bot is not a refusal (it was not addressed to it):
nothing is recorded beyond the message the caller records.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from fased.channels.base import Inbound, shown_id

DM_SCOPES = ("per-peer", "per-channel-peer", "main")
MAIN_SESSION = "main"  # the agent's main session: where dmScope main sends every DM
REFUSAL_QUIET = timedelta(hours=1)
DEFAULT_ACCOUNT = "default"

CHANNEL = re.compile(r"^[a-z][a-z0-9_-]{0,19}\Z")
ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
# peer and sender ids become session names and allowlist entries: no separator (':'), no
# space, no control character, so two different ids can never name the same session
PEER_ID = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}\Z")
_PREFIXES = ("telegram:", "tg:")  # allowFrom entries as the reference runtime accepts them


@dataclass(frozen=True)
class Admission:
    action: str                 # "turn" | "reply" | "ignore"
    agent: str | None = None
    session: str | None = None  # session name for "turn"
    reply: str | None = None    # text to send back for "reply" (pairing code message)
    reason: str | None = None   # why, for "ignore"/"reply"


@dataclass(frozen=True)
class Access:
    """A channel account's policy: the account's settings over the channel's, key by key;
    the allowlists of both add up."""

    dm_policy: str
    allow_from: frozenset[str]
    group_policy: str
    groups: frozenset[str]
    require_mention: bool


@dataclass(frozen=True)
class Route:
    """Which agent a peer's messages go to and why (`rule` is the binding's index)."""

    agent: str | None
    rule: int | None
    why: str


def admit(store, inbound: Inbound) -> Admission:
    """Decide what to do with one inbound channel message (and record what must be)."""
    found: list[Admission] = []
    store.db()  # a hand edit of fased.json (a new allowFrom, say) is recorded, then applies

    def decide(con: sqlite3.Connection):
        admission, drafts = evaluate(con, inbound, store.clock())
        found.append(admission)
        return drafts

    store.append_internal(decide)
    return found[-1]


def evaluate(con: sqlite3.Connection, inbound: Inbound,
             now: datetime) -> tuple[Admission, list]:
    """What admit decides, and the events it would append; changes nothing."""
    from fased.channels import pairing
    from fased.config import config_doc
    from fased.timeparse import format_ts

    if not CHANNEL.fullmatch(inbound.channel or ""):
        return Admission("ignore", reason="invalid-message"), []
    stamp = format_ts(now)
    if not _valid(inbound):
        return _refuse(con, inbound, "invalid-message", now, invalid=True)
    doc = config_doc(con)
    route = resolve(con, doc, inbound.channel, inbound.account, inbound.peer_kind,
                    inbound.peer_id)
    if route.agent is None:
        return _refuse(con, inbound, "no-agent", now)
    rules = access(doc, inbound.channel, inbound.account)
    session = session_name(doc, inbound.channel, inbound.peer_kind, inbound.peer_id)
    turn = Admission("turn", agent=route.agent, session=session)
    if inbound.peer_kind == "group":
        if rules.group_policy == "disabled":
            return _refuse(con, inbound, "group-disabled", now)
        if rules.group_policy == "allowlist" and not (
                {"*", inbound.peer_id} & rules.groups):
            return _refuse(con, inbound, "group-not-allowed", now)
        if rules.require_mention and not inbound.mentioned:
            return Admission("ignore", agent=route.agent, reason="not-mentioned"), []
        return turn, []
    if rules.dm_policy == "disabled":
        return _refuse(con, inbound, "dm-disabled", now)
    if rules.dm_policy == "open" or inbound.sender_id in rules.allow_from:
        return turn, []
    if rules.dm_policy == "allowlist":
        return _refuse(con, inbound, "not-allowlisted", now)
    if pairing.is_denied(con, inbound.channel, inbound.sender_id):
        return _refuse(con, inbound, "pairing-denied", now)
    pending = pairing.pending_for(con, inbound.channel, inbound.account, inbound.sender_id,
                                  stamp)
    if pending is not None:
        return Admission("reply", agent=route.agent,
                         reply=pairing.message(inbound.channel, inbound.sender_id, pending),
                         reason="pairing-pending"), []
    if pairing.pending_count(con, inbound.channel, inbound.account, stamp) >= \
            pairing.MAX_PENDING:
        return _refuse(con, inbound, "pairing-full", now)
    code, draft = pairing.request(con, inbound, now)
    return Admission("reply", agent=route.agent,
                     reply=pairing.message(inbound.channel, inbound.sender_id, code),
                     reason="pairing-requested"), [draft]


def _valid(inbound: Inbound) -> bool:
    return (inbound.peer_kind in ("dm", "group") and bool(ACCOUNT.fullmatch(inbound.account or ""))
            and bool(PEER_ID.fullmatch(inbound.peer_id or ""))
            and bool(PEER_ID.fullmatch(inbound.sender_id or "")))


def _refuse(con: sqlite3.Connection, inbound: Inbound, reason: str, now: datetime,
            invalid: bool = False) -> tuple[Admission, list]:
    """Ignore the message; record why, unless the same refusal was recorded within the hour."""
    from fased.projections.pairing import refusal_key
    from fased.store import Draft
    from fased.timeparse import format_ts

    data = {"channel": inbound.channel, "account": shown_id(inbound.account),
            "peer_kind": "unknown" if invalid else inbound.peer_kind,
            "peer": shown_id(inbound.peer_id), "sender": shown_id(inbound.sender_id),
            "reason": reason, "quiet_until": format_ts(now + REFUSAL_QUIET)}
    if inbound.sender_name:
        data["name"] = shown_id(inbound.sender_name, 100)
    key = refusal_key(data["channel"], data["account"], data["peer_kind"], data["peer"],
                      data["sender"], reason)
    row = con.execute("SELECT quiet_until FROM channel_refusals WHERE key = ?",
                      (key,)).fetchone()
    admission = Admission("ignore", reason=reason)
    if row is not None and row[0] > format_ts(now):
        return admission, []
    return admission, [Draft("channel.refused", f"channel:{inbound.channel}", data)]


# -- policy -------------------------------------------------------------------------------------

def normalize_id(value: object) -> str:
    """An allowFrom or groups entry as admit compares it: text, without a telegram:/tg: prefix."""
    text = str(value).strip()
    for prefix in _PREFIXES:
        if text.lower().startswith(prefix):
            return text[len(prefix):]
    return text


def channel_settings(doc: dict, channel: str) -> dict:
    return doc.get("channels", {}).get(channel, {})


def access(doc: dict, channel: str, account: str) -> Access:
    """The DM and group policy that applies to `channel`'s `account`, defaults filled in."""
    top = channel_settings(doc, channel)
    own = top.get("accounts", {}).get(account, {})

    def pick(key: str, default):
        return own.get(key, top.get(key, default))

    def ids(key: str) -> frozenset[str]:
        return frozenset(normalize_id(v) for v in [*top.get(key, []), *own.get(key, [])])

    return Access(pick("dmPolicy", "pairing"), ids("allowFrom"), pick("groupPolicy", "allowlist"),
                  ids("groups"), pick("requireMention", True))


def dm_scope(doc: dict) -> str:
    return doc.get("session", {}).get("dmScope", "per-peer")


def session_name(doc: dict, channel: str, peer_kind: str, peer_id: str) -> str:
    """The session a peer's messages go to (ids are validated: no ':' in them, so names never
    collide): `dm:ID` (per-peer), `telegram:dm:ID` (per-channel-peer), `main`; a group always
    has its own, `telegram:group:ID`."""
    if peer_kind == "group":
        return f"{channel}:group:{peer_id}"
    scope = dm_scope(doc)
    if scope == "main":
        return MAIN_SESSION
    if scope == "per-channel-peer":
        return f"{channel}:dm:{peer_id}"
    return f"dm:{peer_id}"


# -- bindings -----------------------------------------------------------------------------------

def specificity(match: dict) -> int:
    """How specific a binding is: a peer beats an account, which beats the channel alone."""
    return (4 if match.get("peer") else 0) + (2 if match.get("account") else 0) + 1


def matches(match: dict, channel: str, account: str, peer_kind: str, peer_id: str) -> bool:
    if match["channel"] != channel:
        return False
    if match.get("account") and match["account"] != account:
        return False
    peer = match.get("peer")
    return not peer or (peer["kind"] == peer_kind and str(peer["id"]) == peer_id)


def _live_agents(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT id FROM agents WHERE deleted = 0")}


def default_agent(con: sqlite3.Connection) -> str | None:
    """The agent that answers what no binding matches: the selected (default) agent."""
    from fased.agents import selected_agent

    agent = selected_agent(con)
    if agent in _live_agents(con):
        return agent
    row = con.execute("SELECT id FROM agents WHERE deleted = 0 ORDER BY position").fetchone()
    return row[0] if row else None


def resolve(con: sqlite3.Connection, doc: dict, channel: str, account: str, peer_kind: str,
            peer_id: str) -> Route:
    """The agent for a peer: the most specific matching binding (the first of equals),
    else the default agent."""
    live = _live_agents(con)
    best: tuple[int, int] | None = None
    for i, binding in enumerate(doc.get("bindings", [])):
        if binding["agent"] in live and matches(binding["match"], channel, account, peer_kind,
                                                peer_id):
            score = specificity(binding["match"])
            if best is None or score > best[0]:
                best = (score, i)
    if best is not None:
        binding = doc["bindings"][best[1]]
        return Route(binding["agent"], best[1], f"bindings[{best[1]}] matches its "
                     + describe_level(binding["match"]))
    agent = default_agent(con)
    return Route(agent, None, "no binding matches: the default agent")


def describe_level(match: dict) -> str:
    if match.get("peer"):
        return "peer"
    return "account" if match.get("account") else "channel"


def describe_match(match: dict) -> str:
    """`telegram`, `telegram/ops`, `telegram dm:123`, `telegram/ops group:-100`."""
    text = match["channel"] + (f"/{match['account']}" if match.get("account") else "")
    peer = match.get("peer")
    return text + (f" {peer['kind']}:{peer['id']}" if peer else "")


def parse_peer(text: str) -> dict:
    """`dm:123` or `group:-100123` -> {"kind": ..., "id": ...}; UsageError otherwise."""
    from fased.errors import UsageError

    kind, sep, peer_id = text.partition(":")
    if not sep or kind not in ("dm", "group") or not PEER_ID.fullmatch(peer_id):
        raise UsageError(f"invalid peer {shown_id(text)!r}",
                         hint="use dm:ID or group:ID, e.g. dm:123456789 or group:-1001234567")
    return {"kind": kind, "id": peer_id}


def make_match(channel: str, account: str | None, peer: str | None) -> dict:
    from fased.errors import UsageError

    if not CHANNEL.fullmatch(channel):
        raise UsageError(f"invalid channel {shown_id(channel)!r}", hint="e.g. --channel telegram")
    match: dict = {"channel": channel}
    if account is not None:
        if not ACCOUNT.fullmatch(account):
            raise UsageError(f"invalid account {shown_id(account)!r}",
                             hint="1-64 letters, digits, '.', '_' or '-'")
        match["account"] = account
    if peer is not None:
        match["peer"] = parse_peer(peer)
    return match


def _same(a: dict, b: dict) -> bool:
    from fased.config import match_key

    return match_key(a) == match_key(b)


def bind_drafts(con: sqlite3.Connection, match: dict, agent: str | None) -> list:
    """The config change that binds `match` to `agent` (replacing a binding of the same
    match), or with agent None removes it; [] when nothing changes."""
    from fased.config import render

    bindings = [dict(b) for b in render(con).get("bindings", [])]
    index = next((i for i, b in enumerate(bindings) if _same(b["match"], match)), None)
    if agent is None:
        if index is None:
            return []
        del bindings[index]
    elif index is None:
        bindings.append({"match": match, "agent": agent})
    elif bindings[index]["agent"] == agent:
        return []
    else:
        bindings[index] = {"match": bindings[index]["match"], "agent": agent}
    return [config_draft(con, ["bindings"], bindings or None)]


def config_draft(con: sqlite3.Connection, parts: list, value: object):
    """A config.set (or, for None, config.unset) of `parts`, validated against the whole
    rendered fased.json as `fased config set` validates it."""
    import copy

    from fased.config import format_path, get_path, render, set_path, unset_path, validate
    from fased.store import Draft

    doc = render(con)
    change: dict = {"path": format_path(parts)}
    with contextlib.suppress(KeyError):  # nothing there yet: no old value to record
        change["old"] = get_path(doc, parts)
    new = copy.deepcopy(doc)
    if value is None:
        unset_path(new, parts)
    else:
        set_path(new, parts, value)
        change["value"] = value
    validate(new, hint="nothing was changed")
    return Draft("config.unset" if value is None else "config.set", "config", change)


def unbind_agent_drafts(con: sqlite3.Connection, agent: str, force: bool) -> list:
    """Deleting a bound agent: refused (ConflictError) unless forced, when its bindings go
    too (a binding must name an agent that exists)."""
    from fased.config import render
    from fased.errors import ConflictError

    bindings = render(con).get("bindings", [])
    kept = [b for b in bindings if b["agent"] != agent]
    if len(kept) == len(bindings):
        return []
    if not force:
        shown = ", ".join(describe_match(b["match"]) for b in bindings if b["agent"] == agent)
        raise ConflictError(f"agent {agent!r} answers channel bindings ({shown})",
                            hint="`fased channel unbind ...` them first, or add --force to "
                            "remove them with the agent")
    return [config_draft(con, ["bindings"], kept or None)]
