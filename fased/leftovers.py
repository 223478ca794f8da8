"""What a process killed midway (kill -9, the OOM killer, a power cut) leaves behind: the work
files it would have removed. Each one fased writes names its process (`NAME.PID...`); a
later process removes those whose process is gone. They can be large: a half-built
state.db, a model download, a saved prompt."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def death_signal() -> Callable[[], None] | None:
    """A preexec function that has the child killed when the thread that started it dies
    (Linux only; libc is looked up here, in the parent, so the child only makes the call):
    a child of a process killed midway is not left running beside what comes next."""
    import sys

    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return preexec


def sweep(directory: Path, owner: Callable[[str], int | None],
          gone: Callable[[int], bool] = lambda pid: not alive(pid)) -> list[str]:
    """Remove the entries of `directory` that `owner` names a process of (it returns the
    PID in a name, None for a name that is not a work file) when `gone` says that process
    is; returns their names. Nothing here is an error: a file that cannot be removed stays."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in names:
        pid = owner(name)
        if pid is None or not gone(pid):
            continue
        path = directory / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(name)
    return removed


def pid_after(prefix: str, name: str) -> int | None:
    """The PID in `name` right after `prefix` (up to a '-' or '.' or the end), when the
    name starts with `prefix`; else None."""
    if not name.startswith(prefix):
        return None
    digits = name[len(prefix):].replace("-", ".").partition(".")[0]
    return int(digits) if digits.isascii() and digits.isdigit() else None
