"""Is an agent ready to chat? Provider registered, credential resolvable, and (probing) the
model answering."""

from __future__ import annotations

import json

from fased.agents import get_agent
from fased.errors import FasedError
from fased.models import get_provider, make_client, parse_model_ref, resolve_secret
from fased.redact import mask_urls
from fased.store import Store


def agent_model_status(store: Store, agent: str | None, probe: bool = False,
                       timeout: float = 10.0) -> dict:
    """A report of the agent's refs; `ready` says whether its primary can be used now."""
    con = store.db()
    row = get_agent(con, agent)
    refs = [("primary", row["primary_model"])]
    refs += [("fallback", r) for r in json.loads(row["fallbacks"] or "[]")]
    if row["task_model"]:
        refs.append(("task", row["task_model"]))
    out = []
    for role, ref in refs:
        out.append(_ref_status(store, con, role, ref, probe, timeout))
    override = con.execute(
        "SELECT id, name, model_override FROM sessions WHERE id = ? AND deleted = 0",
        (row["current_session"],)).fetchone()
    if override is not None and override["model_override"]:
        # the current session answers with its override (`fased chat` without --session)
        entry = _ref_status(store, con, "override", override["model_override"], probe, timeout)
        out.insert(1, {**entry, "session": override["id"],
                       "session_name": override["name"]})
    primary = out[0]
    if primary["ref"] is None:
        from fased.setup import next_step

        reason = f"no primary model; next: {next_step(con, row['id'])}"
    elif primary["provider_state"] != "registered":
        reason = primary["provider_state"]
    elif not primary["credential_ready"]:
        reason = primary["credential_problem"] or "credential not ready"
    elif primary.get("file_problem"):
        reason = primary["file_problem"]
    elif probe and primary["probe"] != "ok":
        reason = f"probe: {probe_text(primary)}"
    else:
        reason = None
    return {"agent": row["id"], "ready": reason is None, "reason": reason, "refs": out}


def _ref_status(store, con, role: str, ref: str | None, probe: bool, timeout: float) -> dict:
    entry = {"role": role, "ref": ref, "provider": None, "provider_state": "-",
             "credential": "-", "credential_ready": False, "credential_problem": None}
    if ref is None:
        return entry
    try:
        parsed = parse_model_ref(con, ref)
        provider = get_provider(con, parsed.provider)
    except FasedError as exc:
        entry["provider_state"] = exc.message
        return entry
    from fased.params import model_tools

    entry["provider"] = parsed.provider
    entry["provider_state"] = "registered"
    # capabilities: whether the model is offered tools (kind local: not unless configured)
    entry["tools"] = model_tools(con, str(parsed))
    _, cred = resolve_secret(store.home, provider)
    entry["credential"] = "optional" if not cred.needed and cred.source == "none" else (
        cred.source + ("" if cred.ready else " (not ready)"))
    entry["credential_ready"] = cred.ready
    entry["credential_problem"] = cred.problem
    if provider["kind"] == "local":
        entry["file_problem"] = _model_file_problem(store.home, provider["model_path"])
    if probe:
        entry["probe_status"] = entry["probe_message"] = None
        try:
            with make_client(store.home, provider, connect_timeout=min(timeout, 5.0),
                             read_timeout=timeout) as client:
                entry["probe"] = client.probe(parsed.model)
                failure = client.last_probe_error
        except FasedError as exc:
            entry["probe"], failure = "auth", exc
        if failure is not None:
            # the client already masked its own secrets; other URLs lose their credentials
            entry["probe_status"] = getattr(failure, "status", None)
            entry["probe_message"] = mask_urls(getattr(failure, "detail", None)
                                               or failure.message)
    return entry


def _model_file_problem(home, model_path: str | None) -> str | None:
    """What is wrong with a kind local model's file, without loading it: gone, a folder,
    not GGUF, or a pulled model that is not the bytes pulled (its sha256 is read once, then
    known by the file's size, time and inode: local.model_state)."""
    from fased.local import check_gguf, pulled_problem

    problem = pulled_problem(home, model_path) if model_path else None
    if problem is not None:
        return problem
    try:
        check_gguf(model_path or "")
    except FasedError as exc:
        return exc.message
    return None


def probe_text(entry: dict) -> str:
    """A probe result for a table: an `error` says what the server answered."""
    result = entry.get("probe") or ""
    if result != "error" or not entry.get("probe_message"):
        return result
    status = f"HTTP {entry['probe_status']}: " if entry.get("probe_status") else ""
    return f"{result} ({status}{entry['probe_message']})"
