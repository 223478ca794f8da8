"""Bookkeeping every event feeds: the checkpoint, stream versions, idempotency keys, and the
time range of each block of 4096 seqs.

These are written by Projector.apply in bulk (one statement per stream, key or block per
batch), which is what keeps a rebuild of a million events fast.

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
