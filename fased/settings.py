"""What fased.json says about running an agent: agents.defaults, the top-level `tools`, and the
agent's own entry in agents.list[] (a layer below the runner and the agent loop, which both
read it)."""

from __future__ import annotations

import json
import sqlite3

QUEUE_MODES = ("followup", "collect", "steer")
DEFAULT_RETRIES = 2
DEFAULT_COOLDOWN = 60.0
MAX_WAIT = 60.0


def agent_settings(con: sqlite3.Connection, agent: str) -> dict:
    """Run settings: agents.defaults with the agent's own queue, tools, sandbox and budgets
    over it. `tools` merges three layers (top-level `tools`, agents.defaults.tools, the
    agent's tools): scalars of the more specific layer win; allow and deny lists add up.
    `sandbox` is agents.defaults.sandbox with the agent's own keys over it."""
    from fased.config import config_doc

    doc = config_doc(con)
    defaults = doc.get("agents", {}).get("defaults", {})
    row = con.execute("SELECT config FROM agents WHERE id = ?", (agent,)).fetchone()
    own = json.loads(row[0] or "{}") if row else {}
    out = {**defaults}
    for key in ("bootstrapMaxChars", "bootstrapTotalMaxChars", "systemPrompt",
                "contextWindow"):
        if key in own:
            out[key] = own[key]
    out["queue"] = {**defaults.get("queue", {}), **own.get("queue", {})}
    out["sandbox"] = {**defaults.get("sandbox", {}), **own.get("sandbox", {})}
    out["tools"] = merge_tools(doc.get("tools", {}), defaults.get("tools", {}),
                               own.get("tools", {}))
    return out


def merge_tools(*layers: dict) -> dict:
    """Tool settings from the least to the most specific layer."""
    out: dict = {"allow": [], "deny": []}
    for layer in layers:
        for key, value in layer.items():
            if key in ("allow", "deny"):
                out[key] = out[key] + [v for v in value if v not in out[key]]
            elif isinstance(value, dict):
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


def queue_mode(con: sqlite3.Connection, session: str, agent: str) -> str:
    row = con.execute("SELECT queue_mode FROM sessions WHERE id = ?", (session,)).fetchone()
    if row is not None and row[0]:
        return row[0]
    return agent_settings(con, agent)["queue"].get("mode", "followup")


def env_int(name: str, default: int, lo: int, hi: int) -> int:
    """A whole number from the environment variable `name` (`default` when unset or blank),
    from `lo` to `hi`; anything else is a UsageError naming the variable, never a
    ValueError from deep inside a command."""
    import os

    from fased.errors import UsageError

    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise UsageError(f"{name} must be a whole number from {lo} to {hi}, not {text!r}")
    return value


FLAG_WORDS = {"1": True, "true": True, "yes": True, "on": True,
              "0": False, "false": False, "no": False, "off": False}


def env_flag(name: str, default: bool = False, strict: bool = True) -> bool:
    """A yes-or-no environment variable: 1/true/yes/on or 0/false/no/off, in any case
    (`default` when unset or blank). Any other value is a UsageError naming the variable,
    never a silent yes (FASED_EMBEDDED=false pulled the model); strict=False takes it as
    yes, for a place that must not fail (printing a bug's traceback)."""
    import os

    from fased.errors import UsageError

    text = os.environ.get(name, "").strip()
    if not text:
        return default
    value = FLAG_WORDS.get(text.lower())
    if value is None:
        if not strict:
            return True
        raise UsageError(f"{name} must be 1 or 0 (or true/false, yes/no, on/off), "
                         f"not {text!r}")
    return value
