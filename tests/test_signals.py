"""Ctrl-C and SIGTERM that come while fased records a turn or its claim (fased.signals.held):
they take effect once the command can end what it recorded, never in between."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest
from conftest import events

from fased.runner import Runner, Stop
from fased.signals import held


def kill_self(sig: int = signal.SIGINT) -> None:
    os.kill(os.getpid(), sig)


def test_a_ctrl_c_in_the_block_comes_at_its_end():
    reached = []
    with pytest.raises(KeyboardInterrupt), held():
        kill_self()
        reached.append("after the signal")
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_two_signals_at_once_come_as_one_to_the_handler_in_place():
    seen = []

    def handler(signum, frame):
        seen.append(signum)
        raise Stop()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(Stop), held() as came:
            kill_self(signal.SIGTERM)
            kill_self(signal.SIGINT)  # `timeout -s INT` also signals the group
            assert came == [signal.SIGTERM, signal.SIGINT]
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_block_that_ends_the_command_anyway_drops_them():
    with held(deliver=False):
        kill_self()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with held():
            kill_self()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def cut_after_the_claim():
    """Ctrl-C (or SIGTERM) lands after a claim is recorded and before its run handles it,
    until the test calls what it returns with None. (A patch of its own: undoing the
    test's monkeypatch would undo FASED_HOME too.)"""
    with pytest.MonkeyPatch.context() as patch:

        def cut(exc: BaseException | None):
            if exc is None:
                patch.undo()
                return

            def run(self, claim, *args, **kwargs):
                raise exc

            patch.setattr(Runner, "run", run)

        yield cut


def turn_types(home) -> list[str]:
    return [e["type"] for e in events(home) if e["type"].startswith("turn.")]


@pytest.mark.parametrize("exc, reason", [(KeyboardInterrupt(), "interrupted"),
                                         (Stop(), "terminated")])
def test_a_chat_cut_short_after_its_claim_takes_its_message_back(models, run, server,
                                                                 cut_after_the_claim, exc,
                                                                 reason):
    """The chat's turn was left started, and the next chat of the session answered the
    message its user had taken back with Ctrl-C."""
    cut_after_the_claim(exc)
    result = run("chat", "taken back")
    assert result.exit_code != 0
    assert "it will not be answered" in result.stderr
    assert turn_types(models) == ["turn.queued", "turn.started", "turn.abandoned",
                                  "turn.aborted"]
    abandoned = next(e for e in events(models) if e["type"] == "turn.abandoned")
    assert abandoned["data"]["reason"] == reason
    assert server.requests == []


def test_fased_run_cut_short_after_a_claim_gives_the_turn_back(models, ok, run, server,
                                                               cut_after_the_claim):
    ok("chat", "--queue", "later")
    cut_after_the_claim(KeyboardInterrupt())
    result = run("run", "--once")
    assert result.exit_code != 0
    assert turn_types(models) == ["turn.queued", "turn.started", "turn.abandoned"]
    cut_after_the_claim(None)
    ok("run", "--once")
    assert turn_types(models)[-2:] == ["turn.started", "turn.completed"]
    assert len(server.requests) == 1


@pytest.fixture
def ctrl_c_as_queued(monkeypatch):
    """Ctrl-C the moment a chat's turn is recorded, before the command can know it."""
    import fased.chat

    real = fased.chat.queue_turn

    def queue_turn(*args, **kwargs):
        queued = real(*args, **kwargs)
        kill_self()
        return queued

    monkeypatch.setattr(fased.chat, "queue_turn", queue_turn)


def test_a_chat_interrupted_as_its_turn_is_recorded_takes_it_back(models, run, server,
                                                                  ctrl_c_as_queued):
    with contextlib.suppress(KeyboardInterrupt):  # the command's Ctrl-C, however it ends
        run("chat", "taken back")
    assert turn_types(models) == ["turn.queued", "turn.aborted"]
    assert server.requests == []


def test_the_interactive_chat_interrupted_as_a_turn_is_recorded_takes_it_back(
        models, server, ctrl_c_as_queued):
    from fased.repl import Repl
    from fased.store import Store

    said: list[str] = []
    repl = Repl(Store(models), write=lambda s: None, warn=said.append)
    with contextlib.suppress(KeyboardInterrupt):
        repl.handle("taken back")
    assert turn_types(models) == ["turn.queued", "turn.aborted"]
    assert any("it will not be answered" in line for line in said), said
    assert server.requests == []


@pytest.fixture
def ctrl_c_as_fired(monkeypatch):
    """Ctrl-C the moment `fased task run` has recorded its run, before it can know it."""
    from fased.store import Store

    real = Store.transact
    fired: list[bool] = []

    def transact(self, *args, **kwargs):
        outcome = real(self, *args, **kwargs)
        if not fired and any(e["type"] == "turn.queued" for e in outcome.events):
            fired.append(True)
            kill_self()
        return outcome

    monkeypatch.setattr(Store, "transact", transact)


def test_task_run_interrupted_as_its_run_is_recorded_takes_it_back(models, ok, run, server,
                                                                   ctrl_c_as_fired):
    ok("task", "new", "--every", "1d", "--message", "by hand")
    with contextlib.suppress(KeyboardInterrupt):
        run("task", "run", "task-1")
    assert turn_types(models) == ["turn.queued", "turn.aborted"]
    assert server.requests == []


def test_task_run_ended_by_sigterm_ends_its_turn_and_exits_143(models, ok, server):
    """`timeout 30 fased task run t` had no SIGTERM handling of its own: the runner's Stop
    escaped it as a traceback."""
    import subprocess
    import sys

    from conftest import wait_for
    from fakeserver import Reply

    ok("task", "new", "--every", "1d", "--message", "by hand")
    server.script(Reply("slow " * 40, delay=0.1))
    proc = subprocess.Popen([sys.executable, "-c", "from fased.commands.entry import main; "
                             "main()", "task", "run", "task-1"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: server.requests)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert turn_types(models)[-1] == "turn.aborted"
