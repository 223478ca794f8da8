"""The `fased` root command: global options, lazy sub-commands, and one error funnel.

Sub-command modules are imported only when they are run (or listed by --help), so start-up
pays for click and nothing else.
"""

from __future__ import annotations

import importlib
import sys
from typing import ClassVar

import click

from fased import __version__
from fased.commands.failures import RUN_AGAIN, App, failure_exit
from fased.signals import Stop

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
            except click.exceptions.ClickException as exc:
                _bounded(exc)
                raise
            except (click.exceptions.Exit, click.exceptions.Abort):
                raise
            except (KeyboardInterrupt, Stop, Exception) as exc:  # one line each, bugs too
                code = failure_exit(exc, ctx.obj, attempt)
                if code == RUN_AGAIN:
                    _restore_args(ctx, saved)
                    continue
                ctx.exit(code)
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


def _checked_key(value: str | None) -> str | None:
    """An idempotency key: 1-256 characters of one line (an empty FASED_IDEMPOTENCY_KEY is
    none, as click reads it; an empty --idempotency-key is refused, not a key)."""
    if value is None:
        return None
    from fased.bounds import check_name
    from fased.errors import UsageError

    if not value.strip():
        raise click.BadParameter("the idempotency key is empty")
    try:
        check_name(value, "the idempotency key", limit=256)
    except UsageError as exc:
        raise click.BadParameter(exc.message) from None
    return value


@click.group(
    cls=RootGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--home", metavar="DIR", envvar="FASED_HOME", show_envvar=True,
    help="State directory (default ~/.fased).",
)
@click.option(
    "idempotency_key", "--idempotency-key", metavar="KEY", envvar="FASED_IDEMPOTENCY_KEY",
    show_envvar=True, callback=lambda ctx, param, value: _checked_key(value),
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
    """The click root alone, without the console script's quick path (fased.commands.entry):
    what in-process callers and the quick path's own tests run."""
    from fased.commands.entry import run

    run(argv, quick=False)
