"""Run a function in a forked child process: how a rebuild spreads its work over two cores.

Only for work whose result is small (it comes back as JSON through a pipe) and whose inputs
are files the child opens itself; the child never touches the parent's open connections. A
FasedError in the child is raised again in the parent, as the same class with the same
message, so the user sees exactly the error a single process would have printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable

from fased import errors


def available() -> bool:
    """True when forking helps and is safe: more than one core, and no other thread (a
    thread holding a lock at fork time would leave the child waiting on it forever)."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "fork"):
        return False
    threading = sys.modules.get("threading")
    return threading is None or threading.active_count() == 1


class Forked:
    """`fn(*args)` running in a child process; `wait()` returns its result or raises its
    error. Use as a context manager so that the child is killed if the parent gives up."""

    def __init__(self, fn: Callable, *args) -> None:
        read_end, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            os.close(read_end)
            _run_child(write_end, fn, args)
        os.close(write_end)
        self._pipe = os.fdopen(read_end, "rb")

    def __enter__(self) -> Forked:
        return self

    def __exit__(self, *exc_info) -> None:
        self._pipe.close()
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._reap()

    def wait(self):
        with self._pipe:
            payload = self._pipe.read()
        status = self._reap()
        if not payload:
            raise errors.FasedError(f"a rebuild worker process died ({_describe(status)})")
        outcome = json.loads(payload)
        if "result" in outcome:
            return outcome["result"]
        raise _rebuilt_error(outcome)

    def _reap(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return status


def _run_child(fd: int, fn: Callable, args: tuple) -> None:
    code = 0
    try:
        try:
            outcome = {"result": fn(*args)}
        except errors.FasedError as exc:
            outcome = {"class": type(exc).__name__, "message": exc.message, "hint": exc.hint,
                       "extra": {k: v for k, v in vars(exc).items()
                                 if k not in ("message", "hint")}}
        except BaseException as exc:  # reported to the parent, which raises it
            outcome = {"class": "FasedError", "message": f"a rebuild worker failed: "
                       f"{type(exc).__name__}: {exc}", "hint": None, "extra": {}}
        data = json.dumps(outcome, default=str).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:  # nothing can be reported: the parent sees no payload
        code = 1
    finally:
        os._exit(code)  # no atexit handlers, no flushing of the parent's buffers


def _rebuilt_error(outcome: dict) -> errors.FasedError:
    cls = getattr(errors, outcome["class"], errors.FasedError)
    if not (isinstance(cls, type) and issubclass(cls, errors.FasedError)):
        cls = errors.FasedError
    exc = cls.__new__(cls)
    errors.FasedError.__init__(exc, outcome["message"], outcome["hint"])
    vars(exc).update(outcome["extra"])
    return exc


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
