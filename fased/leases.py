"""Whether a claimed turn's lease still holds it: until the lease runs out, unless its runner
was a process of this host that has ended (kill -9, a crash), which is known at once.

A runner id is `host:pid:ns-random` (fased.runner.runner_id), `ns` its pid namespace;
turn.started records the host and pid too. Only a runner of this host and pid namespace can
be seen to be gone, and only by its pid being unused (or a zombie): a pid used again by
another process looks alive, and a runner of another host, or of a container with the same
host name but its own pids (host networking, a shared home), is never judged; nor is one an
older fased recorded without its namespace. In doubt the lease decides.
"""

from __future__ import annotations

import os
import sqlite3


def namespace() -> str:
    """This process's pid namespace as a runner id carries it (hex), "0" where unknown: a
    pid names a process only within its namespace."""
    try:
        return format(os.stat("/proc/self/ns/pid").st_ino, "x")
    except OSError:
        return "0"


def runner_gone(runner: str | None) -> bool:
    """Whether `runner` (a runner_id) was a process of this host and pid namespace that has
    ended."""
    parts = (runner or "").rsplit(":", 2)
    if (len(parts) != 3 or parts[0] != os.uname().nodename or not parts[1].isdecimal()
            or parts[2].partition("-")[0] != namespace()):
        return False
    pid = int(parts[1])
    if pid <= 0 or pid == os.getpid():  # 0 would signal our own process group
        return False
    return not _process_alive(pid)


def _process_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process; or no pid at all, judged by the lease
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read()
    except OSError:
        return True  # no /proc: alive, as far as anyone can tell
    return fields[fields.rfind(b")") + 2:][:1] != b"Z"


def lapsed(con: sqlite3.Connection, now: str) -> tuple[str, list]:
    """SQL (with its parameters) true of a running turn another runner may take over: its
    lease ran out, or its runner is gone (runner_gone)."""
    gone = [r[0] for r in con.execute("SELECT id, runner FROM turns WHERE state = 'running'"
                                      " AND lease_until >= ?", (now,)) if runner_gone(r[1])]
    return f"(lease_until < ? OR id IN ({', '.join('?' * len(gone))}))", [now, *gone]


def holders(con: sqlite3.Connection, now: str) -> dict[str, tuple[str, str]]:
    """Session -> (the turn that holds it, its state): running under a lease another runner
    may not take over (lapsed), or parked for an approval."""
    lapsed_sql, params = lapsed(con, now)
    return {r[0]: (r[1], r[2]) for r in con.execute(
        f"SELECT session, id, state FROM turns WHERE (state = 'running' AND NOT {lapsed_sql})"
        " OR state = 'parked'", params)}
