"""Projections: pure functions from events to rows in `state.db` (and a few files).

Each module in MODULES declares:
  TABLES    {table: {"columns": {name: type}, "pk": ..., "indexes": [...]}} (sqlite-utils specs)
  HANDLERS  {event type: handler(con, event)}: plain SQL on a sqlite3 connection; no clock,
            environment, network or randomness, only the event.
  VERSION   an int to bump when handler logic changes (table changes are noticed by themselves)
  VIEWS     optionally, CREATE VIEW statements over the module's own tables
and optionally, for file projections: `sync_files(con, home, events)` after events are applied,
`rebuild_files(con, home)` after a rebuild, `check_files(store, con)` before a command reads
state (to record hand edits).

A new event type plugs in by adding its schema file and a handler here, nothing more.
"""

from __future__ import annotations

import importlib
import json
import sqlite3
import zlib
from collections.abc import Callable, Iterable
from functools import cache

from fased.schema import current_versions
from fased.upcast import upcast

MODULES = ("core", "agents", "sessions", "config", "providers", "turns", "steps", "approvals",
           "tasks", "context", "skills", "pairing", "hooks",
           "channels")

# A big rebuild builds these groups at the same time, each in its own process and database
# file, and then copies the second (small) one into the first. So modules in different groups
# must never read or write each other's tables; each group's file holds only its own tables,
# so a handler that tried would fail loudly rather than build something wrong. The first group
# gets one row per turn: in a long-lived home that is most of the work.
GROUPS = (("turns", "steps", "approvals"),
          ("core", "agents", "sessions", "config", "providers", "tasks", "context", "skills",
           "pairing", "hooks",
           "channels"))

# projector().version, written out: a command that finds state.db current (most of them)
# knows it without importing every projection module (14 of them, ~12 ms a process). The
# modules whose check_files notices hand edits, for the same reason. tests/test_store.py
# holds both to what the modules say: a changed table, view or VERSION fails it until this
# is updated.
VERSION = "8b5f122e"
FILE_CHECKS = ("config",)

Handler = Callable[[sqlite3.Connection, dict], None]


class Projector:
    """Projection modules (all of them unless `names` says which), loaded once per process."""

    def __init__(self, names: Iterable[str] = MODULES) -> None:
        self.modules = [importlib.import_module(f"fased.projections.{m}") for m in names]
        # the core module's tables are fed every event by apply (core.Bookkeeping)
        self.bookkeeping = "core" in names
        self.tables: dict[str, dict] = {}
        self.handlers: dict[str, list[Handler]] = {}
        self.views: list[str] = []
        parts = []
        for module in self.modules:
            self.tables.update(module.TABLES)
            self.views.extend(getattr(module, "VIEWS", ()))
            for etype, fn in module.HANDLERS.items():
                self.handlers.setdefault(etype, []).append(fn)
            parts.append(f"{module.__name__}:{getattr(module, 'VERSION', 1)}")
        parts.append(json.dumps(self.tables, sort_keys=True, default=str))
        parts.extend(self.views)
        # any change to tables, views or a module's VERSION changes this, so an old
        # state.db is rebuilt instead of being caught up wrongly (crc32: no hashlib import)
        self.version = f"{zlib.crc32(chr(10).join(parts).encode()):08x}"

    def create_tables(self, con: sqlite3.Connection) -> None:
        """Create every projection table and view, without secondary indexes (a bulk load
        is faster without them: see create_indexes). sqlite-utils is imported only here."""
        import sqlite_utils

        db = sqlite_utils.Database(con)
        for name, spec in self.tables.items():
            db[name].create(
                spec["columns"], pk=spec.get("pk"), not_null=spec.get("not_null"),
                defaults=spec.get("defaults"), if_not_exists=True,
            )
        for view in self.views:
            con.execute(view)

    def create_indexes(self, con: sqlite3.Connection) -> None:
        """The secondary indexes the commands' queries use."""
        import sqlite_utils

        db = sqlite_utils.Database(con)
        for name, spec in self.tables.items():
            for index in spec.get("indexes", ()):
                db[name].create_index(index, if_not_exists=True)

    def apply(self, con: sqlite3.Connection, events: Iterable[dict]) -> dict | None:
        """Apply events in order inside the caller's transaction; returns the last one."""
        from fased.projections.core import Bookkeeping

        handlers = self.handlers
        current = current_versions()
        book = Bookkeeping() if self.bookkeeping else None
        last = None
        for record in events:
            etype = record["type"]
            if record["v"] != current.get(etype):
                record = upcast(record)
                etype = record["type"]
            for fn in handlers.get(etype, ()):
                fn(con, record)
            if book is not None:
                book.note(record)
            last = record
        if book is not None:
            book.write(con)
        return last

    def sync_files(self, con: sqlite3.Connection, home, events: list[dict]) -> None:
        """Bring file projections (fased.json, transcripts) up to date after `events`."""
        for module in self.modules:
            sync = getattr(module, "sync_files", None)
            if sync is not None:
                sync(con, home, events)

    def check_files(self, store, con: sqlite3.Connection) -> None:
        """Notice hand edits of file projections (fased.json) and record them as events."""
        for module in self.modules:
            check = getattr(module, "check_files", None)
            if check is not None:
                check(store, con)

    def rebuild_files(self, con: sqlite3.Connection, home) -> None:
        """Regenerate every file projection from the rows."""
        for module in self.modules:
            rebuild = getattr(module, "rebuild_files", None)
            if rebuild is not None:
                rebuild(con, home)


@cache
def projector() -> Projector:
    return Projector()


def check_files(store, con: sqlite3.Connection) -> None:
    """Projector.check_files of the modules in FILE_CHECKS, without loading the others."""
    for name in FILE_CHECKS:
        importlib.import_module(f"fased.projections.{name}").check_files(store, con)
