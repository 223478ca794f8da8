"""Where tool processes run, and how a process group is ended.

A sandbox turns a shell command into a process. `Host` is the first one: the command runs on
this machine as the user, with the scrubbed environment the tool passes and nothing else
confined. A later sandbox (bubblewrap) keeps the same interface: `mode`, `network`,
`describe()`, `argv(command, cwd=...)` (the argv that runs a command inside it, which
`exec` also uses to wrap background commands) and `popen(...)`.

Every process starts in a new session, so it leads its own process group: a timeout, an
interrupt or `process kill` ends the command and everything it started, and a Ctrl-C meant
for fased's terminal never reaches a background process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
Stream = int | IO[Any] | None


class Host:
    """Commands run on the host as the user: no isolation of files or network."""

    mode = "host"
    network = True

    def describe(self) -> str:
        """How `fased agent tools` names this sandbox."""
        return "host"

    def argv(self, command: str, *, cwd: Path) -> list[str]:
        """The argv that runs `command` in this sandbox (on the host, cwd is set by spawn)."""
        return ["/bin/sh", "-c", command]

    def popen(self, command: str, *, cwd: Path, env: dict[str, str], stdin: Stream = DEVNULL,
              stdout: Stream = PIPE, stderr: Stream = PIPE) -> subprocess.Popen:
        """Start `/bin/sh -c command` in `cwd`, leading its own session and process group."""
        return spawn(self.argv(command, cwd=cwd), cwd=cwd, env=env, stdin=stdin,
                     stdout=stdout, stderr=stderr)


def spawn(argv: Sequence[str], *, cwd: Path, env: dict[str, str], stdin: Stream = DEVNULL,
          stdout: Stream = PIPE, stderr: Stream = PIPE) -> subprocess.Popen:
    """Start argv in a new session (its own process group), with no inherited descriptors."""
    return subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=stdin, stdout=stdout,
                            stderr=stderr, start_new_session=True, close_fds=True)


def kill_group(pgid: int, grace: float = 2.0, *,
               reap: Callable[[], object] | None = None) -> bool:
    """SIGTERM the process group, wait up to `grace` seconds for it to end, then SIGKILL.
    False when the group was already gone. `reap` (e.g. `Popen.poll`) is called while
    waiting, so the leader, if it is our child, does not linger as a zombie."""
    if pgid <= 1 or pgid == os.getpgrp():  # killpg(0) or our own group would end fased
        raise ValueError(f"refusing to kill process group {pgid}")
    if not _signal(pgid, signal.SIGTERM):
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return True
        time.sleep(0.02)
    _signal(pgid, signal.SIGKILL)
    for _ in range(50):  # SIGKILL is not instant: give the kernel a moment, then the reaper
        if reap is not None:
            reap()
        if not group_alive(pgid):
            break
        time.sleep(0.01)
    return True


def _signal(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the id now belongs to someone else's group: not ours to end
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if not sys.platform.startswith("linux"):
        return True
    # killpg also succeeds while the only members are zombies nobody reaps (in a container
    # PID 1 often does not): ask /proc for a live member.
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat and stat[1] == pgid and stat[0] not in "ZX":
                return True
    return False


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state letter, process group, start time in clock ticks since boot) from
    /proc/<pid>/stat, or None when there is no such process or no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # the name in parentheses may hold anything
    try:
        return fields[0], int(fields[2]), int(fields[19])
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    """This boot's id on Linux (a pid recorded before a reboot means another process)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


def pid_alive(pid: int, *, start_ticks: int | None = None, boot: str | None = None) -> bool:
    """Whether `pid` is still the process that was recorded: not a zombie, and on Linux the
    same boot and start time (so a reused pid does not pass for it)."""
    if boot is not None and boot_id() not in (None, boot):
        return False
    stat = proc_stat(pid)
    if stat is not None:
        return stat[0] not in "ZX" and start_ticks in (None, stat[2])
    if os.path.isdir("/proc/self"):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
