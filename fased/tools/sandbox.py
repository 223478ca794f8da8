"""Where tool processes run, and how a process group is ended.

A sandbox turns a shell command into a process. Each has `mode`, `network`, `describe()`,
`argv(command, cwd=...)` (the argv that runs a command inside it, which `exec` also uses to
wrap background commands) and `popen(...)`; both raise ToolError when commands cannot run in
it, and then nothing runs at all.

`Host` runs the command on this machine as the user, with the scrubbed environment the tool
passes and nothing else confined. `Bwrap` runs it under bubblewrap: the system read-only, one
workspace read-write (and others read-only), a private /tmp, the fased home hidden, no network
unless asked, no capabilities. Which one a turn gets is fased.tools.confine's choice.

Every process starts in a new session, so it leads its own process group: a timeout, an
interrupt or `process kill` ends the command and everything it started, and a Ctrl-C meant
for fased's terminal never reaches a background process. Under bwrap the group holds bwrap
itself: ending it ends the sandbox's pid namespace, and with it every process inside.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from fased.tools.base import ToolError, shown

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


INSTALL = "install the package bubblewrap (Debian and Ubuntu: apt install bubblewrap)"
PROBE_TIMEOUT = 10.0
_STARTS: set[tuple[str, ...]] = set()  # bwrap command lines a probe has shown to start


class Bwrap:
    """Commands run under bubblewrap (`bwrap`): `writable` read-write, `readonly` read-only
    at their own paths, the rest of the system read-only, /tmp private, the fased `home`
    invisible (even when a workspace lives inside it), no network unless `network`."""

    mode = "bwrap"

    def __init__(self, *, home: Path, writable: Path, readonly: Sequence[Path] = (),
                 network: bool = False):
        self.home = Path(os.path.realpath(home))
        self.writable = Path(os.path.realpath(writable))
        self.readonly = tuple(Path(os.path.realpath(p)) for p in readonly)
        self.network = network

    def describe(self) -> str:
        """How `fased agent tools` names this sandbox."""
        return "bubblewrap" + ("" if self.network else " (no network)")

    def options(self) -> list[str]:
        """bwrap's options up to the working directory and the command."""
        opts = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        # Mounts apply in order, so the deeper path goes last: the home hidden, then a
        # workspace inside it bound back; or a workspace holding the home, then the home
        # hidden in it. At the same depth the more restrictive mount wins.
        mounts = [(self.writable, 0, ["--bind", str(self.writable), str(self.writable)]),
                  *((p, 1, ["--ro-bind-try", str(p), str(p)]) for p in self.readonly),
                  (self.home, 2, ["--tmpfs", str(self.home)])]
        for _, _, mount in sorted(mounts, key=lambda m: (len(m[0].parts), m[1])):
            opts += mount
        # Last, once the workspaces in it are bound: what is written over the home would
        # only vanish with the sandbox, so it is refused (not recursive: they stay writable).
        opts += ["--remount-ro", str(self.home)]
        # As root bwrap keeps every capability unless told (bubblewrap issue 561): with them
        # the command could remount / read-write or uncover the home.
        opts += ["--cap-drop", "ALL", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
                 "--new-session"]
        if not self.network:
            opts.append("--unshare-net")
        return opts

    def problem(self) -> str | None:
        """Why commands cannot run in this sandbox, or None when they can (bwrap was seen to
        start it: a probe, once per process and command line)."""
        binary = shutil.which("bwrap")
        if binary is None:
            return ("bwrap is not installed, and this agent's commands run in a bubblewrap "
                    f"sandbox (sandbox.mode): {INSTALL}")
        if not self.writable.is_dir():
            return f"the sandbox workspace {shown(self.writable)} is not a directory"
        key = (binary, *self.options())
        if key not in _STARTS:
            failed = _probe(key)
            if failed:
                return (f"bubblewrap ({binary}) cannot start the sandbox here ({failed}); it "
                        f"needs user namespaces or a setuid bwrap: {INSTALL}, or allow "
                        "unprivileged user namespaces")
            _STARTS.add(key)
        return None

    def check(self) -> None:
        """ToolError when commands cannot run in this sandbox (they never run outside it)."""
        problem = self.problem()
        if problem:
            raise ToolError(f"The command did not run: {problem}. fased never runs commands "
                            "outside the sandbox.")

    def argv(self, command: str, *, cwd: Path) -> list[str]:
        """The argv that runs `/bin/sh -c command` in the sandbox, in `cwd`."""
        self.check()
        return [shutil.which("bwrap") or "bwrap", *self.options(), "--chdir", str(cwd), "--",
                "/bin/sh", "-c", command]

    def popen(self, command: str, *, cwd: Path, env: dict[str, str], stdin: Stream = DEVNULL,
              stdout: Stream = PIPE, stderr: Stream = PIPE) -> subprocess.Popen:
        """Start the command in the sandbox, bwrap leading its own session and group."""
        return spawn(self.argv(command, cwd=cwd), cwd=cwd, env=env, stdin=stdin,
                     stdout=stdout, stderr=stderr)


def _probe(argv: Sequence[str]) -> str | None:
    """Why bwrap with these options cannot run `:`, or None when it can. A failure to set up
    exits 1 like a command could: asked here, before the command, the two cannot be mixed up."""
    try:
        done = subprocess.run([*argv, "--", "/bin/sh", "-c", ":"], cwd="/", env={},
                              stdin=DEVNULL, stdout=DEVNULL, stderr=PIPE,
                              timeout=PROBE_TIMEOUT, close_fds=True)
    except subprocess.TimeoutExpired:
        return f"it did not start within {PROBE_TIMEOUT:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)
    if done.returncode == 0:
        return None
    said = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return (said[-1][:300] if said else f"exit code {done.returncode}")


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
