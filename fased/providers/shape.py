"""What a server's JSON must look like where a parser reads it. Each check names the place
that is wrong in the API's own terms (`choices[0].message.content is not a string`), so a
reply of the wrong shape is said as such (HttpClient._reading: "sent a malformed
response (...)"), never as the Python exception a parser would have met. A missing
(null) object or list reads as an empty one: servers leave out what they have nothing for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class Malformed(ValueError):
    """JSON of the wrong shape from a server; the message says where."""


def document(value: Any, *, arrays: bool = False) -> Any:
    """The whole response: a JSON object (or, with `arrays`, an array too)."""
    if isinstance(value, dict) or (arrays and isinstance(value, list)):
        return value
    raise Malformed("not a JSON object or array" if arrays else "not a JSON object")


def as_object(value: Any, where: str) -> dict:
    """An object, or {} for a missing one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"{where} is not an object")
    return value


def items(value: Any, where: str, *, required: bool = False) -> list:
    """A list, or [] for a missing one (unless `required`)."""
    if value is None and not required:
        return []
    if value is None:
        raise Malformed(f"{where} is missing")
    if not isinstance(value, list):
        raise Malformed(f"{where} is not a list")
    return value


def objects(value: Any, where: str, *, required: bool = False) -> Iterator[tuple[str, dict]]:
    """(place, object) for each entry of a list of objects; `where` "" is the response
    itself (a bare array)."""
    for i, entry in enumerate(items(value, where, required=required)):
        place = f"{where}[{i}]" if where else f"item {i}"
        if not isinstance(entry, dict):
            raise Malformed(f"{place} is not an object")
        yield place, entry


def text(value: Any, where: str) -> str:
    """A string, or "" for a missing one."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Malformed(f"{where} is not a string")
    return value


def position(value: Any, where: str) -> int:
    """A position the server numbers things by (0 when it leaves it out)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(f"{where} is not a number")
    return value
