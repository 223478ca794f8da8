"""Which tools an agent is offered, and whether a call may run: decisions are values.

Selection: `tools.profile` (minimal, coding, full; default coding) gives a base set,
`tools.allow` adds to it and `tools.deny` takes away; deny wins. Entries are tool names or
`group:fs` / `group:runtime`, matched case-insensitively, `*` globs allowed. The top-level
`tools`, `agents.defaults.tools` and `agents.list[].tools` all apply (fased.settings).
`apply_patch` is offered only with `tools.exec.applyPatch: true`; exec and process are not
offered when `tools.exec.mode` is `deny`. A model that cannot use tools is offered none.

A call: `tools.exec.mode` = deny | allowlist | ask | full (default ask). `allowlist` runs
only commands matching a pattern of `tools.exec.allowlist` and refuses the rest; `ask` runs
those and asks about the rest. A command with shell operators (`;`, `&&`, `|`, `` ` ``,
`$(`, redirections) never matches a pattern: it is asked about (fased.tools.allowlist will
check each part).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from fased.tools import FAMILIES, GROUPS

PROFILES = {
    "minimal": ("read",),
    "coding": ("group:fs", "group:runtime"),
    "full": ("*",),
}
DEFAULT_PROFILE = "coding"
EXEC_MODES = ("deny", "allowlist", "ask", "full")
DEFAULT_EXEC_MODE = "ask"
_SHELL_OPERATORS = (";", "&", "|", "`", "$(", ">", "<", "\n", "(", ")")


@dataclass
class Offer:
    """A built-in tool and whether this agent is offered it, with the reason."""

    name: str
    offered: bool
    why: str


@dataclass
class Decision:
    """What may happen to a call: allow, ask (with the reason to show), or deny (why)."""

    verdict: str
    reason: str


def _matches(name: str, entries: list[str]) -> str | None:
    """The first entry (a name, a group or a glob) that covers `name`, case-insensitively."""
    for entry in entries:
        key = str(entry).strip().lower()
        names = GROUPS.get(key, (key,))
        if any(fnmatch.fnmatchcase(name, n) for n in names):
            return str(entry)
    return None


def offers(tools: dict, can_use_tools: bool = True) -> list[Offer]:
    """Every built-in tool with whether it is offered and why, in registry order."""
    profile = tools.get("profile") or DEFAULT_PROFILE
    base = list(PROFILES.get(profile, PROFILES[DEFAULT_PROFILE]))
    allow = list(tools.get("allow") or [])
    deny = list(tools.get("deny") or [])
    exec_settings = tools.get("exec") or {}
    out = []
    for name in FAMILIES:
        denied = _matches(name, deny)
        allowed = _matches(name, allow)
        in_profile = _matches(name, base)
        if not can_use_tools:
            out.append(Offer(name, False, "the model cannot use tools"))
        elif denied:
            out.append(Offer(name, False, f"denied by tools.deny ({denied})"))
        elif name == "apply_patch" and not exec_settings.get("applyPatch"):
            out.append(Offer(name, False, "off unless tools.exec.applyPatch is true"))
        elif name in ("exec", "process") and exec_settings.get("mode") == "deny":
            out.append(Offer(name, False, "tools.exec.mode is deny"))
        elif allowed and not in_profile:
            out.append(Offer(name, True, f"allowed by tools.allow ({allowed})"))
        elif in_profile:
            out.append(Offer(name, True, f"in profile {profile}"))
        else:
            out.append(Offer(name, False, f"not in profile {profile}"))
    return out


def offered_names(tools: dict, can_use_tools: bool = True) -> list[str]:
    return [o.name for o in offers(tools, can_use_tools) if o.offered]


def decide_exec(command: str, tools: dict) -> Decision:
    """Whether an exec call may run now, must be asked about, or is refused."""
    settings = tools.get("exec") or {}
    mode = settings.get("mode") or DEFAULT_EXEC_MODE
    if mode == "full":
        return Decision("allow", "tools.exec.mode is full")
    if mode == "deny":
        return Decision("deny", "tools.exec.mode is deny")
    pattern = allowlisted(command, settings.get("allowlist") or [])
    if pattern is not None:
        return Decision("allow", f"matches tools.exec.allowlist ({pattern})")
    if mode == "allowlist":
        return Decision("deny", "it matches no pattern of tools.exec.allowlist")
    return Decision("ask", "it matches no pattern of tools.exec.allowlist")


def allowlisted(command: str, patterns: list[str]) -> str | None:
    """The allowlist pattern a command matches; None for a command with shell operators."""
    text = " ".join(command.split())
    if not text or any(op in command for op in _SHELL_OPERATORS):
        return None
    for pattern in patterns:
        if fnmatch.fnmatchcase(text, " ".join(str(pattern).split())):
            return str(pattern)
    return None


def how_to_allow(command: str) -> str:
    """What the user can do so that a refused command runs next time (for stderr)."""
    first = command.split()[0] if command.split() else command
    return (f"to let it run, add a pattern to tools.exec.allowlist (e.g. `fased config set "
            f"tools.exec.allowlist '[\"{first} *\"]'`), or set tools.exec.mode full; "
            "or answer the question in an interactive `fased chat`")
