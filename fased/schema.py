"""Event schemas: which types and versions exist, and validating data before it is appended.

The files in `schemas/` are JSON Schema (draft 2020-12), one per event type and version
(`agent.created.v1.json`, describing the event's `data`). They are the single source of truth
for event shapes. Validation uses the small subset of keywords those files use (type,
properties, required, additionalProperties, items, enum, const, pattern, minimum, maximum,
minLength, maxLength, minItems, maxItems, anyOf, $ref to #/$defs): `jsonschema` costs ~80 ms
to import, which every write command would pay. The test suite checks each file with
`jsonschema` too.
"""

from __future__ import annotations

import json
import math
import os
import re
from functools import cache
from pathlib import Path

from fased.errors import FasedError

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


class SchemaError(FasedError):
    """Data that does not match its schema (a bug in a command, or a bad hand edit)."""


@cache
def schema_dir() -> Path:
    import fased.schemas

    return Path(next(iter(fased.schemas.__path__)))


@cache
def current_versions() -> dict[str, int]:
    """{event type: newest version this fased knows}, from the schema file names."""
    versions: dict[str, int] = {}
    for name in os.listdir(schema_dir()):
        match = re.fullmatch(r"(.+)\.v([0-9]+)\.json", name)
        if match:
            etype, v = match.group(1), int(match.group(2))
            versions[etype] = max(v, versions.get(etype, 0))
    return versions


@cache
def load_schema(name: str) -> dict:
    """A schema file by name without `.json` (`agent.created.v1`, `config`)."""
    path = schema_dir() / f"{name}.json"
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SchemaError(f"no schema {name}.json in {schema_dir()}") from None


def validate_event_data(etype: str, v: int, data: object) -> None:
    """Raise SchemaError naming the first offending path when `data` does not fit."""
    schema = load_schema(f"{etype}.v{v}")
    problem = first_error(data, schema, schema, "data")
    if problem:
        raise SchemaError(f"invalid {etype} v{v} event: {problem}")


def first_error(value: object, schema: dict, root: dict, path: str) -> str | None:
    """The first way `value` breaks `schema`, as `path: reason`, or None when it fits."""
    if "$ref" in schema:
        return first_error(value, _deref(schema, root), root, path)
    if "anyOf" in schema and all(first_error(value, s, root, path) for s in schema["anyOf"]):
        return f"{path}: does not match any allowed form"
    expected = schema.get("type")
    if expected is not None and not _is_type(value, expected):
        return f"{path}: expected {_type_words(expected)}, got {_json_type(value)}"
    if "const" in schema and not _same(value, schema["const"]):
        return f"{path}: must be {json.dumps(schema['const'])}"
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        return f"{path}: must be one of {', '.join(json.dumps(e) for e in schema['enum'])}"
    if isinstance(value, str):
        return _string_error(value, schema, path)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # json.loads reads NaN, Infinity and 1e999
            return f"{path}: {value} is not a finite number"
        if "minimum" in schema and value < schema["minimum"]:
            return f"{path}: must be at least {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{path}: must be at most {schema['maximum']}"
    if isinstance(value, dict):
        return _object_error(value, schema, root, path)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{path}: needs at least {schema['minItems']} items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{path}: takes at most {schema['maxItems']} items"
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                problem = first_error(item, items, root, f"{path}[{i}]")
                if problem:
                    return problem
    return None


def _string_error(value: str, schema: dict, path: str) -> str | None:
    if schema.get("minLength") == 1 and not value:
        return f"{path}: must not be empty"
    if len(value) < schema.get("minLength", 0):
        return f"{path}: must not be shorter than {schema['minLength']} characters"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return f"{path}: must not be longer than {schema['maxLength']} characters"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{path}: {value!r} does not match {schema['pattern']}"
    return None


#: a key a dotted path can hold as it is (fased.config.parse_path reads the rest quoted)
PLAIN_KEY = re.compile(r"""[^.\[\]"']+""")


def join_key(path: str, key: object) -> str:
    """`path` and then `key`, written as `fased config set` takes it: `.key`, or
    `["local/qwen2.5"]` for a key with a dot, a bracket or a quote."""
    key = str(key)
    if PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _object_error(value: dict, schema: dict, root: dict, path: str) -> str | None:
    for key in schema.get("required", ()):
        if key not in value:
            return f"{path}: missing required key {key!r}"
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        sub = join_key(path, key)
        if key in props:
            problem = first_error(item, props[key], root, sub)
        elif extra is False:
            return f"{sub}: unknown key"
        elif isinstance(extra, dict):
            problem = first_error(item, extra, root, sub)
        else:
            problem = None
        if problem:
            return problem
    return None


def _same(a: object, b: object) -> bool:
    """JSON equality: unlike Python's ==, true is not 1 and false is not 0, at any depth."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _deref(schema: dict, root: dict) -> dict:
    """`schema` with its `$ref`s to #/$defs followed (the only kind the files use)."""
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise SchemaError(f"unsupported $ref {ref}")
        schema = root["$defs"][ref[len("#/$defs/"):]]
    return schema


def whole_numbers(value: object, schema: dict, root: dict) -> object:
    """`value` with every float that `schema` puts where a whole number goes (3500.0, 1e2)
    made an int. JSON Schema calls 2.0 an integer, so the check lets it in; the code that
    reads it would take it for no number at all (`isinstance(x, int)`), slice with it, or
    send `5.0` to an API that wants 5. Along an anyOf, the form the value fits is followed."""
    schema = _deref(schema, root)
    if "anyOf" in schema:
        fits = [b for b in schema["anyOf"] if first_error(value, b, root, "") is None]
        return whole_numbers(value, fits[0], root) if fits else value
    if isinstance(value, float):
        kind = schema.get("type")
        wanted = kind == "integer" or (isinstance(kind, list) and "integer" in kind
                                       and "number" not in kind)
        return int(value) if wanted and value.is_integer() else value
    if isinstance(value, dict):
        known, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        return {key: whole_numbers(item, known.get(key, extra if isinstance(extra, dict)
                                                   else {}), root)
                for key, item in value.items()}
    if isinstance(value, list):
        items = schema.get("items")
        return [whole_numbers(item, items if isinstance(items, dict) else {}, root)
                for item in value]
    return value


def schema_at(schema: dict, root: dict, parts: list[str | int]) -> dict:
    """The part of `schema` that describes the value at `parts` ({} where it says nothing)."""
    for part in parts:
        schema = _deref(schema, root)
        forms = [_deref(b, root) for b in schema.get("anyOf", [])] or [schema]
        want = "array" if isinstance(part, int) else "object"
        schema = next((f for f in forms if f.get("type") == want), forms[0])
        if isinstance(part, int):
            items = schema.get("items")
            schema = items if isinstance(items, dict) else {}
        else:
            extra = schema.get("additionalProperties")
            schema = (schema.get("properties") or {}).get(
                part, extra if isinstance(extra, dict) else {})
    return schema


def _is_type(value: object, expected: str | list[str]) -> bool:
    if isinstance(expected, list):
        return any(_is_type(value, e) for e in expected)
    if expected == "integer":  # JSON Schema: 2.0 is an integer too
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[expected])


def _type_words(expected: str | list[str]) -> str:
    return " or ".join(expected) if isinstance(expected, list) else expected


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    for name, py in _TYPES.items():
        if isinstance(value, py):
            return name
    return type(value).__name__
