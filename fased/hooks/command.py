"""Running a hook's command for one event: what it gets, where it runs, how it is stopped.

The command is `/bin/sh -c RUN` in the agent's workspace, in a process group of its own, with
the event on stdin as one JSON line (exactly as `fased replay --json` prints it: upcast to the
newest version, masked), and the environment a tool gets (fased.tools.exec.tool_environment:
no provider keys, no secret-looking names, no FASED_*) minus any value credentials.json holds,
plus FASED_EVENT, FASED_SEQ, FASED_AGENT, FASED_SESSION, FASED_HOME and FASED_HOOK. At its
timeout the whole group is killed. On Linux the command is also killed when its runner dies
(PR_SET_PDEATHSIG), so a delivery a crash interrupted is not left running beside its retry.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fased.hooks.spec import HookSpec, event_agent, event_session
from fased.leftovers import death_signal

OUTPUT_CAP = 4096  # bytes of a run's output (stdout and stderr together) kept in the log
GRACE = 1.0  # seconds between SIGTERM and SIGKILL for a command past its timeout


@dataclass
class RunOutcome:
    """How one run of a command ended."""

    exit_code: int | None
    timed_out: bool
    duration_ms: int
    output: str
    output_bytes: int
    signal: str | None = None
    error: str | None = None  # could not start, or why it failed, in words

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        if self.error and self.exit_code is None and not self.timed_out and not self.signal:
            return self.error
        if self.timed_out:
            return self.error or "timed out"
        if self.signal:
            return f"killed by {self.signal}"
        return f"exit code {self.exit_code}"


def event_line(event: dict) -> str:
    """The event as `fased replay --json` prints it (one line, no newline)."""
    from fased.redact import mask_event
    from fased.upcast import upcast

    return json.dumps(mask_event(upcast(event)), ensure_ascii=False, separators=(",", ":"),
                      default=str)


def hook_environment(con: sqlite3.Connection, home: Path, spec: HookSpec, event: dict,
                     base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a hook's command for `event`."""
    from fased.tools.exec import tool_environment_for

    env = tool_environment_for(con, home, dict(os.environ if base is None else base))
    env.update(FASED_EVENT=event["type"], FASED_SEQ=str(event["seq"]),
               FASED_AGENT=event_agent(event) or "", FASED_SESSION=event_session(event) or "",
               FASED_HOME=str(home), FASED_HOOK=spec.name)
    return env


def workspace_of(con: sqlite3.Connection, home: Path, spec: HookSpec, event: dict) -> Path:
    """Where the command runs: the workspace of the event's agent, else of the hook's, else
    of the selected agent; the fased home when none of them has one on disk."""
    from fased.agents import workspace_for

    selected = con.execute("SELECT value FROM kv WHERE key = 'selected_agent'").fetchone()
    for agent in (event_agent(event), spec.agent, selected[0] if selected else None):
        if not agent:
            continue
        row = con.execute("SELECT * FROM agents WHERE id = ? AND deleted = 0",
                          (agent,)).fetchone()
        if row is not None:
            path = workspace_for(con, home, row)
            if path.is_dir():
                return path
    return home


def run_command(spec: HookSpec, event: dict, *, cwd: Path, env: dict[str, str]) -> RunOutcome:
    """Run the hook's command for `event` until it exits or its timeout passes."""
    from fased.tools.sandbox import kill_group

    started = time.monotonic()
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", spec.run], cwd=cwd, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                close_fds=True, preexec_fn=death_signal())
    except OSError as exc:
        return RunOutcome(None, False, 0, "", 0,
                          error=f"could not start the command: {exc.strerror or exc}")
    kept = bytearray()
    total = [0]

    def read() -> None:
        while chunk := proc.stdout.read1(65536):
            total[0] += len(chunk)
            if len(kept) < OUTPUT_CAP:
                kept.extend(chunk[:OUTPUT_CAP - len(kept)])
        proc.stdout.close()

    def feed() -> None:
        try:
            proc.stdin.write((event_line(event) + "\n").encode())
            proc.stdin.close()
        except OSError:  # the command does not read its stdin: that is its business
            pass

    threads = [threading.Thread(target=read, daemon=True, name=f"hook-out-{spec.name}"),
               threading.Thread(target=feed, daemon=True, name=f"hook-in-{spec.name}")]
    for thread in threads:
        thread.start()
    timed_out = False
    try:
        proc.wait(timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    # the shell has ended (or is past its time): whatever it left behind in its group goes too
    kill_group(proc.pid, GRACE, reap=proc.poll)
    proc.wait()
    for thread in threads:
        thread.join(timeout=1.0)
    code = proc.returncode
    signame = None
    if code is not None and code < 0:
        import signal

        try:
            signame = signal.Signals(-code).name
        except ValueError:
            signame = f"signal {-code}"
    output = bytes(kept).decode("utf-8", "replace")
    return RunOutcome(None if code is None or code < 0 else code, timed_out,
                      round((time.monotonic() - started) * 1000), output, total[0],
                      signal=None if timed_out else signame,
                      error=f"timed out after {spec.timeout:g} s" if timed_out else None)
