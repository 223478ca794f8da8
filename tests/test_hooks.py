"""Hooks: the user's commands run on events, by runners, once each in order, without secrets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import events, fails, rows, wait_for

FASED = [sys.executable, "-c", "from fased.commands.entry import main; main()"]


def set_hooks(ok, *hooks: dict) -> None:
    ok("config", "set", "hooks", json.dumps(list(hooks)))


def recorder(path: Path) -> str:
    """A hook command that appends `SEQ TYPE AGENT SESSION` to `path`."""
    return f'echo "$FASED_SEQ $FASED_EVENT $FASED_AGENT $FASED_SESSION" >> {path}'


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def seqs_of(home: Path, pattern) -> list[int]:
    return [e["seq"] for e in events(home) if pattern(e)]


def hook_events(home: Path, etype: str) -> list[dict]:
    return [e["data"] for e in events(home) if e["type"] == etype]


def log_bytes(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((home / "log").iterdir())}


# -- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("hooks, reason", [
    ([{"on": "turn.failed"}], "run"),
    ([{"on": "turn.failed", "run": "x", "timeoutSeconds": 0}], "at least 1"),
    ([{"on": "turn failed", "run": "x"}], "hooks[0].on"),
    ([{"id": "a", "on": "x", "run": "y"}, {"id": "a", "on": "z", "run": "w"}], "appears twice"),
])
def test_a_bad_hook_is_refused_and_nothing_is_recorded(set_up, run, hooks, reason):
    line = fails(run, set_up, 2, "config", "set", "hooks", json.dumps(hooks))
    assert reason in line


@pytest.mark.parametrize("command, why", [
    ('curl -H "Authorization: Bearer abc.def.ghi" https://hooks.example/x', "an authorization"),
    ("curl -d @- https://bot:pa55w0rd@hooks.example/x", "a password in a URL"),
    ("notify --key sk-abcdefghijklmnop1234", "a known API key prefix"),
])
def test_a_hook_command_holding_a_secret_is_refused_set_or_hand_edited(set_up, run, ok,
                                                                     command, why):
    """A hook runs without credentials in its environment, so a command that holds a key
    itself holds it in fased.json, and the config.set event, and the log, for good."""
    before = log_bytes(set_up)
    hook = [{"id": "notify", "on": "turn.failed", "run": command}]
    line = fails(run, set_up, 2, "config", "set", "hooks", json.dumps(hook))
    assert f"hooks[0].run holds {why}" in line and "pa55w0rd" not in line
    for agent_hook in (("agents.defaults.hooks", hook), ("agents.list[0].hooks", hook)):
        fails(run, set_up, 2, "config", "set", agent_hook[0], json.dumps(agent_hook[1]))
    doc = json.loads((set_up / "fased.json").read_text())
    (set_up / "fased.json").write_text(json.dumps({**doc, "hooks": hook}))
    result = run("agent", "list")  # the hand edit is refused, not ingested
    assert result.exit_code == 2 and f"hooks[0].run holds {why}" in result.stderr
    assert log_bytes(set_up) == before
    (set_up / "fased.json").write_text(json.dumps(doc))
    ok("config", "set", "hooks", json.dumps(
        [{"id": "notify", "on": "turn.failed", "run": 'curl -H "Authorization: Bearer '
          '$(cat ~/.hook-token)" https://hooks.example/x'}]))


def test_a_hook_without_an_id_gets_a_stable_derived_name(set_up, ok):
    set_hooks(ok, {"on": "task.*", "run": "true"})
    [first] = json.loads(ok("hooks", "list", "--json"))
    assert first["hook"].startswith("h-") and len(first["hook"]) == 10
    ok("config", "set", "agents.defaults.retries", "1")  # another config change: same name
    assert json.loads(ok("hooks", "list", "--json"))[0]["hook"] == first["hook"]


# -- delivery ----------------------------------------------------------------------------------

def test_a_new_hook_starts_from_now_and_gets_each_matching_event_once_in_order(
        set_up, ok, tmp_path):
    out = tmp_path / "out"
    ok("session", "new", "--name", "before")  # before the hook: never delivered
    set_hooks(ok, {"id": "rec", "on": "session.created", "run": recorder(out)})
    added = max(e["seq"] for e in events(set_up))
    [listed] = json.loads(ok("hooks", "list", "--json"))
    assert listed["added_seq"] == added
    ok("session", "new", "--name", "one")
    ok("session", "new", "--name", "two")
    assert not out.exists()  # the command that appended the event ran no hook

    ok("hooks", "run", "--once")
    count = len(events(set_up))
    ok("hooks", "run", "--once")  # nothing new: nothing delivered again, nothing recorded
    assert len(events(set_up)) == count

    created = seqs_of(set_up, lambda e: e["type"] == "session.created" and e["seq"] > added)
    assert lines(out) == [f"{s} session.created main s-{n}" for n, s in enumerate(created, 2)]
    [status] = json.loads(ok("hooks", "status", "--json"))
    assert (status["cursor"], status["delivered"], status["failed"]) == (created[-1], 2, 0)
    started = hook_events(set_up, "hook.started")
    assert [d["event_seq"] for d in started] == created
    assert [d["outcome"] for d in hook_events(set_up, "hook.finished")] == ["delivered"] * 2


def test_the_command_gets_the_event_as_replay_json_shows_it_in_the_workspace(
        set_up, ok, tmp_path):
    out = tmp_path / "out"
    set_hooks(ok, {"id": "dump", "on": "session.created",
                   "run": f'cat > {out}.stdin; env > {out}.env; pwd > {out}.cwd'})
    ok("session", "new", "--name", "ops")
    ok("hooks", "run", "--once")
    [seq] = seqs_of(set_up, lambda e: e["type"] == "session.created")
    shown = ok("replay", "--since", str(seq), "--until", str(seq), "--json")
    assert Path(f"{out}.stdin").read_text() == shown
    env = dict(line.split("=", 1) for line in Path(f"{out}.env").read_text().splitlines()
               if "=" in line)
    assert {k: env.get(k) for k in ("FASED_EVENT", "FASED_SEQ", "FASED_AGENT", "FASED_SESSION",
                                    "FASED_HOME", "FASED_HOOK")} == {
        "FASED_EVENT": "session.created", "FASED_SEQ": str(seq), "FASED_AGENT": "main",
        "FASED_SESSION": "s-1", "FASED_HOME": str(set_up), "FASED_HOOK": "dump"}
    assert Path(f"{out}.cwd").read_text().strip() == str(set_up / "workspace")


def test_a_hooks_environment_holds_no_secrets(set_up, ok, tmp_path, monkeypatch):
    out = tmp_path / "env"
    stored = "sk-proj-stored-key-0123456789abcdef"
    ok("agent", "models", "providers", "add", "openai")
    ok("agent", "models", "auth", "openai", "--stdin", input=stored + "\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment-0123456789")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_0123456789abcdefghij")
    monkeypatch.setenv("PLAIN_NAME", stored)  # a credential under an innocent name
    monkeypatch.setenv("HARMLESS", "kept")
    set_hooks(ok, {"id": "env", "on": "session.created", "run": f"env > {out}"})
    ok("session", "new")
    ok("hooks", "run", "--once")
    dump = out.read_text()
    assert "HARMLESS=kept" in dump
    for secret in (stored, "sk-from-the-environment", "ghp_0123456789", "OPENAI_API_KEY",
                   "GITHUB_TOKEN", "PLAIN_NAME"):
        assert secret not in dump


def test_globs_and_agent_and_session_filters(set_up, ok, tmp_path):
    ok("agent", "create", "ops")
    ok("session", "new", "--name", "mine")  # s-1 of main
    outs = {name: tmp_path / name for name in ("glob", "agent", "session", "peragent")}
    set_hooks(ok, {"id": "glob", "on": "task.*", "run": recorder(outs["glob"])},
              {"id": "agent", "on": "task.created", "agent": "ops",
               "run": recorder(outs["agent"])},
              {"id": "session", "on": "task.*", "session": "s-1",
               "run": recorder(outs["session"])})
    ok("config", "set", "agents.list[1].hooks",
       json.dumps([{"id": "peragent", "on": "task.created", "run": recorder(outs["peragent"])}]))
    ok("task", "new", "--every", "1h", "--message", "main's", "--session", "s-1")
    ok("task", "new", "--every", "1h", "--message", "ops'", "--agent", "ops")
    ok("task", "cancel", "task-1")
    ok("hooks", "run", "--once")

    def of(name):
        return [ln.split()[1:3] for ln in lines(outs[name])]

    assert of("glob") == [["task.created", "main"], ["task.created", "ops"],
                          ["task.cancelled", "main"]]
    assert of("agent") == [["task.created", "ops"]]
    assert of("peragent") == [["task.created", "ops"]]
    # as `fased replay --session`: events that name the session (task.cancelled does not)
    assert of("session") == [["task.created", "main"]]


def test_a_hooks_own_events_never_trigger_hooks(set_up, ok, tmp_path):
    out = tmp_path / "out"
    set_hooks(ok, {"id": "all", "on": "*", "run": recorder(out)})
    ok("session", "new")
    ok("hooks", "run", "--once")
    first = lines(out)
    ok("hooks", "run", "--once")
    ok("hooks", "run", "--once")
    assert lines(out) == first and len(first) == 2  # session.created, session.switched
    assert not any(ln.split()[1].startswith("hook.") for ln in first)


def test_a_failing_hook_is_retried_with_backoff_then_marked_failed(set_up, ok, at, tmp_path):
    tries = tmp_path / "tries"
    set_hooks(ok, {"id": "bad", "on": "session.created",
                   "run": f'echo "$FASED_SEQ" >> {tries}; echo oops >&2; exit 3'})
    ok("session", "new")
    ok("session", "new")
    first, second = seqs_of(set_up, lambda e: e["type"] == "session.created")

    ok("hooks", "run", "--once")  # attempt 1 fails: retried in 10 s
    ok("hooks", "run", "--once")  # not due yet: nothing runs, nothing is recorded
    assert lines(tries) == [str(first)]
    [status] = json.loads(ok("hooks", "status", "--json"))
    assert status["retry"] == {"seq": first, "attempt": 2, "at": "2026-03-02T08:00:10.000000Z"}
    at("2026-03-02T08:00:10Z")
    ok("hooks", "run", "--once")  # attempt 2 fails: retried in 60 s
    at("2026-03-02T08:01:10Z")
    ok("hooks", "run", "--once")  # attempt 3 fails: marked failed; then the next event
    assert lines(tries) == [str(first)] * 3 + [str(second)]

    finished = [(d["event_seq"], d["attempt"], d["outcome"], d["exit_code"])
                for d in hook_events(set_up, "hook.finished")]
    assert finished == [(first, 1, "retry", 3), (first, 2, "retry", 3), (first, 3, "failed", 3),
                        (second, 1, "retry", 3)]
    assert hook_events(set_up, "hook.finished")[0]["output"] == "oops\n"
    [status] = json.loads(ok("hooks", "status", "--json"))
    assert (status["cursor"], status["failed"]) == (first, 1)
    assert [(f["event_seq"], f["attempts"], f["error"]) for f in status["failures"]] == [
        (first, 3, "exit code 3")]
    text = ok("hooks", "status")
    assert "bad" in text


def test_a_hanging_hook_is_killed_at_its_timeout_retried_then_marked_failed(set_up, ok, run):
    set_hooks(ok, {"id": "slow", "on": "session.created", "run": "sleep 30",
                   "timeoutSeconds": 1, "backoffSeconds": [0]})
    ok("session", "new")
    result = run("hooks", "run", "--once")
    assert result.exit_code == 0
    finished = hook_events(set_up, "hook.finished")
    assert [(d["attempt"], d["outcome"], d["timed_out"]) for d in finished] == [
        (1, "retry", True), (2, "failed", True)]
    assert all(d["duration_ms"] < 5000 for d in finished)
    assert "(session.created) marked failed (timed out after 1 s)" in result.stderr
    [status] = json.loads(ok("hooks", "status", "--json"))
    assert status["failures"][0]["error"] == "timed out after 1 s"


def test_hooks_test_runs_the_hook_and_leaves_the_log_unchanged(set_up, ok, run, tmp_path):
    set_hooks(ok, {"id": "show", "on": "session.created", "run": 'echo "got $FASED_SEQ"'})
    ok("session", "new")
    ok("session", "new")
    first, second = seqs_of(set_up, lambda e: e["type"] == "session.created")
    before = log_bytes(set_up)
    assert ok("hooks", "test", "show") == f"got {second}\n"  # the latest it takes
    assert ok("hooks", "test", "show", "--event", str(first)) == f"got {first}\n"
    assert log_bytes(set_up) == before
    assert rows(set_up, "SELECT delivered, cursor FROM hooks")[0]["delivered"] == 0
    assert "no hook 'nope'" in fails(run, set_up, 1, "hooks", "test", "nope")
    set_hooks(ok, {"id": "show", "on": "session.created", "run": "exit 4"})
    before = log_bytes(set_up)
    result = run("hooks", "test", "show")
    assert result.exit_code == 1 and "exit code 4" in result.stderr
    assert log_bytes(set_up) == before


def test_hooks_replay_delivers_again_recorded_and_the_cursor_stays(set_up, ok, tmp_path, at):
    out = tmp_path / "out"
    set_hooks(ok, {"id": "rec", "on": "session.created", "run": recorder(out)})
    ok("session", "new")
    at("2026-03-02T09:00:00Z")
    ok("session", "new")
    ok("hooks", "run", "--once")
    first, second = seqs_of(set_up, lambda e: e["type"] == "session.created")
    cursor = json.loads(ok("hooks", "status", "--json"))[0]["cursor"]
    shown = [json.loads(x) for x in ok("hooks", "replay", "rec", "--since", "30m",
                                       "--json").splitlines()]
    assert [(d["event_seq"], d["outcome"], d["replay"]) for d in shown] == [
        (second, "delivered", True)]
    assert [ln.split()[0] for ln in lines(out)] == [str(first), str(second), str(second)]
    assert [d.get("replay", False) for d in hook_events(set_up, "hook.finished")] == [
        False, False, True]
    [status] = json.loads(ok("hooks", "status", "--json"))
    assert (status["cursor"], status["replays"]) == (cursor, 1)


def test_a_removed_hook_stops_and_a_readded_one_starts_from_then(set_up, ok, tmp_path):
    out = tmp_path / "out"
    set_hooks(ok, {"id": "rec", "on": "session.created", "run": recorder(out)})
    ok("config", "unset", "hooks")
    ok("session", "new")
    assert json.loads(ok("hooks", "list", "--json")) == []
    set_hooks(ok, {"id": "rec", "on": "session.created", "run": recorder(out)})
    ok("session", "new")
    ok("hooks", "run", "--once")
    assert [ln.split()[3] for ln in lines(out)] == ["s-2"]


# -- runners as processes ------------------------------------------------------------------------

@pytest.mark.slow
def test_two_runners_one_killed_deliver_each_event_once_in_order(set_up, ok, tmp_path):
    out = tmp_path / "out"
    # the pause makes a kill land mid-run: the command dies with its runner and runs again
    set_hooks(ok, {"id": "rec", "on": "session.created", "timeoutSeconds": 3,
                   "run": f'sleep 1; echo "$FASED_SEQ" >> {out}'})
    runners = [subprocess.Popen([*FASED, "run", "--poll", "0.1"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        for _ in range(3):
            ok("session", "new")

        def in_flight_of_a_runner():
            done = {(d["event_seq"], d["attempt"]) for d in hook_events(set_up, "hook.finished")}
            for d in hook_events(set_up, "hook.started"):
                for proc in runners:
                    if d["pid"] == proc.pid and (d["event_seq"], d["attempt"]) not in done:
                        return proc
            return None

        victim = wait_for(in_flight_of_a_runner)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        for _ in range(3):
            ok("session", "new")
        created = seqs_of(set_up, lambda e: e["type"] == "session.created")
        wait_for(lambda: len(lines(out)) >= len(created), timeout=40)
    finally:
        for proc in runners:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
            assert "Traceback" not in err
    assert lines(out) == [str(s) for s in created]
    interrupted = [d for d in hook_events(set_up, "hook.finished") if d.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0]["outcome"] == "retry"
    survivor = next(p for p in runners if p is not victim)
    assert all(d["pid"] == survivor.pid for d in hook_events(set_up, "hook.started")
               if d["event_seq"] > interrupted[0]["event_seq"])


@pytest.mark.slow
def test_a_slow_hook_does_not_hold_up_the_runners_turns(models, ok):
    set_hooks(ok, {"id": "slow", "on": "turn.queued", "run": "sleep 8", "timeoutSeconds": 20})
    runner = subprocess.Popen([*FASED, "run", "--poll", "0.1"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ok("chat", "--queue", "one")
        wait_for(lambda: hook_events(models, "hook.started"))
        ok("chat", "--queue", "two")
        wait_for(lambda: len(hook_events(models, "turn.completed")) == 2, timeout=30)
        assert hook_events(models, "hook.finished") == []  # still sleeping, in its thread
    finally:
        runner.send_signal(signal.SIGTERM)
        _, err = runner.communicate(timeout=20)
    assert "Traceback" not in err
