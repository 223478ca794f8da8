"""Reading old events as the current version: type aliases and v -> v+1 upcasters.

An upcaster is a small pure function from one version's `data` to the next; the chain runs on
read, so the log itself is never rewritten. A renamed type maps through ALIASES. An event
newer than this fased knows is an error: a newer fased wrote the log.
"""

from __future__ import annotations

from collections.abc import Callable

from fased import __version__
from fased.errors import StateError
from fased.schema import current_versions

ALIASES: dict[str, str] = {}


def usage_without_cost(data: dict) -> dict:
    """turn.completed and turn.step v1 -> v2: v2's usage may hold the cost a server reported;
    a v1 event's call reported none that fased kept, so its cost stays absent (unknown)."""
    return data


def same_shape(data: dict) -> dict:
    """provider.added v1 -> v2 (v2 adds kind local and its model_path), turn.queued v1 ->
    v2 (v2 adds the turn's model options), task.created v1 -> v2 (v2 adds kind heartbeat),
    task.created v2 -> v3 and task.updated v1 -> v2 (deliver may be `channel`): an older
    event has none of them, and means the same."""
    return data


UPCASTERS: dict[tuple[str, int], Callable[[dict], dict]] = {
    ("provider.added", 1): same_shape,
    ("turn.queued", 1): same_shape,
    ("task.created", 1): same_shape,
    ("turn.completed", 1): usage_without_cost,
    ("turn.step", 1): usage_without_cost,
    ("task.created", 2): same_shape,
    ("task.updated", 1): same_shape,
}


def upcast(record: dict) -> dict:
    """Return `record` at the current version of its type (the same dict when it already is)."""
    etype = record["type"]
    current = current_versions().get(etype)
    if current is not None and record["v"] == current:
        return record
    if current is None and etype in ALIASES:
        record = {**record, "type": ALIASES[etype]}
        etype = record["type"]
        current = current_versions().get(etype)
    if current is None or record["v"] > current:
        raise StateError(
            f"the log holds a {etype} v{record['v']} event (seq {record['seq']}) that this "
            f"fased {__version__} does not know: it was written by a newer fased",
            hint="upgrade fased; nothing was changed",
        )
    data = record["data"]
    for v in range(record["v"], current):
        step = UPCASTERS.get((etype, v))
        if step is None:
            raise StateError(f"no upcaster for {etype} v{v} -> v{v + 1}")
        data = step(data)
    return {**record, "v": current, "data": data}
