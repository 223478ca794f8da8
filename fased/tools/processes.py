"""Background processes: started by `exec background: true`, looked after by `process`.

They outlive the chat that started them, so their state is files, not memory:
`<home>/processes/<id>/` (0700) holds `meta.json` (id, command, cwd, pid, pgid, start,
agent, session, turn, call id), `stdout` and `stderr`, `stdin` (a FIFO), `offsets.json`
(how far `poll` has read), `killed` once `process kill` ended it, and `exit`.

The exit code: the command runs under a small /bin/sh wrapper (WRAPPER) that waits for it
and writes `$?` to `exit.tmp`, then renames it to `exit`, so the file is whole or absent and
needs no fased process alive when the command ends. The wrapper, not a double fork: a shell's
`&` makes the command ignore SIGINT and SIGQUIT, and forking a threaded Python is unsafe. The
wrapper leads the process group; it traps SIGTERM (a handler, not an ignore, so the command
still gets the default) to outlive a `kill` long enough to record the code. When fased itself
started the wrapper, it is fased's child: `_reap` collects it so no zombie passes for alive.
In a sandbox the wrapper stays outside and runs bwrap (`ctx.sandbox.argv`): the command never
sees this directory, which is under the fased home, and its exit code is still recorded.

State: `exit` present -> exited(code); `killed` -> killed; the wrapper alive (same pid, start
time and boot) -> running; else lost (it was killed from outside or the machine rebooted).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import stat
import subprocess
from pathlib import Path
from typing import Any

from fased.home import require_inside, write_private
from fased.timeparse import format_ts, parse_ts, utc_now
from fased.tools.base import ToolContext, ToolError, ToolResult
from fased.tools.sandbox import boot_id, kill_group, pid_alive, proc_stat, spawn

VIEW_CAP = 6_000  # bytes per stream that poll and log show unless asked for a range
LIMIT_MAX = 16_000  # the most log returns of a stream at once (the model sees 16,000 chars)
WRITE_MAX = 16_384  # input per write: fits a pipe's buffer, so a write never blocks fased
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for `process kill`

ID = re.compile(r"p-[0-9a-f]{6}")
WRAPPER = ('d=$1; shift; trap : TERM; "$@"; code=$?; '
           'printf "%s\\n" "$code" >"$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"')

_STARTED: dict[str, subprocess.Popen] = {}  # wrappers this fased started, reaped by _reap


def root(home: Path) -> Path:
    """Where background processes keep their files (created 0700)."""
    path = home / "processes"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    require_inside(home, path)
    return path


def start(command: str, workdir: Path, env: dict[str, str], ctx: ToolContext, *,
          note: str | None = None) -> ToolResult:
    """Start `command` under the wrapper, detached from fased, and record it."""
    _reap()
    inner = ctx.sandbox.argv(command, cwd=workdir)  # may refuse: before anything is made
    directory, pid_id = _new_directory(root(ctx.home))
    os.mkfifo(directory / "stdin", 0o600)
    fds = []
    try:
        # Read-write, so opening the FIFO does not wait for a writer and stdin never ends.
        fds.append(os.open(directory / "stdin", os.O_RDWR))
        for name in ("stdout", "stderr"):
            fds.append(os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        # The wrapper runs outside the sandbox: the directory it records the exit code in
        # is under the fased home, which the sandboxed command must not see.
        argv = ["/bin/sh", "-c", WRAPPER, "fased-process", str(directory), *inner]
        proc = spawn(argv, cwd=workdir, env=env, stdin=fds[0], stdout=fds[1], stderr=fds[2])
    except OSError as exc:
        _remove(directory)
        raise ToolError(f"could not start the command: {exc.strerror or exc}") from None
    finally:
        for fd in fds:
            os.close(fd)
    _STARTED[pid_id] = proc
    ticks = proc_stat(proc.pid)
    meta = {"id": pid_id, "command": command, "cwd": str(workdir), "pid": proc.pid,
            "pgid": proc.pid, "started_at": format_ts(utc_now()), "boot_id": boot_id(),
            "start_ticks": ticks[2] if ticks else None, "agent": ctx.agent,
            "session": ctx.session, "turn": ctx.turn, "call_id": ctx.call_id}
    write_private(directory / "meta.json", json.dumps(meta, indent=2).encode())
    lines = [f"started {pid_id} in the background (pid {proc.pid}): {command}",
             f'see its output with process {{"action": "poll", "id": "{pid_id}"}}; '
             f'stop it with {{"action": "kill", "id": "{pid_id}"}}']
    if note:
        lines.append(note)
    return ToolResult(text="\n".join(lines), data={"process_id": pid_id, "pid": proc.pid,
                                                   "background": True})


def _new_directory(parent: Path) -> tuple[Path, str]:
    for _ in range(100):
        pid_id = f"p-{secrets.token_hex(3)}"
        try:
            (parent / pid_id).mkdir(mode=0o700)
        except FileExistsError:
            continue
        return parent / pid_id, pid_id
    raise RuntimeError(f"no free process id in {parent}")


def _remove(directory: Path) -> None:
    for entry in directory.iterdir():
        entry.unlink()
    directory.rmdir()


def _reap() -> None:
    for pid_id, proc in list(_STARTED.items()):
        if proc.poll() is not None:
            del _STARTED[pid_id]


# -- state ------------------------------------------------------------------------------------

def _meta(directory: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not all(
            isinstance(meta.get(k), int) and meta[k] > 1 for k in ("pid", "pgid")):
        return None
    return meta


def _exit_code(directory: Path) -> int | None:
    try:
        return int((directory / "exit").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def state(directory: Path, meta: dict[str, Any]) -> tuple[str, int | None]:
    """("running" | "exited" | "killed" | "lost", exit code if one was recorded)."""
    _reap()
    code = _exit_code(directory)
    if (directory / "killed").exists():
        return "killed", code
    if code is not None:
        return "exited", code
    if pid_alive(meta["pid"], start_ticks=meta.get("start_ticks"), boot=meta.get("boot_id")):
        return "running", None
    code = _exit_code(directory)  # it may have ended between the two looks
    return ("exited", code) if code is not None else ("lost", None)


def label(state_: str, code: int | None) -> str:
    """How a state reads in the text: running, exited(0), killed, lost."""
    return f"exited({code})" if state_ == "exited" else state_


def _find(ctx: ToolContext, pid_id: object) -> tuple[Path, dict[str, Any]]:
    """The directory and meta of one of this agent's processes, or ToolError."""
    if not isinstance(pid_id, str) or not pid_id:
        raise ToolError("this action needs the id of a process (see action list)")
    directory = root(ctx.home) / pid_id
    meta = _meta(directory) if ID.fullmatch(pid_id) else None
    # Another agent's process is as unknown as one that never existed.
    if meta is None or meta.get("agent") != ctx.agent:
        raise ToolError(f"no process {pid_id!r} of this agent; action list shows them")
    return directory, meta


def _age(started_at: str) -> str:
    try:
        seconds = max(0, int((utc_now() - parse_ts(started_at)).total_seconds()))
    except (TypeError, ValueError):
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


# -- actions ----------------------------------------------------------------------------------

def run_action(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """The process tool."""
    action = args.get("action")
    if action == "list":
        return _list(ctx)
    handlers = {"poll": _poll, "log": _log, "kill": _kill, "write": _write}
    if action not in handlers:
        raise ToolError("action must be one of list, poll, log, kill, write")
    directory, meta = _find(ctx, args.get("id"))
    return handlers[action](directory, meta, args)


def _list(ctx: ToolContext) -> ToolResult:
    rows = []
    for directory in root(ctx.home).iterdir():
        meta = _meta(directory)
        if meta is None or meta.get("agent") != ctx.agent:
            continue
        state_, code = state(directory, meta)
        rows.append({"id": meta["id"], "state": state_, "exit_code": code,
                     "command": meta.get("command", ""), "started_at": meta.get("started_at")})
    rows.sort(key=lambda r: str(r["started_at"]))
    if not rows:
        return ToolResult(text="no background processes", data={"processes": []})
    lines = [f"{r['id']}  {label(r['state'], r['exit_code']):<11} {_age(r['started_at']):>7}"
             f" ago  {r['command']}" for r in rows]
    return ToolResult(text="\n".join(lines), data={"processes": rows})


def _status_line(directory: Path, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    state_, code = state(directory, meta)
    line = (f"{meta['id']} {label(state_, code)}, started {_age(meta.get('started_at'))} ago: "
            f"{meta.get('command', '')}")
    if state_ == "lost":
        line += "\n(it is gone and left no exit code: killed from outside, or a reboot)"
    return line, {"process_id": meta["id"], "state": state_, "exit_code": code}


def _poll(directory: Path, meta: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    head, data = _status_line(directory, meta)
    fd = os.open(directory / "offsets.json", os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two polls at once must not both report the same bytes
        try:
            offsets = json.loads(f.read() or "{}")
        except ValueError:
            offsets = {}
        sections = []
        for name in ("stdout", "stderr"):
            start = offsets.get(name, 0) if isinstance(offsets.get(name), int) else 0
            chunk, end = _read(directory / name, start, None, whole_chars=True)
            offsets[name] = end
            if end > start:
                sections.append(_section(name, chunk, start, end, _size(directory / name)))
        f.seek(0)
        f.truncate()
        f.write(json.dumps(offsets))
    body = "\n".join(sections) if sections else "(no new output)"
    return ToolResult(text=f"{head}\n{body}", data=data)


def _log(directory: Path, meta: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    head, data = _status_line(directory, meta)
    offset, limit = args.get("offset"), args.get("limit")
    for value, name, low in ((offset, "offset", 0), (limit, "limit", 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value != int(value) or not low <= value):
            raise ToolError(f"{name} must be a whole number of at least {low}")
    if limit is not None and limit > LIMIT_MAX:
        raise ToolError(f"limit must be at most {LIMIT_MAX}")
    stream = args.get("stream")
    if stream not in (None, "stdout", "stderr"):
        raise ToolError("stream must be stdout or stderr")
    sections = []
    for name in (stream,) if stream else ("stdout", "stderr"):
        path = directory / name
        start = int(offset or 0)
        if offset is None and limit is None:
            chunk, end = _read(path, 0, None, whole_chars=False)
        else:
            chunk, end = _read(path, start, int(limit or VIEW_CAP), whole_chars=False)
        if end > start or stream:
            sections.append(_section(name, chunk, start, end, _size(path)))
    body = "\n".join(sections) if sections else "(no output)"
    return ToolResult(text=f"{head}\n{body}", data=data)


def _kill(directory: Path, meta: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    state_, code = state(directory, meta)
    if state_ != "running":
        return ToolResult(text=f"{meta['id']} is already {label(state_, code)}",
                          data={"process_id": meta["id"], "state": state_, "exit_code": code})
    write_private(directory / "killed", format_ts(utc_now()).encode())
    kill_group(meta["pgid"], KILL_GRACE, reap=_reap)
    return ToolResult(text=f"killed {meta['id']} and every process it started",
                      data={"process_id": meta["id"], "state": "killed"})


def _write(directory: Path, meta: dict[str, Any], args: dict[str, Any]) -> ToolResult:
    text = args.get("input")
    if not isinstance(text, str) or not text:
        raise ToolError("write needs input: the text to send (with a newline for a line)")
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > WRITE_MAX:
        raise ToolError(f"input is {len(data)} bytes; send at most {WRITE_MAX} at a time")
    state_, code = state(directory, meta)
    if state_ != "running":
        raise ToolError(f"{meta['id']} is {label(state_, code)}: it takes no more input")
    try:
        fd = os.open(directory / "stdin", os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader: the command has closed its stdin
            raise ToolError(f"{meta['id']} has closed its stdin") from None
        raise
    sent = 0
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise ToolError(f"{meta['id']} has no stdin to write to")
        while sent < len(data):
            sent += os.write(fd, data[sent:])
    except BlockingIOError:
        pass
    except BrokenPipeError:
        raise ToolError(f"{meta['id']} has closed its stdin") from None
    finally:
        os.close(fd)
    if sent < len(data):
        return ToolResult(text=f"{meta['id']} is not reading its input: sent {sent} of "
                               f"{len(data)} bytes", is_error=True,
                          data={"process_id": meta["id"], "bytes": sent})
    return ToolResult(text=f"sent {sent} bytes to {meta['id']}",
                      data={"process_id": meta["id"], "bytes": sent})


# -- reading output ---------------------------------------------------------------------------

def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read(path: Path, start: int, limit: int | None, *, whole_chars: bool) -> tuple[str, int]:
    """Bytes [start, start+limit) of a file as text (all up to its current size when limit is
    None, keeping the first and last VIEW_CAP/2 with a marker naming the bytes left out),
    and where the read ended. `whole_chars` stops before a UTF-8 character cut in two."""
    size = _size(path)
    start = min(start, size)
    end = size if limit is None else min(size, start + limit)
    try:
        with open(path, "rb") as f:
            f.seek(start)
            if limit is not None or end - start <= VIEW_CAP:
                raw = f.read(end - start)
                if whole_chars:
                    raw = raw[:_whole_utf8(raw)]
                    end = start + len(raw)
                return raw.decode("utf-8", "replace"), end
            half = VIEW_CAP // 2
            first = f.read(half)
            f.seek(end - half)
            last = f.read(half)
            if whole_chars:
                last = last[:_whole_utf8(last)]
                end = end - half + len(last)
    except FileNotFoundError:
        return "", start
    cut_from, cut_to = start + half, end - len(last)
    marker = (f"\n[... bytes {cut_from}-{cut_to} not shown: process log with "
              f"offset {cut_from} reads them ...]\n")
    return first.decode("utf-8", "replace") + marker + last.decode("utf-8", "replace"), end


def _whole_utf8(raw: bytes) -> int:
    """The length of `raw` without a UTF-8 sequence cut off at its end."""
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte & 0xC0 != 0x80:  # the lead byte of the last sequence
            need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else \
                4 if byte >> 3 == 0b11110 else 1
            return len(raw) - back if need > back else len(raw)
    return len(raw)


def _section(name: str, text: str, start: int, end: int, size: int) -> str:
    return f"--- {name} (bytes {start}-{end} of {size}) ---\n{text.rstrip(chr(10))}"
