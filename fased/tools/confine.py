"""Which sandbox a turn's tools get, from the agent's `sandbox` settings (agents.defaults.sandbox
with agents.list[].sandbox over it, key by key).

    mode             off (default): commands run on the host; all: every turn of the agent
                     runs in the sandbox; non-main: every turn that does not come from the
                     local user (the CLI's turns have source chat or task; anything else,
                     such as a channel, is not the main session)
    workspaceAccess  rw (default): the agent's workspace is the sandbox workspace, read-write;
                     ro: tools write in <workspaceRoot>/<agent id> and see the agent's
                     workspace read-only at its own path; none: only the sandbox workspace
    workspaceRoot    where sandbox workspaces live (default <fased home>/sandboxes)
    network          false (default): no network inside the sandbox

In a sandbox the file tools are held to the sandbox workspace (and, with ro, may read the
agent's workspace) whatever tools.fs.workspaceOnly says: they should reach what exec reaches.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fased.tools.base import ToolError, shown
from fased.tools.sandbox import INSTALL, Bwrap, Host

MODES = ("off", "non-main", "all")
ACCESS = ("none", "ro", "rw")
MAIN_SOURCES = ("chat", "task")  # turns the local user queued: `fased chat`, `fased task`


@dataclass(frozen=True)
class SandboxSettings:
    """An agent's sandbox settings with their defaults filled in."""

    mode: str
    access: str
    root: Path
    network: bool

    @classmethod
    def of(cls, settings: dict, home: Path) -> SandboxSettings:
        """From agent_settings(...) (values the config schema has checked)."""
        raw = settings.get("sandbox") or {}
        root = raw.get("workspaceRoot")
        # A value the schema would refuse still confines: unknown means the strictest.
        mode = raw.get("mode", "off")
        access = raw.get("workspaceAccess", "rw")
        return cls(mode=mode if mode in MODES else "all",
                   access=access if access in ACCESS else "none",
                   root=Path(root).expanduser() if root else home / "sandboxes",
                   network=raw.get("network") is True)

    def applies(self, turn: sqlite3.Row | dict | None) -> bool:
        """Whether a turn (None: a turn not from the local user) runs in the sandbox."""
        if self.mode == "all":
            return True
        if self.mode == "non-main":
            return turn is None or turn["source"] not in MAIN_SOURCES
        return False

    def box_workspace(self, agent_id: str) -> Path:
        """The sandbox workspace of ro and none: <workspaceRoot>/<agent id>."""
        return self.root / agent_id


def tool_workspace(con: sqlite3.Connection, home: Path, agent: sqlite3.Row, turn,
                   settings: dict) -> Path:
    """Where a turn's tools work (the sandbox workspace for ro and none), making nothing."""
    from fased.agents import workspace_for

    config = SandboxSettings.of(settings, home)
    if config.applies(turn) and config.access != "rw":
        return config.box_workspace(agent["id"])
    return workspace_for(con, home, agent)


def sandbox_for(con: sqlite3.Connection, home: Path, agent: sqlite3.Row, turn: sqlite3.Row,
                settings: dict) -> tuple[Any, Path, tuple[Path, ...]]:
    """(sandbox, workspace, readable) for the tools of one turn: where exec runs, the
    ToolContext workspace (relative paths, writes) and its extra read-only roots. ToolError
    when the sandbox workspace cannot be made."""
    from fased.agents import workspace_for

    config = SandboxSettings.of(settings, home)
    workspace = workspace_for(con, home, agent)
    if not config.applies(turn):
        return Host(), workspace, ()
    if config.access == "rw":
        return Bwrap(home=home, writable=workspace, network=config.network), workspace, ()
    box = config.box_workspace(agent["id"])
    try:
        box.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        box.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ToolError(f"Nothing ran: the sandbox workspace {shown(box)} cannot be created "
                        f"({exc.strerror or exc}); check sandbox.workspaceRoot.") from None
    readable = (workspace,) if config.access == "ro" else ()
    return (Bwrap(home=home, writable=box, readonly=readable, network=config.network), box,
            readable)


def sandbox_report(con: sqlite3.Connection, home: Path, agent: sqlite3.Row,
                   settings: dict) -> dict:
    """What `fased agent show` and `fased agent tools` say about the sandbox: its settings,
    the workspace tools write in when it applies, whether bwrap is there and starts."""
    from fased.agents import workspace_for

    config = SandboxSettings.of(settings, home)
    workspace = workspace_for(con, home, agent)
    binary = shutil.which("bwrap")
    box = workspace if config.access == "rw" else config.box_workspace(agent["id"])
    report: dict = {
        "mode": config.mode, "workspaceAccess": config.access,
        "workspaceRoot": str(config.root), "network": config.network,
        "workspace": str(box), "bwrap": binary, "available": binary is not None,
        "problem": None if binary else f"bwrap is not installed: {INSTALL}"}
    # The sandbox workspace of ro and none is made by the first call; until then the probe
    # binds the agent's workspace in its place.
    probe = next((p for p in (box, workspace) if os.path.isdir(p)), None)
    if config.mode != "off" and binary and probe is not None:
        visible = (workspace,) if config.access == "ro" else ()
        problem = Bwrap(home=home, writable=probe, readonly=visible,
                        network=config.network).problem()
        report["available"], report["problem"] = problem is None, problem
    report["summary"] = _summary(report)
    return report


def _summary(r: dict) -> str:
    if r["mode"] == "off":
        return "host (no sandbox: sandbox.mode is off)"
    when = "every turn" if r["mode"] == "all" else "turns not from the local CLI (non-main)"
    access = {"rw": f"workspace {r['workspace']} read-write",
              "ro": f"writes in {r['workspace']}, the agent's workspace read-only",
              "none": f"only {r['workspace']}, the agent's workspace hidden"}[r["workspaceAccess"]]
    text = (f"bubblewrap for {when}; {access}; "
            f"{'network on' if r['network'] else 'no network'}; file tools held to it")
    if not r["available"]:
        text += f"; UNAVAILABLE, commands will not run: {r['problem']}"
    return text
