"""STUB (until the routing helper's module lands): every message is a turn of the default
agent in the session "<channel>-<peer_id>". The real admit() applies bindings, dmScope and the
DM/group policies, and records its own pairing and refusal events."""

from __future__ import annotations

from dataclasses import dataclass

from fased.channels.base import Inbound


@dataclass(frozen=True)
class Admission:
    action: str                 # "turn" | "reply" | "ignore"
    agent: str | None = None    # for "turn"
    session: str | None = None  # session name for "turn" (created if missing)
    reply: str | None = None    # text to send back for "reply" (e.g. a pairing code message)
    reason: str | None = None   # why, for "ignore"/"reply" (already recorded by admit)


def admit(store, inbound: Inbound) -> Admission:
    """Route `inbound` to the default agent's session for its peer."""
    from fased.agents import get_agent

    agent = get_agent(store.db(check_files=False), None)["id"]
    return Admission("turn", agent=agent, session=f"{inbound.channel}-{inbound.peer_id}")
