"""`fased channel bind|unbind|routes`: which agent answers which chat, and why.

These are added onto the `channel` group (ROUTE_COMMANDS)."""

from __future__ import annotations

import click

from fased.commands.output import echo_json, json_option, say, store, table
from fased.commands.types import complete_agents

_WHY = {
    "turn": "it would be answered",
    "not-mentioned": "it would be answered only when the bot is mentioned (requireMention)",
    "pairing-requested": "it would not be answered: the sender would get a pairing code",
    "pairing-pending": "it would not be answered: a pairing code waits for the sender "
                       "(`fased pairing list`)",
    "pairing-full": "it would not be answered: 3 pairing codes wait already",
    "pairing-denied": "it would not be answered: the sender's pairing was denied",
    "not-allowlisted": "it would not be answered: the sender is not in allowFrom",
    "dm-disabled": "it would not be answered: dmPolicy is disabled",
    "group-disabled": "it would not be answered: groupPolicy is disabled",
    "group-not-allowed": "it would not be answered: the group is not in groups",
    "no-agent": "it would not be answered: there is no agent",
}


def _match_options(fn):
    fn = click.option("--peer", metavar="dm:ID|group:ID",
                      help="One chat: a direct chat with user ID, or group ID.")(fn)
    fn = click.option("--account", metavar="NAME",
                      help="Only this account of the channel (default: any).")(fn)
    return click.option("--channel", "channel_", metavar="CHANNEL", required=True,
                        help="The channel, e.g. telegram.")(fn)


@click.command("bind")
@_match_options
@click.option("--agent", "-a", "agent", metavar="ID", required=True,
              help="The agent that answers.", shell_complete=complete_agents)
def bind(channel_: str, account: str | None, peer: str | None, agent: str) -> None:
    """Send a channel's messages (one account's, or one chat's) to an agent.

    The most specific binding wins: a peer, then an account, then the channel; what no
    binding matches goes to the default agent. Binding the same match again moves it to
    the new agent. A binding is a config change (`bindings` in fased.json).

    \b
    Examples:
      fased channel bind --channel telegram --agent main
      fased channel bind --channel telegram --account work --agent ops
      fased channel bind --channel telegram --peer dm:123456789 --agent ops
      fased channel bind --channel telegram --peer group:-1001234567 --agent team
    """
    from fased.agents import get_agent
    from fased.channels.routing import bind_drafts, describe_match, make_match

    match = make_match(channel_, account, peer)

    def decide(con):
        return bind_drafts(con, match, get_agent(con, agent)["id"])

    outcome = store().transact(decide)
    shown = describe_match(match)
    say(f"Bound {shown} to {agent}." if outcome.events else f"{shown} already goes to {agent}.")


@click.command("unbind")
@_match_options
def unbind(channel_: str, account: str | None, peer: str | None) -> None:
    """Remove the binding with exactly this match (its messages go where the next most
    specific rule says).

    \b
    Examples:
      fased channel unbind --channel telegram --peer dm:123456789
      fased channel unbind --channel telegram --account work
    """
    from fased.channels.routing import bind_drafts, describe_match, make_match
    from fased.errors import NotFoundError

    match = make_match(channel_, account, peer)

    def decide(con):
        drafts = bind_drafts(con, match, None)
        if not drafts:
            raise NotFoundError(f"no binding matches exactly {describe_match(match)}",
                                hint="`fased channel routes` lists them")
        return drafts

    store().transact(decide)
    say(f"Unbound {describe_match(match)}.")


@click.command("routes")
@click.option("--explain", metavar="CHANNEL[/ACCOUNT]/dm:ID|group:ID",
              help="Which agent and session a chat would reach, which rule decides, and "
                   "whether it would be answered.")
@json_option
def routes(explain: str | None, json_: bool) -> None:
    """What goes where and why: each binding, the default agent, the session a chat gets
    (session.dmScope) and who may talk (dmPolicy, groupPolicy). Reads only.

    \b
    Examples:
      fased channel routes
      fased channel routes --json
      fased channel routes --explain telegram/dm:123456789
      fased channel routes --explain telegram/work/group:-1001234567
    """
    from fased.channels.routing import default_agent, dm_scope
    from fased.config import config_doc

    st = store()
    con = st.db()
    target = _parse_target(explain) if explain else None
    doc = config_doc(con)
    live = {r[0] for r in con.execute("SELECT id FROM agents WHERE deleted = 0")}
    report = {"bindings": [_binding_row(i, b, live) for i, b in
                           enumerate(doc.get("bindings", []))],
              "default": default_agent(con), "dmScope": dm_scope(doc),
              "access": _access_report(doc)}
    if target is not None:
        report["explain"] = _explain(con, doc, target, st.clock())
    if json_:
        echo_json(report)
        return
    rows = [(f"bindings[{b['index']}]", b["shown"], b["agent"], b["level"])
            for b in report["bindings"]]
    rows.append(("(default)", "anything else", report["default"] or "-", "default agent"))
    table(rows, ("RULE", "MATCH", "AGENT", "LEVEL"))
    say(f"\nSessions (session.dmScope {report['dmScope']}): "
        + {"per-peer": "a direct chat gets session dm:ID",
           "per-channel-peer": "a direct chat gets session CHANNEL:dm:ID",
           "main": "every direct chat goes to the agent's session main"}[report["dmScope"]]
        + "; a group gets CHANNEL:group:ID.")
    for channel, a in report["access"].items():
        say(f"Who may talk on {channel}: dmPolicy {a['dmPolicy']}"
            f" (allowFrom: {', '.join(a['allowFrom']) or 'none'}); groupPolicy "
            f"{a['groupPolicy']} (groups: {', '.join(a['groups']) or 'none'}); "
            f"requireMention {str(a['requireMention']).lower()}.")
    if target is not None:
        e = report["explain"]
        say(f"\n{e['target']}: agent {e['agent'] or '-'} ({e['why']}), session "
            f"{e['session'] or '-'}; {_WHY.get(e['reason'] or e['action'], e['reason'])}.")


ROUTE_COMMANDS = [bind, unbind, routes]


def _binding_row(index: int, binding: dict, live: set[str]) -> dict:
    from fased.channels.routing import describe_level, describe_match

    return {"index": index, "match": binding["match"], "agent": binding["agent"],
            "level": describe_level(binding["match"]), "shown": describe_match(binding["match"]),
            "active": binding["agent"] in live}


def _access_report(doc: dict) -> dict:
    from fased.channels.routing import access

    channels = ["telegram", *sorted(set(doc.get("channels", {})) - {"telegram"})]
    out = {}
    for channel in channels:
        a = access(doc, channel, "default")
        out[channel] = {"dmPolicy": a.dm_policy, "allowFrom": sorted(a.allow_from),
                        "groupPolicy": a.group_policy, "groups": sorted(a.groups),
                        "requireMention": a.require_mention}
    return out


def _parse_target(text: str) -> dict:
    from fased.channels.routing import DEFAULT_ACCOUNT, make_match
    from fased.errors import UsageError

    parts = text.strip().split("/")
    if len(parts) not in (2, 3):
        raise UsageError(f"--explain {text!r}: give CHANNEL[/ACCOUNT]/dm:ID|group:ID",
                         hint="e.g. --explain telegram/dm:123456789")
    match = make_match(parts[0], parts[1] if len(parts) == 3 else None, parts[-1])
    match.setdefault("account", DEFAULT_ACCOUNT)
    return match


def _explain(con, doc: dict, target: dict, now) -> dict:
    from fased.channels.base import Inbound
    from fased.channels.routing import describe_match, evaluate, resolve

    peer = target["peer"]
    inbound = Inbound(channel=target["channel"], account=target["account"],
                      peer_kind=peer["kind"], peer_id=peer["id"], sender_id=peer["id"],
                      sender_name="", text="", mentioned=False, message_id="", update_id="")
    route = resolve(con, doc, inbound.channel, inbound.account, inbound.peer_kind,
                    inbound.peer_id)
    admission, _ = evaluate(con, inbound, now)  # decided, never appended: this only reads
    session = admission.session
    if session is None and route.agent is not None:
        from fased.channels.routing import session_name

        session = session_name(doc, inbound.channel, inbound.peer_kind, inbound.peer_id)
    return {"target": describe_match(target), "channel": target["channel"],
            "account": target["account"], "peer": peer, "agent": route.agent,
            "rule": route.rule, "why": route.why, "session": session,
            "action": admission.action, "reason": admission.reason}
