"""What every tool is made of: a spec the model reads, a handler `run(args, ctx)`, and the one
context that confines it.

A handler never checks confinement itself: paths go through `ToolContext.resolve`, processes
through `ToolContext.sandbox`. A failure the model can act on (a bad argument, a file that is
not there, a path outside the workspace) is `ToolError`, which becomes an error result worded
for the model; any other exception is a bug in fased.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ToolError(Exception):
    """A failure worded for the model: it becomes the call's error result."""


@dataclass
class ToolResult:
    """What a call produced. `text` is what the model is sent (capped by the loop); `data`
    holds structured details recorded in the log with it (exit code, bytes, pid, ...)."""

    text: str
    is_error: bool = False
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolSpec:
    """A tool: its name, the description and JSON Schema parameters the model reads (the subset
    of JSON Schema fased.schema validates), its policy group, whether running it changes
    anything outside fased (such a call is never retried), and its handler."""

    name: str
    description: str
    parameters: dict[str, Any]
    group: str
    run: Callable[[dict[str, Any], ToolContext], ToolResult]
    side_effects: bool = True

    def wire(self) -> dict[str, Any]:
        """The neutral form providers map to their API: name, description, parameters."""
        return {"name": self.name, "description": self.description,
                "parameters": self.parameters}


@dataclass
class ToolContext:
    """Everything a handler may use. `cancel` is set when the user interrupts or the turn's
    deadline passes: a long-running handler polls it (or `cancelled()`) and stops."""

    agent: str
    session: str
    turn: str
    call_id: str
    workspace: Path
    home: Path
    workspace_only: bool = True
    sandbox: Any = None  # fased.tools.sandbox.Host (issue 12 adds a kernel sandbox)
    env: dict[str, str] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    readable: tuple[Path, ...] = ()  # extra roots `read` may open (skill folders)
    # what the user set for commands while a skill is offered (skills.entries.<name>.env):
    # added after secret-looking variables are taken out of `env`, since it is meant for them
    skill_env: dict[str, str] = field(default_factory=dict)

    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def resolve(self, path: str, *, write: bool = False) -> Path:
        """A path the model gave, made absolute (relative to the workspace), with every
        symlink followed. Refused (ToolError) when it leads outside the workspace while
        `workspace_only` is on, or into the fased home at any time (credentials, the log)
        unless into a workspace or readable root inside the home. `readable` roots are
        allowed for reads only."""
        if not isinstance(path, str) or not path.strip():
            raise ToolError("path must be a non-empty string")
        if "\0" in path:
            raise ToolError("path must not contain a NUL byte")
        try:  # a lone surrogate (JSON allows "\ud800") names no file and breaks os calls
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise ToolError("path must be valid Unicode (it has a lone surrogate)") from None
        raw = Path(os.path.expanduser(path))
        full = raw if raw.is_absolute() else self.workspace / raw
        real = Path(os.path.realpath(full))
        workspace = Path(os.path.realpath(self.workspace))
        home = Path(os.path.realpath(self.home))
        extra = () if write else tuple(Path(os.path.realpath(r)) for r in self.readable)
        # Inside the home only the parts of it handed to tools are open: a workspace (or skill
        # folder) within it. A root that holds the whole home (a workspace set to ~) does not
        # open the credentials or the log.
        if _within(real, home) and not any(
                home in root.parents and _within(real, root) for root in (workspace, *extra)):
            raise ToolError(f"{path}: the fased home ({self.home}) is off limits to tools")
        if _links_home_file(real, home):
            raise ToolError(f"{path}: a hard link to one of the fased home's own files "
                            "(credentials, the log, state.db), which are off limits to tools")
        if any(_within(real, root) for root in extra):
            return real
        if self.workspace_only and not _within(real, workspace):
            how = "a symlink leads" if real != Path(os.path.abspath(full)) else "it is"
            raise ToolError(f"{path}: outside the workspace ({how} to {shown(real)}); "
                            "tools.fs.workspaceOnly is on")
        return real

    def display(self, path: Path) -> str:
        """A path as the model should write it back: relative to the workspace if inside."""
        workspace = Path(os.path.realpath(self.workspace))
        try:
            return shown(path.relative_to(workspace))
        except ValueError:
            return shown(path)


def shown(path: Path | str) -> str:
    """A path or name as text that can be logged: bytes that are not UTF-8 (which os calls
    hand back as lone surrogates) become `\\xNN` escapes."""
    from fased.bounds import storable

    return storable(os.fspath(path))


HOME_FILES = ("credentials.json", "fased.json", "state.db", "state.db-wal", "state.db-shm")


def _links_home_file(path: Path, home: Path) -> bool:
    """Whether `path` is a hard link to one of the home's own files: no path check can see
    that (a link in the workspace to credentials.json is a file of the workspace). Only a
    file with more than one link is compared, so this costs one stat for any other."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return False
    if st.st_nlink < 2 or not stat.S_ISREG(st.st_mode):
        return False
    own = [home / name for name in HOME_FILES]
    with contextlib.suppress(OSError):
        own += [entry for entry in (home / "log").iterdir()]
    for other in own:
        try:
            o = os.stat(other)
        except OSError:
            continue
        if (o.st_dev, o.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A tool's parameters object: no extra keys, these required."""
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}
