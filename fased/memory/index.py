"""The memory index: SQLite FTS5 in a file of its own (home/memory/index.db), derived from the
notes and the log and disposable (a missing, damaged or older index is simply built again).

Freshness without a watcher: before every search each note is stat'ed; one whose size or
mtime changed is read and hashed, and re-chunked only when its hash changed; notes that went
away are dropped. Session messages are indexed by log seq: what the projections applied past
the seq the index last saw is added, so a search after a chat finds it. A search that finds
nothing new writes nothing. Building the index appends no events: it is a cache, not state.

Ranking is fased.memory.rank's.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from fased.errors import FasedError, StateError
from fased.memory.roots import (
    MemorySettings,
    note_date,
    note_path,
    notes,
    quick_signature,
    signature,
)

#: 2: chunks sized in estimated tokens (fased.tokens), not characters; 3: chunk ids never
#: reused (a vector asked for an old chunk must not land on a new one that took its id)
VERSION = "3"
INDEX_NAME = "index.db"
MAX_NOTE_BYTES = 8 * 1024 * 1024  # a note's first 8 MiB are indexed
NOTES_PER_BATCH = 500  # notes (re)indexed in one transaction
MESSAGES_PER_BATCH = 5000  # session messages indexed in one transaction
BUSY_SECONDS = 30.0  # how long a search waits for another process writing the index

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files(agent TEXT, path TEXT, size INTEGER, mtime_ns INTEGER,
    sha TEXT, PRIMARY KEY(agent, path));
CREATE TABLE IF NOT EXISTS chunks(id INTEGER PRIMARY KEY AUTOINCREMENT, agent TEXT, kind TEXT,
    path TEXT, start_line INTEGER, end_line INTEGER, session TEXT, turn TEXT, role TEXT, day TEXT,
    jd REAL, decays INTEGER, vector BLOB);
CREATE INDEX IF NOT EXISTS chunks_path ON chunks(agent, path);
CREATE INDEX IF NOT EXISTS chunks_session ON chunks(agent, kind);
CREATE TABLE IF NOT EXISTS progress(agent TEXT PRIMARY KEY, session_seq INTEGER,
    log_id TEXT, indexed_at TEXT, embeddings TEXT, notes TEXT);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(text, tokenize='porter unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS fts_terms USING fts5vocab(fts, row);
"""
# the query's words through the index's own tokenizer (stemmed as the index stems them)
def index_path(home: Path) -> Path:
    return home / "memory" / INDEX_NAME


def julian(when: datetime) -> float:
    return when.timestamp() / 86400.0 + 2440587.5


class Damaged(sqlite3.DatabaseError):
    """The index, checked whole (MemoryIndex.check), is damaged: using() builds it again
    without checking it once more."""

    def __init__(self, seen: BaseException):
        super().__init__(str(seen))
        self.seen = seen


class MemoryIndex:
    """One home's memory index file."""

    def __init__(self, home: Path, say=None):
        self.home, self.say = home, say
        self.path = index_path(home)
        self.con = self._open()

    def _open(self) -> sqlite3.Connection:
        from fased.home import require_inside

        try:
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:  # a file or a dangling link where the folder should be
            raise unusable(self.path.parent, exc) from None
        require_inside(self.home, self.path.parent)  # never written through a link
        for attempt in range(2):
            try:
                con = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_SECONDS)
            except sqlite3.Error as exc:
                raise unusable(self.path, exc) from None
            try:
                con.execute("PRAGMA journal_mode = WAL")
                con.execute("PRAGMA synchronous = NORMAL")
                version = _meta_version(con)
                if version not in (None, VERSION):
                    raise sqlite3.DatabaseError("another index version")
                if version is None:
                    con.executescript(SCHEMA)
                    con.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (VERSION,))
                    con.execute("INSERT OR REPLACE INTO meta VALUES ('id', ?)",
                                (os.urandom(8).hex(),))
                elif not _has_schema(con):
                    raise sqlite3.DatabaseError("tables are missing")
                return con
            except sqlite3.DatabaseError as exc:
                con.close()
                if is_busy(exc):  # another process holds it: never damage, never dropped
                    raise busy(self.path) from None
                if not is_damage(exc) or attempt:  # never taken for state.db's damage
                    raise unusable(self.path, exc) from None
                if self.say is not None and str(exc) != "another index version":
                    from fased.safetext import describe

                    self.say(f"fased: the memory index ({self.path}) is damaged "
                             f"({describe(exc)}); building it again")
                self.drop()  # disposable: built again from the notes and the log
        raise AssertionError("unreachable")

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise unusable(self.path, exc) from None

    def check(self, seen: BaseException | None = None) -> None:
        """Raise Damaged when a check of every page (quick_check) finds the index damaged;
        `seen`: the error that made the caller look, which using() then reports."""
        if self.damaged():
            raise Damaged(seen or sqlite3.DatabaseError("quick_check finds it malformed"))

    def damaged(self) -> bool:
        """Whether the index file itself is damaged (not another database, not a lock)."""
        try:
            check = self.con.execute("PRAGMA quick_check(1)").fetchone()
            return check is None or check[0] != "ok" or not _has_schema(self.con)
        except sqlite3.DatabaseError as exc:
            return not is_busy(exc)

    def close(self) -> None:
        self.con.close()

    @contextlib.contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (one writer at a time), counted in generation(). Another
        process's lock is the caller's to report (fased.memory.search.refresh)."""
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
            self.con.execute("INSERT INTO meta VALUES ('generation', 1) ON CONFLICT(key) DO "
                             "UPDATE SET value = CAST(value AS INTEGER) + 1")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # -- notes ----------------------------------------------------------------------------

    def refresh_notes(self, settings: MemorySettings, now: str, force: bool = False) -> int:
        """Bring the agent's notes up to date; returns how many notes were (re)indexed or
        dropped. Nothing changed: nothing is written."""
        # the quick signature first: when nothing changed (most searches) it is all the
        # work; it is taken before the walk the index is built from, so a note changed in
        # between leaves a mark that differs next time, never a stale index
        quick = quick_signature(settings)
        row = self.con.execute("SELECT notes FROM progress WHERE agent = ?",
                               (settings.agent,)).fetchone()
        if not force and row is not None and quick is not None and row[0] == quick:
            return 0
        current = notes(settings)
        mark = quick or signature(current)
        if not force and row is not None and row[0] == mark:
            return 0
        if not force and not self._note_changes(settings, current, False):
            self._mark(settings.agent, mark)
            return 0
        # in batches, each its own transaction: a search killed during a first build of
        # thousands of notes keeps what it did (the next one does the rest), and one that
        # waits for the lock meanwhile is not held for the whole build
        pending: list[str] | None = None
        at = 0
        while True:
            with self.writing():
                if pending is None:  # under the lock: what another process did is seen
                    quick = quick_signature(settings)
                    current = notes(settings)
                    pending = self._note_changes(settings, current, force)
                batch = pending[at:at + NOTES_PER_BATCH]
                at += len(batch)
                if not force:  # another process may have indexed some since
                    batch = self._still_changed(settings.agent, current, batch)
                for path in batch:
                    self._index_note(settings, path, current.get(path), now)
                if at >= len(pending):
                    self._touch(settings.agent, now)
                    self._mark(settings.agent, quick or signature(current))
                    return len(pending)

    def _still_changed(self, agent: str, current: dict[str, tuple[int, int]],
                       paths: list[str]) -> list[str]:
        if not paths:
            return []
        known = {r[0]: (r[1], r[2]) for r in self.con.execute(
            "SELECT path, size, mtime_ns FROM files WHERE agent = ? AND path IN "
            f"({','.join('?' * len(paths))})", (agent, *paths))}
        return [p for p in paths if known.get(p) != current.get(p)]

    def _note_changes(self, settings: MemorySettings, current: dict[str, tuple[int, int]],
                      force: bool) -> list[str]:
        known = {r[0]: (r[1], r[2]) for r in self.con.execute(
            "SELECT path, size, mtime_ns FROM files WHERE agent = ?", (settings.agent,))}
        changed = [p for p, st in current.items() if force or known.get(p) != st]
        changed += [p for p in known if p not in current]
        return changed

    def _mark(self, agent: str, mark: str) -> None:
        self.con.execute("INSERT INTO progress(agent, session_seq, notes) VALUES (?, 0, ?) ON "
                         "CONFLICT(agent) DO UPDATE SET notes = excluded.notes", (agent, mark))

    def _index_note(self, settings: MemorySettings, path: str, st: tuple[int, int] | None,
                    now: str) -> None:
        con, agent = self.con, settings.agent
        old = con.execute("SELECT sha FROM files WHERE agent = ? AND path = ?",
                          (agent, path)).fetchone()
        data = None
        if st is not None:
            from fased.bounds import read_head

            try:  # a FIFO since the stat is an OSError, never a wait
                data = read_head(note_path(settings, path), MAX_NOTE_BYTES)
            except OSError:
                st = None
        if st is None or data is None:
            self._drop_path(agent, path)
            con.execute("DELETE FROM files WHERE agent = ? AND path = ?", (agent, path))
            return
        import hashlib  # only for a note that changed: a search that finds none needs none

        sha = hashlib.sha256(data).hexdigest()
        day = note_date(path)
        size, mtime_ns = st
        shown_day = day or _day_of(mtime_ns)
        con.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?)",
                    (agent, path, size, mtime_ns, sha))
        if old is not None and old[0] == sha:
            con.execute("UPDATE chunks SET day = ? WHERE agent = ? AND path = ?",
                        (shown_day, agent, path))
            return
        self._drop_path(agent, path)
        jd = julian(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)) if day else None
        from fased.memory.chunks import chunk_text  # only when something is indexed
        from fased.memory.rank import nfc

        text = nfc(data.decode("utf-8", "replace"))

        for chunk in chunk_text(text):
            cur = con.execute(
                "INSERT INTO chunks(agent, kind, path, start_line, end_line, day, jd, decays)"
                " VALUES (?, 'file', ?, ?, ?, ?, ?, ?)",
                (agent, path, chunk.start, chunk.end, shown_day, jd, 1 if day else 0))
            con.execute("INSERT INTO fts(rowid, text) VALUES (?, ?)", (cur.lastrowid, chunk.text))

    def _drop_path(self, agent: str, path: str) -> None:
        self.con.execute("DELETE FROM fts WHERE rowid IN (SELECT id FROM chunks WHERE agent = ?"
                         " AND path = ?)", (agent, path))
        self.con.execute("DELETE FROM chunks WHERE agent = ? AND path = ?", (agent, path))

    def _touch(self, agent: str, now: str) -> None:
        self.con.execute("INSERT INTO progress(agent, session_seq, indexed_at) VALUES (?, 0, ?)"
                         " ON CONFLICT(agent) DO UPDATE SET indexed_at = excluded.indexed_at",
                         (agent, now))

    # -- session messages -----------------------------------------------------------------

    def refresh_sessions(self, settings: MemorySettings, state: sqlite3.Connection, now: str,
                         force: bool = False) -> int:
        """Add the agent's session messages the projections applied since the index last
        looked (by log seq); with sessions off, drop any held. Returns messages added.

        How far the index got is read again under the write lock, batch by batch: a search
        that waited for another one indexing the same messages adds none of them twice."""
        agent = settings.agent
        if not settings.sessions:
            if self._held(agent):
                with self.writing():
                    if self._held(agent):
                        self._drop_sessions(agent)
                        self._touch(agent, now)
            return 0
        restart, todo = self._sessions_behind(agent, state, force)
        if not (restart or todo):
            return 0
        added = 0
        while True:
            with self.writing():
                again, todo = self._sessions_behind(agent, state, restart)
                if not todo:  # another search added them while this one waited
                    return added
                seen = 0 if again else self._seen(agent)
                if again:
                    self._drop_sessions(agent)
                    restart = False  # dropped once; a --force drops nothing it added itself
                checkpoint, log_id = _checkpoint(state)
                batch = state.execute(
                    "SELECT seq, session, turn, role, content, ts FROM messages WHERE agent = ? "
                    "AND seq > ? AND seq <= ? AND content IS NOT NULL AND content != '' "
                    "ORDER BY seq LIMIT ?", (agent, seen, checkpoint, MESSAGES_PER_BATCH)
                ).fetchall()
                for m in batch:
                    self._index_message(agent, m)
                added += len(batch)
                last = len(batch) == MESSAGES_PER_BATCH
                upto = batch[-1]["seq"] if last else checkpoint
                self._touch(agent, now)
                self.con.execute("UPDATE progress SET session_seq = ?, log_id = ? WHERE agent = ?",
                                 (upto, log_id, agent))
                if not last:
                    return added

    def _seen(self, agent: str) -> int:
        row = self.con.execute("SELECT session_seq FROM progress WHERE agent = ?",
                               (agent,)).fetchone()
        return (row[0] or 0) if row else 0

    def _held(self, agent: str) -> bool:
        row = self.con.execute("SELECT session_seq, log_id FROM progress WHERE agent = ?",
                               (agent,)).fetchone()
        return row is not None and ((row[0] or 0) > 0 or row[1] is not None)

    def _sessions_behind(self, agent: str, state: sqlite3.Connection,
                         force: bool) -> tuple[bool, bool]:
        """(start over, messages to add): start over when forced or when the log the index
        saw is not this one (a new home, or a log rewound behind what it indexed)."""
        checkpoint, log_id = _checkpoint(state)
        row = self.con.execute("SELECT session_seq, log_id FROM progress WHERE agent = ?",
                               (agent,)).fetchone()
        seen, seen_log = (row[0] or 0, row[1]) if row else (0, None)
        held = seen > 0 or seen_log is not None
        restart = force or (held and (seen_log != log_id or seen > checkpoint))
        return restart, restart or seen < checkpoint

    def _index_message(self, agent: str, m: sqlite3.Row) -> None:
        when = _parse(m["ts"])
        day = when.strftime("%Y-%m-%d") if when else None
        from fased.memory.chunks import chunk_text
        from fased.memory.rank import nfc

        for chunk in chunk_text(nfc(m["content"])):
            cur = self.con.execute(
                "INSERT INTO chunks(agent, kind, session, turn, role, start_line, end_line,"
                " day, jd, decays) VALUES (?, 'session', ?, ?, ?, ?, ?, ?, ?, 1)",
                (agent, m["session"], m["turn"], m["role"], chunk.start, chunk.end, day,
                 julian(when) if when else None))
            self.con.execute("INSERT INTO fts(rowid, text) VALUES (?, ?)",
                             (cur.lastrowid, chunk.text))

    def _drop_sessions(self, agent: str) -> None:
        self.con.execute("DELETE FROM fts WHERE rowid IN (SELECT id FROM chunks WHERE agent = ?"
                         " AND kind = 'session')", (agent,))
        self.con.execute("DELETE FROM chunks WHERE agent = ? AND kind = 'session'", (agent,))
        self.con.execute("UPDATE progress SET session_seq = 0, log_id = NULL WHERE agent = ?",
                         (agent,))

    # -- searching ------------------------------------------------------------------------

    def counts(self, agent: str) -> dict:
        files = self.con.execute("SELECT count(*) FROM files WHERE agent = ?", (agent,))
        kinds = dict(self.con.execute("SELECT kind, count(*) FROM chunks WHERE agent = ? "
                                      "GROUP BY kind", (agent,)).fetchall())
        row = self.con.execute("SELECT indexed_at, session_seq FROM progress WHERE agent = ?",
                               (agent,)).fetchone()
        embedded = self.con.execute("SELECT count(*) FROM chunks WHERE agent = ? AND vector "
                                    "IS NOT NULL", (agent,)).fetchone()[0]
        return {"files": files.fetchone()[0], "chunks": sum(kinds.values()),
                "note_chunks": kinds.get("file", 0), "session_chunks": kinds.get("session", 0),
                "embedded_chunks": embedded,
                "last_indexed": row[0] if row else None,
                "session_seq": row[1] if row else 0}


class IndexBusy(FasedError):
    """Another process held the index longer than BUSY_SECONDS."""


class IndexUnusable(StateError):
    """The index cannot be opened or written (not damage: a file where its folder should
    be, a folder where the file should be, no permission)."""


TABLES = ("meta", "files", "chunks", "progress", "fts", "fts_terms")


def is_damage(exc: BaseException) -> bool:
    """Whether an SQLite error of the index says its bytes are wrong (drop it, build again):
    what state.db's damage is (fased.store.is_projection_damage), and never a lock."""
    from fased.store import is_projection_damage

    return isinstance(exc, sqlite3.DatabaseError) and not is_busy(exc) and (
        is_projection_damage(exc))


def unusable(path: Path, exc: BaseException) -> IndexUnusable:
    from fased.safetext import describe

    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else describe(exc)
    return IndexUnusable(f"the memory index ({path}) cannot be used: {why}",
                         hint="it is a cache: fix or remove that path, and the next search "
                         "builds it again")


def _has_schema(con: sqlite3.Connection) -> bool:
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE name IN "
                                       f"({','.join('?' * len(TABLES))})", TABLES)}
    return names == set(TABLES)


def using(home: Path, work, say) -> object:
    """`work(index)` on the home's index. An index found damaged on the way (a malformed
    page, a missing table) is dropped and built again, once, and `say` tells so; an
    SQLite error from anywhere else (state.db) is raised as it came."""
    for attempt in range(2):
        index = MemoryIndex(home, say)
        try:
            return work(index)
        except sqlite3.DatabaseError as exc:
            if is_busy(exc):
                raise busy(index.path) from None
            if _is_index_error(exc):
                raise unusable(index.path, exc) from None
            if not isinstance(exc, Damaged) and (not is_damage(exc) or not index.damaged()):
                raise  # not the index's: state.db's, handled where it is read
            seen = exc.seen if isinstance(exc, Damaged) else exc
            if attempt:  # damaged again right after it was built: say so, never loop
                raise unusable(index.path, seen) from None
            from fased.safetext import describe

            say(f"fased: the memory index ({index.path}) is damaged ({describe(seen)}); "
                "building it again")
            index.close()
            index.drop()
        finally:
            index.close()
    raise AssertionError("unreachable")


def _is_index_error(exc: BaseException) -> bool:
    """A write refused (read-only file or folder): only the index is written here."""
    return getattr(exc, "sqlite_errorcode", None) in (3, 8, 14, 23)


def is_busy(exc: BaseException) -> bool:
    """Whether an SQLite error is another connection's lock (not damage)."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc))


def busy(path: Path) -> IndexBusy:
    return IndexBusy(f"the memory index ({path}) is busy: another fased process is writing "
                     f"it, and has been for {BUSY_SECONDS:g} s",
                     hint="try again when it is done (the first index of many notes takes "
                          "a while; `fased memory index` builds it ahead)")


def generation(con: sqlite3.Connection) -> tuple:
    """Which state of which index `con` reads: the file's id (an index dropped and built
    again is another) and how many write transactions it has had. Equal twice: nothing
    was committed in between."""
    meta = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('id', 'generation')"))
    return meta.get("id"), meta.get("generation")


def _day_of(mtime_ns: int) -> str | None:
    """The UTC day of a file time; None for one no calendar holds (year 10000)."""
    try:
        return datetime.fromtimestamp(mtime_ns / 1e9, UTC).strftime("%Y-%m-%d")
    except (ValueError, OverflowError, OSError):
        return None


def _checkpoint(state: sqlite3.Connection) -> tuple[int, str]:
    """How far the projections got (a log seq) and which log that is."""
    meta = dict(state.execute("SELECT key, value FROM meta WHERE key IN "
                              "('checkpoint', 'log_id')").fetchall())
    return int(meta.get("checkpoint") or 0), meta.get("log_id") or ""


def _meta_version(con: sqlite3.Connection) -> str | None:
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return row[0] if row else None


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
