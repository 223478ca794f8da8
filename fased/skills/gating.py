"""Which skills an agent is offered, and why each other one is not.

A skill is offered when it is the winner of its name (not shadowed), not disabled
(skills.entries.<name>.enabled), allowed for the agent (agents.list[].skills, else
agents.defaults.skills; no list means every skill, `[]` none), and its gates are met:
`requires.bins` (all on PATH), `requires.anyBins` (one of them), `requires.env` (set in the
environment or in skills.entries.<name>.env), `requires.config` (truthy paths of the
skill's own skills.entries.<name>.config, else of fased.json) and `os`. `always: true` skips
the requirement checks.
"""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fased.skills.loader import Found, Skill, find_skills

OS_NAMES = {"linux": "linux", "darwin": "darwin", "macos": "darwin", "win32": "win32",
            "windows": "win32"}


@dataclass
class Status:
    """A skill and its status for one agent: `ready`, or why it is not offered."""

    skill: Skill
    status: str

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def _list(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def entry_of(config: dict, name: str) -> dict:
    entry = ((config.get("skills") or {}).get("entries") or {}).get(name)
    return entry if isinstance(entry, dict) else {}


def unmet(skill: Skill, config: dict, secrets: dict,
          which: Callable[[str], str | None] = shutil.which) -> str | None:
    """Why the skill's gates are not met (`missing: bins=jq`, `os: darwin only`), or None:
    one line, as the gates quote a SKILL.md, which may hold anything."""
    from fased.bounds import printable

    why = _unmet(skill, config, secrets, which)
    return None if why is None else printable(why)


def _unmet(skill: Skill, config: dict, secrets: dict,
           which: Callable[[str], str | None]) -> str | None:
    gate = skill.gate()
    if gate.get("always") is True:
        return None
    systems = [OS_NAMES.get(s.lower(), s.lower()) for s in _list(gate.get("os"))]
    if systems and sys.platform not in systems:
        return f"os: {', '.join(_list(gate.get('os')))} only"
    requires = gate.get("requires") if isinstance(gate.get("requires"), dict) else {}
    missing = []
    bins = [b for b in _list(requires.get("bins")) if which(b) is None]
    if bins:
        missing.append("bins=" + ",".join(bins))
    any_bins = _list(requires.get("anyBins"))
    if any_bins and not any(which(b) for b in any_bins):
        missing.append("anyBins=" + "|".join(any_bins))
    env = {**(entry_of(config, skill.name).get("env") or {}), **secrets.get(skill.name, {})}
    envs = [v for v in _list(requires.get("env")) if not (os.environ.get(v) or env.get(v))]
    if envs:
        missing.append("env=" + ",".join(envs))
    # a path is looked up in the skill's own settings (skills.entries.<name>.config) first,
    # then in fased.json as a whole
    own = entry_of(config, skill.name).get("config")
    own = own if isinstance(own, dict) else {}
    paths = [p for p in _list(requires.get("config"))
             if not (_config_value(own, p) or _config_value(config, p))]
    if paths:
        missing.append("config=" + ",".join(paths))
    return "missing: " + " ".join(missing) if missing else None


def _config_value(doc: dict, path: str):
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def allowed_list(con: sqlite3.Connection, agent: str, config: dict) -> list[str] | None:
    """The agent's own skills list, else agents.defaults.skills; None: every skill."""
    import json

    row = con.execute("SELECT config FROM agents WHERE id = ?", (agent,)).fetchone()
    own = json.loads(row[0] or "{}") if row else {}
    if isinstance(own.get("skills"), list):
        return list(own["skills"])
    default = config.get("agents", {}).get("defaults", {}).get("skills")
    return list(default) if isinstance(default, list) else None


def find(con: sqlite3.Connection, home: Path, workspace: Path | None) -> Found:
    """Every skill in the roots, with skills.load.extraDirs from fased.json."""
    from fased.config import config_doc

    return find_skills(home, workspace, config_doc(con))


def statuses(con: sqlite3.Connection, home: Path, agent: str | None,
             workspace: Path | None, found: Found | None = None) -> list[Status]:
    """Every skill found with its status for `agent` (None: no per-agent list applies)."""
    from fased.config import config_doc
    from fased.skills.secrets import skill_secrets

    config = config_doc(con)
    found = found or find_skills(home, workspace, config)
    allowed = allowed_list(con, agent, config) if agent else None
    secrets = skill_secrets(home)
    which = functools.cache(shutil.which)  # one PATH search per program, not per skill
    out = []
    for skill in found.skills:
        if skill.shadowed_by:
            status = f"shadowed by {skill.shadowed_by}"
        elif entry_of(config, skill.name).get("enabled") is False:
            status = "disabled"
        elif allowed is not None and skill.name not in allowed:
            status = "not allowed"
        else:
            status = unmet(skill, config, secrets, which) or "ready"
        out.append(Status(skill, status))
    return out


def offered(con: sqlite3.Connection, home: Path, agent: str,
            workspace: Path) -> tuple[list[Skill], list[str]]:
    """The skills the agent's next turn is offered (by name), and the loader's warnings."""
    found = find(con, home, workspace)
    ready = [s.skill for s in statuses(con, home, agent, workspace, found) if s.ready]
    return sorted(ready, key=lambda s: s.name), found.warnings


def skill_env(con: sqlite3.Connection, home: Path, skills: list[Skill]) -> dict[str, str]:
    """skills.entries.<name>.env of the offered skills (secrets from credentials.json), for
    the commands the agent runs."""
    from fased.config import config_doc
    from fased.skills.secrets import skill_secrets

    settings = config_doc(con)
    secrets = skill_secrets(home)
    env: dict[str, str] = {}
    for skill in skills:
        for key, value in (entry_of(settings, skill.name).get("env") or {}).items():
            env[str(key)] = str(value)
        env.update(secrets.get(skill.name, {}))
    return env
