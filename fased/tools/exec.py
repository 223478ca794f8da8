"""The runtime tools: `exec` runs a shell command in the workspace, `process` looks after the
ones started in the background (their state lives under the fased home: fased.tools.processes).

A foreground command gets /dev/null for stdin, a scrubbed environment (`tool_environment`),
its own process group, and a timeout; a timeout or `ctx.cancel` ends the whole group. Output
is captured from both pipes by threads (so neither can fill and stall the command), keeping
the head and tail of each stream; the exit code and any notice come first in the text, so
they survive the loop's cap on what the model is sent.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from fased.tools import processes
from fased.tools.base import ToolContext, ToolError, ToolResult, ToolSpec, schema
from fased.tools.sandbox import kill_group

TIMEOUT_DEFAULT = 120
TIMEOUT_MAX = 3600
STREAM_CAP = 200_000  # bytes kept per stream of a foreground command: first and last half
GRACE = 1.0  # seconds between SIGTERM and SIGKILL when a foreground command is ended
DRAIN = 1.0  # seconds to let processes the shell left behind finish writing its output
POLL = 0.05  # how often a running command checks ctx.cancel

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Variables that change which program a command runs or how /bin/sh reads it: with them a
# command that was shown (and approved) would do something else.
_SHELL_ENV = frozenset({"BASH_ENV", "ENV", "IFS", "SHELLOPTS", "BASHOPTS", "CDPATH"})
# literal_secret's reasons that a value is a credential; a long random run alone is not one
# (store paths and ids hold those).
_SECRET_VALUE = ("a known API key prefix", "a bot token", "a password in a URL",
                 "a user:password", "an authorization token")


def tool_environment(base: dict[str, str], *, drop: Iterable[str] = ()) -> dict[str, str]:
    """`base` without what would hand a tool fased's credentials or state: names that look
    secret (fased.redact.SECRET_NAME), the providers' key variables, `drop` (e.g. the
    variables configured providers read keys from), every FASED_* (FASED_HOME included:
    tools must not find the home), and values that are literal secrets."""
    from fased.models import KEY_ENV
    from fased.redact import SECRET_NAME, literal_secret

    refused = set(KEY_ENV.values()) | set(drop)
    return {name: value for name, value in base.items()
            if name not in refused and not name.upper().startswith("FASED_")
            and not SECRET_NAME.search(name) and literal_secret(value) not in _SECRET_VALUE}


def tool_environment_for(con, home: Path, base: dict[str, str]) -> dict[str, str]:
    """tool_environment of `base` for a tool or hook of this home: also without the
    variables its providers read keys from, and without any variable whose value is a
    secret fased knows (fased.models.known_secrets)."""
    from fased.models import known_secrets

    drop = {r[0] for r in con.execute(
        "SELECT credential_env FROM providers WHERE credential_env IS NOT NULL")}
    secrets = known_secrets(con, home, base)
    return {name: value for name, value in tool_environment(base, drop=drop).items()
            if value not in secrets}


def check_env_overrides(env: object) -> dict[str, str]:
    """The `env` argument as variables to add, or ToolError: names must be valid, and PATH,
    LD_*, DYLD_* and the shell's start-up variables cannot be set."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise ToolError("env must be an object of NAME: value strings")
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ToolError(f"env: {name!r} is not a variable name (letters, digits, _)")
        if not isinstance(value, str) or "\0" in value:
            raise ToolError(f"env: the value of {name} must be a string without NUL bytes")
        if name == "PATH" or name.startswith(("LD_", "DYLD_")) or name in _SHELL_ENV:
            raise ToolError(f"env: {name} cannot be set (it changes which programs run); "
                            "give full paths in the command instead")
    return dict(env)


# -- exec ---------------------------------------------------------------------------------------

def run_exec(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """The exec tool: run a command in the foreground, or start it in the background."""
    command = args.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ToolError("command must be a non-empty string")
    if "\0" in command:
        raise ToolError("command must not contain a NUL byte")
    workdir = ctx.resolve(args.get("workdir") or ".", write=True)
    if not workdir.is_dir():
        raise ToolError(f"{args.get('workdir')}: not a directory")
    env = {**tool_environment(ctx.env), **ctx.skill_env,
           **check_env_overrides(args.get("env"))}
    if ctx.sandbox is None:
        raise RuntimeError("the tool context has no sandbox")
    background = args.get("background", False)
    if not isinstance(background, bool):
        raise ToolError("background must be true or false")
    if background:
        note = ("timeoutSeconds does not apply to background processes: kill it with process "
                "when done") if args.get("timeoutSeconds") is not None else None
        return processes.start(command, workdir, env, ctx, note=note)
    timeout = args.get("timeoutSeconds", TIMEOUT_DEFAULT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
            not 1 <= timeout <= TIMEOUT_MAX:
        raise ToolError(f"timeoutSeconds must be a whole number from 1 to {TIMEOUT_MAX}")
    return _run_foreground(command, workdir, env, float(timeout), ctx)


class _Capture:
    """One output stream as kept: the first and last `cap // 2` bytes, and the total count."""

    def __init__(self, cap: int):
        self.half = cap // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self.lock:
            self.total += len(chunk)
            room = self.half - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            self.tail += chunk
            if len(self.tail) > self.half:
                del self.tail[:len(self.tail) - self.half]

    def text(self) -> tuple[str, int]:
        """The kept text (with a marker where bytes were dropped), and how many were."""
        with self.lock:
            dropped = self.total - len(self.head) - len(self.tail)
            head = self.head.decode("utf-8", "replace")
            tail = self.tail.decode("utf-8", "replace")
        if dropped:
            return f"{head}\n[... {dropped} bytes dropped ...]\n{tail}", dropped
        return head + tail, 0


def _pump(pipe: IO[bytes], into: _Capture) -> threading.Thread:
    def read() -> None:
        fd = pipe.fileno()
        try:
            while chunk := os.read(fd, 65536):
                into.add(chunk)
        except OSError:
            pass
        finally:
            pipe.close()

    thread = threading.Thread(target=read, name="exec-output", daemon=True)
    thread.start()
    return thread


def _run_foreground(command: str, workdir: Path, env: dict[str, str], timeout: float,
                    ctx: ToolContext) -> ToolResult:
    started = time.monotonic()
    try:
        proc = ctx.sandbox.popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise ToolError(f"could not start the command: {exc.strerror or exc}") from None
    out, err = _Capture(STREAM_CAP), _Capture(STREAM_CAP)
    readers = [_pump(proc.stdout, out), _pump(proc.stderr, err)]
    stop = _wait(proc, started + timeout, ctx)
    leftovers = False
    if stop is None:
        # The shell has ended. Whatever it left in the background may still hold its output
        # pipes: let it finish writing for a moment, then end the group, or we never return.
        until = time.monotonic() + DRAIN
        while any(r.is_alive() for r in readers) and time.monotonic() < until:
            if ctx.cancel.wait(POLL):
                stop = "interrupted"
                break
        leftovers = stop is None and any(r.is_alive() for r in readers)
    if stop or leftovers:
        kill_group(proc.pid, GRACE, reap=proc.poll)
    proc.wait()
    for reader in readers:  # a process that left the group may still hold a pipe: not ours
        reader.join(timeout=1.0)
    elapsed = time.monotonic() - started
    return _result(proc.returncode, stop, leftovers, timeout, elapsed, out, err)


def _wait(proc: subprocess.Popen, deadline: float, ctx: ToolContext) -> str | None:
    """Wait for the shell; "timeout" or "interrupted" when it has to be stopped."""
    while proc.poll() is None:
        if ctx.cancel.wait(POLL):
            return "interrupted"
        if time.monotonic() >= deadline:
            return "timeout"
    return None


def _result(code: int, stop: str | None, leftovers: bool, timeout: float, elapsed: float,
            out: _Capture, err: _Capture) -> ToolResult:
    signame = _signal_name(-code) if code < 0 else None
    if stop == "timeout":
        head = (f"timed out after {timeout:g} s: the command and every process it started "
                "were killed")
    elif stop == "interrupted":
        head = (f"interrupted after {elapsed:.1f} s: the command and every process it started "
                "were killed")
    elif signame:
        head = f"killed by {signame} after {elapsed:.1f} s"
    else:
        head = f"exit code {code} after {elapsed:.1f} s"
    lines = [head]
    if leftovers:
        lines.append("processes it left running still held its output and were killed "
                     "(use background: true for servers and long jobs)")
    sections, truncated = [], False
    for name, capture in (("stdout", out), ("stderr", err)):
        text, dropped = capture.text()
        if dropped:
            truncated = True
            lines.append(f"{name}: {capture.total} bytes; {dropped} in the middle were "
                         f"dropped (first and last {capture.half} kept)")
        if text:
            sections.append(f"--- {name} ---\n{text.rstrip(chr(10))}")
    body = "\n".join(sections) if sections else "(no output)"
    data = {"exit_code": None if code < 0 else code, "timed_out": stop == "timeout",
            "interrupted": stop == "interrupted", "duration_ms": round(elapsed * 1000),
            "stdout_bytes": out.total, "stderr_bytes": err.total, "truncated": truncated}
    if signame:
        data["signal"] = signame
    if leftovers:
        data["leftovers_killed"] = True
    return ToolResult(text="\n".join(lines) + "\n" + body, is_error=stop is not None,
                      data=data)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# -- the tools --------------------------------------------------------------------------------

EXEC = ToolSpec(
    name="exec",
    description=(
        "Run a shell command (/bin/sh -c) in the workspace and return its exit code, stdout "
        "and stderr. stdin is empty. The command may run timeoutSeconds (default "
        f"{TIMEOUT_DEFAULT}, at most {TIMEOUT_MAX}); then it and every process it started are "
        f"killed. Of more than {STREAM_CAP // 1000} KB of output per stream, the first and last "
        f"{STREAM_CAP // 2000} KB are kept. Processes it leaves running that still hold its "
        "output are killed when it ends. For servers, watchers and long jobs set background: "
        "true: it returns a process id at once; then use the process tool to read output, "
        "send input or kill it. env adds variables (PATH, LD_* and DYLD_* cannot be set). "
        "Variables that look like credentials are not passed on."),
    parameters=schema({
        "command": {"type": "string", "minLength": 1, "description": "Shell command line."},
        "workdir": {"type": "string", "description":
                    "Directory to run in, relative to the workspace (default: its root)."},
        "timeoutSeconds": {"type": "integer", "minimum": 1, "maximum": TIMEOUT_MAX,
                           "description": f"Default {TIMEOUT_DEFAULT}. Foreground only."},
        "background": {"type": "boolean", "description":
                       "Start it and return a process id at once (default false)."},
        "env": {"type": "object", "additionalProperties": {"type": "string"},
                "description": "Extra environment variables."},
    }, ["command"]),
    group="runtime",
    run=run_exec,
)


PROCESS = ToolSpec(
    name="process",
    description=(
        "Manage commands started with exec background: true. action list: this agent's "
        "processes and their state (running, exited(code), killed, lost). poll: the state and "
        "the output written since the last poll. log: the output so far (offset and limit "
        f"count bytes, limit at most {processes.LIMIT_MAX}; without them the first and last "
        f"{processes.VIEW_CAP // 2} bytes of each stream). kill: end the process and "
        "everything it started. write: send input to its stdin (include the newline; stdin "
        "stays open, it never reaches end of file). Long output is cut in the middle; the "
        "notice says which bytes, for log."),
    parameters=schema({
        "action": {"type": "string", "enum": ["list", "poll", "log", "kill", "write"]},
        "id": {"type": "string", "description": "Process id from exec, e.g. p-1a2b3c."},
        "input": {"type": "string", "minLength": 1, "maxLength": processes.WRITE_MAX,
                  "description": "Text for write."},
        "stream": {"type": "string", "enum": ["stdout", "stderr"],
                   "description": "log: one stream only (default both)."},
        "offset": {"type": "integer", "minimum": 0, "description": "log: first byte."},
        "limit": {"type": "integer", "minimum": 1, "maximum": processes.LIMIT_MAX,
                  "description": "log: how many bytes."},
    }, ["action"]),
    group="runtime",
    run=processes.run_action,
)

TOOLS = (EXEC, PROCESS)
