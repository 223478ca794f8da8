"""Shared options and output helpers: `--json`, tables, and the store of the current command."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence

import click


def json_option(fn: Callable) -> Callable:
    """`--json`: print data as JSON instead of a table."""
    return click.option("json_", "--json", is_flag=True, help="Print JSON instead of a table.")(fn)


def agent_option(fn: Callable) -> Callable:
    """`--agent ID`: act on this agent instead of the selected one."""
    return click.option(
        "--agent", "-a", "agent", metavar="ID", help="Agent (default: the selected agent)."
    )(fn)


def store():
    """The Store of the running command."""
    return click.get_current_context().find_object(_app_type()).store


def _app_type():
    from fased.commands.main import App

    return App


def echo_json(value: object) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def echo_jsonl(value: object) -> None:
    """One JSON object on one line (for streams of records)."""
    click.echo(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def note(message: str) -> None:
    """A diagnostic line: stderr, so stdout stays data."""
    click.echo(message, err=True)


def table(rows: Iterable[Sequence[object]], headers: Sequence[str],
          max_width: int | None = None) -> None:
    """Print rows as aligned columns; the last column is cut to the terminal width."""
    rows = [["" if c is None else str(c) for c in row] for row in rows]
    if not rows:
        return
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell))
    if max_width is None:
        max_width = _terminal_width() if sys.stdout.isatty() else 0
    lines = [_line(headers, widths)] + [_line(row, widths) for row in rows]
    for text in lines:
        if max_width and len(text) > max_width:
            text = text[: max_width - 1] + "…"
        click.echo(text)


def _line(cells: Sequence[str], widths: list[int]) -> str:
    parts = [cell.ljust(widths[i]) for i, cell in enumerate(cells[:-1])]
    parts.append(cells[-1])
    return "  ".join(parts).rstrip()


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        return 120
