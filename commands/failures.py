"""How a command's failure reaches the user: one Error line (and a Hint), an exit code, and
nothing else, whichever way the command was parsed.

Click-free, so that the entry point's fast path (fased.commands.entry) and the click root
(fased.commands.main) report every failure through the same code: a usage or state error,
Ctrl-C, a reader that closed the pipe, a full disk, a damaged state.db (rebuilt, then the
command runs again), and a bug (one line; the traceback with FASED_DEBUG=1).
"""

from __future__ import annotations

import os
import sys

from fased.errors import EXIT_ERROR, FasedError

GLOBAL_OPTIONS = ("--home", "--idempotency-key")

RUN_AGAIN = -1  # what failure_exit returns when state.db was rebuilt and the command may rerun


class App:
    """What every command needs: where the home is, and the store once it is opened."""

    def __init__(self, home: str | None, idempotency_key: str | None, argv: list[str]):
        self.home_option = home
        self.idempotency_key = idempotency_key
        self.argv = argv
        self._store = None

    def close(self) -> None:
        """Release the store's files and connection (in-process callers run many commands)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self):
        if self._store is None:
            from fased.store import Store

            identity = None
            if self.idempotency_key is not None:
                from fased.commands.main import without_output_options

                identity = command_line(without_output_options(self.argv))
            argv = self.argv
            self._store = Store(self.home_option, key=self.idempotency_key,
                                command=lambda: command_line(argv), identity=identity)
        return self._store


def command_line(argv: list[str]) -> str:
    """The command as recorded in each event's meta, with secrets masked: values of
    secret-looking NAME=VALUE arguments, of headers not known to be harmless
    (`-H X-Access-Key=...`), and URL credentials (`https://user:pw@host/v1?key=...`)."""
    from fased.redact import mask_args

    argv = list(argv)
    while argv and argv[0].split("=")[0] in GLOBAL_OPTIONS:  # they come before the command
        argv = argv[1:] if "=" in argv[0] else argv[2:]
    # undecodable bytes in argv arrive as lone surrogates, which cannot be logged
    argv = [a.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for a in argv]
    return " ".join(["fased", *mask_args(argv)])


def print_error(message: str, hint: str | None) -> None:
    """The Error: line and its Hint: on stderr. A name in the message may hold ESC or
    U+202E, or be 100,000 characters long: escaped and clipped."""
    from fased.bounds import clip_line, printable

    text = clip_line(f"Error: {printable(message)}") + "\n"
    if hint:
        text += clip_line(f"Hint: {printable(hint)}") + "\n"
    sys.stderr.write(text)
    sys.stderr.flush()


def failure_exit(exc: BaseException, app: App | None, attempt: int) -> int:
    """Report `exc`, which ended a command run with `app`, and return the exit code; or
    RUN_AGAIN when state.db was damaged and has been rebuilt, and the command (attempt 1,
    nothing appended yet) can simply run again. Raises `exc` again under FASED_DEBUG=1."""
    if isinstance(exc, FasedError):
        print_error(exc.message, exc.hint)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        sys.stderr.write("Interrupted.\n")
        return 130
    from fased.signals import Stop

    if isinstance(exc, Stop):  # SIGTERM, where the command had nothing more to say
        sys.stderr.write("Terminated.\n")
        return 143
    if isinstance(exc, BrokenPipeError):
        silence_stdout()
        return 0
    failure = _not_utf8(exc) or _environment_failure(app, exc)
    if failure is not None:
        print_error(failure.message, failure.hint)
        return failure.exit_code
    if attempt == 1:
        recovered = _recovered_from_damage(app, exc)
        if recovered is not None:
            return recovered
    from fased.settings import env_flag

    if env_flag("FASED_DEBUG", strict=False):
        raise exc
    from fased.redact import mask_urls

    print_error(f"internal error: {type(exc).__name__}: {mask_urls(str(exc))}",
                "this is a bug in fased; FASED_DEBUG=1 shows the traceback")
    return EXIT_ERROR


def silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):
        return  # nothing to flush: stdout was never open
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)


def _not_utf8(exc: BaseException) -> FasedError | None:
    """Text with bytes that are not UTF-8 (an argument typed on a Latin-1 terminal, which
    Python hands over as lone surrogates) met SQLite, the log or a server, which take UTF-8
    only: whichever name or id it was, one usage error that shows the bytes."""
    if not (isinstance(exc, UnicodeEncodeError) and exc.reason == "surrogates not allowed"
            and isinstance(exc.object, str)):
        return None
    from fased.bounds import storable
    from fased.errors import UsageError

    return UsageError(f"'{storable(exc.object)}' is not UTF-8 text: fased looks up and records "
                      "names, ids and messages as UTF-8",
                      hint="give it in UTF-8 (text in another encoding: `iconv -t UTF-8`)")


def _appended(app: App | None) -> int:
    store = getattr(app, "_store", None)
    return store.appended if store is not None else 0


def _environment_failure(app: App | None, exc: BaseException) -> FasedError | None:
    """A full disk (or quota) anywhere under a command: one line, exit 4, and whether the
    command's events were recorded before it happened."""
    import errno
    import sqlite3

    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc))
    if not full:
        return None
    from fased.errors import StateError

    done = _appended(app)
    if not getattr(exc, "filename", None) and isinstance(exc, OSError) and _home_has_room(app):
        # no file named and the home's disk has room: what filled is where stdout goes
        # (`> /dev/full`, a full disk under the file it was sent to)
        return FasedError(
            "cannot write the output: no space left on the device it goes to",
            hint=f"the command is recorded ({done} event(s)); `fased replay -n {done}` shows "
            "it" if done else "nothing was recorded")
    return StateError(
        "no space left on the device" + (f" ({exc.filename})" if getattr(exc, "filename", None)
                                         else ""),
        hint=f"the command is recorded ({done} event(s)); do not run it again. Free disk "
        "space: the next fased command brings everything up to date" if done else
        "nothing was recorded; free disk space and try again")


def _home_has_room(app: App | None) -> bool:
    try:
        from fased.home import resolve_home

        st = os.statvfs(resolve_home(getattr(app, "home_option", None)))
    except (OSError, FasedError):
        return False
    return st.f_bavail * st.f_frsize > 16 * 1024 * 1024


def _recovered_from_damage(app: App | None, exc: BaseException) -> int | None:
    """state.db held bytes it cannot decode: rebuild it from the log. RUN_AGAIN when the
    command can simply run again (it had appended nothing); the exit code when it cannot
    (it is reported); None when `exc` is no such damage."""
    from fased.store import is_projection_damage

    store = getattr(app, "_store", None)
    if store is None or not is_projection_damage(exc):
        return None
    from fased.errors import StateError
    from fased.store import damage_note

    done = store.appended
    sys.stderr.write(damage_note(exc) + "\n")
    try:
        store.recover_damaged()
    except FasedError as again:
        print_error(again.message, again.hint)
        return again.exit_code
    app.close()
    if done:
        failure = StateError(
            f"state.db was damaged and has been rebuilt from the log; the command had already "
            f"recorded {done} event(s)", hint="do not run it again: it took effect "
            "(`fased replay -n 5` shows what it recorded)")
        print_error(failure.message, failure.hint)
        return failure.exit_code
    return RUN_AGAIN
