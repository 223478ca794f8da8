"""`fased agent tools`: what an agent is offered and why, and changing its allow/deny lists
(config.set events on agents.list[N].tools, so fased.json shows them)."""

from __future__ import annotations

import fnmatch
import sqlite3
from pathlib import Path

from fased.errors import UsageError
from fased.store import Draft
from fased.tools import FAMILIES, GROUPS


def tools_report(con: sqlite3.Connection, home: Path, agent_id: str) -> dict:
    """The effective tool set of an agent: each tool, offered or not, and why; the exec
    approval mode and allowlist; where processes run (fased.tools.confine.sandbox_report)."""
    from fased.agents import get_agent
    from fased.settings import agent_settings
    from fased.tools.confine import sandbox_report
    from fased.tools.policy import DEFAULT_EXEC_MODE, DEFAULT_PROFILE, offers

    settings = agent_settings(con, agent_id)
    tools = settings["tools"]
    exec_settings = tools.get("exec") or {}
    return {
        "agent": agent_id,
        "profile": tools.get("profile") or DEFAULT_PROFILE,
        "allow": tools.get("allow", []), "deny": tools.get("deny", []),
        "tools": [{"name": o.name, "offered": o.offered, "why": o.why} for o in offers(tools)],
        "exec": {"mode": exec_settings.get("mode") or DEFAULT_EXEC_MODE,
                 "allowlist": exec_settings.get("allowlist", []),
                 "applyPatch": bool(exec_settings.get("applyPatch")),
                 "strictInlineEval": exec_settings.get("strictInlineEval", True) is not False},
        "workspace_only": bool((tools.get("fs") or {}).get("workspaceOnly", True)),
        "sandbox": sandbox_report(con, home, get_agent(con, agent_id, include_deleted=True),
                                  settings),
    }


def check_names(names: list[str]) -> list[str]:
    """Tool names, groups or globs; an exact name that is none of these is a usage error."""
    out = []
    for name in names:
        key = name.strip().lower()
        if not key:
            raise UsageError("an empty tool name")
        if key not in FAMILIES and key not in GROUPS and not any(c in key for c in "*?["):
            raise UsageError(f"unknown tool {name!r}",
                             hint="tools: " + ", ".join([*FAMILIES, *GROUPS]))
        if any(c in key for c in "*?[") and not any(
                fnmatch.fnmatchcase(t, key) for t in FAMILIES):
            raise UsageError(f"{name!r} matches no tool",
                             hint="tools: " + ", ".join(FAMILIES))
        out.append(key)
    return out


def tools_change(con: sqlite3.Connection, agent_id: str, action: str,
                 names: list[str]) -> list[Draft]:
    """The config.set drafts that allow, deny or reset `names` for an agent."""

    from fased.config import agent_entry, validate

    names = check_names(names)
    doc, index, settings = agent_entry(con, agent_id)
    agents = doc["agents"]["list"]
    own = settings.get("tools", {})
    lists = {"allow": list(own.get("allow", [])), "deny": list(own.get("deny", []))}
    for name in names:
        for key in ("allow", "deny"):
            lists[key] = [n for n in lists[key] if str(n).lower() != name]
        if action in ("allow", "deny"):
            lists[action].append(name)
    drafts = []
    for key in ("allow", "deny"):
        old = own.get(key)
        if (old or []) == lists[key]:
            continue
        path = f"agents.list[{index}].tools.{key}"
        change = {"path": path, "value": lists[key], "agent": agent_id}
        if old is not None:
            change["old"] = old
        if lists[key]:
            agents[index].setdefault("tools", {})[key] = lists[key]
            drafts.append(Draft("config.set", "config", change))
        else:
            agents[index].get("tools", {}).pop(key, None)
            change.pop("value")
            drafts.append(Draft("config.unset", "config", change))
    if agents[index].get("tools") == {}:
        agents[index].pop("tools")
    validate(doc, hint="nothing was changed")
    return drafts
