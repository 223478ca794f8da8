"""What the file tools share: arguments checked against a tool's schema, OS errors worded
for the model, text files read with their BOM and line endings, and writes that replace a
file all at once (a temporary file beside it, fsync, rename)."""

from __future__ import annotations

import os
import secrets
import stat
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fased.schema import first_error
from fased.tools.base import ToolError

MAX_EDIT_BYTES = 16 * 1024 * 1024  # edit and apply_patch hold a file (a few times) in memory
BOM = "\ufeff"


def checked(args: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    """`args` when they fit the tool's parameters, else a ToolError naming the first misfit."""
    problem = first_error(args, parameters, parameters, "arguments")
    if problem:
        raise ToolError(problem)
    return args


def encoded(text: str, name: str) -> bytes:
    """`text` as UTF-8; a lone surrogate (JSON allows one) is the model's error."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolError(f"{name} must be valid Unicode (it has a lone surrogate)") from None


@contextmanager
def os_errors(doing: str):
    """An OSError (missing file, permission, full disk) as a ToolError the model can read."""
    try:
        yield
    except OSError as exc:
        raise ToolError(f"cannot {doing}: {exc.strerror or exc}") from None


# --- text files as edit and apply_patch see them ------------------------------------------

@dataclass
class TextFile:
    """A file's text without its BOM, and what writing it back must keep: the BOM and the
    line ending most of its lines use (for lines that edit or apply_patch add)."""

    text: str
    bom: bool
    newline: str

    @classmethod
    def parse(cls, raw: bytes, name: str) -> TextFile:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{name} is not UTF-8 text; edit and apply_patch change text "
                            "files only") from None
        bom = text.startswith(BOM)
        text = text[1:] if bom else text
        crlf = text.count("\r\n")
        return cls(text, bom, "\r\n" if crlf * 2 > text.count("\n") else "\n")

    def encode(self, text: str) -> bytes:
        return encoded((BOM if self.bom else "") + text, "the new text")


def regular_file(path: Path, name: str) -> tuple[bytes, int]:
    """The bytes and permission bits of an existing regular file (not a directory, pipe or
    device, which must not be read whole or replaced)."""
    with os_errors(f"read {name}"):
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(f"{name} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{name} is not a regular file")
        if st.st_size > MAX_EDIT_BYTES:
            raise ToolError(f"{name} is {st.st_size:,} bytes; edit and apply_patch change "
                            f"files up to {MAX_EDIT_BYTES // (1024 * 1024)} MB")
        return path.read_bytes(), stat.S_IMODE(st.st_mode)


# --- writing all at once ------------------------------------------------------------------

def make_parents(path: Path) -> list[Path]:
    """Create the missing directories above `path`; the ones created, outermost first."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    created = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            created.append(directory)
    except OSError:
        remove_dirs(created)
        raise
    return created


def remove_dirs(created: list[Path]) -> None:
    """Undo make_parents: remove those directories if still empty, innermost first."""
    for directory in reversed(created):
        with suppress(OSError):
            directory.rmdir()


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace (or create) `path` with `data` at once: a reader sees the old file or the new,
    never a mix. `mode` keeps a replaced file's permissions; a new file gets the umask's."""
    tmp = path.with_name(f".{secrets.token_hex(6)}.fased-tmp")  # short: long names still fit
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with open(fd, "wb", closefd=True) as f:
            f.write(data)
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    with suppress(OSError):  # the rename is durable once its directory is on disk
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
