"""Ctrl-C and SIGTERM held back while fased does what must not be cut short: recording a
turn (so that a command interrupted just after can withdraw it) and starting llama.cpp's
server (which cannot be stopped until it has answered)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

HELD = (signal.SIGINT, signal.SIGTERM)


class Stop(BaseException):
    """SIGTERM: give the current turn back (or, for chat, end it) and leave. `result`: the
    turn a chat ended (turn.aborted, a fased.runner.TurnResult), for it to print as it does
    after Ctrl-C. One that no command handles ends it with exit 143 (commands.failures)."""

    result = None


@contextlib.contextmanager
def held(deliver: bool = True) -> Iterator[list[int]]:
    """SIGINT and SIGTERM wait while the block runs, then reach the handlers that were in
    place (the first of them; `timeout -s INT` sends two at once), as if they came then:
    a KeyboardInterrupt, fased's Stop, or the default action. deliver=False drops them, for
    a block that is already ending the command because of a signal. Yields the signals that
    have come so far (a list that grows), for a block that should hurry once one has.
    Only the main thread has signal handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    came: list[int] = []

    def hold(signum, frame) -> None:
        came.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in HELD}
    try:
        yield came
    finally:
        for sig, handler in previous.items():
            # None: a handler not set from Python, which cannot be put back; the default is
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if came and deliver:
            handler = previous[came[0]]
            if callable(handler):
                handler(came[0], None)
            elif handler != signal.SIG_IGN:
                signal.raise_signal(came[0])
