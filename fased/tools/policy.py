"""Which tools an agent is offered, and whether a call may run: decisions are values.

Selection: `tools.profile` (minimal, coding, full; default coding) gives a base set,
`tools.allow` adds to it and `tools.deny` takes away; deny wins. Entries are tool names or
`group:fs` / `group:runtime` / `group:memory`, matched case-insensitively, `*` globs allowed.
The top-level `tools`, `agents.defaults.tools` and `agents.list[].tools` all apply
(fased.settings). `apply_patch` is offered only with `tools.exec.applyPatch: true`; exec and
process are not offered when `tools.exec.mode` is `deny`. A model that cannot use tools is
offered none.

A call: `tools.exec.mode` = deny | allowlist | ask | full (default ask). `allowlist` runs
only commands that `tools.exec.allowlist` allows and refuses the rest; `ask` runs those and
asks about the rest. fased.tools.allowlist decides: every command of a line (across `;`,
`&&`, pipes, substitutions...) must be allowed by an entry, launchers only by an exact one,
and inline code (`python -c`) is asked about while `tools.exec.strictInlineEval` (default
true) is on.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fased.tools import FAMILIES, GROUPS

if TYPE_CHECKING:
    from fased.tools.allowlist import Verdict

PROFILES = {
    "minimal": ("read",),
    "coding": ("group:fs", "group:runtime", "group:memory"),
    "full": ("*",),
}
DEFAULT_PROFILE = "coding"
EXEC_MODES = ("deny", "allowlist", "ask", "full")
DEFAULT_EXEC_MODE = "ask"


@dataclass
class Offer:
    """A built-in tool and whether this agent is offered it, with the reason."""

    name: str
    offered: bool
    why: str


@dataclass
class Decision:
    """What may happen to a call: allow, ask (with the reason to show), or deny (why);
    `suggestion`: an allowlist entry that would let it run, when one would."""

    verdict: str
    reason: str
    suggestion: str | None = None


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


def decide_exec(command: str, tools: dict, *, cwd: Path | None = None,
                environ: Mapping[str, str] | None = None,
                env: Mapping[str, str] | None = None) -> Decision:
    """Whether an exec call may run now, must be asked about, or is refused. cwd: where it
    runs (the call's workdir, else the workspace; None: not known, so relative paths are
    asked about); environ: the environment fased runs in (default os.environ), of which exec
    passes on what tool_environment keeps; env: the call's own variables."""
    settings = tools.get("exec") or {}
    mode = settings.get("mode") or DEFAULT_EXEC_MODE
    if mode == "full":
        return Decision("allow", "tools.exec.mode is full")
    if mode == "deny":
        return Decision("deny", "tools.exec.mode is deny")
    verdict = check_exec(command, settings, cwd=cwd, environ=environ, env=env)
    if verdict.allowed:
        used = verdict.entries
        return Decision("allow", f"matches tools.exec.allowlist ({'; '.join(used)})" if used
                        else "needs no tools.exec.allowlist entry")
    return Decision("deny" if mode == "allowlist" else "ask", verdict.reason, verdict.suggestion)


def check_exec(command: str, settings: dict, *, cwd: Path | None = None,
               environ: Mapping[str, str] | None = None,
               env: Mapping[str, str] | None = None) -> Verdict:
    """The allowlist's verdict on a command, with exec's PATH and variables."""
    from fased.tools.allowlist import check
    from fased.tools.exec import tool_environment

    passed = tool_environment(dict(os.environ if environ is None else environ))
    entries = [str(e) for e in settings.get("allowlist") or []]
    return check(command, entries, cwd=cwd, path=passed.get("PATH", os.defpath),
                 strict_inline=settings.get("strictInlineEval", True) is not False,
                 env_names=set(passed) | set(env or {}), env=dict(env or {}))


def how_to_allow(command: str, decision: Decision | None = None) -> str:
    """What the user can do so that a refused command runs next time (for stderr); without
    the decision, the entry suggested is for the first program of the command."""
    from fased.tools.allowlist import first_program

    entry = decision.suggestion if decision is not None else first_program(command)
    ask = "or answer the question in an interactive `fased chat`"
    if entry is None:
        return (f"no allowlist entry lets it run unasked as written; set tools.exec.mode "
                f"full, {ask}")
    quoted = entry.replace("\\", "\\\\").replace('"', '\\"').replace("'", "'\\''")
    return (f"to let it run, add an entry to tools.exec.allowlist (e.g. `fased config set "
            f"tools.exec.allowlist '[\"{quoted}\"]'`), or set tools.exec.mode full; {ask}")
