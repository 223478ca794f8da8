"""schemas/: valid JSON Schema, one per event type and version, each with a projection; and
fased's small validator judges data exactly as `jsonschema` does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from fased.projections import projector
from fased.schema import current_versions, first_error, load_schema, schema_dir

SCHEMA_FILES = sorted(schema_dir().glob("*.json"))
GOLDEN = sorted((Path(__file__).parent / "fixtures").glob("golden-*.jsonl"))
# keywords fased.schema implements (its docstring lists them) and annotations it may ignore
VALIDATING = {"type", "properties", "required", "additionalProperties", "items", "enum",
              "const", "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems",
              "maxItems", "anyOf", "$ref"}
ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs"}
# event types that change no projection row, each with the reason; none so far
HANDLER_FREE: dict[str, str] = {
    "log.loss_accepted": "the audit trail of `doctor --accept-loss`: state.db is rebuilt from "
                         "the log around it, so it changes no row",
}


def mini_valid(data: object, schema: dict) -> bool:
    return first_error(data, schema, schema, "data") is None


def jsonschema_valid(data: object, schema: dict) -> bool:
    return Draft202012Validator(schema).is_valid(data)


def keywords(schema: object, out: set[str]) -> set[str]:
    """Every keyword used anywhere in a schema (property names are not keywords)."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            out.add(key)
            if key in ("properties", "$defs"):
                for sub in value.values():
                    keywords(sub, out)
            elif key in ("items", "additionalProperties"):
                keywords(value, out)
            elif key == "anyOf":
                for sub in value:
                    keywords(sub, out)
    return out


# -- the files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_every_schema_file_is_a_valid_draft_2020_12_schema(path):
    schema = json.loads(path.read_text())

    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://fased.dev/schemas/{path.name}"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_every_schema_uses_only_keywords_the_mini_validator_implements(path):
    used = keywords(json.loads(path.read_text()), set())

    assert used - VALIDATING - ANNOTATIONS == set()


def test_event_schemas_are_named_type_and_version_with_no_gaps():
    names = [p.name for p in SCHEMA_FILES if p.name != "config.json"]
    versions: dict[str, list[int]] = {}
    for name in names:
        match = re.fullmatch(r"([a-z]+\.[a-z_]+)\.v([1-9]\d*)\.json", name)
        assert match, name
        versions.setdefault(match.group(1), []).append(int(match.group(2)))
        assert load_schema(name.removesuffix(".json"))["title"] == match.group(1)

    assert {t: max(vs) for t, vs in versions.items()} == current_versions()
    assert {t: sorted(vs) for t, vs in versions.items()} == {
        t: list(range(1, max(vs) + 1)) for t, vs in versions.items()}


def test_every_event_type_has_a_projection_handler_or_is_documented_handler_free():
    handled = set(projector().handlers)
    types = set(current_versions())

    assert types - handled == set(HANDLER_FREE)
    assert handled - types == set()  # a handler for a type that has no schema never runs


# -- the mini validator agrees with jsonschema -------------------------------------------------

def golden_events() -> list[dict]:
    out = []
    for path in GOLDEN:
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


def test_every_golden_event_is_valid_for_both_validators():
    checked = 0
    for e in golden_events():
        schema = load_schema(f"{e['type']}.v{e['v']}")
        assert jsonschema_valid(e["data"], schema), (e["seq"], e["type"])
        assert mini_valid(e["data"], schema), (e["seq"], e["type"])
        checked += 1
    assert checked > 100


def mutations(data: dict, schema: dict) -> list[dict]:
    """Broken copies of valid data: a key dropped, an unknown key added, each value replaced
    by values of other JSON types."""
    out = [{**data, "unexpected_key": 1}]
    for key in data:
        out.append({k: v for k, v in data.items() if k != key})
        for other in (None, True, 7, -1, 2.5, "", "X Y", [], [""], {}, {"a": 1}):
            out.append({**data, key: other})
    return out


def test_validators_agree_on_mutations_of_every_golden_event():
    disagreements = []
    for e in golden_events():
        schema = load_schema(f"{e['type']}.v{e['v']}")
        for data in mutations(e["data"], schema):
            if jsonschema_valid(data, schema) != mini_valid(data, schema):
                disagreements.append((e["type"], data))

    assert disagreements == []


def json_values() -> st.SearchStrategy:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
        max_leaves=6)


def mostly(good: st.SearchStrategy, *bad: st.SearchStrategy) -> st.SearchStrategy:
    """`good` 19 times in 20, else one of `bad` (one_of alone would pick each
    strategy equally often)."""
    return st.integers(0, 19).flatmap(lambda i: st.one_of(bad) if i == 13 else good)


def near(schema: dict, root: dict, depth: int = 0) -> st.SearchStrategy:
    """Data shaped by `schema`: mostly valid, often off by one detail (a missing or unknown
    key, a value too long, out of range or of another type), sometimes anything."""
    return mostly(shaped(schema, root, depth), json_values())


def shaped(schema: dict, root: dict, depth: int) -> st.SearchStrategy:
    if "$ref" in schema:
        return shaped(root["$defs"][schema["$ref"].split("/")[-1]], root, depth)
    if "anyOf" in schema:
        return st.one_of([shaped(s, root, depth) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    types = schema.get("type", [])
    options = []
    for t in [types] if isinstance(types, str) else types:
        if t == "object" and depth < 4:
            props = {k: near(v, root, depth + 1)
                     for k, v in schema.get("properties", {}).items()}
            required = {k: props.pop(k, json_values()) for k in schema.get("required", ())}
            extra = mostly(st.just({}), st.dictionaries(
                st.sampled_from(["zz", "extra"]), json_values(), min_size=1, max_size=1))
            options.append(mostly(
                st.builds(lambda d, x: {**d, **x},
                          st.fixed_dictionaries(required, optional=props), extra),
                st.fixed_dictionaries({}, optional={**required, **props})))
        elif t == "array" and depth < 4:
            options.append(st.lists(near(schema.get("items", {}), root, depth + 1), max_size=3))
        elif t == "string" and "pattern" in schema:
            options.append(mostly(st.from_regex(schema["pattern"]), st.text(max_size=8)))
        elif t == "string":
            low = schema.get("minLength", 0)
            options.append(mostly(
                st.text(min_size=low, max_size=schema.get("maxLength", low + 8)),
                st.text(max_size=schema.get("maxLength", 8) + 2)))
        elif t in ("integer", "number"):
            low, high = schema.get("minimum", -100), schema.get("maximum", 10**6)
            options.append(mostly(st.integers(int(low), int(high)),
                                  st.integers(int(low) - 2, int(high) + 2)))
            if t == "number":
                options.append(st.floats(low - 2, high + 2))
        elif t == "boolean":
            options.append(st.booleans())
        elif t == "null":
            options.append(st.none())
    return st.one_of(options) if options else json_values()  # {}: anything is valid


def has_integral_float(value: object) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, list):
        return any(has_integral_float(v) for v in value)
    if isinstance(value, dict):
        return any(has_integral_float(v) for v in value.values())
    return False


SAMPLED = ["config", "agent.created.v1", "config.edited.v1", "task.created.v1",
           "turn.completed.v1", "turn.started.v1", "provider.added.v1"]


@pytest.mark.parametrize("name", SAMPLED)
def test_validators_agree_on_generated_data(name):
    schema = load_schema(name)
    verdicts = {True: 0, False: 0}

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(near(schema, schema))
    def agree(data):
        valid = jsonschema_valid(data, schema)
        verdicts[valid] += 1
        assert mini_valid(data, schema) == valid, data

    agree()
    assert verdicts[True] >= 3 and verdicts[False] >= 3, verdicts  # both sides were tried


CONFORMANCE = [
    ({"type": "integer"}, 3), ({"type": "integer"}, True), ({"type": "integer"}, 3.5),
    ({"type": "number"}, 3.5), ({"type": "number"}, False), ({"type": ["string", "null"]}, None),
    ({"type": ["string", "null"]}, 0), ({"enum": ["a", None]}, None), ({"enum": ["a"]}, "b"),
    ({"const": "x"}, "x"), ({"const": "x"}, "y"), ({"pattern": "^a+$"}, "aaa"),
    ({"pattern": "b"}, "abc"), ({"pattern": "^a+$"}, "ab"), ({"pattern": "^a$"}, 5),
    ({"minLength": 2}, "é"), ({"maxLength": 1}, "🛠"), ({"minimum": 1}, 0.5),
    ({"maximum": 1}, 1), ({"minItems": 1}, []), ({"minItems": 1}, "not an array"),
    ({"maxItems": 1}, [1]), ({"maxItems": 1}, [1, 2]), ({"maxItems": 1}, "not an array"),
    ({"items": {"type": "string"}}, ["a", 1]), ({"required": ["a"]}, {}),
    ({"required": ["a"]}, []), ({"properties": {"a": {"type": "string"}}}, {"a": 1}),
    ({"additionalProperties": False, "properties": {"a": {}}}, {"a": 1, "b": 2}),
    ({"additionalProperties": {"type": "integer"}}, {"b": "x"}),
    ({"anyOf": [{"type": "string"}, {"minimum": 5}]}, 3),
    ({"anyOf": [{"type": "string"}, {"minimum": 5}]}, 6),
    ({"$defs": {"id": {"pattern": "^x"}}, "items": {"$ref": "#/$defs/id"}}, ["xa", "ya"]),
]


@pytest.mark.parametrize(("schema", "data"), CONFORMANCE)
def test_each_keyword_judges_like_jsonschema(schema, data):
    assert mini_valid(data, schema) == jsonschema_valid(data, schema)


def test_an_integral_float_is_an_integer():
    schema = load_schema("config")
    data = {"agents": {"defaults": {"retries": 2.0}}}

    assert jsonschema_valid(data, schema)
    assert mini_valid(data, schema)


@pytest.mark.parametrize(("schema", "data"), [({"enum": [1, "a"]}, True),
                                              ({"const": 0}, False), ({"enum": [True]}, 1)])
def test_enum_and_const_tell_booleans_from_numbers(schema, data):
    assert not jsonschema_valid(data, schema)
    assert not mini_valid(data, schema)


@pytest.mark.parametrize(("schema", "data"), [({"enum": [[1, "a"]]}, [True, "a"]),
                                              ({"const": {"on": 0}}, {"on": False})])
def test_enum_and_const_tell_booleans_from_numbers_inside_arrays_and_objects(schema, data):
    assert not jsonschema_valid(data, schema)
    assert not mini_valid(data, schema)
