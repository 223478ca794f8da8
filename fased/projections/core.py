"""Bookkeeping every event feeds: the checkpoint, stream versions and idempotency keys.

Stream versions and keys are written by Projector.apply in bulk (one statement per stream
per batch), which is what keeps a rebuild of a million events fast.
"""

VERSION = 1

TABLES = {
    "meta": {"columns": {"key": str, "value": str}, "pk": "key"},
    "streams": {"columns": {"name": str, "version": int, "last_seq": int}, "pk": "name"},
    "idempotency": {
        "columns": {"key": str, "first_seq": int, "last_seq": int, "command": str},
        "pk": "key",
    },
}

HANDLERS: dict = {}
