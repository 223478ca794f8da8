"""Finding local model servers (Ollama, LM Studio, vLLM, LiteLLM) and giving an agent its
first model: what `fased setup` and `fased agent models providers detect` do.

Every endpoint looked at is reported, whatever it answered: a model server (registered, its
models recorded in the server's own order), one that wants a key (registered, with the auth
command to run: current LiteLLM will not start without a master key and answers an
unauthenticated model list with 401, some versions 500), something else on the port (not
registered), or nothing. The primary model is one the server reports as loaded (Ollama's
/api/ps, LM Studio's /api/v0/models), else the first model the first server lists, and the
report says which and why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from fased.errors import FasedError
from fased.models import (
    DEFAULT_URLS,
    join_url_credentials,
    make_client,
    provider_draft,
    split_url_credentials,
    store_provider_secrets,
)
from fased.redact import mask_url
from fased.store import Draft, Store

DETECT_KINDS = ("ollama", "lmstudio", "vllm", "litellm")
NAMES = {"ollama": "Ollama", "lmstudio": "LM Studio", "vllm": "vLLM", "litellm": "LiteLLM"}
# What servers put in an answer to a request without a key (LiteLLM: "Authentication Error,
# No api key passed in.", type auth_error, sometimes with status 500).
_AUTH_MARKERS = ("auth", "api key", "api_key", "apikey", "unauthorized", "not authenticated",
                 "master key", "bearer")


@dataclass
class Sighting:
    """What one endpoint answered.

    state: found (a model server, registered now), known (a provider of that id was already
    registered), needs_key (it refused to list models without a key; registered now),
    other (something answered, but not as a model server of that kind), nothing.
    """

    kind: str
    url: str
    state: str = "nothing"
    models: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "url": mask_url(self.url), "state": self.state,
                "models": self.models, "loaded": self.loaded, "error": self.error}


@dataclass
class Detection:
    """The report: every endpoint looked at, the lines for people, the primary chosen."""

    sightings: list[Sighting]
    seen: list[str]  # a line for each endpoint that answered, one for those that did not
    primary: dict | None = None  # {"agent", "ref", "why", "line"} when one was set

    @property
    def lines(self) -> list[str]:
        return self.seen + ([self.primary["line"]] if self.primary else [])

    @property
    def registered(self) -> list[str]:
        return [s.kind for s in self.sightings if s.state in ("found", "needs_key")]

    def to_dict(self) -> dict:
        new = [s for s in self.sightings if s.state in ("found", "needs_key")]
        return {"found": _lines(new) + ([self.primary["line"]] if self.primary else []),
                "looked_at": [s.to_dict() for s in self.sightings],
                "primary": self.primary}


def detect_endpoints() -> list[tuple[str, str]]:
    """Where to look for local servers: the defaults, or FASED_DETECT_ENDPOINTS
    (`kind=url,kind=url`) for servers on other ports."""
    override = os.environ.get("FASED_DETECT_ENDPOINTS")
    if override is not None:
        pairs = []
        for item in filter(None, (p.strip() for p in override.split(","))):
            kind, _, url = item.partition("=")
            pairs.append((kind.strip(), url.strip()))
        return pairs
    return [(kind, DEFAULT_URLS[kind]) for kind in DETECT_KINDS]


def needs_key(err: FasedError) -> bool:
    """Whether a failed model list says the server wants a key."""
    if getattr(err, "kind", None) == "auth" or getattr(err, "status", None) in (401, 403):
        return True
    detail = (getattr(err, "detail", None) or "").lower()
    return getattr(err, "status", None) is not None and any(m in detail for m in _AUTH_MARKERS)


def _look(store: Store, kind: str, url: str, timeout: float) -> Sighting:
    """Ask one endpoint for its models (a registered provider of that id with its own
    credentials) and, where the server can say, which are loaded."""
    from fased.providers import client_for

    sighting = Sighting(kind, url)
    row = store.db().execute("SELECT * FROM providers WHERE id = ? AND removed = 0",
                             (kind,)).fetchone()
    limits = {"connect_timeout": timeout, "read_timeout": timeout * 4}
    try:
        if row is not None:
            sighting.state, sighting.url = "known", row["base_url"]
            client = make_client(store.home, row, **limits)
        else:
            send_url, params = join_url_credentials(*split_url_credentials(url))
            client = client_for(kind, send_url, params=params, **limits)
    except (FasedError, ValueError) as exc:  # ValueError: a URL urlsplit cannot read
        sighting.error = getattr(exc, "message", None) or "invalid URL"
        return sighting
    with client:
        try:
            sighting.models = list(dict.fromkeys(client.list_models()))
        except FasedError as exc:
            sighting.error = exc.message
            if row is None:
                status = getattr(exc, "status", None)
                sighting.state = ("needs_key" if needs_key(exc) else
                                  "other" if status is not None else "nothing")
            return sighting
        if row is None:
            sighting.state = "found"
        sighting.loaded = _loaded(client, kind, sighting.models)
    return sighting


def _loaded(client, kind: str, models: list[str]) -> list[str]:
    """The models the server has loaded now, when it says (best effort: older servers do
    not have these endpoints)."""
    try:
        if kind == "ollama":
            items = (client.get_json("/api/ps") or {}).get("models") or []
            names = [m.get("name") or m.get("model") for m in items if isinstance(m, dict)]
        elif kind == "lmstudio":
            from fased.providers import client_for

            root = client.base_url.removesuffix("/v1")
            with client_for(kind, root, client.api_key, client.headers,
                            connect_timeout=client.connect_timeout,
                            read_timeout=client.read_timeout) as native:
                native.params = client.params
                items = (native.get_json("/api/v0/models") or {}).get("data") or []
            names = [m.get("id") for m in items
                     if isinstance(m, dict) and m.get("state") == "loaded"]
        else:
            return []
    except (FasedError, AttributeError, TypeError):
        return []
    return [n for n in names if isinstance(n, str) and n in models]


def choose_primary(sightings: list[Sighting]) -> tuple[str, str] | None:
    """(ref, why): a model a server has loaded, else the first model of the first server
    that lists any, in the server's own order."""
    for s in sightings:
        if s.loaded:
            where = "/api/ps" if s.kind == "ollama" else "/api/v0/models"
            return f"{s.kind}/{s.loaded[0]}", f"{s.kind} has it loaded ({where})"
    for s in sightings:
        if s.models:
            return f"{s.kind}/{s.models[0]}", f"the first model {s.kind} lists"
    return None


def detect_local_providers(store: Store, timeout: float = 0.5) -> Detection:
    """Look at each local endpoint; register the servers that answer, record their models,
    and give the selected agent a primary model when it has none."""
    sightings = [_look(store, kind, url, timeout) for kind, url in detect_endpoints()]
    lines: list[str] = []
    secrets: dict[str, dict] = {}
    chosen: list[dict] = []

    def decide(con):
        lines.clear()
        chosen.clear()
        drafts = []
        for s in sightings:
            if s.state not in ("found", "needs_key"):
                continue
            if con.execute("SELECT 1 FROM providers WHERE id = ? AND removed = 0",
                           (s.kind,)).fetchone():  # another command registered it meanwhile
                s.state = "known"
                continue
            draft, secrets[s.kind] = provider_draft(con, s.kind, s.kind, s.url, {}, None,
                                                    detected=True)
            s.url = draft.data["base_url"]
            drafts.append(draft)
            if s.state == "found":
                drafts.append(Draft("models.catalog_fetched", f"provider:{s.kind}",
                                    {"provider": s.kind, "models": s.models}))
        lines.extend(_lines(sightings))
        agent = con.execute(
            "SELECT a.id, a.primary_model FROM agents a JOIN kv ON kv.value = a.id "
            "WHERE kv.key = 'selected_agent'").fetchone()
        pick = choose_primary(sightings)
        if agent is not None and not agent["primary_model"] and pick is not None:
            ref, why = pick
            drafts.append(Draft("agent.models_set", f"agent:{agent['id']}",
                                {"agent": agent["id"], "primary": ref}))
            chosen[:] = [{"agent": agent["id"], "ref": ref, "why": why,
                          "line": f"Set {agent['id']}'s primary model to {ref} ({why})"}]
        return drafts

    store.append_internal(decide)
    for kind, taken in secrets.items():
        if taken:
            store_provider_secrets(store, kind, taken)
    return Detection(sightings, list(lines), chosen[0] if chosen else None)


def _lines(sightings: list[Sighting]) -> list[str]:
    out = []
    for s in sightings:
        url = mask_url(s.url)
        if s.state == "found":
            loaded = f", {', '.join(s.loaded)} loaded" if s.loaded else ""
            out.append(f"Found {s.kind} at {url} with {len(s.models)} model(s){loaded}")
        elif s.state == "needs_key":
            out.append(f"Found {s.kind} at {url}; it needs a key to list its models: "
                       f"fased agent models auth {s.kind}")
        elif s.state == "known":
            out.append(f"{s.kind} at {url} is already registered"
                       + (f" ({len(s.models)} model(s))" if not s.error else f" ({s.error})"))
        elif s.state == "other":
            out.append(f"Something answered at {url}, but not as {NAMES.get(s.kind, s.kind)} "
                       f"({s.error}); not registered")
    nothing = [f"{s.kind} {mask_url(s.url)}" for s in sightings if s.state == "nothing"]
    if nothing:
        out.append("Nothing answered at " + ", ".join(nothing))
    return out
