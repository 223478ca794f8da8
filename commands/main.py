"""The `fased` root command: global options, lazy sub-commands, and one error funnel.

Sub-command modules are imported only when they are run (or listed by --help), so start-up
pays for click and nothing else.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import ClassVar

import click

from fased import __version__
from fased.errors import EXIT_ERROR, FasedError

# name -> "module:attribute" under fased.commands; the help line comes from the docstring.
COMMANDS = {
    "setup": "setup:setup",
    "agent": "agent:agent",
    "session": "session:session",
    "config": "config:config",
    "chat": "chat:chat",
    "run": "run:run",
    "task": "task:task",
    "replay": "replay:replay",
    "doctor": "doctor:doctor",
    "approvals": "approvals:approvals",
    "completion": "completion:completion",
    "usage": "usage:usage",
    "skill": "skill:skill",
    "channel": "channel:channel",
    "pairing": "pairing:pairing",
    "hooks": "hooks:hooks",
    "memory": "memory:memory",
}


# name -> its one-line summary, so that `fased --help` lists every command without importing
# them all (tests/test_output.py checks each against the command's own docstring)
SUMMARIES = {
    "agent": "Agents: an identity, a workspace, models, sessions and tasks.",
    "approvals": "Approve or deny what an agent asked to run where nobody could be asked.",
    "channel": "Channels: talk to your agents from a chat app (Telegram), and who may talk.",
    "chat": "Send a message to an agent and print the reply.",
    "completion": "Print the completion script for SHELL: commands, options and live values "
                  "(agent, session, task and provider ids, model refs), read from the home "
                  "without changing it.",
    "config": "Read and change fased.json (every change is an event).",
    "doctor": "Check the log's checksums and seq chain, the lock, permissions, links and "
              "projections.",
    "hooks": "Your own commands, run on the agent's events (fased.json `hooks`).",
    "memory": "Search an agent's memory notes and session messages.",
    "pairing": "Approve or deny people who wrote to a channel bot that does not know them.",
    "replay": "Show what happened, exactly: the event log, filtered.",
    "run": "Answer queued turns (oldest first, one at a time per session) and fire due tasks.",
    "session": "Sessions: the working contexts (conversations) under an agent.",
    "setup": "Set up fased: config, the default agent `main`, its workspace files.",
    "skill": "Skills: folders of know-how (a SKILL.md) the agent reads when one applies.",
    "task": "Tasks: messages sent to an agent's session on a schedule; `fased run` fires them.",
    "usage": "Tokens and cost of model calls (every step of every turn), from the projections.",
}


class FasedGroup(click.Group):
    """A group whose help lists each command's whole one-line summary: click cuts it to the
    width left beside the longest name, ending in "...". Its sub-groups are FasedGroups."""

    group_class = type

    #: summaries known without importing the command (the root's SUMMARIES)
    summaries: ClassVar[dict[str, str]] = {}

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.summaries:
                rows.append((name, self.summaries[name]))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=sys.maxsize)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)  # wraps a long summary under itself


class LazyGroup(FasedGroup):
    """A group whose sub-commands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            module = importlib.import_module(f"fased.commands.{module_name}")
            return getattr(module, attr)
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        # click suggests only among the commands it has loaded: a lazy group's are not, yet
        name = args[0] if args else ""
        if not ctx.resilient_parsing and not name.startswith("-") and \
                self.get_command(ctx, name) is None:
            from difflib import get_close_matches

            close = sorted(get_close_matches(name, self.list_commands(ctx)))
            quoted = ", ".join(repr(c) for c in close)
            message = f"No such command {name!r}."
            if len(close) == 1:
                message += f" Did you mean {quoted}?"
            elif close:
                message += f" (Did you mean one of: {quoted}?)"
            raise click.UsageError(message, ctx)
        return super().resolve_command(ctx, args)


class RootGroup(LazyGroup):
    """The root group: every failure below it becomes one line on stderr and an exit code."""

    summaries: ClassVar[dict[str, str]] = SUMMARIES

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # the command line as given (not sys.argv: in-process callers pass their own)
        ctx.meta["fased.argv"] = list(args)
        return super().parse_args(ctx, args)

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.ClickException as exc:  # the root's own options
            _bounded(exc)
            raise

    def invoke(self, ctx: click.Context):
        saved = _saved_args(ctx)
        for attempt in (1, 2):
            try:
                return super().invoke(ctx)
            except FasedError as exc:
                _error(exc.message, exc.hint)
                ctx.exit(exc.exit_code)
            except click.exceptions.ClickException as exc:
                _bounded(exc)
                raise
            except (click.exceptions.Exit, click.exceptions.Abort):
                raise
            except KeyboardInterrupt:
                click.echo("Interrupted.", err=True)
                ctx.exit(130)
            except BrokenPipeError:
                _silence_stdout()
                ctx.exit(0)
            except Exception as exc:  # a bug: still one line; the traceback only on request
                failure = _environment_failure(ctx, exc)
                if failure is not None:
                    _error(failure.message, failure.hint)
                    ctx.exit(failure.exit_code)
                if attempt == 1 and _recovered_from_damage(ctx, exc):
                    _restore_args(ctx, saved)
                    continue
                if os.environ.get("FASED_DEBUG"):
                    raise
                from fased.redact import mask_urls

                _error(f"internal error: {type(exc).__name__}: {mask_urls(str(exc))}",
                       "this is a bug in fased; FASED_DEBUG=1 shows the traceback")
                ctx.exit(EXIT_ERROR)
        return None


def _bounded(exc: click.exceptions.ClickException) -> None:
    """Click's message of a usage error as fased prints its own: control characters
    escaped, a huge value quoted in it clipped (click adds "Error: " and the option)."""
    from fased.bounds import LINE_MAX, clip_line, printable

    exc.message = clip_line(printable(exc.message), LINE_MAX - 200)


def _saved_args(ctx: click.Context) -> tuple[list[str], list[str]]:
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:
        protected = ctx.protected_args
    return list(protected), list(ctx.args)


def _restore_args(ctx: click.Context, saved: tuple[list[str], list[str]]) -> None:
    if hasattr(ctx, "_protected_args"):
        ctx._protected_args = list(saved[0])
    else:
        ctx.protected_args = list(saved[0])
    ctx.args = list(saved[1])


def _appended(ctx: click.Context) -> int:
    app = ctx.obj
    store = getattr(app, "_store", None)
    return store.appended if store is not None else 0


def _environment_failure(ctx: click.Context, exc: Exception) -> FasedError | None:
    """A full disk (or quota) anywhere under a command: one line, exit 4, and whether the
    command's events were recorded before it happened."""
    import errno
    import sqlite3

    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc))
    if not full:
        return None
    from fased.errors import StateError

    done = _appended(ctx)
    if not getattr(exc, "filename", None) and isinstance(exc, OSError) and _home_has_room(ctx):
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


def _home_has_room(ctx: click.Context) -> bool:
    try:
        from fased.home import resolve_home

        st = os.statvfs(resolve_home(getattr(ctx.obj, "home_option", None)))
    except (OSError, FasedError):
        return False
    return st.f_bavail * st.f_frsize > 16 * 1024 * 1024


def _recovered_from_damage(ctx: click.Context, exc: Exception) -> bool:
    """state.db held bytes it cannot decode: rebuild it from the log. True when the command
    can simply run again (it had appended nothing); otherwise raise what happened."""
    from fased.store import is_projection_damage

    store = getattr(ctx.obj, "_store", None)
    if store is None or not is_projection_damage(exc):
        return False
    from fased.errors import StateError

    done = store.appended
    click.echo(f"fased: state.db was damaged ({type(exc).__name__}: {exc}); rebuilding it "
               "from the log", err=True)
    try:
        store.recover_damaged()
    except FasedError as again:
        _error(again.message, again.hint)
        ctx.exit(again.exit_code)
    ctx.obj.close()
    if done:
        failure = StateError(
            f"state.db was damaged and has been rebuilt from the log; the command had already "
            f"recorded {done} event(s)", hint="do not run it again: it took effect "
            "(`fased replay -n 5` shows what it recorded)")
        _error(failure.message, failure.hint)
        ctx.exit(failure.exit_code)
    return True


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
                identity = command_line(without_output_options(self.argv))
            argv = self.argv
            self._store = Store(self.home_option, key=self.idempotency_key,
                                command=lambda: command_line(argv), identity=identity)
        return self._store


_GLOBAL_OPTIONS = ("--home", "--idempotency-key")


# options that change only how a command shows its result, never what it does: not part of
# the command's identity, so a retry with or without them replays its idempotency key
OUTPUT_OPTIONS = frozenset({"json_", "stream"})


def without_output_options(argv: list[str]) -> list[str]:
    """argv without the output-only options of the commands it names (`--json`, `--stream`,
    `--no-stream`), read the way click parses it: an option's value, or anything after
    `--`, is kept as it is."""
    ctx = click.Context(cli)
    command: click.Command = cli
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            out.append(arg)
            out.extend(args)
            break
        if not arg.startswith("-") or arg == "-":
            if isinstance(command, click.Group):
                command = command.get_command(ctx, arg) or command
            out.append(arg)
            continue
        option = next((p for p in command.params if isinstance(p, click.Option)
                       and arg.split("=", 1)[0] in (*p.opts, *p.secondary_opts)), None)
        value = [] if option is None or option.is_flag or option.count or "=" in arg else \
            [next(args, None)]
        if option is None or option.name not in OUTPUT_OPTIONS:
            out.extend([arg, *(v for v in value if v is not None)])
    return out


def command_line(argv: list[str]) -> str:
    """The command as recorded in each event's meta, with secrets masked: values of
    secret-looking NAME=VALUE arguments, of headers not known to be harmless
    (`-H X-Access-Key=...`), and URL credentials (`https://user:pw@host/v1?key=...`)."""
    from fased.redact import mask_args

    argv = list(argv)
    while argv and argv[0].split("=")[0] in _GLOBAL_OPTIONS:  # they come before the command
        argv = argv[1:] if "=" in argv[0] else argv[2:]
    # undecodable bytes in argv arrive as lone surrogates, which cannot be logged
    argv = [a.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for a in argv]
    return " ".join(["fased", *mask_args(argv)])


@click.group(
    cls=RootGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--home", metavar="DIR", envvar="FASED_HOME", show_envvar=True,
    help="State directory (default ~/.fased).",
)
@click.option(
    "idempotency_key", "--idempotency-key", metavar="KEY", envvar="FASED_IDEMPOTENCY_KEY",
    show_envvar=True,
    help="Run at most once: a re-run with a key already in the log appends nothing and "
    "reports the original outcome.",
)
@click.version_option(__version__, "-V", "--version", prog_name="fased")
@click.pass_context
def cli(ctx: click.Context, home: str | None, idempotency_key: str | None) -> None:
    """fased: AI agents in your shell, every action kept as an event.

    Agents, models, sessions, tasks and every chat message are appended to a log under
    ~/.fased; everything you see is rebuilt from it.

    \b
    Examples:
      fased setup
      fased agent models set primary ollama/llama3.2
      git diff | fased chat "review this diff" > review.md
      fased task new --every 1h --message "check the build" --session ops
      fased run --once              # from cron
      fased replay --since 1d       # what happened, exactly

    \b
    Exit codes: 0 ok, 1 error, 2 usage, 3 conflict, 4 state (log or home
    unusable: see `fased doctor`), 5 every model failed.
    """
    ctx.obj = App(home, idempotency_key, ctx.meta.get("fased.argv", []))
    ctx.call_on_close(ctx.obj.close)


class _Closed:
    """stdout when the shell closed it (`fased chat hi >&-`): Python gives None, and
    every write fails as a pipe whose reader left does, which fased already handles (a
    streamed turn ends "output closed"; a command exits 0 quietly)."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError("stdout is closed")

    def write(self, text: str) -> int:
        raise BrokenPipeError("stdout is closed")

    def flush(self) -> None:
        pass


def _open_streams() -> None:
    if sys.stdout is None:
        sys.stdout = _Closed()
    if sys.stderr is None:  # diagnostics go nowhere, quietly
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    _open_streams()
    try:
        cli.main(args=argv, prog_name="fased")
    except SystemExit as done:
        local = sys.modules.get("fased.local")  # loaded only where a server may run
        if local is not None:
            local.exit_now(done.code)
        raise


def _error(message: str, hint: str | None) -> None:
    # a name in the message may hold ESC or U+202E, or be 100,000 characters long
    from fased.bounds import clip_line, printable

    click.echo(clip_line(f"Error: {printable(message)}"), err=True)
    if hint:
        click.echo(clip_line(f"Hint: {printable(hint)}"), err=True)


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):
        return  # nothing to flush: stdout was never open
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)

