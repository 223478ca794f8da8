"""Shared options and output helpers: `--json`, tables, and the store of the current command.

Human output never carries a terminal control character raw: names, messages and server
errors may hold ESC sequences or bidi overrides (from a hand edit, a piped file, a model), so
table(), note(), say() and the Error:/Hint: lines escape them (fased.bounds.printable).
JSON stays data: json.dumps escapes C0 itself, and echo_json escapes DEL, C1, bidi controls
and lone surrogates as \\uXXXX too, which decodes to the same string and is safe to print.
Replies and file contents that a command prints as its data stay byte-exact.

click is imported only where it is needed (options, the command's context, prompts): the
console script's quick path (fased.commands.quick) prints through say(), note() and
echo_json() without it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence

from fased.bounds import clip_lines, printable

# what json.dumps(ensure_ascii=False) leaves raw but a terminal acts on (or cannot encode);
# a pattern text that re compiles on first use, so start-up pays nothing for it
_JSON_UNSAFE = "[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]"


def json_option(fn: Callable) -> Callable:
    """`--json`: print data as JSON instead of a table."""
    import click

    return click.option("json_", "--json", is_flag=True, help="Print JSON instead of a table.")(fn)


def agent_option(fn: Callable) -> Callable:
    """`--agent ID`: act on this agent instead of the selected one."""
    import click

    from fased.commands.types import complete_agents

    return click.option(
        "--agent", "-a", "agent", metavar="ID", help="Agent (default: the selected agent).",
        shell_complete=complete_agents,
    )(fn)


def store():
    """The Store of the running command; a bad FASED_NOW fails here, before any work (and
    before a runner's heartbeat thread could meet it)."""
    import click

    from fased.timeparse import utc_now

    utc_now()
    return click.get_current_context().find_object(_app_type()).store


def _app_type():
    from fased.commands.failures import App

    return App


def _json_text(text: str) -> str:
    # outside strings JSON is ASCII, so every match is inside a string, where \uXXXX is valid
    return re.sub(_JSON_UNSAFE, lambda m: f"\\u{ord(m.group()):04x}", text)


def json_document(value: object) -> str:
    """`value` as echo_json prints it (without the final newline)."""
    return _json_text(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def json_line(value: object) -> str:
    """`value` as echo_jsonl prints it (without the final newline)."""
    return _json_text(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def echo_json(value: object) -> None:
    """One JSON document on stdout."""
    _echo(json_document(value))


def echo_jsonl(value: object) -> None:
    """One JSON object on one line (for streams of records)."""
    _echo(json_line(value))


def turn_json(result, replayed: bool = False) -> dict:
    """A finished turn as `chat --json`, `run --json` and `task run --json` print it: the same
    keys whatever the command or the turn's outcome (`replayed`: an idempotency key found
    it done)."""
    report = result.to_dict()
    report.setdefault("approval", None)
    report["replayed"] = replayed
    return report


def shown_time(ts: str | None, missing: str = "-") -> str:
    """A recorded UTC time as tables and show commands print it: to the second, with a space
    (`2026-03-02 09:00:00`); --json keeps its full precision."""
    return ts[:19].replace("T", " ") if ts else missing


def echo_reply(text: str) -> None:
    """A reply as data on stdout: its own bytes (ANSI codes too: click must not strip them;
    on a terminal escaped, bounds.shown_on_stdout), then a newline as every Unix tool's
    output has, unless it ends with one already. An empty reply prints nothing."""
    import click

    from fased.bounds import shown_on_stdout

    click.echo(shown_on_stdout(text), nl=bool(text) and not text.endswith("\n"), color=True)


def note(message: str) -> None:
    """A diagnostic line: stderr, so stdout stays data (a line of it that quotes a huge
    value is clipped)."""
    _echo(clip_lines(printable(message, multiline=True)), err=True)


def say(message: str) -> None:
    """A line for people on stdout (names and messages in it are escaped)."""
    _echo(printable(message, multiline=True))


def _echo(line: str, err: bool = False) -> None:
    """`line` and a newline, flushed, as click.echo writes text that holds no terminal
    control (so there is nothing for it to strip): escaped lines, and JSON."""
    stream = sys.stderr if err else sys.stdout
    stream.write(line + "\n")
    stream.flush()


def table(rows: Iterable[Sequence[object]], headers: Sequence[str],
          max_width: int | None = None) -> None:
    """Print rows as aligned columns; the last column is cut to the terminal width. Cells are
    escaped to one line (a newline in a name would break the table)."""
    rows = [["" if c is None else printable(str(c)) for c in row] for row in rows]
    if not rows:
        return
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], columns_of(cell))
    if max_width is None:
        max_width = _terminal_width() if sys.stdout.isatty() else 0
    for cells in [list(headers), *rows]:
        _echo(table_line(cells, widths, max_width))


def columns_of(text: str) -> int:
    """The columns `text` takes on a terminal: two for a wide character (CJK, most emoji),
    none for a combining mark or a zero-width one, one for the rest."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(c) or unicodedata.category(c) in ("Me", "Cf") else
               2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table_line(cells: Sequence[str], widths: Sequence[int], max_width: int = 0) -> str:
    """One row of a table: each cell but the last padded to its column's width, in terminal
    columns; the whole cut to `max_width` columns (0: not cut) with `…`."""
    parts = [cell + " " * (widths[i] - columns_of(cell)) for i, cell in enumerate(cells[:-1])]
    text = "  ".join([*parts, cells[-1]]).rstrip()
    if not max_width or columns_of(text) <= max_width:
        return text
    kept, used = [], 0
    for c in text:
        used += columns_of(c)
        if used > max_width - 1:
            break
        kept.append(c)
    return "".join(kept) + "…"


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return 120


def read_secret(from_stdin: bool, what: str, prompt: str, hint: str) -> str:
    """A secret (an API key, a bot token) from stdin, else asked for on a terminal without
    echo; never from an argument, which would stay in the shell's history. One line, not
    empty, at most SECRET_BYTES; `hint` says how to give it when there is no terminal."""
    import sys

    from fased.bounds import SECRET_BYTES, read_stream
    from fased.errors import UsageError

    if from_stdin:
        binary = getattr(sys.stdin, "buffer", None)
        raw = (read_stream(binary, SECRET_BYTES, f"the {what}").decode("utf-8", "replace")
               if binary is not None else sys.stdin.read(SECRET_BYTES))
        secret = raw.strip()
    elif sys.stdin.isatty():
        import click

        secret = click.prompt(prompt, hide_input=True).strip()
    else:
        raise UsageError(f"no terminal to ask for the {what}", hint=hint)
    if not secret:
        raise UsageError(f"the {what} is empty; nothing was stored")
    if "\n" in secret:
        raise UsageError(f"the {what} spans several lines; nothing was stored")
    return secret
