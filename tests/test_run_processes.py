"""Runners as real processes: kill -9 and lease takeover, SIGTERM/SIGINT, several runners at
once, and a foreground chat racing a runner. Nothing answered twice, nothing lost. (A live
runner, or one of another host, keeps its lease until it runs out: test_lease_takeover.py.)"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import events, rows, run_process, wait_for

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import DEFAULT_TEXT, Echo, Reply

pytestmark = pytest.mark.slow

FASED = [sys.executable, "-c", "from fased.commands.entry import main; main()"]
SLOW = Reply("slow " * 40, delay=0.1)  # four seconds of streaming


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `fased ARGS...` in the background; whatever is still running at the end is
    killed."""
    started: list[subprocess.Popen] = []

    def _spawn(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([*FASED, *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def read_some(proc: subprocess.Popen, at_least: int, timeout: float = 15) -> str:
    """At least `at_least` bytes of `proc`'s stdout, as they arrive."""
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while len(data) < at_least:
        ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
        assert ready, "timed out"
        chunk = os.read(fd, 4096)
        assert chunk, "stdout closed early"
        data += chunk
    return data.decode()


def queue(ok, *messages: str, session: str | None = None) -> list[str]:
    opts = ["--session", session] if session else []
    return [ok("chat", "--queue", *opts, m).strip() for m in messages]


def of_turn(home: Path, turn: str) -> list[tuple[str, dict]]:
    return [(e["type"], e["data"]) for e in events(home)
            if e["type"].startswith("turn.") and e["data"].get("turn") == turn]


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_killed_runner_turn_is_answered_once_by_another_at_once(models, ok, server, spawn):
    server.script(SLOW)
    [turn] = queue(ok, "hi")
    first = spawn("run", "--until-idle", "--lease", "30", "--poll", "0.1")
    wait_for(lambda: server.requests)

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    second = spawn("run", "--until-idle", "--lease", "30", "--poll", "0.1", "--json")
    out, err = second.communicate(timeout=30)

    assert second.returncode == 0, err
    assert "Traceback" not in err
    [line] = [json.loads(x) for x in out.splitlines()]
    assert (line["turn"], line["state"], line["reply"]) == (turn, "completed", DEFAULT_TEXT)
    history = of_turn(models, turn)
    started = [d for t, d in history if t == "turn.started"]
    assert [(d["claim"], d["pid"]) for d in started] == [(1, first.pid), (2, second.pid)]
    completed = [d for t, d in history if t == "turn.completed"]
    assert len(completed) == 1
    assert completed[0]["runner"] == started[1]["runner"]
    assert not any(t in ("turn.failed", "turn.abandoned") for t, _ in history)
    # the dead runner was a process of this host: its 30 s lease was not waited for
    first_leases = [d["lease_until"] for t, d in history
                    if t in ("turn.started", "turn.lease_extended")
                    and d["runner"] == started[0]["runner"]]
    takeover = next(e for e in events(models) if e["type"] == "turn.started"
                    and e["data"]["claim"] == 2)
    assert ts(takeover["ts"]) < max(ts(x) for x in first_leases)
    assert len(server.requests) == 2
    assert rows(models, "SELECT state, claims, reply FROM turns") == [
        {"state": "completed", "claims": 2, "reply": DEFAULT_TEXT}]


def test_the_lease_is_extended_while_the_model_works(models, ok, server, spawn):
    server.script(SLOW)
    [turn] = queue(ok, "hi")
    # a 3 s lease renewed every second: a runner stalled 2 s by a loaded machine keeps it
    runner = spawn("run", "--until-idle", "--lease", "3", "--poll", "0.1")
    wait_for(lambda: server.requests)
    time.sleep(3.3)  # past the first lease: a second runner must still keep off
    other = spawn("run", "--until-idle", "--lease", "3", "--poll", "0.1")

    for proc in (runner, other):
        proc.communicate(timeout=30)
        assert proc.returncode == 0

    history = of_turn(models, turn)
    assert [t for t, _ in history].count("turn.started") == 1
    assert [t for t, _ in history].count("turn.completed") == 1
    assert [t for t, _ in history].count("turn.lease_extended") >= 3
    assert len(server.requests) == 1


def stop_outside_the_lock(proc: subprocess.Popen, home: Path) -> None:
    """SIGSTOP `proc` at a moment it does not hold the log lock (else nobody could append)."""
    for _ in range(100):
        proc.send_signal(signal.SIGSTOP)
        os.waitpid(proc.pid, os.WUNTRACED)
        fd = os.open(home / "log.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return
        except BlockingIOError:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        finally:
            os.close(fd)
    raise AssertionError("the runner never let go of the log lock")


def test_a_runner_that_lost_its_lease_does_not_answer_again(models, ok, server, spawn):
    server.script(SLOW)
    [turn] = queue(ok, "hi")
    first = spawn("run", "--until-idle", "--lease", "1", "--poll", "0.1", "--json")
    wait_for(lambda: server.requests)

    stop_outside_the_lock(first, models)
    leases = [d["lease_until"] for t, d in of_turn(models, turn)
              if t in ("turn.started", "turn.lease_extended")]
    wait_for(lambda: datetime.now(UTC) > max(ts(x) for x in leases))
    second = spawn("run", "--until-idle", "--lease", "5", "--poll", "0.1", "--json")
    out, err = second.communicate(timeout=30)
    first.send_signal(signal.SIGCONT)
    late, late_err = first.communicate(timeout=30)

    assert (second.returncode, first.returncode) == (0, 0), (err, late_err)
    assert [json.loads(x)["state"] for x in out.splitlines()] == ["completed"]
    assert [json.loads(x)["state"] for x in late.splitlines()] == ["lost"]
    assert (f"fased: turn {turn} was taken over by another runner; this runner's result is "
            "dropped") in late_err.splitlines()
    assert "Traceback" not in err + late_err
    history = of_turn(models, turn)
    started = [d for t, d in history if t == "turn.started"]
    assert [(d["claim"], d["pid"]) for d in started] == [(1, first.pid), (2, second.pid)]
    completed = [d for t, d in history if t == "turn.completed"]
    assert [(d["runner"], d["reply"]) for d in completed] == [(started[1]["runner"],
                                                               DEFAULT_TEXT)]
    log = events(models)
    takeover = next(e["seq"] for e in log if e["type"] == "turn.started"
                    and e["data"]["claim"] == 2)
    assert all(e["seq"] < takeover for e in log if e["type"] == "turn.lease_extended"
               and e["data"]["runner"] == started[0]["runner"])


@pytest.mark.parametrize(("sig", "code", "reason", "line"), [
    (signal.SIGTERM, 143, "terminated",
     "fased: terminated; the current turn went back to the queue"),
    (signal.SIGINT, 130, "interrupted", "Interrupted."),
])
def test_signal_gives_the_turn_back_and_it_is_answered_later(models, ok, server, spawn, sig,
                                                             code, reason, line):
    server.script(SLOW)
    [turn] = queue(ok, "hi")
    proc = spawn("run", "--lease", "30", "--poll", "0.1")
    wait_for(lambda: server.pieces_sent >= 2)  # some of the reply has arrived

    proc.send_signal(sig)
    out, err = proc.communicate(timeout=15)

    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert out == ""
    assert line in err.splitlines()
    history = of_turn(models, turn)
    assert [t for t, _ in history] == ["turn.queued", "turn.started", "turn.abandoned"]
    abandoned = history[-1][1]
    assert (abandoned["reason"], abandoned["runner"]) == (reason, history[1][1]["runner"])
    assert rows(models, "SELECT state, runner, lease_until FROM turns") == [
        {"state": "queued", "runner": None, "lease_until": None}]

    started = time.monotonic()
    again = run_process("run", "--until-idle", "--json", "--poll", "0.1")

    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 15  # no waiting for the 30 s lease
    assert [json.loads(x)["turn"] for x in again.stdout.splitlines()] == [turn]
    assert [t for t, _ in of_turn(models, turn)] == [
        "turn.queued", "turn.started", "turn.abandoned", "turn.started", "turn.completed"]
    assert rows(models, "SELECT state, claims, reply FROM turns") == [
        {"state": "completed", "claims": 2, "reply": DEFAULT_TEXT}]


@pytest.mark.parametrize("how", ["sigterm", "kill"])
def test_collected_turns_survive_a_stopped_runner(models, ok, server, spawn, how):
    ok("config", "set", "agents.defaults.queue", '{"mode":"collect","debounceMs":50}')
    server.script(SLOW)
    first, second = queue(ok, "one", "two")
    proc = spawn("run", "--lease", "1", "--poll", "0.1")
    wait_for(lambda: server.requests)

    proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    proc.wait(timeout=15)
    again = run_process("run", "--until-idle", "--json", "--poll", "0.1")

    assert again.returncode == 0, again.stderr
    [line] = [json.loads(x) for x in again.stdout.splitlines()]
    assert (line["turn"], line["merged"], line["reply"]) == (first, [second], DEFAULT_TEXT)
    assert [m["content"] for m in server.requests[-1]["json"]["messages"]
            if m["role"] != "system"] == ["one", "two"]
    started = [e["data"] for e in events(models) if e["type"] == "turn.started"]
    assert [(d["turn"], d["claim"], d["merged"]) for d in started] == [
        (first, 1, [second]), (first, 2, [second])]
    assert len([e for e in events(models) if e["type"] == "turn.completed"]) == 1
    assert rows(models, "SELECT id, state, merged_into FROM turns ORDER BY queued_seq") == [
        {"id": first, "state": "completed", "merged_into": None},
        {"id": second, "state": "merged", "merged_into": first}]


def test_ctrl_c_in_chat_keeps_the_partial_reply(models, server, spawn):
    server.script(Reply("word " * 40, delay=0.1))
    proc = spawn("chat", "--stream", "hi")
    shown = read_some(proc, 10)

    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=15)

    assert proc.returncode == 130, err
    assert "Traceback" not in err
    printed = shown + rest
    [(_, aborted)] = [(t, d) for e in events(models) for t, d in [(e["type"], e["data"])]
                      if t == "turn.aborted"]
    assert aborted["reason"] == "interrupted"
    # the part printed, ending its line as every Unix tool's output does (as unstreamed)
    assert printed.endswith("\n") and printed.count("\n") == 1, printed
    assert aborted["partial_reply"].startswith(printed[:-1]) and printed.startswith("word word")
    assert len(aborted["partial_reply"]) < len("word " * 40)
    transcript = models / "agents" / "main" / "sessions" / "s-1.jsonl"
    last = json.loads(transcript.read_text().splitlines()[-1])
    assert (last["role"], last["content"], last["aborted"]) == (
        "assistant", aborted["partial_reply"], True)
    written = transcript.read_bytes()
    assert run_process("replay", "--rebuild").returncode == 0
    assert transcript.read_bytes() == written


@pytest.mark.parametrize(("signals", "code", "reason"), [
    ((signal.SIGINT, signal.SIGINT), 130, "interrupted"),  # GNU timeout -s INT: twice
    ((signal.SIGTERM,), 143, "terminated"),  # timeout 30 fased chat ...
    ((signal.SIGTERM, signal.SIGTERM), 143, "terminated"),
])
def test_a_chat_stopped_by_signals_ends_its_turn_once(models, server, spawn, signals, code,
                                                      reason):
    """A second SIGINT that arrived while the first was being recorded broke out of it,
    and SIGTERM killed chat outright: either way the turn stayed started, held its session
    for the lease, and the next chat answered the cancelled message in full."""
    server.script(Reply("word " * 40, delay=0.1))
    proc = spawn("chat", "--stream", "hi")
    read_some(proc, 10)

    for sig in signals:
        os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=15)

    assert proc.returncode == code, err
    assert "Traceback" not in err
    history = [e["type"] for e in events(models) if e["type"].startswith("turn.")]
    assert history == ["turn.queued", "turn.started", "turn.aborted"], err
    [aborted] = [e["data"] for e in events(models) if e["type"] == "turn.aborted"]
    assert aborted["reason"] == reason and aborted["partial_reply"].startswith("word")
    started = time.monotonic()
    after = run_process("chat", "next")
    assert after.returncode == 0, after.stderr
    assert time.monotonic() - started < 10 and "earlier queued turn" not in after.stderr


@pytest.mark.parametrize(("sig", "code", "reason"), [
    (signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_json_chat_stopped_by_a_signal_prints_its_aborted_turn(models, server, spawn, sig,
                                                                 code, reason):
    """`timeout 30 fased chat --json ...` (SIGTERM) printed nothing where Ctrl-C printed
    the aborted turn: a program reading the JSON got no record of what was said."""
    server.script(Reply("word " * 40, delay=0.1))
    proc = spawn("chat", "--json", "hi")
    wait_for(lambda: server.pieces_sent >= 3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    shown = json.loads(out)
    [aborted] = [e["data"] for e in events(models) if e["type"] == "turn.aborted"]
    assert aborted["reason"] == reason
    assert shown["state"] == "aborted" and shown["turn"] == aborted["turn"]
    assert shown["reply"] == aborted["partial_reply"] and shown["reply"].startswith("word")


def test_a_piped_chat_stopped_by_sigterm_prints_what_was_said(models, server, spawn):
    """As Ctrl-C does: `timeout 30 fased chat ... > out` keeps the reply's beginning."""
    server.script(Reply("word " * 40, delay=0.1))
    proc = spawn("chat", "hi")  # piped: no live display, streamed on the wire
    wait_for(lambda: server.pieces_sent >= 3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 143, err
    [aborted] = [e["data"] for e in events(models) if e["type"] == "turn.aborted"]
    assert out.startswith("word") and out == aborted["partial_reply"] + "\n"


def test_reader_going_away_ends_the_turn_and_frees_the_session(models, ok, server, spawn):
    server.script(Reply("word " * 40, delay=0.05))
    proc = spawn("chat", "--stream", "hi")
    shown = read_some(proc, 10)
    proc.stdout.close()  # like `| head -c 10`
    proc.wait(timeout=15)
    err = proc.stderr.read()

    assert proc.returncode == 0, err
    assert "Traceback" not in err
    [aborted] = [e["data"] for e in events(models) if e["type"] == "turn.aborted"]
    assert aborted["reason"] == "output closed"
    assert aborted["partial_reply"].startswith(shown)
    started = time.monotonic()
    after = run_process("chat", "next")
    assert after.returncode == 0, after.stderr
    assert time.monotonic() - started < 10  # not held up by the dead turn's 60 s lease
    assert "waiting for another runner" not in after.stderr


def test_chat_waits_for_a_runner_holding_its_session(models, ok, server, spawn):
    server.script(Reply("slow " * 15, delay=0.1))
    server.default = Echo()
    [earlier] = queue(ok, "earlier")
    runner = spawn("run", "--until-idle", "--poll", "0.05", "--json")
    wait_for(lambda: server.requests)

    chat = run_process("chat", "later")
    runner.communicate(timeout=30)

    assert chat.returncode == 0, chat.stderr
    assert chat.stdout == "later\n"
    assert "waiting for another runner" in chat.stderr
    completed = [e["data"] for e in events(models) if e["type"] == "turn.completed"]
    assert [d["reply"] for d in completed] == ["slow " * 15, "later"]
    assert completed[0]["turn"] == earlier
    assert len(server.requests) == 2


def test_ctrl_c_while_chat_waits_for_its_session_withdraws_its_turn(models, ok, server,
                                                                    spawn):
    server.script(SLOW)
    queue(ok, "earlier")
    runner = spawn("run", "--until-idle", "--poll", "0.05", "--json")
    wait_for(lambda: server.requests)
    chat = spawn("chat", "later")
    wait_for(lambda: [e for e in events(models) if e["type"] == "turn.queued"
                      and e["data"]["message"] == "later"])
    time.sleep(0.3)  # chat is polling for its turn

    chat.send_signal(signal.SIGINT)
    _, err = chat.communicate(timeout=15)
    out, runner_err = runner.communicate(timeout=30)

    assert chat.returncode == 130, err
    later = next(e["data"]["turn"] for e in events(models)
                 if e["type"] == "turn.queued" and e["data"]["message"] == "later")
    assert f"fased: interrupted before turn {later} started; it will not be answered" in err
    assert "Traceback" not in err + runner_err
    assert [t for t, _ in of_turn(models, later)] == ["turn.queued", "turn.aborted"]
    assert [json.loads(x)["state"] for x in out.splitlines()] == ["completed"]  # earlier only
    assert len(server.requests) == 1
    assert rows(models, "SELECT state, reply FROM turns WHERE id = ?", (later,)) == [
        {"state": "aborted", "reply": ""}]


def test_three_runners_answer_200_turns_once_each_in_session_order(models, ok, server, spawn):
    from fased.chat import queue_turn
    from fased.store import Store

    server.default = Echo()
    sessions = [f"s-{i}" for i in range(1, 11)]
    for _ in sessions:
        ok("session", "new")
    store = Store(models)
    order: dict[str, list[str]] = defaultdict(list)
    message: dict[str, str] = {}
    for i in range(20):
        for s in sessions:
            turn = queue_turn(store, f"{s} message {i}", session=s).turn
            order[s].append(turn)
            message[turn] = f"{s} message {i}"
    store.close()

    runners = [spawn("run", "--until-idle", "--json", "--poll", "0.05") for _ in range(3)]
    outputs = [proc.communicate(timeout=90) for proc in runners]

    for proc, (_, err) in zip(runners, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    reported = [json.loads(x) for out, _ in outputs for x in out.splitlines()]
    assert sorted(r["turn"] for r in reported) == sorted(message)
    assert all(r["state"] == "completed" for r in reported)
    assert sum(1 for out, _ in outputs if out) >= 2, "the runners did not share the work"

    log = events(models)
    completed = [e["data"] for e in log if e["type"] == "turn.completed"]
    assert sorted(d["turn"] for d in completed) == sorted(message)  # each exactly once
    assert all(d["reply"] == message[d["turn"]] for d in completed)
    for s in sessions:
        assert [d["turn"] for d in completed if d["session"] == s] == order[s]
    assert not [e for e in log if e["type"] in ("turn.failed", "turn.abandoned")]
    running: dict[str, str] = {}
    for e in log:  # one running turn per session, at every point of the log
        d = e["data"]
        if e["type"] == "turn.started":
            assert running.get(d["session"]) in (None, d["turn"]), e
            running[d["session"]] = d["turn"]
        elif e["type"] == "turn.completed":
            assert running.pop(d["session"]) == d["turn"]
    assert rows(models, "SELECT COUNT(*) AS n FROM turns WHERE state = 'completed'") == [
        {"n": 200}]
    verify = run_process("replay", "--verify")
    assert (verify.returncode, verify.stdout) == (0, "Projections match the log.\n")
    transcripts = sorted((models / "agents" / "main" / "sessions").glob("*.jsonl"))
    written = {p.name: p.read_bytes() for p in transcripts}
    assert len(written) == 10
    assert run_process("replay", "--rebuild").returncode == 0
    assert {p.name: p.read_bytes() for p in transcripts} == written


def open_fds(pid: int) -> list[str]:
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            held.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return sorted(held)


def test_a_long_running_runner_holds_no_more_files_after_many_turns(models, ok, server,
                                                                     spawn):
    """Every turn calls tools (memory search, read, write) and appends to the log: what a runner
    holds open after 6 turns is what it holds after 30, so weeks of `fased run` never run
    out of descriptors."""
    (models / "workspace" / "notes.md").write_text("the deploy key is in the vault\n")

    def script(turns: int) -> None:
        for _ in range(turns):
            server.script(Reply("", tool_calls=[("memory_search", '{"query": "vault"}'),
                                                ("read", '{"path": "notes.md"}'),
                                                ("write", '{"path": "out.md", '
                                                          '"content": "seen"}')]),
                          Reply("done"))

    runner = spawn("run", "--json", "--poll", "0.05")
    script(6)
    queue(ok, *[f"turn {i}" for i in range(6)])
    wait_for(lambda: len(rows(models, "SELECT id FROM turns WHERE state = 'completed'")) == 6)
    after_six = open_fds(runner.pid)
    script(24)
    queue(ok, *[f"turn {i}" for i in range(6, 30)])
    wait_for(lambda: len(rows(models, "SELECT id FROM turns WHERE state = 'completed'")) == 30,
             timeout=60)
    after_thirty = open_fds(runner.pid)

    results = [e["data"] for e in events(models) if e["type"] == "tool.finished"]
    assert len(results) == 90, len(results)
    assert {r["status"] for r in results} == {"ok"}, [
        (r["name"], r["result"]) for r in results if r["status"] != "ok"][:3]
    grown = [f for f in set(after_thirty) if after_thirty.count(f) > after_six.count(f)]
    assert grown == [], (after_six, after_thirty)
