"""Memory search, get, status and index: the functions `fased memory` and the memory tools
both call, so the agent and the user get the same answers."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from fased.errors import UsageError
from fased.memory.index import MemoryIndex, julian, using
from fased.memory.rank import Hit, by_ids, fts_query, keyword
from fased.memory.roots import MemorySettings, memory_settings, resolve_note

MAX_RESULTS = 100
GET_LINES = 200
GET_MAX_CHARS = 16_000


@dataclass
class Searched:
    """What a search looked at and found."""

    agent: str
    query: str
    roots: list[str]
    sessions: bool
    backend: str
    hits: list[Hit] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"agent": self.agent, "query": self.query, "roots": self.roots,
                "sessions": self.sessions, "backend": self.backend,
                "results": [h.to_dict() for h in self.hits]}

    def render(self) -> str:
        """The results as the model (memory_search) and `fased memory search` show them."""
        if not self.hits:
            return self.nothing_found()
        from fased.bounds import printable

        lines = []
        for h in self.hits:
            # each field escaped to one line: a newline in a note's name must not print a
            # result of its own, to the user or to the model
            where = (f"{h.path}:{h.start}-{h.end}" if h.kind == "file"
                     else f"session {h.session} turn {h.turn} ({h.role})")
            lines.append(f"{printable(where)}  {h.date or '-'}  score {h.score:.4g}\n"
                         f"  {printable(h.snippet)}")
        return "\n".join(lines)

    def nothing_found(self) -> str:
        """Why a search found nothing, saying what it searched."""
        from fased.bounds import printable

        where = ", ".join(printable(r) for r in self.roots)
        sessions = "session messages too" if self.sessions else "session messages off"
        return (f"No memory matches {self.query!r} for agent {self.agent} (searched "
                f"{where}; {sessions}; backend {self.backend}).")


def backend_name(settings: MemorySettings) -> str:
    return f"fts5+embeddings:{settings.embeddings}" if settings.embeddings else "fts5"


def _now_iso() -> str:
    from fased.timeparse import format_ts, utc_now

    return format_ts(utc_now())


def refresh(index: MemoryIndex, state: sqlite3.Connection, home: Path,
            settings: MemorySettings, *, force: bool = False) -> dict:
    """Bring the agent's part of the index up to date (notes by stat then hash, messages by
    log seq, vectors when an embedder is set); returns what changed."""
    from fased.memory.index import busy, is_busy

    now = _now_iso()
    try:
        notes = index.refresh_notes(settings, now, force)
        messages = index.refresh_sessions(settings, state, now, force)
        vectors = 0
        if settings.embeddings:
            from fased.memory.embed import embedder, fill

            vectors = fill(index.con, settings.agent, settings.embeddings,
                           embedder(state, home, settings.embeddings), settings.sessions)
    except sqlite3.OperationalError as exc:  # a write outside writing() met the lock
        if is_busy(exc):
            raise busy(index.path) from None
        raise
    return {"notes": notes, "messages": messages, "vectors": vectors}


def _hidden(state: sqlite3.Connection, agent: str) -> list[str]:
    return [r[0] for r in state.execute(
        "SELECT id FROM sessions WHERE agent = ? AND deleted = 1", (agent,))]


def search(state: sqlite3.Connection, home: Path, agent: str, query: str, *,
           max_results: int | None = None, min_score: float | None = None,
           sessions: bool | None = None) -> Searched:
    """The agent's notes (and session messages unless off) that match `query`, best first.

    sessions: None follows memory.sessions.enabled; True when that is off is a UsageError
    (nothing of the sessions is indexed then)."""
    from fased.timeparse import utc_now

    settings = memory_settings(state, home, agent)
    if not isinstance(query, str) or not query.strip():
        raise UsageError("give something to search for")
    if not fts_query(query):
        raise UsageError(f"{query!r} has no words to search for")
    if sessions and not settings.sessions:
        raise UsageError(f"session messages of agent {settings.agent} are not indexed: "
                         "memory.sessions.enabled is false",
                         hint="`fased config set memory.sessions.enabled true`")
    use_sessions = settings.sessions if sessions is None else sessions
    limit = settings.max_results if max_results is None else max_results
    if not 1 <= limit <= MAX_RESULTS:
        raise UsageError(f"the number of results must be between 1 and {MAX_RESULTS}")
    hidden = _hidden(state, settings.agent)
    now_jd = julian(utc_now())
    ahead = None
    if not settings.embeddings:
        ahead = _Ahead(home, settings, query, dict(sessions=use_sessions, now_jd=now_jd,
                                                  limit=limit, hidden=hidden))
    def work(index: MemoryIndex) -> list[Hit]:
        refresh(index, state, home, settings)
        if settings.embeddings:
            return _hybrid(index, state, home, settings, query, use_sessions, now_jd, hidden,
                           limit)
        hits = ahead.result(index) if ahead is not None else None
        if hits is None:
            hits = keyword(index.con, settings, query, sessions=use_sessions,
                           now_jd=now_jd, limit=limit, hidden=hidden)
        return hits

    try:
        hits = using(home, work, _say)
    finally:
        if ahead is not None:
            ahead.join()
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    return Searched(settings.agent, query, [settings.display(r) for r in settings.roots()],
                    use_sessions, backend_name(settings), hits[:limit])


class _Ahead:
    """The keyword query, run on a connection of its own while refresh checks every note
    (stat by stat, in Python) and the log: SQLite computes without the GIL, so the two take
    about as long as the longer one. Its answer is used only if nothing was committed to
    the index since it read it, by this process or another (the index's generation:
    another process building the index meanwhile made this one answer from the empty index
    it began on); else the query runs again on what is now indexed. No index file yet:
    nothing to ask."""

    def __init__(self, home: Path, settings: MemorySettings, query: str, options: dict):
        import threading

        from fased.memory.index import index_path

        self.hits: list[Hit] | None = None
        self.read: tuple | None = None  # the generation the query read
        self.damage: sqlite3.DatabaseError | None = None  # bytes of the index it found wrong
        self.thread = None
        if not index_path(home).is_file():
            return

        def run() -> None:
            import contextlib

            from fased.memory.index import BUSY_SECONDS, generation, is_damage

            with contextlib.suppress(sqlite3.Error, OSError, UsageError):
                con = sqlite3.connect(index_path(home), timeout=BUSY_SECONDS,
                                      isolation_level=None)
                try:
                    con.execute("BEGIN")  # one snapshot for the generation and the query
                    self.read = generation(con)
                    self.hits = keyword(con, settings, query, **options)
                    con.execute("COMMIT")
                except sqlite3.DatabaseError as exc:
                    if is_damage(exc):  # the main thread's to mend: the page it read may
                        self.damage = exc  # be one the refresh does not touch
                    raise
                finally:
                    con.close()

        self.thread = threading.Thread(target=run, name="fased-memory-query")
        self.thread.start()

    def result(self, index: MemoryIndex) -> list[Hit] | None:
        """The hits, if `index` is still in the generation the query read. Damage the query
        met is raised here, in the search's own thread (fased.memory.index.using drops the
        index and builds it again), if `index` is damaged still (MemoryIndex.check): it may
        be a new one, built after the main thread found the damage first."""
        from fased.memory.index import generation

        self.join()
        damage, self.damage = self.damage, None
        if damage is not None:
            index.check(damage)
            return None
        if self.read is None or self.read != generation(index.con):
            return None
        return self.hits

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None


def _hybrid(index: MemoryIndex, state, home: Path, settings: MemorySettings, query: str,
            sessions: bool, now_jd: float, hidden: list[str], limit: int) -> list[Hit]:
    """Keyword and vector candidates pooled and scored as fased.memory.embed describes."""
    from fased.memory.embed import POOL, embedder, fill, forget, nearest, same_length

    words = keyword(index.con, settings, query, sessions=sessions, now_jd=now_jd,
                    limit=max(POOL, limit), hidden=hidden)
    # a query is embedded as a chunk is: no longer than one (an embedder takes so many
    # tokens a text, the embedded model's 2,048); a longer one by its start
    from fased.memory.chunks import chunk_text

    embed = embedder(state, home, settings.embeddings)
    (vector,) = embed([chunk_text(query)[0].text])
    if not same_length(index.con, settings.agent, vector):
        forget(index.con, settings.agent)
        fill(index.con, settings.agent, settings.embeddings, embed, settings.sessions)
    similar = nearest(index.con, settings.agent, vector, sessions, set(hidden))
    pool = {h.id: h for h in words}
    extra = sorted((i for i in similar if i not in pool), key=lambda i: -similar[i])
    pool.update({h.id: h for h in by_ids(index.con, extra[:max(POOL, limit)], now_jd,
                                          settings.half_life_days)})
    best = max((h.bm25 for h in pool.values()), default=0.0) or 1.0
    for h in pool.values():
        h.score = h.decay * (0.5 * h.bm25 / best + 0.5 * max(similar.get(h.id, 0.0), 0.0))
    return sorted(pool.values(), key=lambda h: (-h.score, h.id))[:limit]


def get(state: sqlite3.Connection, home: Path, agent: str, path: str,
        start: int = 1, lines: int | None = None) -> dict:
    """Lines of one memory note (refused unless under the agent's memory roots), capped at
    GET_LINES lines and GET_MAX_CHARS characters; says where to go on when cut. Lines are
    numbered as search numbers them, over the part of the note search indexes (its first
    MAX_NOTE_BYTES): a line longer than GET_MAX_CHARS is shown cut, and says so."""
    from fased.bounds import NotRegularFile, read_head
    from fased.memory.chunks import note_lines
    from fased.memory.index import MAX_NOTE_BYTES

    settings = memory_settings(state, home, agent)
    if start < 1:
        raise UsageError("the first line is 1")
    if lines is not None and lines < 1:
        raise UsageError("give at least one line")
    real, shown = resolve_note(settings, path)
    want = min(lines or GET_LINES, GET_LINES)
    try:
        data = read_head(real, MAX_NOTE_BYTES + 1)
    except NotRegularFile as exc:
        raise UsageError(f"{path}: {exc.kind}, not a memory note") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    truncated = len(data) > MAX_NOTE_BYTES
    every = note_lines(data[:MAX_NOTE_BYTES].decode("utf-8", "replace"))
    total = len(every)
    if start > max(total, 1):
        raise UsageError(f"{path} has {total} line{'s' if total != 1 else ''}: line {start} "
                         "is past its end")
    out: list[str] = []
    cut: list[int] = []
    used = 0
    for number in range(start, min(total, start + want - 1) + 1):
        line = every[number - 1]
        if used + len(line) > GET_MAX_CHARS and out:
            break
        if len(line) > GET_MAX_CHARS:
            line = (f"{line[:GET_MAX_CHARS]} [line cut: {len(line) - GET_MAX_CHARS:,} more "
                    "characters]")
            cut.append(number)
        out.append(line)
        used += len(line) + 1
    end = start + len(out) - 1
    more = end < total
    got = {"agent": settings.agent, "path": shown, "from": start,
           "to": end if out else None, "lines_total": total, "text": "\n".join(out),
           "more": more, "next": end + 1 if more else None, "cut": cut}
    if truncated:
        got["truncated"] = True  # lines past the first MAX_NOTE_BYTES are not counted
    return got


def status(state: sqlite3.Connection, home: Path, agent: str) -> dict:
    """What memory search of the agent covers, from the index as it is (nothing refreshed)."""
    import os

    settings = memory_settings(state, home, agent)
    index_file, counts = using(home, lambda index: (index.path, index.counts(settings.agent)),
                               _say)
    return {"agent": settings.agent, "workspace": str(settings.workspace),
            "roots": [{"path": settings.display(r), "exists": os.path.exists(r)}
                      for r in settings.roots()],
            "sessions": settings.sessions, "half_life_days": settings.half_life_days,
            "backend": backend_name(settings), "index": str(index_file), **counts}


def reindex(state: sqlite3.Connection, home: Path, agent: str, force: bool = False) -> dict:
    """Bring the index up to date now (force: chunk every note and message again), after
    checking every page of it: a search notices only damage in what it reads, and this is
    the command that builds a damaged index again whatever page it is in."""
    settings = memory_settings(state, home, agent)

    def work(index: MemoryIndex) -> dict:
        index.check()  # damaged: fased.memory.index.using drops it and builds it again
        changed = refresh(index, state, home, settings, force=force)
        return {"agent": settings.agent, **changed, **index.counts(settings.agent)}

    return using(home, work, _say)


def _say(message: str) -> None:
    import sys

    from fased.bounds import clip_line

    print(clip_line(message), file=sys.stderr, flush=True)
