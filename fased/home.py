"""The state directory: `--home`, else `$FASED_HOME`, else `~/.fased`; 0700, files 0600."""

from __future__ import annotations

import os
from pathlib import Path

from fased.errors import StateError, UsageError


def resolve_home(explicit: str | os.PathLike | None = None) -> Path:
    """Where fased keeps its state, without touching the disk: one line of printable text
    (fased prints it, and every path it keeps starts with it)."""
    from fased.bounds import has_control

    if explicit:
        home = Path(explicit).expanduser().absolute()
    elif os.environ.get("FASED_HOME"):
        home = Path(os.environ["FASED_HOME"]).expanduser().absolute()
    else:
        home = Path.home() / ".fased"
    if has_control(str(home)):
        raise UsageError(f"the fased home {str(home)!r} holds a control character",
                         hint="point --home (or FASED_HOME) at a folder with a plain name")
    return home


def ensure_home(home: Path) -> Path:
    """Create the state directory (0700) if missing; fail clearly when it cannot be used."""
    os.umask(0o077)  # every file fased (and SQLite) creates is private to the user
    if home.exists() and not home.is_dir():
        raise StateError(f"the fased home {home} is not a directory",
                         hint="point --home (or FASED_HOME) at a directory")
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the fased home {home}: {exc.strerror}") from None
    if not home.is_dir():
        raise StateError(f"the fased home {home} is not a directory")
    if not os.access(home, os.R_OK | os.W_OK | os.X_OK):
        raise StateError(
            f"the fased home {home} is not readable and writable by this user",
            hint=f"check its owner and mode (chmod 700 {home}) or point --home elsewhere",
        )
    return home


def require_inside(home: Path, directory: Path) -> None:
    """Refuse a directory that a symlink leads out of the home: fased writes its own files
    (transcripts) only inside it, never through a link to somewhere else."""
    real = os.path.realpath(directory)
    if not (real + os.sep).startswith(os.path.realpath(home) + os.sep):
        raise StateError(f"{directory} is outside the fased home (a symlink leads to {real}); "
                         "fased does not write its files through links",
                         hint="put a real directory in its place; `fased doctor` lists links")


def write_private(path: Path, data: bytes, durable: bool = True) -> None:
    """Write a file atomically (a new temp file, fsync unless not `durable`, rename), mode
    0600. The temp file is created fresh (O_EXCL, no symlink followed), so nothing planted at
    its name can redirect the write. A view that is rebuilt from the log anyway (a
    transcript) need not be durable: a power cut can only leave the previous version."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
