"""What a hook is: its stable name, the events it takes, and its retry schedule."""

from __future__ import annotations

import fnmatch
import json
import sqlite3
from dataclasses import dataclass, field

DEFAULT_TIMEOUT = 30.0
DEFAULT_BACKOFF = (10, 60)  # seconds before the 2nd and 3rd attempt: three in all
OWN_PREFIX = "hook."  # a hook's own events never trigger hooks (no loops)


@dataclass(frozen=True)
class HookSpec:
    """One configured hook. `scope` is the agent whose agents.list[] entry holds it ("" for
    the top-level `hooks`)."""

    name: str
    on: str
    run: str
    scope: str = ""
    agent: str | None = None
    session: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    backoff: tuple[int, ...] = field(default=DEFAULT_BACKOFF)

    @property
    def attempts(self) -> int:
        return len(self.backoff) + 1

    def to_dict(self) -> dict:
        return {"hook": self.name, "on": self.on, "run": self.run, "scope": self.scope or None,
                "agent": self.agent, "session": self.session, "timeoutSeconds": self.timeout,
                "backoffSeconds": list(self.backoff)}

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> HookSpec:
        d = json.loads(text)
        return cls(d["hook"], d["on"], d["run"], d["scope"] or "", d["agent"], d["session"],
                   float(d["timeoutSeconds"]), tuple(d["backoffSeconds"]))


def derived_name(scope: str, on: str, run: str) -> str:
    """The name of a hook without an `id`: a digest of where it is and what it does."""
    import hashlib  # only for hooks without an id: start-up does not pay for it

    digest = hashlib.sha256(f"{scope}\n{on}\n{run}".encode()).hexdigest()
    return f"h-{digest[:8]}"


def spec_of(item: dict, scope: str = "") -> HookSpec:
    """A hook entry of fased.json (already valid by schemas/config.json) as a HookSpec."""
    backoff = item.get("backoffSeconds")
    return HookSpec(
        name=item.get("id") or derived_name(scope, item["on"], item["run"]),
        on=item["on"], run=item["run"], scope=scope,
        agent=scope or item.get("agent"), session=item.get("session"),
        timeout=float(item.get("timeoutSeconds", DEFAULT_TIMEOUT)),
        backoff=DEFAULT_BACKOFF if backoff is None else tuple(backoff))


def specs_of_doc(doc: dict) -> list[HookSpec]:
    """Every hook of a rendered fased.json: the top-level ones, then each agent's."""
    specs = [spec_of(h) for h in doc.get("hooks") or ()]
    for agent in doc.get("agents", {}).get("list", []):
        specs.extend(spec_of(h, agent["id"]) for h in agent.get("hooks") or ())
    return specs


def check_names(doc: dict) -> str | None:
    """The problem with the hooks' names (two hooks with one name), or None."""
    seen: set[str] = set()
    for spec in specs_of_doc(doc):
        if spec.name in seen:
            return f"hook {spec.name!r} appears twice (hook names must be unique; set `id`)"
        seen.add(spec.name)
    return None


def specs_in_state(con: sqlite3.Connection) -> list[HookSpec]:
    """The hooks the config and the live agents hold (read from their projections)."""
    row = con.execute("SELECT doc FROM config WHERE id = 1").fetchone()
    doc = json.loads(row[0]) if row else {}
    specs = [spec_of(h) for h in doc.get("hooks") or ()]
    for agent_id, config in con.execute(
            "SELECT id, config FROM agents WHERE deleted = 0 ORDER BY position"):
        hooks = json.loads(config or "{}").get("hooks") or ()
        specs.extend(spec_of(h, agent_id) for h in hooks)
    return specs


def event_agent(event: dict) -> str | None:
    """The agent an event is about: its data's, else its stream's."""
    agent = event["data"].get("agent")
    if isinstance(agent, str):
        return agent
    stream = event["stream"]
    return stream.removeprefix("agent:") if stream.startswith("agent:") else None


def event_session(event: dict) -> str | None:
    session = event["data"].get("session")
    if isinstance(session, str):
        return session
    stream = event["stream"]
    return stream.removeprefix("session:") if stream.startswith("session:") else None


def matches(spec: HookSpec, event: dict) -> bool:
    """True when `spec` takes `event` (never one of the hooks' own events)."""
    etype = event["type"]
    if etype.startswith(OWN_PREFIX) or not fnmatch.fnmatchcase(etype, spec.on):
        return False
    if spec.agent and event_agent(event) != spec.agent:
        return False
    return not (spec.session and event_session(event) != spec.session)
