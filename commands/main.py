"""The `fased` root command: global options, lazy sub-commands, and one error funnel.

Sub-command modules are imported only when they are run (or listed by --help), so start-up
pays for click and nothing else.
"""

from __future__ import annotations

import importlib
import os
import sys

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
}


class LazyGroup(click.Group):
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


class RootGroup(LazyGroup):
    """The root group: every failure below it becomes one line on stderr and an exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # the command line as given (not sys.argv: in-process callers pass their own)
        ctx.meta["fased.argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FasedError as exc:
            _error(exc.message, exc.hint)
            ctx.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            _silence_stdout()
            ctx.exit(0)
        except Exception as exc:  # a bug: still one line; the traceback only on request
            if os.environ.get("FASED_DEBUG"):
                raise
            _error(f"internal error: {type(exc).__name__}: {exc}",
                   "this is a bug in fased; FASED_DEBUG=1 shows the traceback")
            ctx.exit(EXIT_ERROR)


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

            self._store = Store(self.home_option, key=self.idempotency_key,
                                command=command_line(self.argv))
        return self._store


_GLOBAL_OPTIONS = ("--home", "--idempotency-key")


def command_line(argv: list[str]) -> str:
    """The command as recorded in each event's meta, with secret-looking values masked
    (`-H X-Api-Key=...` must never reach the log)."""
    from fased.redact import SECRET_NAME

    argv = list(argv)
    while argv and argv[0].split("=")[0] in _GLOBAL_OPTIONS:  # they come before the command
        argv = argv[1:] if "=" in argv[0] else argv[2:]
    out = []
    for arg in argv:
        # undecodable bytes in argv arrive as lone surrogates, which cannot be logged
        arg = arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        parts = arg.split("=")
        # NAME=VALUE, and --option=NAME=VALUE: mask after the first secret-looking name
        for i, name in enumerate(parts[:-1]):
            if SECRET_NAME.search(name.lstrip("-")):
                arg = "=".join(parts[: i + 1]) + "=***"
                break
        out.append(arg)
    return " ".join(["fased", *out])


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


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=argv, prog_name="fased")


def _error(message: str, hint: str | None) -> None:
    from fased.bounds import printable  # a name in the message may hold ESC or U+202E

    click.echo(f"Error: {printable(message)}", err=True)
    if hint:
        click.echo(f"Hint: {printable(hint)}", err=True)


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())

