"""Shared fixtures: every test gets its own FASED_HOME; `run` drives the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakeserver import FakeModelServer

from fased.commands.main import cli


@pytest.fixture(autouse=True)
def fased_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state directory; no test may touch the real ~/.fased."""
    home = tmp_path / "fased-home"
    monkeypatch.setenv("FASED_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    for name in ("FASED_IDEMPOTENCY_KEY", "FASED_DEBUG", "FASED_SEGMENT_BYTES", "FASED_NOW",
                 "FASED_DETECT_ENDPOINTS"):
        monkeypatch.delenv(name, raising=False)
    # subprocesses must import the installed fased, never the source tree in the cwd (whose
    # fased/ has no commands/ subpackage: setup.cfg maps it in at install time)
    monkeypatch.setenv("PYTHONSAFEPATH", "1")
    # no test may reach a real local model server by accident
    monkeypatch.setenv("FASED_DETECT_ENDPOINTS", "")
    # nor pull the embedded model in `fased setup` (tests/test_local_model.py does, once)
    monkeypatch.setenv("FASED_EMBEDDED", "0")
    return home


@pytest.fixture
def run():
    """Run `fased ARGS...` in-process; returns click's Result (exit_code, stdout, stderr)."""

    def _run(*args: str, input: str | None = None, env: dict | None = None):
        return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env,
                                  catch_exceptions=False)

    return _run


@pytest.fixture
def ok(run):
    """Run a command that must succeed; returns its stdout."""

    def _ok(*args: str, input: str | None = None, env: dict | None = None) -> str:
        result = run(*args, input=input, env=env)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result.stdout

    return _ok


@pytest.fixture
def set_up(ok, fased_home: Path) -> Path:
    """A home after `fased setup -y --no-detect`."""
    ok("setup", "-y", "--no-detect")
    return fased_home


@pytest.fixture
def server():
    """A fake model server on 127.0.0.1 speaking the real wire formats (tests/fakeserver.py);
    modules that need other defaults define their own."""
    with FakeModelServer() as srv:
        yield srv


@pytest.fixture
def models(set_up, ok, server) -> Path:
    """Agent main answers with ollama/fake-model on the fake server; no retries, no cooldown
    (modules that test those set their own)."""
    ok("agent", "models", "providers", "add", "ollama", "--kind", "ollama", "--base-url",
       server.url)
    ok("agent", "models", "set", "primary", "ollama/fake-model")
    ok("config", "set", "agents.defaults.retries", "0")
    ok("config", "set", "agents.defaults.cooldownSeconds", "0")
    return set_up


def wait_for(predicate, timeout: float = 20.0):
    """Poll until predicate() is truthy and return its value; fail the test after timeout."""
    import time

    until = time.monotonic() + timeout
    while time.monotonic() < until:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def run_process(*args: str, input: str | None = None, env: dict | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
    """Run fased as a separate process (for concurrency and kill tests)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", "from fased.commands.entry import main; main()", *args],
        input=input, capture_output=True, text=True, env=full_env, timeout=timeout,
    )


def run_together(when: str, n: int = 2) -> None:
    """Start n `fased run --once` processes at once with the same FASED_NOW; wait for all."""
    env = {**os.environ, "FASED_NOW": when}
    procs = [subprocess.Popen([sys.executable, "-c", "from fased.commands.entry import main; "
                               "main()", "run", "--once"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    try:
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            p.kill()


@contextlib.contextmanager
def tmpfs(mount: Path, size: str):
    """A tmpfs of `size` (`3m`) mounted at `mount` (created) for the block: a disk that
    fills, for real. Skips the test where none can be mounted."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def key_gateway_with_fallback(ok, keyed_url: str, spare_url: str, auth: list[str]) -> None:
    """Provider gw (kind litellm, its key from `auth`) as the primary, and a keyless spare
    (kind vllm) as its fallback; no cooldown between tries: how a credential that cannot be
    used is seen to fall back."""
    ok("agent", "models", "providers", "add", "gw", "--kind", "litellm", "--base-url", keyed_url)
    ok("agent", "models", "auth", "gw", *auth)
    ok("agent", "models", "providers", "add", "spare", "--kind", "vllm", "--base-url", spare_url)
    ok("agent", "models", "set", "primary", "gw/fake-model")
    ok("agent", "models", "fallback", "add", "spare/fake-model")
    ok("config", "set", "agents.defaults.retries", "2")
    ok("config", "set", "agents.defaults.cooldownSeconds", "0")


def events(home: Path) -> list[dict]:
    """Every event in the home's log, oldest first."""
    from fased.log import EventLog

    return list(EventLog(home).read())


def rows(home: Path, sql: str, params: tuple = ()) -> list[dict]:
    """Rows of the live projection database."""
    con = sqlite3.connect(home / "state.db")
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, params)]
    finally:
        con.close()


def read_json(path: Path) -> object:
    return json.loads(path.read_text())


def error_line(result) -> str:
    """The one `Error: ...` line of a failed command (and no traceback anywhere)."""
    assert "Traceback" not in result.stdout + result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def fails(run, home: Path, code: int, *args: str) -> str:
    """Run a command that must fail with `code` and append nothing; returns its Error line."""
    before = len(events(home))
    result = run(*args)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    assert len(events(home)) == before, args
    return error_line(result)


# -- a pinned clock (FASED_NOW) ----------------------------------------------------------------

T0 = "2026-03-02T08:00:00Z"


def ts(text: str) -> str:
    """The stored form of a time: `2026-03-02T09:00:00Z` -> `2026-03-02T09:00:00.000000Z`."""
    return text.replace("Z", ".000000Z")


@pytest.fixture
def at(monkeypatch):
    """Move the clock: at("2026-03-02T09:00:00Z") pins FASED_NOW for what runs next."""

    def _at(when: str) -> None:
        monkeypatch.setenv("FASED_NOW", when)

    _at(T0)
    return _at
