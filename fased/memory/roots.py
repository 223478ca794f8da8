"""Where an agent's memory is, and what may be read of it.

An agent's memory roots: `MEMORY.md` (and `memory.md`) and the `memory/` folder in its
workspace, plus `memory.roots` (files or folders; relative to the workspace or absolute).
Notes are the `*.md` files in those, at any depth. A symlink is followed only while it stays
inside its root: one that leads out is neither indexed nor read. Settings: the top-level
`memory` with the agent's own `agents.list[].memory` over it (roots add up).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISDIR, S_ISREG

from fased.bounds import int64, path_within, storable
from fased.errors import UsageError

DEFAULT_HALF_LIFE_DAYS = 30.0
DEFAULT_MAX_RESULTS = 6
MAIN_FILES = ("MEMORY.md", "memory.md")
NOTES_DIR = "memory"
#: a daily note: memory/2026-03-01.md (or 2026-03-01-standup.md)
DATED = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})(?:[^0-9].*)?\.md$")


@dataclass(frozen=True)
class MemorySettings:
    """What memory search of one agent covers and how it ranks."""

    agent: str
    workspace: Path
    extra_roots: tuple[Path, ...]
    sessions: bool
    half_life_days: float
    embeddings: str | None
    max_results: int

    def roots(self) -> list[Path]:
        """Every root, as configured (MEMORY.md, memory.md, memory/, then memory.roots)."""
        return [*(self.workspace / n for n in MAIN_FILES), self.workspace / NOTES_DIR,
                *self.extra_roots]

    def display(self, path: Path) -> str:
        """A note's path as results show it: relative to the workspace when inside."""
        try:
            return str(path.relative_to(self.workspace))
        except ValueError:
            return str(path)


def memory_settings(con: sqlite3.Connection, home: Path, agent_id: str) -> MemorySettings:
    """The memory settings of an agent (fased.json's `memory` and the agent's own)."""
    from fased.agents import get_agent, workspace_for
    from fased.config import config_doc

    agent = get_agent(con, agent_id, include_deleted=True)
    workspace = Path(os.path.abspath(workspace_for(con, home, agent)))
    top = config_doc(con).get("memory") or {}
    own = json.loads(agent["config"] or "{}").get("memory") or {}
    sessions = {**(top.get("sessions") or {}), **(own.get("sessions") or {})}
    search = {**(top.get("search") or {}), **(own.get("search") or {})}
    roots: list[Path] = []
    for text in [*(top.get("roots") or []), *(own.get("roots") or [])]:
        raw = Path(os.path.expanduser(text))
        path = Path(os.path.abspath(raw if raw.is_absolute() else workspace / raw))
        if path not in roots:
            roots.append(path)
    return MemorySettings(
        agent=agent["id"], workspace=workspace, extra_roots=tuple(roots),
        sessions=sessions.get("enabled", True) is not False,
        half_life_days=float(search.get("halfLifeDays") or DEFAULT_HALF_LIFE_DAYS),
        embeddings=search.get("embeddings") or None,
        max_results=int(search.get("maxResults") or DEFAULT_MAX_RESULTS))


def _present_roots(settings: MemorySettings):
    """(root, its path as text, its stat, links followed) of every root that exists and may
    be read (see _linked_out)."""
    for root in settings.roots():
        text = str(root)
        try:
            st = os.stat(text)
        except OSError:
            continue
        if not S_ISDIR(st.st_mode) and _linked_out(settings, root):
            continue
        yield root, text, st


def _linked_out(settings: MemorySettings, root: Path) -> bool:
    """Whether MEMORY.md (or memory.md) is a link to a file outside the workspace: a
    workspace is often a clone, and a link in it to ~/.ssh/id_rsa must not reach the model
    through memory_get. The roots a user names in memory.roots are theirs to point
    anywhere."""
    if root.parent != settings.workspace or root.name not in MAIN_FILES:
        return False
    if not os.path.islink(root):
        return False
    real = os.path.realpath(root)
    return not path_within(real, os.path.realpath(settings.workspace))


def notes(settings: MemorySettings) -> dict[str, tuple[int, int]]:
    """Every note of the agent: its display path -> (size, mtime_ns) of the file (of the file
    a link leads to). One scandir per folder and one stat per file, in plain strings: this
    runs before every search."""
    found: dict[str, tuple[int, int]] = {}
    linked: set[str] = set()
    prefix = str(settings.workspace).rstrip(os.sep) + os.sep
    for root, text, st in _present_roots(settings):
        if S_ISDIR(st.st_mode):
            _walk(text, os.path.realpath(text), prefix, found, linked)
        elif text.endswith(".md"):
            found[storable(settings.display(root))] = (st.st_size, int64(st.st_mtime_ns))
    return found


def _walk(folder: str, real_root: str, prefix: str, found: dict, linked: set[str]) -> None:
    # the common case (a plain .md file) costs one stat and no other call: d_type says
    # what is a link or a folder without a system call
    stack = [folder]
    while stack:
        here = stack.pop()
        shown = here[len(prefix):] + os.sep if here.startswith(prefix) else here + os.sep
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            try:
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if not path_within(real, real_root) or real in linked:
                        continue  # a link out of its root is not memory
                    linked.add(real)
                    st = os.stat(real)
                    if _walked(real, real_root, S_ISDIR(st.st_mode)):
                        continue  # the walk finds it anyway: not a second copy
                elif name.endswith(".md"):
                    st = entry.stat(follow_symlinks=False)
                elif entry.is_dir(follow_symlinks=False):
                    if name[0] != ".":
                        stack.append(entry.path)
                    continue
                else:
                    continue
            except OSError:
                continue
            if S_ISREG(st.st_mode):
                if name.endswith(".md"):
                    found[storable(shown + name)] = (st.st_size, int64(st.st_mtime_ns))
            elif S_ISDIR(st.st_mode) and name[0] != ".":
                stack.append(entry.path)


def _walked(real: str, real_root: str, folder: bool) -> bool:
    """Whether the walk of `real_root` reaches `real` without following a link: it is
    under the root, in no hidden folder, and a folder or a note."""
    rel = os.path.relpath(real, real_root)
    if rel == "." or any(part.startswith(".") for part in rel.split(os.sep)):
        return rel == "."
    return folder or rel.endswith(".md")


def quick_signature(settings: MemorySettings) -> str | None:
    """A digest of every note's path, size and mtime, as notes() would find them, taken
    without building their list: per note one stat relative to its folder and two numbers
    in an array. This is the freshness check of every search that finds nothing changed
    (10,000 notes: about 30 ms where notes() and signature() take 45). None when a link is
    met: notes() follows links within their root, which this does not try to."""
    import zlib
    from array import array

    names: list[str] = []
    stats = array("q")
    for _, text, st in _present_roots(settings):
        if S_ISDIR(st.st_mode):
            if not _quick_walk(text, names, stats):
                return None
        elif text.endswith(".md"):
            names.append(text)
            stats.extend((st.st_size, int64(st.st_mtime_ns)))
    data = "\0".join(names).encode("utf-8", "surrogateescape")
    return f"q{zlib.crc32(stats.tobytes(), zlib.crc32(data)):08x}:{len(stats) // 2}"


def _quick_walk(folder: str, names: list[str], stats) -> bool:
    stack = [folder]
    stat = os.stat
    while stack:
        here = stack.pop()
        try:
            fd = os.open(here, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            names.append("\1" + here)  # each folder once; its notes by name after it
            with os.scandir(fd) as it:
                for entry in it:
                    name = entry.name
                    if entry.is_symlink():
                        return False
                    if name.endswith(".md"):
                        try:
                            st = stat(name, dir_fd=fd, follow_symlinks=False)
                        except OSError:
                            continue
                        if S_ISREG(st.st_mode):
                            names.append(name)
                            stats.append(st.st_size)
                            try:  # no call in the loop of every search: the rare case
                                stats.append(st.st_mtime_ns)  # past 2262 overflows
                            except OverflowError:
                                stats.append(int64(st.st_mtime_ns))
                            continue
                        if not S_ISDIR(st.st_mode):
                            continue
                    elif not entry.is_dir(follow_symlinks=False):
                        continue
                    if name[0] != ".":
                        stack.append(f"{here}/{name}")
        except OSError:
            continue
        finally:
            os.close(fd)
    return True


def signature(found: dict[str, tuple[int, int]]) -> str:
    """A digest of every note's path, size and mtime: equal to the last one, nothing changed
    (so a search need not compare note by note)."""
    import zlib

    text = "\n".join(f"{p}\0{s}\0{m}" for p, (s, m) in found.items())
    return f"{zlib.crc32(text.encode('utf-8', 'surrogateescape')):08x}:{len(found)}"


def note_date(display: str) -> str | None:
    """The day a daily note is of (its file name), else None (it does not decay). A name
    with a day no calendar has (2025-02-29, 2026-13-45, 0000-01-01) is an undated note."""
    match = DATED.match(os.path.basename(display))
    if match is None:
        return None
    from datetime import date

    try:
        date.fromisoformat(match.group(1))
    except ValueError:
        return None
    return match.group(1)


def note_path(settings: MemorySettings, display: str) -> Path:
    """The file behind a display path (one with a name that is not UTF-8 escaped too)."""
    path = Path(display)
    path = path if path.is_absolute() else settings.workspace / path
    if "\\x" in display and not os.path.lexists(path):
        raw = Path(unstorable(str(path)))
        if os.path.lexists(raw):
            return raw
    return path


_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def unstorable(text: str) -> str:
    """The path `storable` escaped, its bytes back: how `note_path` and `resolve_note` find
    a note search shows as memory/caf\\xe9.md."""
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)


def _require_note(text: str, real: str) -> None:
    """UsageError unless `real` is a regular file (saying what it is)."""
    try:
        mode = os.stat(real).st_mode
    except OSError:
        raise UsageError(f"{text}: no such memory note") from None
    if not S_ISREG(mode):
        from fased.bounds import file_kind

        raise UsageError(f"{text}: {file_kind(mode)}, not a memory note")


def resolve_note(settings: MemorySettings, text: str) -> tuple[Path, str]:
    """A note a user or the model named, refused (UsageError) unless it is a note under one of
    the agent's memory roots: no `..`, no link out of the root, no other file. Returns the
    file and its path as search shows it."""
    if not text or "\0" in text:
        raise UsageError("give the path of a memory note, e.g. MEMORY.md or memory/2026-03-01.md")
    raw = Path(os.path.expanduser(text))
    if ".." in raw.parts:
        raise UsageError(f"{text}: `..` is not allowed in a memory path")
    full = Path(os.path.abspath(raw if raw.is_absolute() else settings.workspace / raw))
    if "\\x" in text and not os.path.lexists(full):  # a name that is not UTF-8, as shown
        escaped = Path(unstorable(str(full)))
        full = escaped if os.path.lexists(escaped) else full
    real = os.path.realpath(full)
    for root in settings.roots():
        real_root = os.path.realpath(root)
        if os.path.isdir(real_root) and path_within(str(full), str(root)):
            if not path_within(real, real_root):
                raise UsageError(f"{text}: a symlink leads out of the memory root {root}")
            if not full.name.endswith(".md"):  # a link named *.md is a note, as search has it
                raise UsageError(f"{text}: not a memory note (notes are *.md files)")
            _require_note(text, real)
            return Path(real), storable(settings.display(full))
        if str(full) == str(root) or real == real_root:
            if _linked_out(settings, root):
                raise UsageError(f"{text}: a symlink leads out of the workspace")
            _require_note(text, real)
            return Path(real), storable(settings.display(root))
    roots = ", ".join(settings.display(r) for r in settings.roots())
    raise UsageError(f"{text}: not under a memory root of agent {settings.agent}",
                     hint=f"memory roots: {roots}")
