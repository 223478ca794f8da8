"""Interactive `fased chat`: a real process on a pseudo-terminal, driven by keystrokes.

What the user sees on the terminal (prompt, echoed input, replies, notes) and what is recorded
in the log: replies, Ctrl-C stopping a reply (kept, marked aborted), Ctrl-D and /exit leaving,
the slash commands /help, /session, /model, /queue, and the history file. (/task is covered
through `Repl.handle` in test_tasks.py.)
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import events, rows, wait_for

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import DEFAULT_TEXT, Reply

FASED = [sys.executable, "-c", "from fased.commands.entry import main; main()"]
DEADLINE = 30.0  # seconds for any one thing to show up; generous for a loaded machine
HELP_COMMANDS = ("/session new", "/session list", "/session switch", "/model", "/queue",
                 "/task", "/help", "/exit")


def prompt(session: str = "s-1") -> bytes:
    return f"main/{session}> ".encode()


class Terminal:
    """`fased chat ARGS` on a pseudo-terminal that is its controlling terminal (so "\\x03"
    is a real Ctrl-C). With `stderr_apart`, stderr goes to a pipe instead of the terminal."""

    def __init__(self, *args: str, stderr_apart: bool = False):
        env = {**os.environ, "TERM": "dumb"}  # FASED_HOME and PYTHONSAFEPATH from conftest
        err_r, err_w = os.pipe() if stderr_apart else (-1, -1)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: a new session whose controlling terminal is the pty
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
                if stderr_apart:
                    os.dup2(err_w, 2)
                os.execve(sys.executable, [*FASED, "chat", *args], env)
            finally:
                os._exit(127)
        self.err_fd = err_r
        if stderr_apart:
            os.close(err_w)
        self.out = b""  # everything the terminal showed
        self.err = b""  # stderr, when apart
        self.pos = 0  # how far expect() has consumed self.out
        self.status: int | None = None
        self.poller = select.poll()
        self.open = {self.fd}
        self.poller.register(self.fd, select.POLLIN)
        if stderr_apart:
            self.open.add(err_r)
            self.poller.register(err_r, select.POLLIN)

    def _read(self, wait: float) -> None:
        """Read what is ready within `wait` seconds."""
        for fd, _ in self.poller.poll(max(0, int(wait * 1000))):
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                self.poller.unregister(fd)
                self.open.discard(fd)
                continue
            if fd == self.fd:
                self.out += chunk
            else:
                self.err += chunk

    def expect(self, pattern: bytes | re.Pattern, timeout: float = DEADLINE) -> re.Match:
        """Wait for `pattern` in the output not consumed yet; consume up to its end."""
        regex = re.compile(re.escape(pattern) if isinstance(pattern, bytes) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.out, self.pos)
            if match:
                self.pos = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0 or self.fd not in self.open:
                pytest.fail(f"no {regex.pattern!r} on the terminal; after the last match it "
                            f"shows {self.out[self.pos:]!r} (stderr {self.err!r})")
            self._read(min(left, 0.5))

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def line(self, text: str, session: str = "s-1") -> bytes:
        """Type a line at the prompt; returns what the terminal showed up to the next prompt
        (the echoed line included)."""
        self.type(text + "\r")
        start = self.pos
        match = self.expect(re.compile(rb"main/s-\d+> "))
        shown = self.out[start:match.start()]
        assert match.group() == prompt(session), shown + match.group()
        return shown

    def alive(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status is None

    def wait(self, timeout: float = DEADLINE) -> int:
        """Read to the end of output; the exit code."""
        deadline = time.monotonic() + timeout
        while self.open and time.monotonic() < deadline:
            self._read(min(deadline - time.monotonic(), 0.5))
        while self.alive():
            if time.monotonic() > deadline:
                pytest.fail(f"fased chat did not exit; the terminal shows {self.out!r}")
            time.sleep(0.05)
        assert self.status is not None
        return self.status

    def close(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.status = -signal.SIGKILL
        for fd in {self.fd, self.err_fd} - {-1}:
            os.close(fd)


@pytest.fixture
def home(set_up, ok, server) -> Path:
    """Agent main with primary ollama/fake-model on the fake server."""
    ok("agent", "models", "providers", "add", "ollama", "--kind", "ollama", "--base-url",
       server.url)
    ok("agent", "models", "set", "primary", "ollama/fake-model")
    return set_up


@pytest.fixture
def chat(home) -> Iterator[type[Terminal]]:
    """Start `fased chat` on a terminal: chat(*args); killed at the end if still running.
    No traceback may show anywhere."""
    started: list[Terminal] = []

    def _start(*args: str, **kwargs) -> Terminal:
        term = Terminal(*args, **kwargs)
        started.append(term)
        term.expect(prompt())
        return term

    yield _start
    for term in started:
        term.close()
    for term in started:
        assert b"Traceback" not in term.out + term.err, term.out + term.err


def of_type(home: Path, *types: str) -> list[dict]:
    return [e for e in events(home) if e["type"] in types]


# -- replies, Ctrl-C, Ctrl-D -------------------------------------------------------------------

def test_two_messages_then_ctrl_d_leaves(home, chat, server):
    server.script(Reply("first answer"), Reply("second answer"))
    term = chat(stderr_apart=True)

    assert term.out == prompt()  # the banner is not on stdout...
    assert term.line("hello") == b"hello\r\nfirst answer\r\n"
    assert term.line("and again") == b"and again\r\nsecond answer\r\n"
    term.type("\x04")
    assert term.wait() == 0
    assert term.out[term.pos:] == b""  # no prompt after Ctrl-D
    assert term.err == (b"fased chat with main, session s-1. /help for commands, "  # ...stderr
                        b"Ctrl-D to leave.\n\n")

    queued = [e["data"] for e in of_type(home, "turn.queued")]
    assert [(q["message"], q["session"], q["source"]) for q in queued] == [
        ("hello", "s-1", "interactive"), ("and again", "s-1", "interactive")]
    done = [e["data"] for e in of_type(home, "turn.completed")]
    assert [(d["turn"], d["reply"]) for d in done] == [
        (queued[0]["turn"], "first answer"), (queued[1]["turn"], "second answer")]
    lines = (home / "agents" / "main" / "sessions" / "s-1.jsonl").read_text().splitlines()
    header, *messages = (json.loads(x) for x in lines)
    assert header["id"] == "s-1"
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "hello"), ("assistant", "first answer"), ("user", "and again"),
        ("assistant", "second answer")]


def test_ctrl_c_stops_the_reply_keeps_it_aborted_and_the_loop_goes_on(home, chat, server):
    text = " ".join(f"word{i}" for i in range(1, 41))
    server.script(Reply(text, delay=0.25), Reply("still here"))  # one word per 0.25 s
    term = chat()

    term.type("tell me\r")
    term.expect(b"tell me\r\nword1 ")
    start = term.pos - len(b"word1 ")
    term.type("\x03")
    stopped = term.expect(re.compile(
        rb"(?:\^C)?\r\n\[stopped: the partial reply is kept, marked aborted\]\r\n"))
    shown = term.out[start:stopped.start()].decode()
    term.expect(prompt())
    assert term.alive()

    aborted = [e["data"] for e in of_type(home, "turn.aborted")]
    assert len(aborted) == 1, aborted
    partial = aborted[0]["partial_reply"]
    assert partial and text.startswith(partial) and partial != text, partial
    assert shown == partial  # what was shown is what was kept
    assert aborted[0]["reason"] == "interrupted"
    assert aborted[0]["model"] == "ollama/fake-model"
    assert not of_type(home, "turn.completed")
    assert rows(home, "SELECT state FROM turns") == [{"state": "aborted"}]
    transcript = home / "agents" / "main" / "sessions" / "s-1.jsonl"
    _, *messages = (json.loads(x) for x in transcript.read_text().splitlines())
    assert [(m["role"], m["content"], m.get("aborted")) for m in messages] == [
        ("user", "tell me", None), ("assistant", partial, True)]

    assert term.line("again") == b"again\r\nstill here\r\n"
    assert [e["data"]["reply"] for e in of_type(home, "turn.completed")] == ["still here"]
    term.type("\x04")
    assert term.wait() == 0


def test_ctrl_c_at_the_prompt_does_not_leave(home, chat, server):
    term = chat()

    # typed as a person types: the line, echoed, then Ctrl-C. (In one write, the terminal
    # can flush the line and signal while readline sits in read(): CPython's readline then
    # sees the Ctrl-C only at the next key.)
    term.type("half a line")
    term.expect(b"half a line")
    term.type("\x03")
    term.expect(b"^C\r\n" + prompt())
    assert term.alive()
    assert term.line("whole") == f"whole\r\n{DEFAULT_TEXT}\r\n".encode()
    assert [e["data"]["message"] for e in of_type(home, "turn.queued")] == ["whole"]
    term.type("\x04")
    assert term.wait() == 0


def test_ctrl_c_while_an_earlier_turn_is_answered_withdraws_the_message(home, chat, server,
                                                                      ok, run):
    text = " ".join(f"word{i}" for i in range(1, 41))
    server.script(Reply(text, delay=0.25))  # the earlier turn: one word per 0.25 s
    earlier = ok("chat", "--queue", "earlier").strip()
    term = chat(stderr_apart=True)

    term.type("later\r")
    wait_for(lambda: b"answering the earlier queued turn" in term.err or term._read(0.2))
    wait_for(lambda: len(server.requests) == 1)
    time.sleep(0.3)
    term.type("\x03")
    term.expect(prompt())
    wait_for(lambda: b"it will not be answered" in term.err or term._read(0.2))
    assert term.alive()

    later = next(e["data"]["turn"] for e in of_type(home, "turn.queued")
                 if e["data"]["message"] == "later")
    assert (f"fased: interrupted before turn {later} started; it will not be answered"
            in term.err.decode())
    aborted = [e["data"] for e in of_type(home, "turn.aborted")]
    assert [(a["turn"], a["partial_reply"], a["reason"]) for a in aborted] == [
        (later, "", "interrupted")]
    # the earlier turn goes back to the queue; a later runner answers it, and only it
    assert rows(home, "SELECT id, state FROM turns ORDER BY queued_seq") == [
        {"id": earlier, "state": "queued"}, {"id": later, "state": "aborted"}]
    assert run("run", "--until-idle").exit_code == 0
    assert [e["data"]["turn"] for e in of_type(home, "turn.completed")] == [earlier]
    assert len(server.requests) == 2

    assert term.line("and now") == f"and now\r\n{DEFAULT_TEXT}\r\n".encode()
    term.type("\x04")
    assert term.wait() == 0


# -- slash commands ----------------------------------------------------------------------------

def test_help_and_sessions(home, chat, server):
    term = chat()

    shown = term.line("/help").decode()
    assert shown.startswith("/help\r\nCommands:\r\n")
    for command in HELP_COMMANDS:
        assert f"\r\n  {command}" in shown, command

    assert term.line("/session new work", "s-2") == b"/session new work\r\nNew session s-2.\r\n"
    created = [e["data"] for e in of_type(home, "session.created")]
    assert created == [{"agent": "main", "session": "s-1", "name": None},
                       {"agent": "main", "session": "s-2", "name": "work"}]

    listed = term.line("/session list", "s-2").decode().split("\r\n")
    assert (listed[0], listed[-1]) == ("/session list", "")
    assert [x.split()[:-2] for x in listed[1:-1]] == [
        ["s-1", "0", "messages,", "updated"], ["*", "s-2", "work", "0", "messages,", "updated"]]
    assert all(re.search(r" updated \d{4}-\d\d-\d\d \d\d:\d\d$", x) for x in listed[1:-1])

    assert term.line("/session switch s-1") == (
        b"/session switch s-1\r\nSwitched to session s-1.\r\n")
    assert term.line("/session switch work", "s-2") == (
        b"/session switch work\r\nSwitched to session s-2.\r\n")
    assert term.line("/session switch s-1") == (
        b"/session switch s-1\r\nSwitched to session s-1.\r\n")
    assert term.line("to the first") == f"to the first\r\n{DEFAULT_TEXT}\r\n".encode()
    term.type("\x04")
    assert term.wait() == 0

    switched = [e["data"]["session"] for e in of_type(home, "session.switched")]
    assert switched == ["s-1", "s-2", "s-1", "s-2", "s-1"]
    assert [e["data"]["session"] for e in of_type(home, "turn.queued")] == ["s-1"]
    assert rows(home, "SELECT current_session FROM agents WHERE id = 'main'") == [
        {"current_session": "s-1"}]


def test_model_override_for_the_session(home, chat, server):
    term = chat()

    assert term.line("/model") == b"/model\r\nModel: ollama/fake-model (agent default)\r\n"
    assert term.line("/model ollama/fake-small") == (
        b"/model ollama/fake-small\r\nThis session now uses ollama/fake-small.\r\n")
    assert [e["data"] for e in of_type(home, "session.model_set")] == [
        {"agent": "main", "session": "s-1", "model": "ollama/fake-small"}]
    assert term.line("/model") == b"/model\r\nModel: ollama/fake-small (session override)\r\n"
    assert term.line("/model fake-small") == (
        b"/model fake-small\r\nThis session already uses ollama/fake-small.\r\n")
    assert len(of_type(home, "session.model_set")) == 1
    assert term.line("small one") == f"small one\r\n{DEFAULT_TEXT}\r\n".encode()
    assert [r["model"] for r in server.requests] == ["fake-small"]
    assert of_type(home, "turn.completed")[-1]["data"]["model"] == "ollama/fake-small"
    assert rows(home, "SELECT primary_model FROM agents WHERE id = 'main'") == [
        {"primary_model": "ollama/fake-model"}]

    assert term.line("/model clear") == (
        b"/model clear\r\nOverride cleared: this session uses the agent default.\r\n")
    assert [e["data"]["model"] for e in of_type(home, "session.model_set")] == [
        "ollama/fake-small", None]
    assert term.line("/model") == b"/model\r\nModel: ollama/fake-model (agent default)\r\n"
    assert term.line("big one") == f"big one\r\n{DEFAULT_TEXT}\r\n".encode()
    assert [r["model"] for r in server.requests] == ["fake-small", "fake-model"]

    before = events(home)
    shown = term.line("/model nowhere/fake-small").decode().split("\r\n")
    assert shown[0] == "/model nowhere/fake-small" and shown[1].startswith("Error: "), shown
    assert "nowhere" in shown[1], shown
    assert events(home) == before
    term.type("\x04")
    assert term.wait() == 0


def test_a_session_with_an_override_says_so_when_chat_starts(home, ok, chat, server):
    ok("session", "new", "--name", "ops")
    ok("session", "model", "set", "ollama/fake-small")
    term = chat(stderr_apart=True)

    assert term.line("hi") == f"hi\r\n{DEFAULT_TEXT}\r\n".encode()
    term.type("\x04")
    assert term.wait() == 0
    assert term.err.splitlines()[:2] == [
        b"fased chat with main, session s-1. /help for commands, Ctrl-D to leave.",
        b"fased: session ops answers with its override ollama/fake-small"]
    assert [r["model"] for r in server.requests] == ["fake-small"]


def test_model_option_carries_into_the_loop(home, chat, server):
    term = chat("-m", "ollama/fake-small", stderr_apart=True)

    assert term.out == b"This session now uses ollama/fake-small.\r\n" + prompt()
    assert term.line("hi") == f"hi\r\n{DEFAULT_TEXT}\r\n".encode()
    assert [r["model"] for r in server.requests] == ["fake-small"]
    assert [e["data"]["model"] for e in of_type(home, "session.model_set")] == [
        "ollama/fake-small"]
    term.type("\x04")
    assert term.wait() == 0


def test_queue_mode(home, chat, server):
    term = chat()

    assert term.line("/queue collect") == b"/queue collect\r\nQueue mode: collect.\r\n"
    assert [e["data"] for e in of_type(home, "session.queue_mode_set")] == [
        {"agent": "main", "session": "s-1", "mode": "collect"}]
    assert rows(home, "SELECT queue_mode FROM sessions WHERE id = 's-1'") == [
        {"queue_mode": "collect"}]
    before = events(home)

    shown = term.line("/queue bogus").decode().split("\r\n")
    assert shown[:2] == ["/queue bogus", "Error: unknown queue mode 'bogus'"], shown
    assert term.line("/queue") == b"/queue\r\nQueue mode: collect\r\n"
    assert events(home) == before
    term.type("\x04")
    assert term.wait() == 0


def test_exit_and_unknown_command(home, chat, server):
    term = chat()
    before = events(home)

    shown = term.line("/frobnicate now").decode().split("\r\n")
    assert shown[:2] == ["/frobnicate now", "Error: unknown command /frobnicate"], shown
    assert term.alive()
    assert events(home) == before
    term.type("/exit\r")
    term.expect(b"/exit\r\n")
    assert term.wait() == 0
    assert term.out[term.pos:] == b""  # no prompt after /exit
    assert events(home) == before


# -- history -----------------------------------------------------------------------------------

def test_history_is_saved_and_comes_back(home, chat, server):
    history = home / "chat_history"
    term = chat()
    term.line("hello")
    term.line("/queue")
    term.type("\x04")
    assert term.wait() == 0

    assert history.read_text().splitlines() == ["hello", "/queue"]
    assert history.stat().st_mode & 0o777 == 0o600  # private, like every file in the home

    again = chat()
    again.type("\x10\x10")  # Ctrl-P twice: back to the line before last, from the file
    again.expect(b"hello")
    shown = again.line("")
    assert shown.endswith(f"\r\n{DEFAULT_TEXT}\r\n".encode()), shown
    assert [e["data"]["message"] for e in of_type(home, "turn.queued")] == ["hello", "hello"]
    again.line("/model")
    again.type("\x04")
    assert again.wait() == 0
    assert history.read_text().splitlines() == ["hello", "/queue", "hello", "/model"]


# -- asking before a command runs (tools.exec.mode ask) -----------------------------------------

@pytest.mark.parametrize(("answer", "ran"), [("y", True), ("n", False)])
def test_exec_that_needs_asking_asks_on_the_terminal(home, server, answer, ran):
    server.script(Reply("", tool_calls=[("exec", json.dumps({"command": "touch asked"}))]),
                  Reply("done"))
    term = Terminal("run it", stderr_apart=True)  # a one-shot chat whose terminal is the pty

    term.expect(b"fased: the agent wants to run:\r\n    touch asked")
    term.expect(b"Run it? [y/N] ")
    term.type(answer + "\r")

    assert term.wait() == 0
    assert (home / "workspace" / "asked").exists() is ran
    finished = [e["data"] for e in events(home) if e["type"] == "tool.finished"]
    assert [f["status"] for f in finished] == ["ok" if ran else "denied"]
    started = [e["data"] for e in events(home) if e["type"] == "tool.started"]
    assert [s["approval"] for s in started] == (["user"] if ran else [])
    term.close()
    assert b"Traceback" not in term.out + term.err


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_one_shot_reply_stopped_midway_ends_its_line(home, server, stop):
    """SIGTERM printed its note on the partial reply's own line ('Infased: terminated ...'),
    and Ctrl-C left the shell's prompt there: an aborted reply ends its line, as a whole
    one does."""
    server.script(Reply("In the beginning there was a very long reply", delay=0.25))
    term = Terminal("tell me", stderr_apart=True)
    term.expect(b"In the")
    if stop == "ctrl-c":
        term.type("\x03")
    else:
        os.kill(term.pid, signal.SIGTERM)
    assert term.wait() == (130 if stop == "ctrl-c" else 143)
    shown = term.out.replace(b"^C", b"")
    assert shown.startswith(b"In the") and shown.endswith(b"\r\n"), shown
    assert shown.count(b"\r\n") == 1, shown
    term.close()


def test_sigterm_during_a_reply_ends_the_interactive_chat_with_its_turn(home, chat, server):
    """The runner's Stop escaped the interactive loop: a traceback, not exit 143."""
    server.script(Reply("In the beginning there was a very long reply", delay=0.25))
    term = chat()
    term.type("tell me\r")
    term.expect(b"In the")
    os.kill(term.pid, signal.SIGTERM)
    assert term.wait() == 143
    assert b"Traceback" not in term.out
    assert re.search(rb"In the[^\r\n]*\r\nTerminated\.\r\n\Z", term.out), term.out
    assert [e["data"]["reason"] for e in of_type(home, "turn.aborted")] == ["terminated"]
