"""Finding skills: the roots in precedence order (workspace > managed > bundled > extra), each
folder's SKILL.md front matter validated, a broken one skipped with a warning naming the file
and the problem.

Parsing 200 SKILL.md files costs more than a turn may spend, so what a folder held is cached
by its stat signature (the folder's and every file's size and mtime) in memory and in
`~/.fased/cache/skills.json`: a turn where nothing changed only stats the folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fased.bounds import int64, printable, storable

SKILL_FILE = "SKILL.md"
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*\Z")
NAME_MAX = 64
DESCRIPTION_MAX = 1024
SKILL_FILE_MAX = 256 * 1024
SOURCES = ("workspace", "managed", "bundled", "extra")  # precedence, highest first
CACHE_VERSION = 1
BUNDLED = Path(__file__).resolve().parent / "bundled"


@dataclass
class Skill:
    """One skill folder as found: its front matter, where it came from, its content hash
    (every file's path and bytes), and `shadowed_by` when a root of higher precedence holds
    a skill of the same name."""

    name: str
    description: str
    path: Path  # the folder
    source: str
    sha256: str
    metadata: dict = field(default_factory=dict)
    shadowed_by: str | None = None

    @property
    def file(self) -> Path:
        return self.path / SKILL_FILE

    def gate(self) -> dict:
        """metadata.fased, else metadata.openclaw (what skills written for it carry)."""
        for key in ("fased", "openclaw"):
            value = self.metadata.get(key)
            if isinstance(value, dict):
                return value
        return {}


@dataclass
class Found:
    """Every skill in the roots (shadowed ones included, after the one that wins) and the
    warnings about folders that are not valid skills."""

    skills: list[Skill]
    warnings: list[str]

    def winners(self) -> dict[str, Skill]:
        return {s.name: s for s in self.skills if s.shadowed_by is None}


def check_skill_name(name: str) -> str:
    """A skill name given as an argument, checked as a SKILL.md's own name is (UsageError):
    every command that takes one uses this, so none records or prints a name no skill has."""
    from fased.errors import UsageError

    hint = f"lowercase letters, digits and single hyphens, at most {NAME_MAX} characters"
    if len(name) > NAME_MAX:
        raise UsageError(f"the skill name is {len(name):,} characters; a skill name has at "
                         f"most {NAME_MAX}", hint=hint)
    if not NAME.match(name):
        raise UsageError(f"{name!r} is not a skill name", hint=hint)
    return name


def roots(home: Path, workspace: Path | None, settings: dict) -> list[tuple[str, Path]]:
    """(source, directory) in precedence order; skills.load.extraDirs come last."""
    out: list[tuple[str, Path]] = []
    if workspace is not None:
        out.append(("workspace", Path(workspace) / "skills"))
    out.append(("managed", Path(home) / "skills"))
    out.append(("bundled", BUNDLED))
    extra = ((settings.get("skills") or {}).get("load") or {}).get("extraDirs") or []
    out += [("extra", Path(os.path.expanduser(d))) for d in extra if isinstance(d, str)]
    return out


def parse_skill_file(text: str) -> tuple[dict | None, str]:
    """(front matter, problem): the YAML between the leading `---` lines, checked against the
    Agent Skills limits. A problem is worded for a warning."""
    import yaml

    if not text.startswith("---"):
        return None, "no YAML front matter (the file must start with ---)"
    end = re.search(r"^---[ \t]*$", text[3:], re.MULTILINE)
    if end is None:
        return None, "the front matter has no closing ---"
    try:
        data = yaml.load(text[3:3 + end.start()], Loader=getattr(yaml, "CSafeLoader",
                                                                   yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        # a reader error has no problem, and says where on a second line
        why = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        return None, f"bad YAML{where}: {why}"
    if not isinstance(data, dict):
        return None, "the front matter is not a mapping"
    name, description = data.get("name"), data.get("description")
    if not isinstance(name, str) or not name:
        return None, "missing name"
    if len(name) > NAME_MAX:
        return None, f"name is longer than {NAME_MAX} characters"
    if not NAME.match(name):
        return None, f"name {name!r} is not lowercase letters, digits and single hyphens"
    if not isinstance(description, str) or not description.strip():
        return None, "missing description"
    if len(description) > DESCRIPTION_MAX:
        return None, f"description is longer than {DESCRIPTION_MAX} characters"
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return None, "metadata is not a mapping"
    return data, ""


def body_of(text: str) -> str:
    """The Markdown instructions after the front matter."""
    end = re.search(r"^---[ \t]*$", text[3:], re.MULTILINE)
    return text[3 + end.end():].lstrip("\n") if text.startswith("---") and end else text


def folder_signature(path: Path) -> list:
    """Every file under a skill folder as [relative path, size, mtime_ns, link target or
    None], sorted; symlinks are listed as links (never followed). Plain strings, not Paths:
    a turn computes this for every skill folder."""
    sig: list = []
    top = os.fspath(path)
    cut = len(top) + 1
    stack = [top]
    while stack:
        here = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
                continue
            st = entry.stat(follow_symlinks=False)
            link = os.readlink(entry.path) if entry.is_symlink() else None
            sig.append([entry.path[cut:], st.st_size, int64(st.st_mtime_ns), link])
    sig.sort(key=lambda row: row[0])
    return sig


def content_hash(path: Path) -> str:
    """sha256 over every file's relative path and bytes (a symlink: its target text)."""
    digest = hashlib.sha256()
    sig = folder_signature(path)
    for rel, _size, _mtime, link in sig:
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        if link is not None:
            digest.update(b"link:" + link.encode("utf-8", "surrogateescape"))
        else:
            digest.update(_file_hash(path / rel))
        digest.update(b"\0")
    return digest.hexdigest()


def _file_hash(path: Path) -> bytes:
    """sha256 of a regular file, read a block at a time; of a FIFO, device or socket, of
    what it is (opening a FIFO to read it waited for a writer, forever)."""
    from fased.bounds import NotRegularFile, open_regular

    try:
        fd = open_regular(path)
    except NotRegularFile as exc:
        return hashlib.sha256(f"special:{exc.kind}".encode()).digest()
    with os.fdopen(fd, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


class Cache:
    """Parsed folders by path and stat signature, in memory and on disk."""

    def __init__(self, home: Path):
        self.file = Path(home) / "cache" / "skills.json"
        self.entries: dict[str, dict] = {}
        self.dirty = False
        self.loaded_stat: tuple | None = None

    def load(self) -> None:
        try:
            st = os.stat(self.file)
        except OSError:
            return
        stat = (st.st_size, st.st_mtime_ns)
        if stat == self.loaded_stat:
            return
        import orjson

        try:
            data = orjson.loads(self.file.read_bytes())
        except (OSError, ValueError):
            return
        if isinstance(data, dict) and data.get("version") == CACHE_VERSION:
            self.entries = data.get("entries") or {}
            self.loaded_stat = stat

    def save(self) -> None:
        if not self.dirty:
            return
        import orjson

        from fased.home import write_private

        try:
            self.file.parent.mkdir(mode=0o700, exist_ok=True)
            write_private(self.file, orjson.dumps({"version": CACHE_VERSION,
                                                   "entries": self.entries}), durable=False)
            st = os.stat(self.file)
            self.loaded_stat = (st.st_size, st.st_mtime_ns)
        except OSError:
            pass  # a cache that cannot be written only costs time
        self.dirty = False


_CACHES: dict[str, Cache] = {}


def _cache(home: Path) -> Cache:
    key = str(home)
    if key not in _CACHES:
        _CACHES[key] = Cache(home)
    cache = _CACHES[key]
    cache.load()
    return cache


def _storable_sig(sig: list) -> list:
    return [[storable(rel), size, mtime, None if link is None else storable(link)]
            for rel, size, mtime, link in sig]


def read_folder(path: Path, source: str, cache: Cache | None = None) -> tuple[Skill | None,
                                                                              str | None]:
    """The skill in one folder, or a warning (None when the folder holds no SKILL.md)."""
    sig = folder_signature(path)
    if not any(row[0] == SKILL_FILE for row in sig):
        return None, None
    key, kept = storable(str(path)), _storable_sig(sig)
    entry = cache.entries.get(key) if cache is not None else None
    if entry is None or entry.get("sig") != kept:
        entry = _parse_folder(path, kept)
        if cache is not None:
            cache.entries[key] = entry
            cache.dirty = True
    if entry.get("problem"):
        # one line whatever the folder is called and whatever the reason quotes (a name, a
        # YAML error, an OSError): note() keeps newlines and tabs
        return None, printable(f"skill skipped: {path / SKILL_FILE}: {entry['problem']}")
    return Skill(entry["name"], entry["description"], path, source, entry["sha256"],
                 entry.get("metadata") or {}), None


def _parse_folder(path: Path, sig: list) -> dict:
    file = path / SKILL_FILE
    if file.is_symlink():
        return {"sig": sig, "problem": "SKILL.md is a symlink"}
    from fased.bounds import read_head

    try:
        raw = read_head(file, SKILL_FILE_MAX + 1)
    except OSError as exc:
        return {"sig": sig, "problem": f"unreadable ({exc.strerror or exc})"}
    if len(raw) > SKILL_FILE_MAX:
        return {"sig": sig, "problem": f"larger than {SKILL_FILE_MAX // 1024} KiB"}
    data, problem = parse_skill_file(raw.decode("utf-8", "replace"))
    if data is None:
        return {"sig": sig, "problem": problem}
    if data["name"] != path.name:
        return {"sig": sig, "problem": f"name {data['name']!r} does not match its folder "
                                       f"{path.name!r}"}
    metadata = data.get("metadata") or {}
    try:
        json.dumps(metadata)
    except (TypeError, ValueError):
        metadata = {}  # YAML dates and the like: not gates fased reads
    return {"sig": sig, "name": data["name"], "description": data["description"].strip(),
            "metadata": metadata, "sha256": content_hash(path)}


def find_skills(home: Path, workspace: Path | None, settings: dict) -> Found:
    """Every skill in every root, precedence applied: the first root that holds a name wins,
    later ones are `shadowed_by` its source."""
    cache = _cache(home)
    skills: list[Skill] = []
    warnings: list[str] = []
    winner: dict[str, str] = {}
    seen_roots: set[str] = set()
    for source, root in roots(home, workspace, settings):
        real = os.path.realpath(root)
        if real in seen_roots:
            continue
        seen_roots.add(real)
        try:
            # a hidden folder is never a skill (no name starts with "."): an install's
            # staged copy, or what a killed one left
            entries = sorted(e.name for e in os.scandir(root)
                             if e.is_dir() and not e.name.startswith("."))
        except OSError:
            continue
        for name in entries:
            skill, warning = read_folder(root / name, source, cache)
            if warning:
                warnings.append(warning)
            if skill is None:
                continue
            if skill.name in winner:
                skill.shadowed_by = winner[skill.name]
            else:
                winner[skill.name] = source
            skills.append(skill)
    cache.save()
    return Found(skills, warnings)
