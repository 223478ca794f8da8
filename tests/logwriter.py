"""Append events to a fased event log from a separate process (driven by test_log_reliability).

Not a test module: tests run it as `python tests/logwriter.py HOME [options]` and kill it, limit
its file size, or start several at once. Every record is deterministic (no clock, no randomness
beyond `--seed`), so a test can rebuild the exact bytes a writer was writing when it died.

`--short-writes BYTES` makes every os.write of fased.log write at most BYTES and then pause for
`--pause` seconds, as a slow disk would (a short write is allowed for any write(2); the log loops
over them). A kill then tends to land in the middle of a record.

Output: "ready" on stdout once the log is open (before waiting for `--wait-for`, before the first
append). On a fased error: the error's message as one line on stderr, its hint (if any) as
"hint: ..." on stdout, exit status 3. Any other exception is a bug and exits 1 with a traceback.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import fased.log
from fased.errors import FasedError
from fased.log import EventLog

EXIT_FASED_ERROR = 3


def batch_plan(seed: int, smallest: int, largest: int) -> Iterator[int]:
    """The sizes of the batches a writer appends, in order (endless)."""
    rng = random.Random(seed)
    while True:
        yield rng.randint(smallest, largest)


def pad(writer: int, counter: int, size: int) -> str:
    """A payload of exactly `size` characters that depends on writer and counter."""
    if size <= 0:
        return ""
    unit = f"<{writer}.{counter}>"
    return (unit * (size // len(unit) + 1))[:size]


def make_batch(
    seq: int, writer: int, counter: int, batch_no: int, n: int, payload: int
) -> list[dict]:
    """The records of one batch, as the writer hands them to EventLog.append (no meta.batch)."""
    records = []
    for i in range(n):
        c = counter + i
        records.append(
            {
                "seq": seq + i,
                "id": f"w{writer}-{c}",
                "type": "test.wrote",
                "v": 1,
                "ts": "2024-01-01T00:00:00Z",
                "stream": f"writer:{writer}",
                "data": {
                    "writer": writer,
                    "n": c,
                    "batch": batch_no,
                    "i": i + 1,
                    "of": n,
                    "pad": pad(writer, c, payload),
                },
                "meta": {},
            }
        )
    return records


class _SlowDiskOs(types.ModuleType):
    """`os` as fased.log sees it, with short, slow writes."""

    def __init__(self, chunk: int, pause: float):
        super().__init__("os")
        self._chunk = chunk
        self._pause = pause

    def __getattr__(self, name: str):
        return getattr(os, name)

    def write(self, fd: int, data) -> int:
        written = os.write(fd, memoryview(data)[: self._chunk])
        time.sleep(self._pause)
        return written


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="logwriter")
    p.add_argument("home", type=Path)
    p.add_argument("--writer", type=int, default=0, help="writer id, kept in data.writer")
    p.add_argument("--count", type=int, default=0, help="events to append; 0: until killed")
    p.add_argument("--batch", type=int, nargs=2, default=(1, 1), metavar=("MIN", "MAX"))
    p.add_argument("--seed", type=int, default=0, help="seed of the batch sizes")
    p.add_argument("--payload", type=int, default=0, help="characters in data.pad")
    p.add_argument("--no-fsync", action="store_true")
    p.add_argument("--segment-bytes", type=int, default=None)
    p.add_argument("--short-writes", type=int, default=0, metavar="BYTES")
    p.add_argument("--pause", type=float, default=0.002, help="seconds after each short write")
    p.add_argument("--wait-for", type=Path, default=None, help="start once this path exists")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    if args.short_writes:
        fased.log.os = _SlowDiskOs(args.short_writes, args.pause)
    log = EventLog(args.home, segment_bytes=args.segment_bytes)
    plan = batch_plan(args.seed, *args.batch)
    print("ready", flush=True)
    if args.wait_for is not None:
        while not args.wait_for.exists():
            time.sleep(0.001)
    counter = 0
    batch_no = 0
    while args.count == 0 or counter < args.count:
        n = next(plan)
        if args.count:
            n = min(n, args.count - counter)
        with log.locked():
            seq = log.next_seq()
            log.append(
                make_batch(seq, args.writer, counter, batch_no, n, args.payload),
                fsync=not args.no_fsync,
            )
        counter += n
        batch_no += 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except FasedError as exc:
        print(exc.message, file=sys.stderr, flush=True)
        if exc.hint:
            print(f"hint: {exc.hint}", flush=True)
        return EXIT_FASED_ERROR


if __name__ == "__main__":
    sys.exit(main())
