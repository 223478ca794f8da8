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
from fased.store import Draft, Store


def run_setup(store: Store, workspace: Path | None, detect: bool = True) -> dict:
    """Create what is missing; return a report of what was done (for humans and --json)."""
    done: list[str] = []
    notes: list[str] = []
    created_files: list[str] = []

    def decide(con) -> list[Draft]:
        drafts: list[Draft] = []
        from fased.config import config_doc

        current = config_doc(con).get("agents", {}).get("defaults", {}).get("workspace")
        if workspace is not None and str(workspace) != current:
            drafts.append(Draft("config.set", "config", {
                "path": "agents.defaults.workspace", "value": str(workspace),
                **({"old": current} if current else {})}))
            done.append(f"Set agents.defaults.workspace to {workspace}")
        exists = con.execute("SELECT 1 FROM agents WHERE id = ?", (DEFAULT_AGENT,)).fetchone()
        if not exists and not con.execute("SELECT 1 FROM agents LIMIT 1").fetchone():
            drafts.append(Draft("agent.created", f"agent:{DEFAULT_AGENT}",
                                {"agent": DEFAULT_AGENT, "name": DEFAULT_AGENT}, expect=0))
            done.append(f"Created agent {DEFAULT_AGENT}")
        elif selected_agent(con) is None:
            drafts.append(Draft("agent.selected", "agents", {"agent": DEFAULT_AGENT}))
        return drafts

    store.transact(decide)
    ws, created = bootstrap_workspace(store, None)
    created_files.extend(created)
    if created:
        done.append(f"Created in {ws}: {', '.join(created)}")
    from fased.projections.config import write_file

    con = store.db()
    if write_file(con, store.home, force=True):
        done.insert(0, f"Wrote {store.home / 'fased.json'}")
    if detect:
        notes.extend(_detect(store))
    agent = get_agent(con, None)
    return {
        "home": str(store.home),
        "config": str(store.home / "fased.json"),
        "agent": agent["id"],
        "workspace": str(workspace_for(con, store.home, agent)),
        "files_created": created_files,
        "done": done,
        "notes": notes,
    }


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
    """Register local model servers that answer."""
    from fased.models import detect_local_providers

    return detect_local_providers(store)
