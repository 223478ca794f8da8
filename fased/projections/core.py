"""Bookkeeping every event feeds: the checkpoint, stream versions, idempotency keys, and the
time range of each block of 4096 seqs.

Projector.apply feeds every event to a Bookkeeping, which writes these in bulk (one statement
per stream, key or block per batch): that is what keeps a rebuild of a million events fast.

`time_blocks` lets `replay --since TIME` start reading where the first event that late can
be: `ts` comes from the writer's clock and may step backwards, so the log cannot be searched
by time, but any block whose latest `ts` is earlier than TIME can be skipped whole.
"""

BLOCK_BITS = 12  # 4096 seqs a block: ~250 rows for a million events

VERSION = 1

TABLES = {
    "meta": {"columns": {"key": str, "value": str}, "pk": "key"},
    "streams": {"columns": {"name": str, "version": int, "last_seq": int}, "pk": "name"},
    "idempotency": {
        "columns": {"key": str, "first_seq": int, "last_seq": int, "command": str},
        "pk": "key",
    },
    "time_blocks": {
        "columns": {"block": int, "min_ts": str, "max_ts": str},
        "pk": "block",
    },
}

HANDLERS: dict = {}


class Bookkeeping:
    """Stream versions, idempotency keys and time blocks of one batch of events, counted as
    the events are applied and written at the end with one statement per table."""

    def __init__(self) -> None:
        self.streams: dict[str, list[int]] = {}
        self.keys: dict[str, list] = {}
        self.blocks: dict[int, list[str]] = {}

    def note(self, record: dict) -> None:
        seq = record["seq"]
        counted = self.streams.get(record["stream"])
        if counted is None:
            self.streams[record["stream"]] = [1, seq]
        else:
            counted[0] += 1
            counted[1] = seq
        meta = record["meta"]
        if "key" in meta:
            key = meta["key"]
            if key in self.keys:
                self.keys[key][2] = seq
            else:
                self.keys[key] = [key, seq, seq, meta.get("identity", meta.get("command"))]
        ts = record["ts"]  # format_ts strings: their order is the order of the times
        span = self.blocks.get(seq >> BLOCK_BITS)
        if span is None:
            self.blocks[seq >> BLOCK_BITS] = [ts, ts]
        elif ts < span[0]:
            span[0] = ts
        elif ts > span[1]:
            span[1] = ts

    def write(self, con) -> None:
        if self.streams:
            con.executemany(
                "INSERT INTO streams(name, version, last_seq) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET version = version + excluded.version, "
                "last_seq = excluded.last_seq",
                [(name, n, seq) for name, (n, seq) in self.streams.items()],
            )
        if self.keys:
            con.executemany(
                "INSERT INTO idempotency(key, first_seq, last_seq, command) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET last_seq = excluded.last_seq",
                list(self.keys.values()),
            )
        if self.blocks:
            con.executemany(
                "INSERT INTO time_blocks(block, min_ts, max_ts) VALUES (?, ?, ?) "
                "ON CONFLICT(block) DO UPDATE SET min_ts = MIN(min_ts, excluded.min_ts), "
                "max_ts = MAX(max_ts, excluded.max_ts)",
                [(block, lo, hi) for block, (lo, hi) in self.blocks.items()],
            )
