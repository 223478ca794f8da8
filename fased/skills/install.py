"""`fased skill install` and `fased skill remove`: copy a skill in from a folder, a git
repository or a tarball, checked before anything lands (a valid SKILL.md, no symlink that
points out of the folder), and record where it came from with its content hash."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fased.errors import ConflictError, UsageError
from fased.skills.loader import SKILL_FILE, SKILL_FILE_MAX, content_hash, parse_skill_file

SKIP = {".git"}


@dataclass
class Source:
    """Where a skill comes from: kind path, git or tarball; `commit` for git."""

    text: str
    kind: str
    commit: str | None = None


def classify(text: str) -> Source:
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        return Source(str(path.resolve()), "path")
    if path.is_file():
        if tarfile.is_tarfile(path):
            return Source(str(path.resolve()), "tarball")
        raise UsageError(f"{text}: not a folder, a git repository or a tarball")
    if "://" in text or text.startswith("git@") or text.endswith(".git"):
        return Source(text, "git")
    raise UsageError(f"{text}: no such folder or file",
                     hint="give a skill folder, a git URL or a .tar.gz")


def fetch(source: Source, into: Path) -> Path:
    """The source's files under `into` (a temporary directory); the folder they are in."""
    if source.kind == "path":
        return Path(source.text)
    if source.kind == "tarball":
        out = into / "unpacked"
        out.mkdir()
        try:
            with tarfile.open(source.text) as tar:
                tar.extractall(out, filter="data")  # no absolute paths, no links out of it
        except (tarfile.TarError, OSError) as exc:
            raise UsageError(f"{source.text}: cannot unpack: {exc}") from None
        return out
    out = into / "clone"
    git = shutil.which("git")
    if git is None:
        raise UsageError("installing from a git URL needs git on PATH")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run([git, "clone", "--quiet", "--depth", "1", "--", source.text,
                           str(out)], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["git clone failed"])[-1]
        from fased.redact import mask_urls

        raise UsageError(f"cannot clone {mask_urls(source.text)}: {mask_urls(why)}")
    head = subprocess.run([git, "-C", str(out), "rev-parse", "HEAD"], capture_output=True,
                          text=True, timeout=60)
    if head.returncode == 0:
        source.commit = head.stdout.strip()
    return out


def skill_folder(root: Path, name: str | None) -> Path:
    """The skill in a fetched tree: its top level, or the one folder (named `name`, when
    given) that holds a SKILL.md."""
    if (root / SKILL_FILE).is_file() and (name is None or _front_name(root) == name):
        return root
    found = sorted({p.parent for p in root.rglob(SKILL_FILE)
                    if not SKIP & set(p.relative_to(root).parts)})
    if name is not None:
        found = [p for p in found if p.name == name]
    if not found:
        raise UsageError(f"no {SKILL_FILE} " + (f"for a skill named {name!r} " if name else "")
                         + "in the source")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise UsageError(f"the source holds several skills ({names})",
                         hint="pick one with --name NAME")
    return found[0]


def _skill_text(file: Path) -> str:
    """A SKILL.md being installed, as text: a FIFO or device there is a usage error (a FIFO
    waited for a writer, forever), one past the size a skill may have is cut (its check
    refuses it)."""
    from fased.bounds import NotRegularFile, read_head

    try:
        return read_head(file, SKILL_FILE_MAX + 1).decode("utf-8", "replace")
    except NotRegularFile as exc:
        raise UsageError(f"{file} is {exc.kind}, not a regular file",
                         hint="nothing was installed") from None
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}",
                         hint="nothing was installed") from None


def _front_name(folder: Path) -> str | None:
    data, _ = parse_skill_file(_skill_text(folder / SKILL_FILE))
    return data["name"] if data else None


def check_folder(folder: Path) -> dict:
    """The skill's front matter; UsageError for a broken SKILL.md or a symlink whose target
    is outside the folder (or missing)."""
    file = folder / SKILL_FILE
    if file.is_symlink():
        raise UsageError(f"{file}: SKILL.md must not be a symlink")
    data, problem = parse_skill_file(_skill_text(file))
    if data is None:
        raise UsageError(f"{file}: {problem}")
    real_root = os.path.realpath(folder)
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in SKIP]
        for entry in (*dirs, *files):
            path = os.path.join(here, entry)
            if os.path.islink(path):
                target = os.path.realpath(path)
                if not (target == real_root or target.startswith(real_root + os.sep)):
                    raise UsageError(f"{os.path.relpath(path, folder)} is a symlink that "
                                     f"points out of the skill folder ({os.readlink(path)})",
                                     hint="nothing was installed")
        for entry in files:  # a FIFO or device cannot be copied (copying a FIFO waits)
            path = os.path.join(here, entry)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                from fased.bounds import file_kind

                raise UsageError(f"{os.path.relpath(path, folder)} is {file_kind(mode)}: a "
                                 "skill folder holds files, folders and links",
                                 hint="nothing was installed")
    return data


class Placement:
    """A skill folder that lands (or leaves) with its event: the change is made by renames
    under the log's lock, just before the event is appended, and undone when it cannot be,
    so no skill is ever loaded that replay does not show, and none is gone that it does."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.staged = dest.with_name(f".{dest.name}.{os.getpid()}.installing")
        self.aside = dest.with_name(f".{dest.name}.{os.getpid()}.replaced")
        self.placed = self.set_aside = False

    def stage(self, folder: Path) -> None:
        """Copy the skill beside its place; a copy that fails leaves nothing behind."""
        from fased.leftovers import sweep

        self.dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.staged, ignore_errors=True)
        sweep(self.dest.parent, _staging_pid)
        try:
            shutil.copytree(folder, self.staged, symlinks=True,
                            ignore=shutil.ignore_patterns(*SKIP))
        except OSError as exc:
            shutil.rmtree(self.staged, ignore_errors=True)
            raise UsageError(f"cannot copy the skill to {self.dest.parent}: {_why(exc)}",
                             hint="nothing was installed") from None

    def put(self, force: bool) -> bool:
        """The staged copy in place (what was there set aside, with `force`); whether it
        replaced a skill."""
        replaced = os.path.lexists(self.dest)
        if replaced and not force:
            raise ConflictError(f"a skill {self.dest.name!r} is already in {self.dest.parent}",
                                hint="add --force to replace it")
        if replaced:
            self.take()
        os.rename(self.staged, self.dest)
        self.placed = True
        return replaced

    def take(self) -> None:
        """The skill out of its place (set aside)."""
        os.rename(self.dest, self.aside)
        self.set_aside = True

    def finish(self, recorded: bool) -> None:
        """Keep the change when its event is in the log; otherwise put everything back."""
        if recorded:
            if os.path.islink(self.aside):  # a link that was replaced: only the link goes
                os.unlink(self.aside)
            else:
                shutil.rmtree(self.aside, ignore_errors=True)
        else:
            if self.placed:
                shutil.rmtree(self.dest, ignore_errors=True)
            if self.set_aside:
                os.rename(self.aside, self.dest)
        shutil.rmtree(self.staged, ignore_errors=True)


def _staging_pid(name: str) -> int | None:
    """The process of a staged copy (`.NAME.PID.installing`). A skill set aside
    (`.NAME.PID.replaced`) is never swept: a kill may have left it the only copy."""
    if not (name.startswith(".") and name.endswith(".installing")):
        return None
    pid = name[:-len(".installing")].rpartition(".")[2]
    return int(pid) if pid.isascii() and pid.isdigit() else None


def _why(exc: OSError) -> str:
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        first = exc.args[0][0] if exc.args[0] else None
        return str(first[-1]) if first else "the copy failed"
    return exc.strerror or str(exc)


def install(text: str, root: Path, scope: str, name: str | None,
            agent: str | None, force: bool = False) -> tuple[dict, Placement]:
    """Fetch, check and stage a skill beside its place under `root`: the skill.installed
    data and the placement that lands it (`Placement.put`, with the event)."""
    source = classify(text)
    with tempfile.TemporaryDirectory(prefix="fased-skill-") as tmp:
        fetched = fetch(source, Path(tmp))
        folder = skill_folder(fetched, name)
        data = check_folder(folder)
        placement = Placement(root / data["name"])
        if os.path.lexists(placement.dest) and not force:  # said again under the lock
            raise ConflictError(f"a skill {data['name']!r} is already in {root}",
                                hint="add --force to replace it")
        placement.stage(folder)
    from fased.redact import mask_url

    # a private repository's URL may carry a token: the clone had it, the log does not
    event = {"name": data["name"], "path": str(placement.dest), "scope": scope,
             "source": mask_url(source.text), "kind": source.kind,
             "sha256": content_hash(placement.staged)}
    if source.commit:
        event["commit"] = source.commit
    if agent and scope == "workspace":
        event["agent"] = agent
    return event, placement
