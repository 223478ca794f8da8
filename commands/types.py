"""Click parameter types for what users type: bounded numbers, names and messages.

Each one calls fased.bounds, so an option and the library refuse a value with the same limit
and wording; click turns the refusal into `Error: Invalid value for '--opt': ...` (exit 2).
Durations, times, schedules and URLs stay strings here: fased.schedule, fased.timeparse and
the URL checks of fased.models and fased.tasks parse them with their context (the clock, the
zone, the provider kind) and the same bounds.
"""

from __future__ import annotations

import click

from fased import bounds
from fased.errors import UsageError


class _Bounded(click.ParamType):
    """Runs one fased.bounds validator; its UsageError becomes click's BadParameter."""

    def check(self, text: str):
        raise NotImplementedError

    def convert(self, value, param, ctx):
        if not isinstance(value, str):  # a default, or a value a caller already converted
            value = str(value)
        try:
            return self.check(value)
        except UsageError as exc:
            self.fail(f"{exc.message} ({exc.hint})" if exc.hint else exc.message, param, ctx)


class Seconds(_Bounded, click.FloatRange):
    """Seconds within [low, high]; click's FloatRange only for --help, which shows the range
    (its own check lets NaN through)."""

    def __init__(self, low: float, high: float):
        click.FloatRange.__init__(self, min=low, max=high)

    def check(self, text: str) -> float:
        return float(bounds.parse_number(text, low=self.min, high=self.max, unit="seconds"))


class Count(_Bounded, click.IntRange):
    """A whole number within [low, high]; IntRange only for --help."""

    def __init__(self, low: int, high: int):
        click.IntRange.__init__(self, min=low, max=high)

    def check(self, text: str) -> int:
        return bounds.parse_count(text, low=self.min, high=self.max)


def count(low: int = 0, high: int = bounds.MAX_COUNT) -> Count:
    """A whole number of things (`-n`, `--max-turns`, `--position`)."""
    return Count(low, high)


def seconds(limits: tuple[float, float]) -> Seconds:
    """A number of seconds within one of the ranges in fased.bounds."""
    return Seconds(*limits)


class Name(_Bounded):
    """A name shown in tables: one line, no control characters, at most `limit` characters.
    A blank value passes unchanged: each command says what '' means (clear it, the default)."""

    name = "text"

    def __init__(self, what: str = "the name", limit: int = bounds.NAME_CHARS):
        self.what, self.limit = what, limit

    def check(self, text: str) -> str:
        if not text.strip():
            return ""  # spaces are no name, as nothing is
        return bounds.check_name(text, self.what, self.limit)


class LinePath(_Bounded, click.Path):
    """A path fased keeps or prints: click.Path's checks, on one line of printable text."""

    def __init__(self, **kwargs):
        click.Path.__init__(self, **kwargs)

    def check(self, text: str) -> str:
        return bounds.check_kept_path(text)

    def convert(self, value, param, ctx):
        checked = _Bounded.convert(self, value, param, ctx)
        return click.Path.convert(self, checked, param, ctx)


class Message(_Bounded):
    """A chat or task message: at most MESSAGE_BYTES."""

    name = "text"

    def check(self, text: str) -> str:
        return bounds.check_message(text)


# -- shell completion of live values ----------------------------------------------------------
# Called only while a shell asks for candidates (`_FASED_COMPLETE=...`). They read state.db
# read-only, never through the Store (which could catch up, rebuild or record a hand edit):
# a missing, damaged or outdated home gives no candidates rather than an error.

def _state_db(ctx: click.Context):
    """A read-only connection to the home's state.db, or None."""
    import os
    import sqlite3
    from pathlib import Path
    from urllib.parse import quote

    home = ctx.find_root().params.get("home") or os.environ.get("FASED_HOME") or "~/.fased"
    path = Path(home).expanduser() / "state.db"
    try:
        if path.is_symlink() or not path.is_file():
            return None
        with open(path, "rb") as f:  # SQLite may drop a WAL beside a file it takes for empty
            if f.read(16) != b"SQLite format 3\0":
                return None
    except OSError:
        return None
    # with a WAL beside it another process may hold newer rows: read them; without one, open
    # the file as immutable so that reading creates no -wal/-shm files in the home
    wal = path.with_name("state.db-wal").exists() and path.with_name("state.db-shm").exists()
    try:
        return sqlite3.connect(f"file:{quote(str(path.absolute()))}?"
                               + ("mode=ro" if wal else "immutable=1"), uri=True, timeout=0.2)
    except sqlite3.Error:
        return None


def _live(ctx: click.Context, incomplete: str, sql: str, params: tuple = ()) -> list:
    """The values `sql` returns that start with what was typed so far."""
    import sqlite3

    from click.shell_completion import CompletionItem

    con = _state_db(ctx)
    if con is None:
        return []
    try:
        values = [r[0] for r in con.execute(sql, params) if isinstance(r[0], str)]
    except sqlite3.Error:
        return []
    finally:
        con.close()
    seen: dict[str, None] = dict.fromkeys(v for v in values if v.startswith(incomplete))
    return [CompletionItem(v) for v in seen]


def complete_agents(ctx: click.Context, param, incomplete: str) -> list:
    """Agent ids."""
    return _live(ctx, incomplete, "SELECT id FROM agents WHERE deleted = 0 ORDER BY position")


def complete_sessions(ctx: click.Context, param, incomplete: str) -> list:
    """Session ids and names of the agent given with --agent, else of the selected one."""
    agent = next((c.params.get("agent") or c.params.get("agent_opt") for c in _chain(ctx)
                  if c.params.get("agent") or c.params.get("agent_opt")), None)
    return _live(ctx, incomplete,
                 "SELECT v FROM (SELECT id AS v, created_seq FROM sessions WHERE deleted = 0 AND"
                 " agent = COALESCE(?, (SELECT value FROM kv WHERE key = 'selected_agent'))"
                 " UNION ALL SELECT name, created_seq FROM sessions WHERE deleted = 0 AND"
                 " name IS NOT NULL AND agent = COALESCE(?, (SELECT value FROM kv WHERE key ="
                 " 'selected_agent'))) ORDER BY created_seq", (agent, agent))


def complete_tasks(ctx: click.Context, param, incomplete: str) -> list:
    """Task ids, the active ones first."""
    return _live(ctx, incomplete, "SELECT id FROM tasks ORDER BY state NOT IN ('active',"
                 " 'paused'), created_seq")


def complete_providers(ctx: click.Context, param, incomplete: str) -> list:
    """Provider ids."""
    return _live(ctx, incomplete, "SELECT id FROM providers WHERE removed = 0 ORDER BY id")


def complete_model_refs(ctx: click.Context, param, incomplete: str) -> list:
    """Model refs: every model in a provider's catalog, the refs agents use, and aliases."""
    return _live(ctx, incomplete,
                 "SELECT p.id || '/' || m.value FROM providers p, json_each(p.models) m WHERE"
                 " p.removed = 0 UNION ALL SELECT primary_model FROM agents WHERE deleted = 0"
                 " UNION ALL SELECT f.value FROM agents a, json_each(a.fallbacks) f WHERE"
                 " a.deleted = 0 UNION ALL SELECT a.key FROM config c,"
                 " json_each(c.doc, '$.models.aliases') a")


def _chain(ctx: click.Context):
    while ctx is not None:
        yield ctx
        ctx = ctx.parent
