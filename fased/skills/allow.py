"""`fased agent skills allow|deny|reset`: an agent's own skills list, changed by config.set /
config.unset events on agents.list[N].skills (so fased.json and `fased replay` show them).

An agent without its own list uses agents.defaults.skills, else every skill. Allowing or
denying starts the agent's own list from what it is offered now (the default list, or every
skill found); reset drops the names from the agent's own decision (no names: the whole list).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fased.skills.loader import check_skill_name
from fased.store import Draft


def skills_change(con: sqlite3.Connection, home: Path, agent_id: str, action: str,
                  names: list[str], workspace: Path) -> list[Draft]:
    """The config.set/unset drafts that allow, deny or reset `names` for an agent."""
    from fased.config import agent_entry, config_doc, validate
    from fased.skills.gating import find

    for name in names:
        check_skill_name(name)
    doc, index, settings = agent_entry(con, agent_id)
    agents = doc["agents"]["list"]
    own = settings.get("skills")
    default = config_doc(con).get("agents", {}).get("defaults", {}).get("skills")
    if action == "reset":
        if own is None:
            return []
        if names:
            base = default if isinstance(default, list) else None
            new = [n for n in own if n not in names]
            if base is None:
                new += [n for n in names if n not in new]
            else:
                new += [n for n in names if n in base and n not in new]
        else:
            new = None
    else:
        start = own if isinstance(own, list) else default if isinstance(default, list) else \
            sorted(find(con, home, workspace).winners())
        new = [n for n in start if n not in names]
        if action == "allow":
            new += names
        if isinstance(own, list) and sorted(new) == sorted(own):
            return []
    path = f"agents.list[{index}].skills"
    change: dict = {"path": path, "agent": agent_id}
    if own is not None:
        change["old"] = own
    if new is None:
        agents[index].pop("skills", None)
        validate(doc, hint="nothing was changed")
        return [Draft("config.unset", "config", change)]
    change["value"] = new
    agents[index]["skills"] = new
    validate(doc, hint="nothing was changed")
    return [Draft("config.set", "config", change)]
