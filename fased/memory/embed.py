"""Optional semantic search: chunk vectors from a registered provider's embeddings endpoint
(`memory.search.embeddings` = provider/model), kept in the index beside the text.

How it combines with BM25: the keyword candidates (bm25, as ranked without vectors) and the
nearest chunks by cosine similarity are pooled, and each gets
    score = decay * (0.5 * bm25 / best bm25 of the pool + 0.5 * max(cosine, 0))
so a chunk that matches the words and the meaning ranks first, one that only means the same
still comes up, and scores lie between 0 and 1. An embedder that is configured but fails
(unreachable, no such model, no embeddings endpoint) is an error saying so: a search never
falls back silently to keywords only.
"""

from __future__ import annotations

import math
import sqlite3
from array import array
from pathlib import Path

from fased.errors import FasedError

BATCH = 64
POOL = 50


class EmbeddingsFailed(FasedError):
    """The configured embedder did not give vectors."""


def embedder(con: sqlite3.Connection, home: Path, ref: str):
    """A function texts -> unit vectors, for a model ref (errors name the setting)."""
    from fased.models import get_provider, make_client, parse_model_ref

    try:
        parsed = parse_model_ref(con, ref)
        client = make_client(home, get_provider(con, parsed.provider))
    except FasedError as exc:
        raise EmbeddingsFailed(f"memory.search.embeddings is {ref!r}: {exc.message}",
                               hint=exc.hint) from None

    def embed(texts: list[str]) -> list[array]:
        try:
            vectors = client.embed(parsed.model, texts)
        except FasedError as exc:
            raise EmbeddingsFailed(
                f"memory.search.embeddings ({ref}) failed: {exc.message}",
                hint="fix the provider or model, or `fased config unset "
                     "memory.search.embeddings` to search by keywords only") from None
        if len(vectors) != len(texts):
            raise EmbeddingsFailed(f"memory.search.embeddings ({ref}) sent {len(vectors)} "
                                   f"vectors for {len(texts)} texts")
        wrong = _unusable(vectors)
        if wrong:
            raise EmbeddingsFailed(f"memory.search.embeddings ({ref}) failed: the server sent "
                                   f"{wrong}", hint="is it an embeddings model?")
        return [unit(v) for v in vectors]

    return embed


def _unusable(vectors: list) -> str | None:
    """What makes a server's vectors impossible to compare (None: nothing): a NaN would
    make every score NaN, and vectors of different lengths have no cosine."""
    lengths = set()
    for vector in vectors:
        if not vector:
            return "an empty vector"
        if not all(type(x) in (int, float) and math.isfinite(x) for x in vector):
            return "a vector with a value that is not a finite number"
        lengths.add(len(vector))
    return "vectors of different lengths" if len(lengths) > 1 else None


def same_length(index_con: sqlite3.Connection, agent: str, query: array) -> bool:
    """Whether every stored vector of the agent has the query's length (a model of
    another length behind the same ref makes them incomparable: fill them again)."""
    return index_con.execute(
        "SELECT 1 FROM chunks WHERE agent = ? AND vector IS NOT NULL AND length(vector) != ? "
        "LIMIT 1", (agent, len(query) * query.itemsize)).fetchone() is None


def forget(index_con: sqlite3.Connection, agent: str) -> None:
    """Drop the agent's vectors (fill makes them again)."""
    index_con.execute("UPDATE chunks SET vector = NULL WHERE agent = ?", (agent,))


def unit(vector: list[float]) -> array:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return array("f", (x / norm for x in vector))


def fill(index_con: sqlite3.Connection, agent: str, ref: str, embed, sessions: bool) -> int:
    """Vectors for the agent's chunks that have none (all of them again after the model
    changed); committed a batch at a time, so a failure keeps what was done."""
    row = index_con.execute("SELECT embeddings FROM progress WHERE agent = ?",
                            (agent,)).fetchone()
    if row is None or row[0] != ref:
        forget(index_con, agent)
        index_con.execute("INSERT INTO progress(agent, session_seq, embeddings) VALUES (?, 0, ?)"
                          " ON CONFLICT(agent) DO UPDATE SET embeddings = excluded.embeddings",
                          (agent, ref))
    kinds = "('file', 'session')" if sessions else "('file')"
    done = 0
    while True:
        batch = index_con.execute(
            "SELECT c.id, f.text FROM chunks c JOIN fts f ON f.rowid = c.id WHERE c.agent = ? "
            f"AND c.vector IS NULL AND c.kind IN {kinds} LIMIT ?", (agent, BATCH)).fetchall()
        if not batch:
            return done
        vectors = embed([text for _, text in batch])
        index_con.execute("BEGIN IMMEDIATE")
        index_con.executemany("UPDATE chunks SET vector = ? WHERE id = ?",
                              [(v.tobytes(), i) for v, (i, _) in zip(vectors, batch, strict=True)])
        index_con.execute("COMMIT")
        done += len(batch)


def nearest(index_con: sqlite3.Connection, agent: str, query: array, sessions: bool,
            hidden: set[str]) -> dict[int, float]:
    """Cosine similarity of every chunk of the agent with the query (vectors are unit)."""
    out: dict[int, float] = {}
    kinds = "('file', 'session')" if sessions else "('file')"
    for chunk_id, blob, session in index_con.execute(
            f"SELECT id, vector, session FROM chunks WHERE agent = ? AND kind IN {kinds} "
            "AND vector IS NOT NULL", (agent,)):
        if session in hidden:
            continue
        vector = array("f")
        vector.frombytes(blob)
        if len(vector) == len(query):
            out[chunk_id] = math.fsum(a * b for a, b in zip(vector, query, strict=True))
    return out
