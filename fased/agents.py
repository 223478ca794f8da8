"""Agents: ids, lookup, workspaces and their bootstrap files (no click here)."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fased.errors import ConflictError, NotFoundError, UsageError

AGENT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
DEFAULT_AGENT = "main"
# in the order `fased agent files` lists them
BOOTSTRAP_FILES = ("AGENTS.md", "SOUL.md", "TOOLS.md", "IDENTITY.md", "USER.md", "HEARTBEAT.md",
                   "MEMORY.md", "BOOTSTRAP.md")
FIRST_RUN_FILE = "BOOTSTRAP.md"


def check_agent_id(agent_id: str) -> str:
    if not AGENT_ID.match(agent_id):
        raise UsageError(
            f"invalid agent id {agent_id!r}",
            hint="use 1-64 characters: lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit",
        )
    return agent_id


def get_agent(con: sqlite3.Connection, agent_id: str | None, *,
              include_deleted: bool = False) -> sqlite3.Row:
    """The named agent, or the selected one; a clear error when there is none."""
    if agent_id is None:
        row = con.execute("SELECT value FROM kv WHERE key = 'selected_agent'").fetchone()
        if row is None or row[0] is None:
            raise NotFoundError("no agent yet", hint="run `fased setup` first")
        agent_id = row[0]
    row = con.execute("SELECT * FROM agents WHERE id = ?", (agent_id,)).fetchone()
    if row is None:
        known = [r[0] for r in con.execute(
            "SELECT id FROM agents WHERE deleted = 0 ORDER BY position")]
        raise NotFoundError(f"no agent {agent_id!r}",
                            hint=f"agents: {', '.join(known)}" if known else "run `fased setup`")
    if row["deleted"] and not include_deleted:
        raise NotFoundError(f"agent {agent_id!r} is deleted",
                            hint=f"`fased agent restore {agent_id}` brings it back")
    return row


def selected_agent(con: sqlite3.Connection) -> str | None:
    row = con.execute("SELECT value FROM kv WHERE key = 'selected_agent'").fetchone()
    return row[0] if row else None


def require_new_agent(con: sqlite3.Connection, agent_id: str) -> None:
    row = con.execute("SELECT deleted FROM agents WHERE id = ?", (agent_id,)).fetchone()
    if row is not None:
        hint = f"`fased agent restore {agent_id}`" if row[0] else f"`fased agent show {agent_id}`"
        raise ConflictError(f"agent {agent_id!r} already exists" + (" (deleted)" if row[0] else ""),
                            hint=hint)


def first_agent(con: sqlite3.Connection) -> str | None:
    row = con.execute("SELECT id FROM agents ORDER BY position LIMIT 1").fetchone()
    return row[0] if row else None


def workspace_for(con: sqlite3.Connection, home: Path, agent: sqlite3.Row) -> Path:
    """An agent's workspace: its own, else (for the first agent, `main`) the configured
    default or ~/.fased/workspace; other agents derive theirs from those."""
    if agent["workspace"]:
        return Path(agent["workspace"]).expanduser()
    from fased.config import config_doc

    default = config_doc(con).get("agents", {}).get("defaults", {}).get("workspace")
    base = Path(default).expanduser() if default else home / "workspace"
    if agent["id"] == first_agent(con):
        return base
    if default:
        return base.with_name(f"{base.name}-{agent['id']}")
    return home / f"workspace-{agent['id']}"


@contextlib.contextmanager
def workspace_made(path: Path | None):
    """Make `path` (when given) before the block that records the agent using it, and
    remove what was made if the block fails: a workspace that cannot be made is refused
    before anything is recorded, and a refused agent leaves no folder behind."""
    from fased.tools.fileio import remove_dirs

    made = make_workspace(path) if path is not None else []
    try:
        yield
    except BaseException:
        remove_dirs(made)
        raise


def make_workspace(path: Path) -> list[Path]:
    """Make a workspace directory (and its parents): one that cannot be made (a name too
    long, a file in the way, /proc) is a usage error that changes nothing. Returns the
    directories made, outermost first, for fased.tools.fileio.remove_dirs to undo."""
    from fased.bounds import check_path_text
    from fased.tools.fileio import make_parents

    check_path_text(str(path), "the workspace")
    try:
        created = make_parents(path / "_")  # `path` itself and what is missing above it
    except OSError as exc:
        raise UsageError(f"cannot make the workspace {path}: {exc.strerror or exc}",
                         hint="give another --workspace") from None
    if not path.is_dir():
        raise UsageError(f"cannot make the workspace {path}: something else is there",
                         hint="give another --workspace")
    return created


def skip_bootstrap(con: sqlite3.Connection) -> bool:
    from fased.config import config_doc

    return bool(config_doc(con).get("agents", {}).get("defaults", {}).get("skipBootstrap"))


@dataclass
class FileState:
    """A bootstrap file as `fased agent files` shows it."""

    name: str
    path: Path
    state: str  # present | missing | deleted-by-user
    size: int | None


def bootstrap_files(con: sqlite3.Connection, workspace: Path) -> list[FileState]:
    created = {r[0] for r in con.execute(
        "SELECT file FROM workspace_files WHERE workspace = ?", (str(workspace),))}
    out = []
    for name in BOOTSTRAP_FILES:
        path = workspace / name
        if name == "MEMORY.md" and not path.exists() and (workspace / "memory.md").exists():
            path = workspace / "memory.md"
        try:
            size = path.stat().st_size
            state = "present"
        except FileNotFoundError:
            size = None
            state = "deleted-by-user" if name in created else "missing"
        out.append(FileState(path.name, path, state, size))
    return out


def plan_bootstrap(con: sqlite3.Connection, workspace: Path) -> list[str]:
    """Which bootstrap files to create now: the missing ones; BOOTSTRAP.md only for a brand-new
    workspace, and never again once the log knows it existed there."""
    if skip_bootstrap(con):
        return []
    ever = {r[0] for r in con.execute(
        "SELECT file FROM workspace_files WHERE workspace = ?", (str(workspace),))}
    present = {name for name in BOOTSTRAP_FILES if (workspace / name).exists()}
    if (workspace / "memory.md").exists():
        present.add("MEMORY.md")
    wanted = [n for n in BOOTSTRAP_FILES if n != FIRST_RUN_FILE and n not in present]
    brand_new = not present and not ever
    if brand_new:
        wanted.append(FIRST_RUN_FILE)
    return wanted


def render_template(name: str, agent: sqlite3.Row | dict) -> bytes:
    text = _template(name)
    if name == "IDENTITY.md":
        text = text.replace("{name}", agent["name"]).replace("{emoji}", agent["emoji"] or "")
    return text.encode()


@cache
def _template(name: str) -> str:
    from importlib import resources

    return resources.files("fased.templates").joinpath(name).read_text(encoding="utf-8")


def write_new_file(path: Path, data: bytes) -> bool:
    """Create a file only if it does not exist (never overwrite a user's file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True
