"""Model parameters (temperature, top_p, max_tokens, seed) and model capabilities.

Parameters come in layers, the more specific over the less: a pulled model's recommended
sampling (fased.local.PULLABLE), `agents.defaults.params`, then
`models.params["provider/model"]` (what suits that model), then the agent's own
`agents.list[N].params`, then a turn's own (`fased chat -o KEY VALUE`, recorded in its
turn.queued). Each kind sends them where its API takes them (fased.providers).

Capabilities say what a model can do: a kind-local model (the embedded llama.cpp server)
is not offered tools unless `models.capabilities["ref"].tools` is true.
"""

from __future__ import annotations

import json
import sqlite3

from fased.errors import UsageError

#: name -> (low, high, integer): the bounds every layer is checked against
OPTIONS = {
    "temperature": (0.0, 2.0, False),
    "top_p": (0.0, 1.0, False),
    "max_tokens": (1, 1_000_000, True),
    "seed": (0, 2**31 - 1, True),
}
NO_TOOLS_KINDS = ("local",)


def parse_option(key: str, text: str) -> tuple[str, float | int]:
    """One `-o KEY VALUE`, checked (fased.bounds.parse_number); an unknown key is a usage
    error that lists the known ones."""
    from fased.bounds import parse_number

    name = key.strip().lower().replace("-", "_")
    if name not in OPTIONS:
        raise UsageError(f"unknown model option {key!r}", hint="options: " + ", ".join(OPTIONS))
    low, high, integer = OPTIONS[name]
    value = parse_number(text, low=low, high=high, integer=integer, what=f"option {name}")
    return name, int(value) if integer else float(value) + 0.0  # -0 is 0


def parse_options(pairs: tuple[tuple[str, str], ...]) -> dict:
    """`-o` pairs as a dict (a key given twice: the last wins, as with llm -o)."""
    return dict(parse_option(key, value) for key, value in pairs)


def model_params(con: sqlite3.Connection, agent: str, ref: str, turn: dict | None) -> dict:
    """The parameters a model call of `agent` with `ref` sends (all layers merged)."""
    from fased.config import config_doc

    doc = config_doc(con)
    defaults = (doc.get("agents") or {}).get("defaults") or {}
    row = con.execute("SELECT config FROM agents WHERE id = ?", (agent,)).fetchone()
    own = json.loads(row[0] or "{}") if row else {}
    per_model = ((doc.get("models") or {}).get("params") or {}).get(ref) or {}
    merged = {**_recommended(con, ref), **(defaults.get("params") or {}), **per_model,
              **(own.get("params") or {}), **(turn or {})}
    return {key: _number(key, value) for key, value in merged.items()}


def _number(key: str, value):
    """A layer's value as it is sent: -0.0 is 0.0, and a whole-number option is an int
    (an older fased kept `max_tokens: 3500.0` as written)."""
    if not isinstance(value, float):
        return value
    if OPTIONS.get(key, (0, 0, False))[2] and value.is_integer():
        return int(value)
    return value + 0.0


def _provider(con: sqlite3.Connection, provider: str) -> tuple[str, str | None] | None:
    """(kind, model_path) of a registered provider, None when there is none."""
    row = con.execute("SELECT kind, model_path FROM providers WHERE id = ? AND removed = 0",
                      (provider,)).fetchone()
    return None if row is None else (row[0], row[1])


def _is_local(con: sqlite3.Connection, ref: str) -> bool:
    found = _provider(con, ref.split("/", 1)[0])
    return found is not None and found[0] == "local"


def _recommended(con: sqlite3.Connection, ref: str) -> dict:
    """A pulled model's recommended sampling (SmolLM2: temperature 0.2, top_p 0.9; a tiny
    model rambles at llama.cpp's default 0.8), below every configured layer."""
    row = _provider(con, ref.split("/", 1)[0])
    if row is None or row[0] != "local" or not row[1]:
        return {}
    from fased.local import recommended_params

    return recommended_params(row[1])


LOCAL_REPLY = 256  # tokens kind local answers in unless max_tokens says otherwise


def reply_room(con: sqlite3.Connection, agent: str, ref: str | None, turn: dict | None,
               unknown: int) -> int:
    """The tokens a model call's reply may take, which its history must leave free: the
    call's max_tokens (every layer merged), else kind local's own cap, else `unknown`."""
    if not ref:
        return unknown
    given = model_params(con, agent, ref, turn).get("max_tokens")
    if isinstance(given, int) and given > 0:
        return given
    return LOCAL_REPLY if _is_local(con, ref) else unknown


def model_window(con: sqlite3.Connection, ref: str | None) -> int | None:
    """The context a model holds, where fased knows it better than the configured window:
    kind local's server runs with context_size() tokens. None: the configured one stands."""
    if not ref or not _is_local(con, ref):
        return None
    from fased.local import context_size

    try:
        return context_size()
    except UsageError:  # a bad FASED_LOCAL_CTX: the model call says so, as the turn's error
        return None


def model_tools(con: sqlite3.Connection, ref: str) -> bool:
    """Whether a model is offered tools: `models.capabilities[ref].tools` when set, else
    every kind but local (a tiny embedded model cannot use them)."""
    from fased.config import config_doc

    configured = (((config_doc(con).get("models") or {}).get("capabilities") or {})
                  .get(ref) or {}).get("tools")
    if configured is not None:
        return bool(configured)
    provider = ref.split("/", 1)[0] if "/" in ref else None
    if provider is None:
        from fased.models import parse_model_ref

        try:
            provider = parse_model_ref(con, ref).provider
        except UsageError:
            return True
    row = _provider(con, provider)
    return row is None or row[0] not in NO_TOOLS_KINDS
