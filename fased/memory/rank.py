"""Ranking memory: FTS5 finds and orders the candidates, and each is scored again per word.

FTS5's bm25() gives a word found in half the chunks or more a weight of 1e-6 (its IDF,
ln((N - n + 0.5) / (n + 0.5)), is not positive), which in a small memory is every word; so
the candidates FTS5 ranks (bm25 times recency, the POOL best) are scored again word by word
with the IDF of Lucene's BM25, ln(1 + (N - n + 0.5) / (n + 0.5)), which stays positive.
Recency: 0.5 ** (age in days / memory.search.halfLifeDays) for daily notes and session
messages; MEMORY.md and undated notes do not decay.
"""

from __future__ import annotations

import math
import re
import sqlite3
from dataclasses import dataclass

from fased.memory.roots import MemorySettings

SNIPPET_TOKENS = 24
_WORD = re.compile(r"\w+", re.UNICODE)
# one statement each: executescript() would commit first, ending the snapshot of a query
# that reads the index in one (fased.memory.search._Ahead)
QUERY_TERMS = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.query USING fts5(text, tokenize='porter "
    "unicode61')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_terms USING fts5vocab(temp, query, "
    "instance)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_instances USING fts5vocab(main, fts, "
    "instance)",
)
K1, B = 1.2, 0.75  # FTS5's bm25() parameters
POOL = 50  # candidates FTS5 ranks before they are scored again
MAX_WORDS = 32


def query_words(text: str) -> list[str]:
    """The distinct words of a query: operators and punctuation are not syntax, so no query
    can fail. In NFC, as notes are indexed (a decomposed "Kraków", from macOS or a file
    name, split at its accent into words no note has). Of a longer question, the MAX_WORDS
    longest (short words are the common ones), in the order given."""
    words = list(dict.fromkeys(_WORD.findall(nfc(text))))
    if len(words) > MAX_WORDS:
        keep = set(sorted(range(len(words)), key=lambda i: (-len(words[i]), i))[:MAX_WORDS])
        words = [w for i, w in enumerate(words) if i in keep]
    return words


def nfc(text: str) -> str:
    """`text` in Unicode's composed form, as the index holds notes and messages."""
    import unicodedata

    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize(
        "NFC", text)


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query: each word quoted, any may match."""
    return " OR ".join(f'"{w}"' for w in query_words(text))


@dataclass
class Hit:
    """One search result (kind file: path and lines; kind session: session and turn)."""

    id: int
    kind: str
    path: str | None
    start: int | None
    end: int | None
    session: str | None
    turn: str | None
    role: str | None
    date: str | None
    score: float
    snippet: str
    bm25: float = 0.0
    decay: float = 1.0

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "score": float(f"{self.score:.6g}"), "date": self.date,
               "snippet": self.snippet}
        if self.kind == "file":
            out.update(path=self.path, lines=[self.start, self.end])
        else:
            out.update(session=self.session, turn=self.turn, role=self.role)
        return out


def keyword(con: sqlite3.Connection, settings: MemorySettings, query: str, *, sessions: bool,
            now_jd: float, limit: int, hidden: list[str]) -> list[Hit]:
    """The best `limit` chunks by bm25 times recency; `hidden`: deleted sessions."""
    match = fts_query(query)
    if not match:
        return []
    where = "" if sessions else " AND c.kind = 'file'"
    if hidden:
        marks = ",".join("?" * len(hidden))
        where += f" AND (c.session IS NULL OR c.session NOT IN ({marks}))"
    sql = (
        "SELECT c.*, -bm25(fts) AS raw, CASE WHEN c.decays = 1 AND c.jd IS NOT NULL THEN "
        "pow(0.5, max(0.0, ? - c.jd) / ?) ELSE 1.0 END AS decay, '' AS snip "
        "FROM fts JOIN chunks c ON c.id = fts.rowid WHERE fts MATCH ? AND c.agent = ?"
        f"{where} ORDER BY raw * decay DESC, c.id LIMIT ?")
    params = [now_jd, settings.half_life_days, match, settings.agent, *hidden,
              max(POOL, limit)]
    con.row_factory = sqlite3.Row
    try:
        hits = [_hit(r) for r in con.execute(sql, params)]
    finally:
        con.row_factory = None
    _rescore(con, hits, query)
    best = sorted(hits, key=lambda h: (-h.score, h.id))[:limit]
    _snippets(con, best, match)
    return best


def _snippets(con: sqlite3.Connection, hits: list[Hit], match: str) -> None:
    """Snippets of the hits shown only (FTS5 makes one per row it is asked for, so asking
    in the ranking query would make one for every match)."""
    if not hits:
        return
    by_id = {h.id: h for h in hits}
    for rowid, snip in con.execute(
            f"SELECT rowid, snippet(fts, 0, '', '', '…', {SNIPPET_TOKENS}) FROM fts WHERE "
            f"fts MATCH ? AND rowid IN ({','.join('?' * len(by_id))})", [match, *by_id]):
        by_id[rowid].snippet = " ".join(snip.split())


def _rescore(con: sqlite3.Connection, hits: list[Hit], query: str) -> None:
    """Each hit's bm25 again, word by word, with an IDF that stays positive: FTS5's own
    formula (k1 1.2, b 0.75), from the counts it keeps (a word's instances in each hit,
    each hit's length, the average length). Asking FTS5's bm25() per word instead costs a
    scan of the word's whole doclist for each (its IDF counts every row): ~6 ms a common
    word in 100,000 chunks, where this is well under one."""
    if not hits:
        return
    for statement in QUERY_TERMS:
        con.execute(statement)
    con.execute("DELETE FROM temp.query")
    words = query_words(query)
    con.executemany("INSERT INTO temp.query(rowid, text) VALUES (?, ?)",
                    list(enumerate(words, 1)))
    stems = dict(con.execute("SELECT doc, term FROM temp.query_terms"))
    total, tokens = _averages(con)
    ids = [h.id for h in hits]
    marks = ",".join("?" * len(ids))
    lengths = {rowid: _varint(size)[0] for rowid, size in con.execute(
        f"SELECT id, sz FROM fts_docsize WHERE id IN ({marks})", ids)}
    average = tokens / total if total else 1.0
    sums = dict.fromkeys(ids, 0.0)
    done: set[str] = set()
    for i in range(1, len(words) + 1):
        stem = stems.get(i)
        if stem is None or stem in done:
            continue
        done.add(stem)
        row = con.execute("SELECT doc FROM fts_terms WHERE term = ?", (stem,)).fetchone()
        n = row[0] if row else 0
        idf = math.log1p((total - n + 0.5) / (n + 0.5))
        for rowid, tf in con.execute(
                "SELECT doc, count(*) FROM temp.fts_instances WHERE term = ? AND doc IN "
                f"({marks}) GROUP BY doc", [stem, *ids]):
            norm = K1 * (1 - B + B * lengths.get(rowid, average) / (average or 1.0))
            sums[rowid] += idf * tf * (K1 + 1) / (tf + norm)
    for h in hits:
        h.bm25 = sums[h.id]
        h.score = h.bm25 * h.decay


def _averages(con: sqlite3.Connection) -> tuple[int, int]:
    """(rows, tokens) of the whole FTS5 table, from its averages record (fts_data id 1: a
    varint of rows, then one of tokens per column)."""
    row = con.execute("SELECT block FROM fts_data WHERE id = 1").fetchone()
    if not row or not row[0]:
        return 0, 0
    rows, at = _varint(row[0])
    tokens, _ = _varint(row[0], at)
    return rows, tokens


def _varint(data: bytes, at: int = 0) -> tuple[int, int]:
    """SQLite's varint (big-endian groups of 7 bits, a ninth byte of 8) at `at`:
    (value, where the next begins)."""
    value = 0
    for k in range(8):
        if at + k >= len(data):
            return value, at + k
        byte = data[at + k]
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, at + k + 1
    if at + 8 < len(data):
        return (value << 8) | data[at + 8], at + 9
    return value, len(data)


def by_ids(con: sqlite3.Connection, ids: list[int], now_jd: float,
           half_life: float) -> list[Hit]:
    """Chunks found by meaning alone (no keyword matched): bm25 0, the start as snippet."""
    if not ids:
        return []
    sql = ("SELECT c.*, 0.0 AS raw, CASE WHEN c.decays = 1 AND c.jd IS NOT NULL THEN "
           "pow(0.5, max(0.0, ? - c.jd) / ?) ELSE 1.0 END AS decay, "
           f"substr(f.text, 1, {SNIPPET_TOKENS * 8}) AS snip FROM chunks c JOIN fts f ON "
           f"f.rowid = c.id WHERE c.id IN ({','.join('?' * len(ids))})")
    con.row_factory = sqlite3.Row
    try:
        return [_hit(r) for r in con.execute(sql, [now_jd, half_life, *ids])]
    finally:
        con.row_factory = None


def _hit(r: sqlite3.Row) -> Hit:
    return Hit(id=r["id"], kind=r["kind"], path=r["path"], start=r["start_line"],
               end=r["end_line"], session=r["session"], turn=r["turn"], role=r["role"],
               date=r["day"], score=r["raw"] * r["decay"], snippet=" ".join(r["snip"].split()),
               bm25=r["raw"], decay=r["decay"])
