"""Text fased keeps and later prints is one line of printable text: what a Telegram server
says about its bot and its senders, the skill loader's notes about broken skill folders,
skill names given as arguments, and the SKILL.md `skill new` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import error_line, events, fails
from fakebotapi import BOT, TOKEN, FakeBotAPI

from fased.channels.telegram import TelegramChannel


def of_type(home: Path, *types: str) -> list[dict]:
    return [e["data"] for e in events(home) if e["type"] in types]


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# -- what a Telegram server says ---------------------------------------------------------------

@pytest.fixture
def evil_api():
    with FakeBotAPI(bot={**BOT, "username": "evil\nbot", "first_name": "Evil\tName"}) as fake:
        yield fake


def test_a_bot_username_with_a_newline_is_kept_and_printed_escaped(set_up, run, ok, evil_api):
    added = run("channel", "add", "telegram", "--token-stdin", "--api-base", evil_api.url,
                input=TOKEN)
    assert added.exit_code == 0, added.stderr
    [line] = lines_with(added.stdout, "Added telegram/default")
    assert line.startswith("Added telegram/default: @evil\\x0abot; its token is read from")
    [data] = of_type(set_up, "channel.added")
    assert (data["bot_username"], data["bot_name"]) == ("evil\\x0abot", "Evil\\x09Name")
    assert lines_with(ok("channel", "show"), "Bot:") == [
        f"Bot:           @evil\\x0abot ({BOT['id']})"]
    status = ok("channel", "status", "--probe")
    assert status.splitlines()[0] == "telegram/default (@evil\\x0abot): ready (probed)"


def test_every_field_kept_from_getupdates_is_escaped_like_the_senders_name():
    client = TelegramChannel(TOKEN, "http://127.0.0.1:9", bot={"id": "1", "username": "b"})
    inbound = client.parse({"update_id": 5, "message": {
        "message_id": "7\n8", "text": "two\nlines",
        "chat": {"id": "4\n2", "type": "private"},
        "from": {"id": "4\x1b2", "username": "ma\nl"}}})
    assert (inbound.peer_id, inbound.sender_id, inbound.sender_name, inbound.message_id) == (
        "4\\x0a2", "4\\x1b2", "@ma\\x0al", "7\\x0a8")
    assert inbound.text == "two\nlines"  # a message may have lines: escaped when shown


def test_a_senders_name_is_recorded_escaped_when_the_update_is(set_up, ok, evil_api):
    ok("channel", "add", "telegram", "--token-stdin", "--api-base", evil_api.url, input=TOKEN)
    evil_api.message(42, "hi", username="ma\nl")
    ok("channel", "poll", "--no-answer")
    [received] = of_type(set_up, "channel.received")
    assert received["sender_name"] == "@ma\\x0al"


# -- the skill loader's notes ------------------------------------------------------------------

def write_skill(folder: Path, front: str) -> None:
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(f"---\n{front}---\nbody\n")


@pytest.mark.parametrize("command", [("skill", "list"), ("skill", "check"),
                                     ("agent", "skills")])
def test_a_skill_folder_named_with_a_newline_is_skipped_in_one_line(set_up, run, command):
    skills = set_up / "workspace" / "skills"
    write_skill(skills / "bad\nname", "name: bad\ndescription: d\n")
    write_skill(skills / "no\tdesc", "name: no-desc\n")
    result = run(*command)
    assert result.exit_code == 0, result.stderr
    notes = lines_with(result.stderr, "skill skipped")
    assert sorted(notes) == [
        f"skill skipped: {skills}/bad\\x0aname/SKILL.md: name 'bad' does not match its "
        "folder 'bad\\nname'",
        f"skill skipped: {skills}/no\\x09desc/SKILL.md: missing description"]


def test_a_gate_from_skill_md_is_shown_escaped_in_the_status(set_up, ok):
    write_skill(set_up / "workspace" / "skills" / "gated",
                'name: gated\ndescription: d\nmetadata: {"fased": {"requires": '
                '{"bins": ["no-such\\nbin"]}}}\n')
    [line] = lines_with(ok("skill", "check"), "gated (workspace)")
    assert line == "  gated (workspace): missing: bins=no-such\\x0abin"


# -- skill names given as arguments ------------------------------------------------------------

LONG = "a" * 100_000


@pytest.mark.parametrize("args", [("agent", "skills", "deny", "main", LONG),
                                  ("agent", "skills", "allow", "main", LONG),
                                  ("agent", "skills", "reset", "main", LONG),
                                  ("skill", "remove", LONG),
                                  ("skill", "show", LONG),
                                  ("skill", "env", LONG, "VAR"),
                                  ("skill", "install", ".", "--name", LONG),
                                  ("skill", "new", LONG)])
def test_a_skill_name_over_64_characters_is_refused_everywhere(set_up, run, args):
    line = fails(run, set_up, 2, *args)
    assert "is 100,000 characters; a skill name has at most 64" in line
    assert len(line) <= 1000


def test_deny_of_a_valid_name_still_works(set_up, ok):
    assert ok("agent", "skills", "deny", "main", "skill-writing") == (
        "Denied skill-writing for main.\n")


# -- what `skill new` writes, its own loader reads ---------------------------------------------

@pytest.mark.parametrize("description", [" ", "", "\t", "x" * 1025, "a\nb", "a\rb",
                                         "a\x1bb", "a\ufffeb"])
def test_skill_new_refuses_a_description_its_loader_would_skip(set_up, run, description):
    line = fails(run, set_up, 2, "skill", "new", "s", "-d", description)
    assert "--description" in line and "\\x0a" not in line
    assert not (set_up / "workspace" / "skills" / "s").exists()


@pytest.mark.parametrize("description", ["Does a thing: use it when asked", "  padded  ",
                                         "quotes \" and ' and # too", "---"])
def test_what_skill_new_writes_its_loader_offers(set_up, ok, description):
    ok("skill", "new", "s", "-d", description)
    [skill] = [s for s in json.loads(ok("skill", "list", "--json"))["skills"]
               if s["name"] == "s"]
    assert skill["status"] == "ready" and skill["description"] == description.strip()


def test_skill_new_without_a_description_writes_a_valid_placeholder(set_up, ok, run):
    ok("skill", "new", "s")
    result = run("skill", "list")
    assert "skill skipped" not in result.stderr
    assert error_line(run("skill", "new", "s")).startswith("Error: ")
