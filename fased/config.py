"""`fased.json`: a projection of the log that users may also edit by hand.

The file is rendered from state (the config document plus `agents.list[]` from the agents);
`fased config set` and hand edits both become events whose changes are dotted paths.
A hand edit is found on the next command by the file's hash, validated against
`schemas/config.json`, diffed against the rendered document and recorded as `config.edited`.
"""

from __future__ import annotations

import copy
import json
import math
import re
import sqlite3
import zlib
from pathlib import Path

from fased.bounds import (
    CONFIG_DEPTH,
    CONFIG_FILE_BYTES,
    CONFIG_STRING_CHARS,
    MIB,
    TooLargeError,
    format_bytes,
    read_bounded,
)
from fased.errors import UsageError
from fased.schema import first_error, join_key, load_schema, whole_numbers

CONFIG_NAME = "fased.json"
# a key, a list index [N], or a quoted key ["a.b/c"] for a key with dots or brackets in it
_SEGMENT = re.compile(r"""([^.\[\]"']+)|\[([0-9]+)\]|\["((?:[^"\\]|\\.)*)"\]|\['([^']*)'\]""")


def parse_path(path: str) -> list[str | int]:
    """`agents.list[0].workspace` -> ['agents', 'list', 0, 'workspace']."""
    text = path.strip()
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "." and parts:
            pos += 1
        match = _SEGMENT.match(text, pos)
        if not match:
            raise UsageError(
                f"invalid config path {path!r}",
                hint="use dotted keys and [N] for list items: agents.list[0].workspace")
        plain, index, quoted, single = match.groups()
        if quoted is not None:
            try:
                plain = json.loads(f'"{quoted}"')
            except ValueError:
                raise UsageError(f"invalid config path {path!r}: bad quoted key") from None
        elif single is not None:
            plain = single
        parts.append(plain if plain is not None else int(index))
        pos = match.end()
    if not parts or not isinstance(parts[0], str):
        raise UsageError(f"invalid config path {path!r}")
    from fased.bounds import has_control

    if any(isinstance(part, str) and has_control(part) for part in parts):
        raise UsageError(f"invalid config path {path!r}: a key holds a control character",
                         hint="the keys of fased.json are one line of printable text")
    return parts


def format_path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else join_key(out, part)
    return out


def parse_value(text: str) -> object:
    """A value from the command line: JSON when it parses, else the string itself."""
    try:
        return json.loads(text)
    except RecursionError:
        raise UsageError(f"the value nests deeper than {CONFIG_DEPTH} levels") from None
    except ValueError:
        return text


def check_settable(doc: dict, parts: list[str | int]) -> None:
    """Refuse a path set_path cannot follow: a key into a list, an index into an object, or
    an index past the end of its list (set_path would pad it with nulls)."""
    node: object = doc
    for i, part in enumerate(parts):
        here = format_path(parts[:i]) or "the top level"
        if isinstance(node, list) and not isinstance(part, int):
            raise UsageError(f"{here} is a list", hint=f"use {here}[N]")
        if isinstance(node, dict) and isinstance(part, int):
            raise UsageError(f"{here} is an object", hint=f"use {here}.KEY")
        if isinstance(node, list) and part > len(node):
            raise UsageError(f"{format_path(parts[:i + 1])}: the list has {len(node)} items",
                             hint=f"use [{len(node)}] to add one at the end")
        found = part in node if isinstance(node, dict) else (
            isinstance(node, list) and part < len(node))
        if not found:  # set_path creates (or replaces) everything from here on
            for j, new in enumerate(parts[i + 1:], i + 1):
                if isinstance(new, int) and new != 0:
                    raise UsageError(f"{format_path(parts[:j + 1])}: the list is new",
                                     hint=f"use {format_path(parts[:j])}[0]")
            return
        node = node[part]


def get_path(doc: object, parts: list[str | int]) -> object:
    """The value at `parts`; KeyError when any step is missing."""
    node = doc
    for part in parts:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise KeyError(part)
            node = node[part]
        else:
            if not isinstance(node, dict) or part not in node:
                raise KeyError(part)
            node = node[part]
    return node


def set_path(doc: dict, parts: list[str | int], value: object) -> None:
    node: object = doc
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(part, int):
            node = node[part]
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value


def unset_path(doc: dict, parts: list[str | int]) -> None:
    try:
        parent = get_path(doc, parts[:-1]) if len(parts) > 1 else doc
        del parent[parts[-1]]
    except (KeyError, IndexError, TypeError):
        pass
    # drop containers the unset left empty, so `set` then `unset` leaves no trace
    for depth in range(len(parts) - 1, 0, -1):
        try:
            node = get_path(doc, parts[:depth])
        except KeyError:
            continue
        if node in ({}, []):
            unset_path(doc, parts[:depth])
        break


# -- rendering --------------------------------------------------------------------------------

def config_doc(con: sqlite3.Connection) -> dict:
    """The stored config document (everything but agents.list)."""
    row = con.execute("SELECT doc FROM config WHERE id = 1").fetchone()
    return json.loads(row[0]) if row else {}


def render(con: sqlite3.Connection) -> dict:
    """fased.json as state says it should be."""
    doc = copy.deepcopy(config_doc(con))
    selected = con.execute("SELECT value FROM kv WHERE key = 'selected_agent'").fetchone()
    agents = []
    for row in con.execute("SELECT * FROM agents WHERE deleted = 0 ORDER BY position"):
        item: dict = {"id": row["id"], "name": row["name"]}
        if selected and selected[0] == row["id"]:
            item["default"] = True
        if row["workspace"]:
            item["workspace"] = row["workspace"]
        if row["emoji"]:
            item["identity"] = {"emoji": row["emoji"]}
        model = {}
        if row["primary_model"]:
            model["primary"] = row["primary_model"]
        fallbacks = json.loads(row["fallbacks"] or "[]")
        if fallbacks:
            model["fallbacks"] = fallbacks
        if row["task_model"]:
            model["task"] = row["task_model"]
        if model:
            item["model"] = model
        extra = json.loads(row["config"] or "{}")
        item.update(extra)
        agents.append(item)
    if agents:
        doc.setdefault("agents", {})["list"] = agents
    return doc


def agent_entry(con: sqlite3.Connection, agent_id: str) -> tuple[dict, int, dict]:
    """(the rendered fased.json, the agent's index in agents.list, the agent's own settings):
    what `fased agent tools|skills allow|deny|reset` change."""
    doc = render(con)
    agents = doc.get("agents", {}).get("list", [])
    index = next((i for i, a in enumerate(agents) if a["id"] == agent_id), None)
    if index is None:
        raise UsageError(f"no agent {agent_id!r}")
    row = con.execute("SELECT config FROM agents WHERE id = ?", (agent_id,)).fetchone()
    return doc, index, json.loads(row[0] or "{}")


def dump(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def sha256(data: bytes) -> str:
    """The digest recorded with a hand edit (hashlib loads only then)."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def fingerprint(data: bytes) -> str:
    """Cheap change detection for fased.json on every command: CRC-32 and length."""
    return f"{zlib.crc32(data):08x}:{len(data)}"


# -- validating -------------------------------------------------------------------------------

def validate(doc: object, text: str | None = None,
             hint: str | None = "fix the file (nothing was recorded); "
             "`fased config validate` checks it") -> None:
    """Raise UsageError naming the key (and the line, given the file's text)."""
    schema = load_schema("config")
    problem = limit_error(doc) or first_error(doc, schema, schema, "fased.json")
    if problem is None:
        _check_model_refs(doc)
        _check_one_line(doc)
        _check_user_timezones(doc)
        _check_agent_ids(doc)
        _check_bindings(doc, hint)
        _check_heartbeats(doc)
        _check_urls(doc)
        _check_hook_secrets(doc)
        if isinstance(doc.get("skills"), dict):  # config set and hand edits alike
            from fased.skills.secrets import refuse_secret_env

            refuse_secret_env("skills", doc["skills"])
        return
    where, _, reason = problem.partition(": ")
    line = _line_of(text, where) if text else None
    at = f" line {line}" if line else ""
    key = where.removeprefix("fased.json").lstrip(".") or "(top level)"
    raise UsageError(f"fased.json{at}: {key}: {reason}", hint=hint)


def limit_error(doc: object) -> str | None:
    """The first value past the limits of fased.json (nesting depth, string length, numbers
    that are not finite or beyond 2**63), as `path: reason`; walked without recursion, so
    the schema check and the diff that follow recurse at most CONFIG_DEPTH deep."""
    stack: list[tuple[object, str, int]] = [(doc, "fased.json", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > CONFIG_DEPTH:
                return f"{path}: nested deeper than {CONFIG_DEPTH} levels, the limit"
            if isinstance(value, dict):
                for key, item in value.items():
                    if len(key) > CONFIG_STRING_CHARS:
                        return f"{path}: a key is longer than {CONFIG_STRING_CHARS:,} characters"
                    stack.append((item, join_key(path, key), depth + 1))
            else:
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str) and len(value) > CONFIG_STRING_CHARS:
            return f"{path}: longer than {CONFIG_STRING_CHARS:,} characters, the limit"
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{path}: {value} is not a finite number"
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
            return f"{path}: the number is out of range"
    return None


#: the maps of fased.json keyed by a model ref, which a model call looks up by its
#: provider/model: a key of another form is never used
REF_KEYED = ("prices", "params", "capabilities")


def model_refs(doc: dict) -> list[tuple[str, str, bool]]:
    """(where, ref, keyed) for every model ref in fased.json: the agents' models (primary,
    fallbacks, task), the aliases' targets, and the keys of models.prices, .params and
    .capabilities (keyed: it must be a whole provider/model)."""
    found: list[tuple[str, str, bool]] = []
    agents = doc.get("agents") or {}
    places = [("agents.defaults.model", (agents.get("defaults") or {}).get("model"))]
    places += [(f"agents.list[{i}].model", a.get("model"))
               for i, a in enumerate(agents.get("list") or []) if isinstance(a, dict)]
    for where, model in places:
        if isinstance(model, str):
            found.append((where, model, False))
        elif isinstance(model, dict):
            for key in ("primary", "task"):
                if isinstance(model.get(key), str):
                    found.append((f"{where}.{key}", model[key], False))
            for j, ref in enumerate(model.get("fallbacks") or []):
                if isinstance(ref, str):
                    found.append((f"{where}.fallbacks[{j}]", ref, False))
    models = doc.get("models") or {}
    for name, ref in (models.get("aliases") or {}).items():
        if isinstance(ref, str):
            found.append((f"models.aliases.{name}", ref, False))
    for table in REF_KEYED:
        found += [(f"models.{table}", key, True) for key in (models.get(table) or {})]
    return found


def _check_model_refs(doc: dict) -> None:
    """Every model ref fased.json holds is one line of printable text (it is printed in
    tables and messages); a key of models.params and the like is a provider/model."""
    from fased.models import check_ref_text

    for name in ((doc.get("models") or {}).get("aliases") or {}):
        try:
            check_ref_text(name, "alias")  # a name of a ref, printed like one
        except UsageError as exc:
            raise UsageError(f"fased.json: models.aliases: {exc.message}",
                             hint="an alias is a name of one line of printable text") from None
    for where, ref, keyed in model_refs(doc):
        try:
            text = check_ref_text(ref)
        except UsageError as exc:
            raise UsageError(f"fased.json: {where}: {exc.message}", hint=exc.hint) from None
        if keyed and (text != ref or "/" not in text.strip("/")):
            raise UsageError(f"fased.json: {where}: {ref!r} is not a provider/model ref",
                             hint="its keys are whole refs, as `fased agent models list` "
                             "shows them (ollama/llama3.2)")


#: the values of fased.json that are text of several lines: a system prompt, a hook's
#: script. Every other string (names, paths, tool names, chat ids, zones) and every key is
#: one line of printable text: fased prints them in tables, `show` and messages
MULTILINE_KEYS = frozenset({"systemPrompt", "run"})


def _check_one_line(doc: dict) -> None:
    """Every key and every string of fased.json is one line of printable text, but those
    of MULTILINE_KEYS and a skill's own settings (skills.entries.NAME: its env values and
    config are the skill's to read; their keys are still one line)."""
    from fased.bounds import has_control

    stack: list[tuple[object, str, bool]] = [(doc, "", False)]
    while stack:
        value, where, free = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                here = join_key(where, key)
                if has_control(str(key)):
                    raise UsageError(f"fased.json: {where or 'the top level'}: the key "
                                     f"{key!r} holds a control character",
                                     hint="keys are one line of printable text")
                in_skill = where.startswith("skills.entries.") and where.count(".") >= 2
                stack.append((item, here, free or key in MULTILINE_KEYS or in_skill))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]", free) for i, item in enumerate(value))
        elif isinstance(value, str) and where.endswith("workspace") and value.strip() \
                and not value.startswith(("/", "~")):
            # a hand-edited relative one would be found from wherever each command runs
            raise UsageError(f"fased.json: {where}: the workspace {value!r} is not an "
                             "absolute path", hint="write it from / or ~ (`fased config set` "
                             "makes a relative one absolute)")
        elif isinstance(value, str) and not free and has_control(value):
            what = "the path" if where.rsplit(".", 1)[-1].split("[")[0] in PATH_KEYS else \
                "the value"
            raise UsageError(f"fased.json: {where}: {what} {value!r} holds a control "
                             "character", hint="a value of fased.json is one line of "
                             "printable text (only systemPrompt and a hook's run take several)")


#: keys of fased.json whose values (a string, or a list of them) are paths
PATH_KEYS = frozenset({"workspace", "workspaceRoot", "roots", "extraDirs"})


def _check_user_timezones(doc: dict) -> None:
    """userTimezone (the zone the agent is told) is a zone that exists, as a heartbeat's."""
    from fased.timeparse import zone_info

    agents = doc.get("agents") or {}
    places = [("agents.defaults", agents.get("defaults") or {})]
    places += [(f"agents.list[{i}]", a) for i, a in enumerate(agents.get("list") or [])
               if isinstance(a, dict)]
    for where, settings in places:
        zone = settings.get("userTimezone")
        if isinstance(zone, str) and zone:
            try:
                zone_info(zone)
            except UsageError as exc:
                raise UsageError(f"fased.json: {where}.userTimezone: {exc.message}",
                                 hint=exc.hint) from None


def _check_heartbeats(doc: dict) -> None:
    """What the schema cannot say of a heartbeat: a duration fased takes (zero is off) and
    a time zone that exists."""
    from fased.timeparse import parse_duration, zone_info

    agents = doc.get("agents", {})
    places = [("agents.defaults.heartbeat", agents.get("defaults", {}).get("heartbeat"))]
    places += [(f"agents.list[{i}].heartbeat", a.get("heartbeat"))
               for i, a in enumerate(agents.get("list", []))]
    for where, beat in places:
        if not beat:
            continue
        try:
            every = beat.get("every")
            zero = every is not None and all(
                float(n) == 0 for n in re.findall(r"[0-9]+(?:\.[0-9]+)?", every))
            if every is not None and not zero:
                parse_duration(every)
            zone_info((beat.get("activeHours") or {}).get("timezone"))
        except UsageError as exc:
            raise UsageError(f"fased.json: {where}: {exc.message}") from None


def _check_urls(doc: dict) -> None:
    """The URLs fased.json holds (the Bot API base): URLs, and without credentials, which
    the log would hold (config.set records the value)."""
    from fased.bounds import parse_plain_url

    base = ((doc.get("channels") or {}).get("telegram") or {}).get("apiBase")
    if base is not None:
        parse_plain_url(base, "channels.telegram.apiBase")


def _check_hook_secrets(doc: dict) -> None:
    """A hook's command runs without credentials in its environment: one that holds a key
    itself (fased.redact.literal_secret) would keep it in the log, and is refused."""
    from fased.redact import literal_secret

    agents = doc.get("agents") or {}
    places = [("hooks", doc.get("hooks")),
              ("agents.defaults.hooks", (agents.get("defaults") or {}).get("hooks"))]
    places += [(f"agents.list[{i}].hooks", a.get("hooks"))
               for i, a in enumerate(agents.get("list") or []) if isinstance(a, dict)]
    for where, hooks in places:
        for j, hook in enumerate(hooks if isinstance(hooks, list) else []):
            run = hook.get("run") if isinstance(hook, dict) else None
            why = literal_secret(run) if isinstance(run, str) else None
            if why:
                raise UsageError(f"fased.json: {where}[{j}].run holds {why}: the log would "
                                 "keep it", hint="let the command read it when it runs, from "
                                 "a file only you can read ($(cat ~/.hook-token)); nothing "
                                 "was changed")


def _check_agent_ids(doc: dict) -> None:
    ids = [a.get("id") for a in doc.get("agents", {}).get("list", [])]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise UsageError(f"fased.json: agents.list: agent id {dupes[0]!r} appears twice")
    from fased.hooks.spec import check_names

    problem = check_names(doc)
    if problem:
        raise UsageError(f"fased.json: hooks: {problem}")


def _check_bindings(doc: dict, hint: str | None) -> None:
    """Every binding names an agent that exists, and no two bindings match the same."""
    ids = {a.get("id") for a in doc.get("agents", {}).get("list", [])}
    seen: dict[str, int] = {}
    for i, binding in enumerate(doc.get("bindings", [])):
        if binding["agent"] not in ids:
            raise UsageError(f"fased.json: bindings[{i}].agent: no agent {binding['agent']!r}",
                             hint=hint)
        match = json.dumps(match_key(binding["match"]), sort_keys=True)
        if match in seen:
            raise UsageError(f"fased.json: bindings[{i}].match: the same as bindings"
                             f"[{seen[match]}].match", hint=hint)
        seen[match] = i


def match_key(match: dict) -> dict:
    """A binding's match with peer ids as text (123 and "123" are the same chat)."""
    peer = match.get("peer")
    return {**match, "peer": {**peer, "id": str(peer["id"])}} if peer else match


def parse_file(data: bytes) -> dict:
    """Parse fased.json bytes; an error names the line and column."""
    if len(data) > CONFIG_FILE_BYTES:
        raise TooLargeError(f"fased.json is larger than {format_bytes(CONFIG_FILE_BYTES)}, "
                            "the limit", hint="fix the file (nothing was recorded)")
    try:
        text = data.decode("utf-8")
        doc = json.loads(text)
    except UnicodeDecodeError:
        raise UsageError("fased.json is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"fased.json line {exc.lineno} column {exc.colno}: {exc.msg}",
                         hint="fix the JSON (nothing was recorded)") from None
    except RecursionError:
        raise UsageError(f"fased.json: nested deeper than {CONFIG_DEPTH} levels, the limit",
                         hint="fix the file (nothing was recorded)") from None
    except ValueError as exc:  # an integer with more than 4300 digits
        raise UsageError(f"fased.json: {exc}", hint="fix the file (nothing was recorded)") from None
    if not isinstance(doc, dict):
        raise UsageError("fased.json line 1: the top level must be an object",
                         hint="fix the file (nothing was recorded)")
    validate(doc, text)
    schema = load_schema("config")
    return whole_numbers(doc, schema, schema)


def _line_of(text: str, where: str) -> int | None:
    """The 1-based line of a `fased.json.a.b[0].c` path in the file's text."""
    try:
        from ruamel.yaml import YAML
    except ImportError:  # pragma: no cover - a dependency, but the error must still print
        return None
    try:
        node = YAML(typ="rt").load(text)
    except Exception:
        return None
    inner = where.removeprefix("fased.json").lstrip(".")
    try:
        parts = parse_path(inner) if inner else []
    except UsageError:  # a key holding '.' or '[' has no dotted path
        return None
    line = 0
    for part in parts:
        try:
            if isinstance(part, int):
                line = node.lc.item(part)[0]
            elif part in node:
                line = node.lc.key(part)[0]
            else:
                break
            node = node[part]
        except (AttributeError, KeyError, IndexError, TypeError):
            break
    return line + 1


# -- diffing ----------------------------------------------------------------------------------

def diff(old: dict, new: dict) -> list[dict]:
    """The changes from `old` to `new` as set/unset of leaf paths; agents.list is matched by id.

    Raises UsageError for edits the file cannot express (adding, removing or renaming agents).
    """
    changes: list[dict] = []
    old_rest = {k: v for k, v in old.items() if k != "agents"}
    new_rest = {k: v for k, v in new.items() if k != "agents"}
    _diff_dict(old_rest, new_rest, [], changes)
    old_agents = {k: v for k, v in old.get("agents", {}).items() if k != "list"}
    new_agents = {k: v for k, v in new.get("agents", {}).items() if k != "list"}
    _diff_dict(old_agents, new_agents, ["agents"], changes)
    _diff_agents(old.get("agents", {}).get("list", []), new.get("agents", {}).get("list", []),
                 changes)
    return changes


def _diff_dict(old: dict, new: dict, prefix: list, changes: list[dict]) -> None:
    for key in old.keys() | new.keys():
        path = [*prefix, key]
        if key not in new:
            changes.append({"op": "unset", "path": format_path(path), "old": old[key]})
        elif key not in old:
            changes.append({"op": "set", "path": format_path(path), "value": new[key]})
        elif isinstance(old[key], dict) and isinstance(new[key], dict):
            _diff_dict(old[key], new[key], path, changes)
        elif old[key] != new[key]:
            changes.append({"op": "set", "path": format_path(path), "value": new[key],
                            "old": old[key]})
    changes.sort(key=lambda c: c["path"])


def _diff_agents(old: list[dict], new: list[dict], changes: list[dict]) -> None:
    old_by_id = {a["id"]: a for a in old}
    new_ids = [a["id"] for a in new]
    for agent_id in new_ids:
        if agent_id not in old_by_id:
            raise UsageError(f"fased.json: agents.list: agent {agent_id!r} is not an agent",
                             hint=f"create agents with `fased agent create {agent_id}`")
    for agent_id in old_by_id:
        if agent_id not in new_ids:
            raise UsageError(f"fased.json: agents.list: agent {agent_id!r} was removed",
                             hint=f"delete agents with `fased agent delete {agent_id}`")
    for index, item in enumerate(new):
        before = old_by_id[item["id"]]
        found: list[dict] = []
        _diff_dict(before, item, ["agents", "list", index], found)
        for change in found:
            change["agent"] = item["id"]
            if change["path"].endswith(".id"):
                raise UsageError("fased.json: agents.list[].id cannot be changed by hand")
        changes.extend(found)


def config_path(home: Path) -> Path:
    return home / CONFIG_NAME


def read_config(path: Path, limit: int | None = None) -> bytes | None:
    """fased.json's bytes, or None when there is none. StateError when it is a directory,
    FIFO or device; TooLargeError past `limit` (CONFIG_FILE_BYTES), having read only
    limit+1 bytes."""
    try:
        return read_bounded(path, CONFIG_FILE_BYTES if limit is None else limit, str(path))
    except FileNotFoundError:
        return None


def file_fingerprint(path: Path, size_hint: str | None = None) -> str | None:
    """fingerprint() of a file of any size, read in chunks; None when its size differs from
    the one in `size_hint` (a fingerprint), which settles it without reading."""
    try:
        size = path.stat().st_size
        if size_hint is not None and not size_hint.endswith(f":{size}"):
            return None
        crc = 0
        with open(path, "rb") as f:
            while chunk := f.read(MIB):
                crc = zlib.crc32(chunk, crc)
    except OSError:
        return None
    return f"{crc:08x}:{size}"
