"""Channels: a Telegram bot answered end to end against a fake Bot API (tests/fakebotapi.py)
and the fake model server; an update is processed once and a reply sent once, across kill -9;
tasks deliver back to the chat; the token never shows."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import error_line, events, fails, rows, run_process, wait_for
from fakebotapi import TOKEN, FakeBotAPI
from fakeserver import Reply

FASED = [sys.executable, "-c", "from fased.commands.entry import main; main()"]
NO_TTY = {"FASED_NO_TTY": "1"}


def of_type(home: Path, *types: str) -> list[dict]:
    return [e["data"] for e in events(home) if e["type"] in types]


@pytest.fixture
def api():
    with FakeBotAPI() as fake:
        yield fake


@pytest.fixture
def bot(models, ok, api) -> Path:
    """A home whose agent answers with the fake model, with the fake bot added; anyone may
    write to it (dmPolicy open: pairing is routing's, tested in its own file)."""
    ok("channel", "add", "telegram", "--token-stdin", "--api-base", api.url, input=TOKEN)
    ok("config", "set", "channels.telegram.dmPolicy", "open")
    return models


def no_token_anywhere(home: Path, *outputs: str) -> None:
    """The token is in credentials.json only: not in the log, state.db, any file view, or
    anything printed."""
    for text in outputs:
        assert TOKEN not in text and TOKEN.split(":")[1] not in text
    for path in home.rglob("*"):
        if path.is_file() and path.name != "credentials.json":
            assert TOKEN.split(":")[1].encode() not in path.read_bytes(), path


# -- accounts ---------------------------------------------------------------------------------

def test_add_checks_the_token_with_getme_and_keeps_it_in_credentials_only(models, run, api):
    result = run("channel", "add", "telegram", "--token-stdin", "--api-base", api.url,
                 input=TOKEN + "\n")
    assert result.exit_code == 0, result.stderr
    assert "Added telegram/default: @fased_test_bot" in result.stdout
    assert [m for m, _ in api.requests] == ["getMe"]
    [added] = of_type(models, "channel.added")
    assert added["bot_username"] == "fased_test_bot" and added["token_kind"] == "stored"
    assert len(added["fingerprint"]) == 8
    creds = json.loads((models / "credentials.json").read_text())
    assert creds["channels"]["telegram/default"]["token"] == TOKEN
    assert oct((models / "credentials.json").stat().st_mode & 0o777) == "0o600"
    no_token_anywhere(models, result.stdout, result.stderr)


def test_a_token_telegram_rejects_is_one_line_and_records_nothing(models, run, api):
    api.token = "999:" + "x" * 35  # the fake knows another bot
    result = run("channel", "add", "telegram", "--token-stdin", "--api-base", api.url,
                 input=TOKEN)
    assert result.exit_code == 1
    assert error_line(result).startswith("Error: Telegram rejected the bot token (401")
    assert of_type(models, "channel.added") == []
    assert not (models / "credentials.json").exists()
    no_token_anywhere(models, result.stdout, result.stderr)


def test_a_malformed_token_is_a_usage_error_that_never_echoes_it(models, run, api):
    result = run("channel", "add", "telegram", "--token-stdin", "--api-base", api.url,
                 input="not-a-token-but-secret-looking-1234")
    assert result.exit_code == 1, result.stderr
    assert "not a Telegram bot token" in error_line(result)
    assert "secret-looking" not in result.stderr
    assert api.requests == []


@pytest.mark.parametrize(("given", "error"), [
    ("   \n", "Error: the token is empty; nothing was stored"),
    ("123:abc\n456:def\n", "Error: the token spans several lines; nothing was stored")])
def test_a_token_that_is_not_one_line_is_refused_before_telegram_is_asked(models, run, api,
                                                                          given, error):
    result = run("channel", "add", "telegram", "--token-stdin", "--api-base", api.url,
                 input=given)
    assert (result.exit_code, error_line(result)) == (2, error)
    assert api.requests == [] and of_type(models, "channel.added") == []


def test_token_env_records_the_variable_name_only(models, run, ok, api, monkeypatch):
    monkeypatch.setenv("BOT_TOKEN", TOKEN)
    out = ok("channel", "add", "telegram", "--account", "work", "--token-env", "BOT_TOKEN",
             "--api-base", api.url)
    assert "$BOT_TOKEN" in out
    [added] = of_type(models, "channel.added")
    assert added == {**added, "token_kind": "env", "env": "BOT_TOKEN", "account": "work"}
    assert "fingerprint" not in added
    status = json.loads(ok("channel", "status", "--probe", "--json"))
    assert [(s["account"], s["ready"]) for s in status] == [("work", True)]
    monkeypatch.delenv("BOT_TOKEN")
    result = run("channel", "status")
    assert result.exit_code == 1 and "$BOT_TOKEN is not set" in result.stdout


def test_list_show_remove(bot, ok, run, api):
    listed = json.loads(ok("channel", "list", "--json"))
    assert [(i["channel"], i["account"], i["bot"]["username"], i["token"]) for i in listed] == [
        ("telegram", "default", "fased_test_bot", "stored")]
    shown = json.loads(ok("channel", "show", "--json"))
    assert shown["api_base"] == api.url and shown["offset"] is None
    assert "@fased_test_bot" in ok("channel", "list")
    ok("channel", "remove", "telegram")
    assert json.loads(ok("channel", "list", "--json")) == []
    assert "channels" not in json.loads((bot / "credentials.json").read_text()) or (
        json.loads((bot / "credentials.json").read_text())["channels"] == {})
    fails(run, bot, 1, "channel", "remove", "telegram")
    fails(run, bot, 1, "channel", "poll")


def test_api_base_from_config(models, ok, api):
    ok("config", "set", "channels.telegram.apiBase", json.dumps(api.url))
    ok("channel", "add", "telegram", "--token-stdin", input=TOKEN)
    assert [m for m, _ in api.requests] == ["getMe"]
    assert "api_base" not in of_type(models, "channel.added")[0]


@pytest.mark.parametrize("base, says", [
    ("https://user:pa55@proxy.example/tg", "credentials"),
    ("https://proxy.example/tg?key=s3cret", "credentials"),
    ("not a url", "invalid channels.telegram.apiBase"),
])
def test_an_api_base_with_credentials_or_no_url_is_refused_before_it_is_recorded(
        models, run, base, says):
    """The Bot API base is recorded as it is (config.set, channel.added): credentials in it
    would be in the log, and a value that is no URL only failed at the first poll."""
    log_before = sorted((p.name, p.stat().st_size) for p in (models / "log").rglob("*"))
    result = run("config", "set", "channels.telegram.apiBase", json.dumps(base))
    assert result.exit_code == 2, result.stdout
    assert says in result.stderr and "pa55" not in result.stderr and "s3cret" not in (
        result.stderr)
    added = run("channel", "add", "telegram", "--token-stdin", "--api-base", base,
                input=TOKEN)
    assert added.exit_code == 2 and "pa55" not in added.stderr
    assert sorted((p.name, p.stat().st_size) for p in (models / "log").rglob("*")) == (
        log_before)


# -- a DM answered end to end -----------------------------------------------------------------

def test_a_dm_is_answered_once_end_to_end(bot, run, api, server):
    server.script(Reply("**Hi** Alice"))
    update = api.message(42, "hello there")
    result = run("channel", "poll", env=NO_TTY)
    assert result.exit_code == 0, result.stderr
    assert "1 update(s) received (1 turn), 1 turn(s) answered, 1 message(s) sent" in \
        result.stderr
    assert api.sent == [{"chat_id": "42", "text": "*Hi* Alice", "parse_mode": "Markdown"}]
    assert {"chat_id": "42", "action": "typing"} in api.actions
    [received] = of_type(bot, "channel.received")
    assert (received["update_id"], received["text"], received["peer_kind"]) == (
        update, "hello there", "dm")
    [admitted] = of_type(bot, "channel.admitted")
    [queued] = of_type(bot, "turn.queued")
    assert admitted["turn"] == queued["turn"] and queued["message"] == "hello there"
    assert of_type(bot, "session.origin_set")[0]["peer_id"] == "42"
    assert rows(bot, "SELECT name FROM sessions") == [{"name": "dm:42"}]
    [sent] = of_type(bot, "channel.sent")
    assert sent["outcome"] == "sent" and sent["message_id"] == str(api.next_message)
    # the model saw the message
    assert server.requests[0]["json"]["messages"][-1]["content"] == "hello there"
    # the next poll confirms the update and sends nothing again
    assert run("channel", "poll").exit_code == 0
    assert api.calls("getUpdates")[-1]["offset"] == update + 1
    assert len(api.sent) == 1 and len(server.requests) == 1
    assert len(of_type(bot, "channel.received")) == 1


def test_under_the_default_policy_an_allowlisted_dm_is_answered_and_a_stranger_paired(
        bot, ok, api, server):
    ok("config", "unset", "channels.telegram.dmPolicy")  # pairing, the default
    ok("config", "set", "channels.telegram.allowFrom", "[42]")
    server.script(Reply("hello friend"))
    api.message(42, "hi, I am allowed")
    api.message(77, "hi, I am new", username="mallory")
    ok("channel", "poll")
    assert api.texts(42) == ["hello friend"]
    [code_message] = api.texts(77)
    [pairing] = [a for a in of_type(bot, "channel.admitted") if a["action"] == "reply"]
    assert pairing["reason"] == "pairing-requested" and pairing["reply"] == code_message
    assert len(server.requests) == 1  # the stranger got no turn
    ok("channel", "poll")
    assert len(api.texts(77)) == 1  # the code went out once


def test_updates_fased_does_not_handle_still_move_the_offset(bot, ok, api):
    first = api.other_update()
    ok("channel", "poll")
    assert [e["kind"] for e in of_type(bot, "channel.received")] == ["other"]
    ok("channel", "poll")
    assert api.calls("getUpdates")[-1]["offset"] == first + 1
    assert of_type(bot, "turn.queued") == [] and api.sent == []


def test_no_answer_queues_and_run_channels_answers(bot, ok, run, api, server):
    server.script(Reply("from the runner"))
    api.message(7, "queued only")
    ok("channel", "poll", "--no-answer")
    assert rows(bot, "SELECT state FROM turns") == [{"state": "queued"}]
    result = run("run", "--once", "--channels", env=NO_TTY)
    assert result.exit_code == 0, result.stderr
    assert api.texts(7) == ["from the runner"]


def test_run_channels_polls_while_idle(bot, run, api, server):
    server.script(Reply("answered by run"))
    api.message(8, "hi runner")
    result = run("run", "--until-idle", "--channels", env=NO_TTY)
    assert result.exit_code == 0, result.stderr
    assert api.texts(8) == ["answered by run"]
    assert {"chat_id": "8", "action": "typing"} in api.actions


def test_a_long_reply_is_split_under_the_limit(bot, ok, api, server):
    paragraphs = [f"Paragraph {i}. " + "word " * 300 for i in range(7)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 9000
    server.script(Reply(text))
    api.message(42, "write a lot")
    ok("channel", "poll")
    parts = api.texts(42)
    assert len(parts) == 3 and all(len(p) <= 4096 for p in parts)
    assert "".join(parts) == text
    assert [s["part"] for s in of_type(bot, "channel.sent")] == [0, 1, 2]


def test_a_reply_of_emoji_is_split_by_telegrams_count_of_utf16_units(bot, ok, api, server):
    """An emoji is one Python character and two UTF-16 units, which is what Telegram counts:
    3,000 of them fit 4,096 characters but not 4,096 units."""
    text = "\U0001F600" * 3000
    server.script(Reply(text))
    api.message(42, "smile")
    ok("channel", "poll")
    parts = api.texts(42)
    assert len(parts) == 2, [len(p) for p in parts]
    assert all(len(p.encode("utf-16-le")) // 2 <= 4096 for p in parts)
    assert "".join(parts) == text
    assert [s["outcome"] for s in of_type(bot, "channel.sent")] == ["sent", "sent"]


def test_rejected_entities_fall_back_to_plain_text(bot, ok, api, server):
    server.script(Reply("snake_case names"))  # one _ : legacy Markdown cannot parse it
    api.message(42, "names?")
    ok("channel", "poll")
    assert [(b.get("parse_mode"), b["text"]) for b in api.calls("sendMessage")] == [
        ("Markdown", "snake_case names"), (None, "snake_case names")]
    assert api.texts(42) == ["snake_case names"]
    assert of_type(bot, "channel.sent")[0]["plain"] is True


def test_429_waits_retry_after_then_sends(bot, ok, api, server):
    server.script(Reply("after the wait"))
    api.rate_limit("sendMessage", retry_after=1)
    api.message(42, "hi")
    start = time.monotonic()
    ok("channel", "poll")
    assert time.monotonic() - start >= 1
    assert len(api.calls("sendMessage")) == 2
    assert api.texts(42) == ["after the wait"]


def test_409_is_reported_clearly(bot, run, api):
    api.fail("getUpdates", 409, "Conflict: terminated by other getUpdates request; make sure "
             "that only one bot instance is running")
    result = run("channel", "poll")
    assert result.exit_code == 3
    assert "409 Conflict: another poller or a webhook is reading this bot's updates" in \
        error_line(result)


def test_a_second_poller_stops_at_once(bot, run):
    fd = os.open(bot / "channel-telegram-default.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = fails(run, bot, 3, "channel", "poll")
        assert "another poller is reading telegram/default" in line
    finally:
        os.close(fd)


def test_a_failed_send_is_retried_by_the_next_poll(bot, ok, api, server):
    server.script(Reply("eventually"))
    api.fail("sendMessage", 502, "Bad Gateway")
    api.message(42, "hi")
    ok("channel", "poll")
    assert api.sent == []
    [failed] = of_type(bot, "channel.sent")
    assert (failed["outcome"], failed["retry"]) == ("failed", True)
    ok("channel", "poll")
    assert api.texts(42) == ["eventually"]


def test_a_parked_approval_is_announced_in_the_chat(bot, ok, api, server):
    server.script(Reply("", tool_calls=[("exec", json.dumps({"command": "touch x"}))]),
                  Reply("ran it"))
    api.message(42, "make x")
    ok("channel", "poll", env=NO_TTY)
    [request] = of_type(bot, "approval.requested")
    [prompt] = api.texts(42)
    assert request["id"] in prompt and "touch x" in prompt
    assert f"fased approvals approve {request['id']}" in prompt
    ok("approvals", "approve", request["id"])
    ok("channel", "poll", env=NO_TTY)
    assert api.texts(42) == [prompt, "ran it"]


# -- tasks deliver back -----------------------------------------------------------------------

def test_a_task_in_a_telegram_session_delivers_to_the_chat(bot, ok, run, api, server):
    server.script(Reply("first"), Reply("task reply"))
    api.message(42, "hi")
    ok("channel", "poll")
    out = json.loads(ok("task", "new", "--session", "dm:42", "--every", "1h",
                        "--message", "check the build", "--json"))
    assert of_type(bot, "task.created")[0]["deliver"] == "channel"
    result = run("task", "run", out["task"], env=NO_TTY)
    assert result.exit_code == 0, result.stderr
    assert api.texts(42) == ["first", "task reply"]
    [delivered] = of_type(bot, "task.delivered")
    assert (delivered["ok"], delivered["target"]) == (True, "channel")
    # delivering again sends nothing twice
    ok("task", "deliver", out["task"])
    assert api.texts(42) == ["first", "task reply"]


def test_the_heartbeat_of_an_agent_whose_main_session_is_a_chat_speaks_there(bot, ok, api,
                                                                             server):
    """dmScope main puts the chat in the agent's main session, where the heartbeat runs: a
    reply that needs attention goes to the chat, an acknowledgement nowhere."""
    ok("config", "set", "session.dmScope", "main")
    server.script(Reply("hello there"), Reply("HEARTBEAT_OK"), Reply("The build is red."))
    api.message(42, "hi")
    ok("channel", "poll")
    (bot / "workspace" / "HEARTBEAT.md").write_text("# HEARTBEAT.md\n\n- [ ] Is the build green?\n")
    ok("config", "set", "agents.list[0].heartbeat", '{"every": "30m"}')
    for when in ("2030-01-01T08:00:00Z", "2030-01-01T08:30:00Z", "2030-01-01T09:00:00Z"):
        done = run_process("run", "--once", env={"FASED_NOW": when, **NO_TTY})
        assert done.returncode == 0, done.stderr
    assert json.loads(ok("agent", "heartbeat", "--json"))
    beats = [t for t in of_type(bot, "task.created") if t.get("kind") == "heartbeat"]
    assert [t.get("deliver") for t in beats] == ["channel"]
    assert api.texts(42) == ["hello there", "The build is red."]


def test_a_heartbeat_made_before_the_chat_follows_it_there(bot, ok, api, server):
    ok("config", "set", "session.dmScope", "main")
    (bot / "workspace" / "HEARTBEAT.md").write_text("# HEARTBEAT.md\n\n- [ ] Is the build green?\n")
    ok("config", "set", "agents.list[0].heartbeat", '{"every": "30m"}')
    done = run_process("run", "--once", env={"FASED_NOW": "2030-01-01T08:00:00Z", **NO_TTY})
    assert done.returncode == 0, done.stderr
    server.script(Reply("hello there"), Reply("The build is red."))
    api.message(42, "hi")
    ok("channel", "poll")
    done = run_process("run", "--once", env={"FASED_NOW": "2030-01-01T08:30:00Z", **NO_TTY})
    assert done.returncode == 0, done.stderr
    assert [u.get("deliver") for u in of_type(bot, "task.updated")] == ["channel"]
    assert api.texts(42) == ["hello there", "The build is red."]


def test_chat_schedule_defaults_to_the_channel_and_other_sessions_refuse_it(bot, ok, run, api,
                                                                           server):
    api.message(42, "hi")
    ok("channel", "poll")
    ok("chat", "--session", "dm:42", "--schedule", "every 1h", "ping")
    assert of_type(bot, "task.created")[-1]["deliver"] == "channel"
    ok("session", "new", "--name", "local")
    line = fails(run, bot, 2, "task", "new", "--session", "local", "--every", "1h",
                 "--message", "m", "--deliver", "channel")
    assert "did not come from a channel" in line
    ok("task", "new", "--session", "dm:42", "--every", "1h", "--message", "m",
       "--deliver", "none")
    assert "deliver" not in of_type(bot, "task.created")[-1]


# -- exactly once across kill -9 --------------------------------------------------------------

def _poller(env_extra: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*FASED, "channel", "poll", "--lease", "1"],
                            env={**os.environ, **NO_TTY, **(env_extra or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_while_answering_loses_nothing_and_sends_once(bot, api, server):
    server.script(Reply("slow answer", delay=2.0), Reply("the answer"))
    api.message(42, "hi")
    proc = _poller()
    wait_for(lambda: server.requests)  # the model is answering
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert api.sent == []
    time.sleep(1.2)  # the dead poller's lease runs out
    done = run_process("channel", "poll", "--lease", "1", env=NO_TTY)
    assert done.returncode == 0, done.stderr
    assert api.texts(42) == ["the answer"]
    assert len(of_type(bot, "channel.received")) == 1
    assert len(of_type(bot, "turn.queued")) == 1
    assert len(of_type(bot, "turn.started")) == 2  # the dead poller's claim, then the new one
    assert run_process("channel", "poll").returncode == 0
    assert api.texts(42) == ["the answer"]


def test_kill_9_while_sending_is_reported_not_sent_again(bot, ok, api, server):
    server.script(Reply("sent at most once"))
    api.send_delay = 2.0
    api.message(42, "hi")
    proc = _poller()
    wait_for(lambda: api.calls("sendMessage"))  # sending: the intent is recorded
    assert of_type(bot, "channel.sending")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    api.send_delay = 0
    wait_for(lambda: api.sent)  # the fake got it after all: a resend would be a duplicate
    done = run_process("channel", "poll")
    assert done.returncode == 0, done.stderr
    assert "may have arrived, so it is not sent again" in done.stderr
    assert api.texts(42) == ["sent at most once"]
    assert [s["outcome"] for s in of_type(bot, "channel.sent")] == ["unknown"]
    status = ok("channel", "status")
    assert "may not have arrived: part 1/1 of reply:" in status
    no_token_anywhere(bot, done.stdout, done.stderr, status)


# -- a connection the server breaks ----------------------------------------------------------

@pytest.mark.parametrize("how, says", [
    ("reset", "the connection broke"),
    ("short", "the connection closed before the whole body came"),
    ("chunk", "sent a malformed chunk"),
    ("gzip", "sent a body that cannot be decompressed"),
])
def test_an_answer_that_breaks_after_its_headers_is_one_line(models, run, api, how, says):
    api.cut("getMe", how)
    result = run("channel", "add", "telegram", "--token-stdin", "--api-base", api.url,
                 input=TOKEN)
    assert result.exit_code == 1
    assert error_line(result) == f"Error: Telegram getMe: cannot reach {api.url}: {says}"
    assert of_type(models, "channel.added") == []
    assert not (models / "credentials.json").exists()
    no_token_anywhere(models, result.stdout, result.stderr)


def test_a_connection_reset_while_receiving_loses_no_update(bot, run, api, server):
    server.script(Reply("got it"))
    api.message(42, "hi")
    api.cut("getUpdates")
    result = run("channel", "poll")
    assert result.exit_code == 1
    assert error_line(result) == (
        f"Error: Telegram getUpdates: cannot reach {api.url}: the connection broke")
    assert of_type(bot, "channel.received") == []
    assert run("channel", "poll").exit_code == 0
    assert api.texts(42) == ["got it"]


def test_a_send_whose_connection_broke_may_have_arrived_and_is_never_sent_again(bot, ok, run,
                                                                                 api, server):
    server.script(Reply("sent at most once"))
    api.message(42, "hi")
    api.cut("sendMessage")  # handled, so the chat has it; the answer is cut off
    result = run("channel", "poll")
    assert "Traceback" not in result.stderr and "bug in fased" not in result.stderr
    said = (f"Telegram sendMessage to {api.url}: the connection broke; it may have arrived, "
            "so it is not sent again")
    assert said in result.stderr
    [sent] = of_type(bot, "channel.sent")
    assert (sent["outcome"], sent["error"]) == ("unknown", said)
    assert run("channel", "poll").exit_code == 0
    assert api.texts(42) == ["sent at most once"]
    assert len(api.calls("sendMessage")) == 1
    assert "may not have arrived: part 1/1 of reply:" in ok("channel", "status")


# -- the token never shows --------------------------------------------------------------------

def test_the_token_is_in_no_output_or_log_line_when_the_network_fails(bot, run):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = run("channel", "add", "telegram", "--account", "b", "--token-stdin",
                 "--api-base", dead, input=TOKEN)
    assert result.exit_code == 1
    assert "cannot reach" in error_line(result)
    no_token_anywhere(bot, result.stdout, result.stderr)


def test_a_bot_api_url_is_masked_wherever_urls_are():
    from fased.redact import mask_url, mask_urls

    assert mask_url(f"https://api.telegram.org/bot{TOKEN}/getMe") == (
        "https://api.telegram.org/bot***/getMe")
    assert TOKEN not in mask_urls(f"failed: http://127.0.0.1:9/bot{TOKEN}/sendMessage (x)")


# -- the seam with routing, and the channel's own parsing -------------------------------------

def test_routing_can_answer_or_ignore_instead_of_queuing_a_turn(bot, ok, api, monkeypatch):
    from fased.channels import routing

    def admit(store, inbound):
        if inbound.text == "let me in":
            return routing.Admission("reply", reply="Your pairing code: ABCD2345",
                                     reason="pairing")
        if inbound.text == "to a ghost":
            return routing.Admission("turn", agent="ghost", session="x")
        return routing.Admission("ignore", reason="not allowed")

    monkeypatch.setattr(routing, "admit", admit)
    api.message(50, "let me in")
    api.message(51, "spam")
    api.message(52, "to a ghost")
    ok("channel", "poll")
    assert api.texts() == ["Your pairing code: ABCD2345"]
    assert [(a["action"], a.get("reason")) for a in of_type(bot, "channel.admitted")] == [
        ("reply", "pairing"), ("ignore", "not allowed"), ("ignore", "no agent 'ghost'")]
    assert of_type(bot, "turn.queued") == []
    ok("channel", "poll")
    assert len(api.sent) == 1


def test_group_messages_say_whether_the_bot_was_mentioned():
    from fased.channels.telegram import TelegramChannel

    tg = TelegramChannel(TOKEN, bot={"id": "123456789", "username": "fased_test_bot"})

    def parse(text, **extra):
        msg = {"message_id": 5, "chat": {"id": -100, "type": "supergroup"},
               "from": {"id": 7, "username": "bob"}, "text": text, **extra}
        return tg.parse({"update_id": 1, "message": msg})

    assert parse("hi @Fased_Test_Bot").mentioned is True
    assert parse("hi all").mentioned is False
    assert parse("yes", reply_to_message={"from": {"id": 123456789}}).mentioned is True
    m = parse("hi")
    assert (m.peer_kind, m.peer_id, m.sender_id, m.sender_name) == ("group", "-100", "7", "@bob")
    assert tg.parse({"update_id": 2, "edited_message": {}}) is None


def test_run_channels_never_holds_the_loop_longer_than_the_poll(bot, api):
    from fased.channels.poll import Ticker
    from fased.store import Store

    st = Store(bot)
    try:
        start = time.monotonic()
        assert Ticker(st, lambda s: None).tick(1.0) == 0
        # at most the poll and a loaded machine's stall; a long poll of its own (25-50 s) fails
        assert 0.9 <= time.monotonic() - start < 5
        assert api.calls("getUpdates")[-1]["timeout"] == 1
    finally:
        st.close()


def test_a_token_given_as_an_argument_is_refused_without_echoing_it(models, run, api):
    line = fails(run, models, 2, "channel", "add", "telegram", TOKEN, "--api-base", api.url)
    assert "not taken as an argument" in line and TOKEN not in line
    assert api.requests == []


def test_two_overlapping_getupdates_get_409_and_the_poll_says_why(bot, run, api):
    import threading

    import requests

    waiting = threading.Thread(target=requests.post, args=(f"{api.url}/bot{TOKEN}/getUpdates",),
                               kwargs={"json": {"timeout": 3}, "timeout": 10})
    waiting.start()
    try:
        wait_for(lambda: api.calls("getUpdates"))  # another bot instance is long-polling
        result = run("channel", "poll")
        assert result.exit_code == 3, result.stderr
        assert "409 Conflict" in error_line(result)
    finally:
        waiting.join()


def test_an_account_name_with_a_trailing_newline_is_refused(models, run, api):
    line = fails(run, models, 2, "channel", "add", "telegram", "--account", "work\n",
                 "--token-stdin", "--api-base", api.url)
    assert "invalid account name" in line


def test_a_bot_token_in_the_environment_never_reaches_a_tool():
    """A chat message is untrusted input: an agent's exec must not find the bot's token,
    whatever the variable holding it is called."""
    from fased.tools.exec import tool_environment

    assert tool_environment({"TG_BOT": TOKEN, "HOME_DIR": "/home/u"}) == {"HOME_DIR": "/home/u"}


def test_sigterm_gives_the_turn_back_and_the_next_poll_answers_it(bot, api, server):
    server.script(Reply("slow", delay=3.0), Reply("after sigterm"))
    api.message(42, "hi")
    proc = _poller()
    wait_for(lambda: server.requests)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 143
    assert [a["reason"] for a in of_type(bot, "turn.abandoned")] == ["terminated"]
    done = run_process("channel", "poll", env=NO_TTY)  # no lease to wait for
    assert done.returncode == 0, done.stderr
    assert api.texts(42) == ["after sigterm"]

