"""Memory search at scale: 10,000 notes and 100,000 session messages of one agent.

    python tests/perf/run_all.py memory

Prints the first index build (`fased memory index` as a whole process), a search as a
function call (target <= 50 ms: the freshness check of every note included) and a whole
`fased memory search` process (target <= 150 ms). Words follow a Zipf law over a 5,000-word
vocabulary, so common words are in most chunks and rare ones in a few, as in real notes.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

NOTES = 10_000
MESSAGES = 100_000
SESSIONS = 50
VOCABULARY = 5_000


def _words(rng: random.Random) -> tuple[list[str], list[float]]:
    letters = "abcdefghijklmnoprstuvw"
    vocab = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 9)))
                    for _ in range(VOCABULARY * 2)})[:VOCABULARY]
    rng.shuffle(vocab)
    total, cum = 0.0, []
    for i in range(len(vocab)):
        total += 1.0 / (i + 1)
        cum.append(total)
    return vocab, cum


def _sentence(rng: random.Random, vocab: list[str], cum: list[float], n: int) -> str:
    return " ".join(rng.choices(vocab, cum_weights=cum, k=n)) + "."


def make_memory_home(home: Path) -> list[str]:
    """The notes in the workspace and the log of the sessions; returns query words of
    middling frequency."""
    from fased.log import encode_record, segment_name

    rng = random.Random(16)
    vocab, cum = _words(rng)
    notes = home / "workspace" / "memory"
    (notes / "topics").mkdir(parents=True)
    first = datetime(2000, 1, 1, tzinfo=UTC)
    for i in range(NOTES):
        name = (f"{(first + timedelta(days=i)).date()}.md" if i < NOTES // 2
                else f"topics/t{i:05d}.md")
        lines = [_sentence(rng, vocab, cum, rng.randint(6, 16)) for _ in range(rng.randint(5, 25))]
        (notes / name).write_text("# Note\n\n" + "\n".join(lines) + "\n")
    (home / "workspace" / "MEMORY.md").write_text("# Memory\n\n" + "\n".join(
        _sentence(rng, vocab, cum, 12) for _ in range(40)) + "\n")

    (home / "log").mkdir(parents=True)
    meta = {"actor": "bench", "host": "bench", "pid": 1, "fased": "0.1.0", "command": "bench"}
    base = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    records = []

    def emit(etype: str, stream: str, data: dict) -> None:
        seq = len(records) + 1
        ts = datetime.fromtimestamp(base + seq, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        records.append(encode_record({"seq": seq, "id": uuid.uuid4().hex, "type": etype,
                                      "v": 1, "ts": ts, "stream": stream, "data": data,
                                      "meta": meta}))

    emit("agent.created", "agent:main", {"agent": "main", "name": "Main"})
    for s in range(1, SESSIONS + 1):
        emit("session.created", f"session:s-{s}", {"agent": "main", "session": f"s-{s}",
                                                   "name": None})
    for n in range(MESSAGES // 2):
        sid = f"s-{n % SESSIONS + 1}"
        d = {"turn": f"t-{n:012x}", "agent": "main", "session": sid}
        emit("turn.queued", f"session:{sid}", {**d, "source": "chat",
                                               "message": _sentence(rng, vocab, cum, 20)})
        emit("turn.started", f"session:{sid}", {**d, "runner": "bench:1:abc", "pid": 1,
                                                "host": "bench", "claim": 1,
                                                "lease_until": "2026-01-01T00:01:00.000000Z"})
        emit("turn.completed", f"session:{sid}", {
            **d, "reply": _sentence(rng, vocab, cum, 40), "model": "ollama/llama3.2",
            "usage": {"input_tokens": 20, "output_tokens": 40}, "finish_reason": "stop",
            "latency_ms": 100.0, "ttft_ms": 20.0, "attempts": 1, "context_dropped": 0,
            "runner": "bench:1:abc", "task": None})
    (home / "log" / segment_name(1)).write_bytes(b"".join(records))
    os.chmod(home, 0o700)
    # words of middling frequency: each is in some hundreds of chunks
    return [f"{vocab[i]} {vocab[i + 1]}" for i in range(200, 221)]


def bench_memory(tmp: Path, runs: int = 21) -> None:
    from run_all import FASED, env_for, timed_pairs

    home = tmp / "memory"
    queries = make_memory_home(home)
    env = env_for(home)
    subprocess.run([*FASED, "replay", "--rebuild"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    subprocess.run([*FASED, "memory", "index"], env=env, check=True, stdout=subprocess.DEVNULL)
    build = time.perf_counter() - start
    probe = subprocess.run([sys.executable, "-P", "-c", _CALL_PROBE, str(home), *queries],
                           env=env, check=True, capture_output=True, text=True).stdout.split()
    found, walk = int(probe[0]), float(probe[1])
    samples = [float(x) for x in probe[2:]]
    process, version = timed_pairs([["memory", "search", q] for q in queries], ["--version"],
                                   env, runs=31)
    print(f"memory: {NOTES:,} notes and {MESSAGES:,} session messages; first index build "
          f"{build:.1f} s as a whole `fased memory index`; a search as a function call "
          f"{statistics.median(samples):.1f} ms median of {len(samples)} (fastest "
          f"{min(samples):.1f}; {found} results each; target <= 50 ms), of which the quick "
          f"check of every note (a stat each) takes {walk:.1f} ms; `fased memory search` as "
          f"a whole process {process:.0f} ms median of 31 (target <= 150 ms); for scale, "
          f"taken in turns with it: `fased --version` {version:.0f} ms")


# a search the way the memory_search tool runs one: freshness check of every note and of the
# log included, in a process that has its state open already
_CALL_PROBE = """
import sys, time
from fased.memory.search import search
from fased.store import Store
store = Store(sys.argv[1])
con = store.db()
search(con, store.home, "main", "warm up")
from fased.memory.roots import memory_settings, quick_signature
settings = memory_settings(con, store.home, "main")
walks = []
for _ in range(11):
    t0 = time.perf_counter()
    quick_signature(settings)
    walks.append((time.perf_counter() - t0) * 1000)
samples = []
for query in sys.argv[2:]:
    t0 = time.perf_counter()
    found = search(con, store.home, "main", query)
    samples.append((time.perf_counter() - t0) * 1000)
print(len(found.hits), sorted(walks)[5], *samples)
"""
