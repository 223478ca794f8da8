"""Write a realistic fased home of N events straight into log segments (fast, for benchmarks).

10 agents, 200 sessions, then chat turns as turn.queued / turn.started / turn.completed
triplets spread over the sessions, each event valid against its schema and the projections.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

from fased.log import DEFAULT_SEGMENT_BYTES, encode_record, segment_name
from fased.timeparse import format_ts, parse_ts


def make_home(home: Path, n_events: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> Path:
    """Create `home` with a log of about `n_events` events; returns the home."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "log").mkdir(exist_ok=True)
    base = parse_ts("2026-01-01T00:00:00Z").timestamp()
    meta = {"actor": "bench", "host": "bench", "pid": 1, "fased": "0.1.0",
            "command": "fased chat"}
    seq = 0
    segment_first = 1
    out = open(home / "log" / segment_name(1), "wb")  # noqa: SIM115 - rolled below
    size = 0

    def emit(etype: str, stream: str, data: dict) -> None:
        nonlocal seq, out, size, segment_first
        seq += 1
        if size >= segment_bytes:
            out.close()
            segment_first = seq
            out = open(home / "log" / segment_name(seq), "wb")  # noqa: SIM115
            size = 0
        from datetime import UTC, datetime

        ts = format_ts(datetime.fromtimestamp(base + seq, UTC))
        line = encode_record({"seq": seq, "id": uuid.uuid4().hex, "type": etype, "v": 1,
                              "ts": ts, "stream": stream, "data": data, "meta": meta})
        out.write(line)
        size += len(line)

    agents = [f"agent{i}" for i in range(10)]
    for a in agents:
        emit("agent.created", f"agent:{a}", {"agent": a, "name": a.title()})
    sessions = []
    for i in range(200):
        a = agents[i % len(agents)]
        sid = f"s-{i + 1}"
        sessions.append((a, sid))
        emit("session.created", f"session:{sid}", {"agent": a, "session": sid, "name": None})
        emit("session.switched", f"agent:{a}", {"agent": a, "session": sid})
    n = 0
    while seq < n_events:
        a, sid = sessions[n % len(sessions)]
        turn = f"t-{n:012x}"
        base_data = {"turn": turn, "agent": a, "session": sid}
        emit("turn.queued", f"session:{sid}", {**base_data, "message": f"question {n}: how is "
                                               "the build doing today?", "source": "chat"})
        emit("turn.started", f"session:{sid}", {**base_data, "runner": "bench:1:abc", "pid": 1,
                                                "host": "bench", "claim": 1,
                                                "lease_until": "2026-01-01T00:01:00.000000Z"})
        emit("turn.completed", f"session:{sid}", {
            **base_data, "reply": f"answer {n}: the build is green, 42 tests passed.",
            "model": "ollama/llama3.2", "usage": {"input_tokens": 20, "output_tokens": 12},
            "finish_reason": "stop", "latency_ms": 120.5, "ttft_ms": 30.1, "attempts": 1,
            "context_dropped": 0, "runner": "bench:1:abc", "task": None})
        n += 1
    out.close()
    os.chmod(home, 0o700)
    return home


if __name__ == "__main__":
    target = Path(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    make_home(target, count)
    print(f"wrote {count} events to {target}")
