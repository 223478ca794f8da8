"""`fased config ...`: read and change fased.json through the log."""

from __future__ import annotations

import click

from fased.bounds import clip_line
from fased.commands.main import FasedGroup
from fased.commands.output import echo_json, note, say, store
from fased.commands.types import LinePath
from fased.errors import FasedError, NotFoundError, UsageError


@click.group(cls=FasedGroup)
def config() -> None:
    """Read and change fased.json (every change is an event).

    Paths are dotted, with [N] for list items and ["KEY"] for a key with dots in it (a
    model ref: models.capabilities["openai/gpt-4.1"].tools). Values are parsed as JSON when they
    parse, else taken as a string. Hand edits of the file are fine too: they are recorded
    on the next command, and an invalid edit is refused with the line and key named.

    \b
    Examples:
      fased config get agents.defaults.workspace
      fased config set agents.defaults.workspace ~/agents
      fased config set agents.defaults.blockStreamingChunk '{"minChars": 600, "maxChars": 900}'
      fased config set agents.list[0].workspace /srv/main
      fased config set 'models.capabilities["local/my-model"].tools' true
      fased config unset agents.defaults.skipBootstrap
      fased config validate
      $EDITOR "$(fased config path)"
    """


@config.command("path")
def path_() -> None:
    """Print where fased.json is."""
    from fased.config import config_path
    from fased.home import resolve_home

    app = click.get_current_context().find_root().obj
    say(str(config_path(resolve_home(app.home_option))))


@config.command("get")
@click.argument("path", required=False)
@click.option("json_", "--json", is_flag=True, help="Print strings as JSON too.")
def get(path: str | None, json_: bool) -> None:
    """Print the value at PATH (the whole file without one)."""
    from fased.config import get_path, parse_path, render

    doc = render(store().db())
    if path is None:
        echo_json(doc)
        return
    try:
        value = get_path(doc, parse_path(path))
    except KeyError:
        raise NotFoundError(f"{path} is not set") from None
    if isinstance(value, str) and not json_:
        click.echo(value, color=True)  # data: byte-exact, ANSI codes included
    else:
        echo_json(value)


@config.command("set")
@click.argument("path")
@click.argument("value")
def set_(path: str, value: str) -> None:
    """Set PATH to VALUE.

    The whole resulting fased.json is checked as a hand edit is. A model ref it brings
    (an agent's model, an alias, a key of models.params) is one line of printable text; of a
    registered provider, it must name a model that provider serves. A provider not
    registered yet is kept, with a note.

    \b
    Examples:
      fased config set agents.defaults.model.primary ollama/llama3.2
      fased config set 'models.params["local/smollm2-135m"]' '{"temperature": 0}'
    """
    from fased.store import Draft

    parsed_value = _coerce(path, value)

    unregistered: set[str] = set()

    def decide(con):
        unregistered.clear()
        change = _change(con, "set", path, parsed_value, unregistered)
        if change is None:
            return []
        return [Draft("config.set", "config", change)]

    outcome = store().transact(decide)
    shown = clip_line(path, 200)
    say(f"Set {shown}." if outcome.events else f"{shown} already has that value.")
    for provider in sorted(unregistered) if outcome.events else ():
        note(f"fased: no provider {provider} is registered yet: a turn that uses it fails until "
             f"`fased agent models providers add {provider}`")


@config.command("unset")
@click.argument("path")
def unset(path: str) -> None:
    """Remove PATH."""
    from fased.store import Draft

    def decide(con):
        change = _change(con, "unset", path, None)
        if change is None:
            return []
        change.pop("value", None)
        return [Draft("config.unset", "config", change)]

    outcome = store().transact(decide)
    shown = clip_line(path, 200)
    say(f"Unset {shown}." if outcome.events else f"{shown} was not set.")


@config.command("validate")
@click.argument("file", required=False, type=LinePath(dir_okay=False))
def validate(file: str | None) -> None:
    """Check fased.json (or FILE) against the schema; exit 1 naming the line if invalid.

    FILE must be a regular file of at most 1 MiB, like fased.json itself."""
    from pathlib import Path

    from fased.config import config_path, parse_file, read_config

    target = Path(file) if file else config_path(store().home)
    try:
        data = read_config(target)
    except FasedError as exc:
        raise FasedError(exc.message, exc.hint) from None
    if data is None:
        raise NotFoundError(f"{target} does not exist", hint="`fased setup` creates it")
    try:
        parse_file(data)
    except UsageError as exc:
        raise NotFoundError(exc.message.replace("fased.json", str(target), 1), exc.hint) from None
    say(f"{target} is valid.")


def _coerce(path: str, text: str) -> object:
    from fased.config import parse_path, parse_value

    parts = parse_path(path)
    value = parse_value(text)
    # a blank workspace stays blank, so the schema refuses it (it would become the cwd)
    if parts[-1] == "workspace" and isinstance(value, str) and value.strip():
        from pathlib import Path

        value = str(Path(value).expanduser().absolute())
    return value


def _change(con, op: str, path: str, value: object,
            unregistered: set[str] | None = None) -> dict | None:
    """The change `op` makes, validated against the whole document; None if it changes
    nothing. The providers its new refs name that are not registered go in `unregistered`."""
    import copy
    import json

    from fased.bounds import CONFIG_FILE_BYTES, format_bytes
    from fased.config import (
        check_settable,
        dump,
        format_path,
        get_path,
        parse_path,
        render,
        set_path,
        unset_path,
        validate,
    )

    parts = parse_path(path)
    if op == "set":  # 3500.0 where a whole number goes is 3500 (schema.whole_numbers)
        from fased.schema import load_schema, schema_at, whole_numbers

        root = load_schema("config")
        value = whole_numbers(value, schema_at(root, root, parts), root)
    if parts == ["agents"]:  # its list is the agents themselves, which config cannot change
        raise UsageError(f"agents cannot be {op} as a whole: agents.list holds the agents",
                         hint=f"{op} agents.defaults (or one key of it, or agents.list[N]."
                         "FIELD); agents come and go with `fased agent create|delete`")
    doc = render(con)
    try:
        old = get_path(doc, parts)
        had = True
    except KeyError:
        old, had = None, False
    # the same value is the same JSON: 3500 over an older fased's 3500.0 is a change
    same = had and json.dumps(old, sort_keys=True) == json.dumps(value, sort_keys=True)
    if (op == "set" and same) or (op == "unset" and not had):
        return None
    change: dict = {"path": format_path(parts), "value": value}
    if had:
        change["old"] = old
    if parts[:2] == ["agents", "list"]:
        change["agent"] = _agent_at(doc, parts, op)
    new = copy.deepcopy(doc)
    if op == "set":
        check_settable(doc, parts)
        set_path(new, parts, value)
    else:
        unset_path(new, parts)
    hint = "nothing was changed; `man fased-config` lists the keys"
    validate(new, hint=hint)  # as a hand edit of the file would be
    unknown = _check_new_refs(con, doc, new)
    if unregistered is not None:
        unregistered.update(unknown)
    if op == "set" and len(dump(new)) > CONFIG_FILE_BYTES:
        raise UsageError(f"fased.json would be larger than {format_bytes(CONFIG_FILE_BYTES)}, "
                         "the limit", hint=hint)
    return change


def _check_new_refs(con, old: dict, new: dict) -> set[str]:
    """The model refs a change brings, of a registered provider, name a model it serves, as
    `fased agent models set` checks them. A ref of a provider not registered yet is kept, as
    a hand edit of the file would be: it is checked when a turn uses it. Returns the
    providers not registered."""
    from fased.config import model_refs
    from fased.models import PROVIDER_ID, parse_model_ref, providers

    before = set(model_refs(old))
    registered = {row["id"] for row in providers(con)}
    unknown: set[str] = set()
    for where, ref, keyed in model_refs(new):
        if (where, ref, keyed) in before:
            continue
        provider = ref.strip().partition("/")[0] if "/" in ref else None
        if provider is not None and not PROVIDER_ID.match(provider):
            raise UsageError(f"{where}: {ref!r} names {provider!r}, which is not a provider "
                             "id", hint="a ref is provider/model, and provider ids are "
                             "lower-case letters, digits, - and _ (`fased agent models "
                             "providers list`)")
        if provider and provider not in registered:
            unknown.add(provider)
            continue
        try:
            parsed = parse_model_ref(con, ref)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc.message}", hint=exc.hint) from None
        if keyed and str(parsed) != ref:
            raise UsageError(f"{where}: {ref!r} is not a provider/model ref",
                             hint=f"write it as {parsed}")
    return unknown


def _agent_at(doc: dict, parts: list, op: str) -> str:
    agents = doc.get("agents", {}).get("list", [])
    if len(parts) < 4 or not isinstance(parts[2], int):
        raise UsageError("change agents one field at a time: agents.list[N].FIELD",
                         hint="create and delete agents with `fased agent create|delete`")
    if parts[2] >= len(agents):
        raise UsageError(f"agents.list[{parts[2]}] does not exist ({len(agents)} agents)")
    if parts[3] == "id":
        raise UsageError("an agent's id cannot be changed")
    if op == "unset" and parts[3] == "name":
        raise UsageError("an agent's name cannot be unset")
    return agents[parts[2]]["id"]
