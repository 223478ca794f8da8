"""Channel routing, sessions and who may talk: admit() against a real Store in a temp home,
and the `fased channel bind|unbind|routes` and `fased pairing` commands."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from conftest import error_line, events, fails, read_json, rows, ts

from fased.channels.base import Inbound
from fased.channels.routing import admit
from fased.store import Store


@pytest.fixture
def home(set_up, ok, at):
    """A set-up home with agents main (the default) and ops, the clock pinned at T0."""
    ok("agent", "create", "ops")
    return set_up


def store(home) -> Store:
    return Store(home, command="test")


def dm(sender: str = "111", text: str = "hi", account: str = "default",
       name: str = "Ann") -> Inbound:
    return Inbound(channel="telegram", account=account, peer_kind="dm", peer_id=sender,
                   sender_id=sender, sender_name=name, text=text, mentioned=False,
                   message_id="1", update_id="1")


def group(group_id: str = "-100200", sender: str = "111", mentioned: bool = True,
          account: str = "default") -> Inbound:
    return Inbound(channel="telegram", account=account, peer_kind="group", peer_id=group_id,
                   sender_id=sender, sender_name="Ann", text="@bot hi", mentioned=mentioned,
                   message_id="1", update_id="1")


def types(home) -> list[str]:
    return [e["type"] for e in events(home)]


def code_of(reply: str) -> str:
    return re.search(r"Pairing code: (\S+)", reply).group(1)


# -- routing ------------------------------------------------------------------------------------

def test_bindings_route_two_agents(home, ok):
    ok("config", "set", "channels.telegram.dmPolicy", "open")
    ok("channel", "bind", "--channel", "telegram", "--peer", "dm:222", "--agent", "ops")
    st = store(home)
    first, second = admit(st, dm("111")), admit(st, dm("222"))
    assert (first.action, first.agent, first.session) == ("turn", "main", "dm:111")
    assert (second.action, second.agent, second.session) == ("turn", "ops", "dm:222")
    assert read_json(home / "fased.json")["bindings"] == [
        {"match": {"channel": "telegram", "peer": {"kind": "dm", "id": "222"}}, "agent": "ops"}]


def test_the_most_specific_binding_wins(home, ok):
    ok("agent", "create", "work")
    ok("agent", "create", "vip")
    ok("config", "set", "channels.telegram.dmPolicy", "open")
    # listed least specific last, so order in the list cannot be what decides
    ok("channel", "bind", "--channel", "telegram", "--peer", "dm:7", "--agent", "vip")
    ok("channel", "bind", "--channel", "telegram", "--account", "biz", "--agent", "work")
    ok("channel", "bind", "--channel", "telegram", "--agent", "ops")
    st = store(home)
    assert admit(st, dm("1")).agent == "ops"                       # channel
    assert admit(st, dm("1", account="biz")).agent == "work"       # account beats channel
    assert admit(st, dm("7", account="biz")).agent == "vip"        # peer beats account
    assert admit(st, replace(dm("1"), channel="slack")).agent == "main"  # no match: default
    out = json.loads(ok("channel", "routes", "--explain", "telegram/biz/dm:7", "--json"))
    assert out["explain"]["agent"] == "vip" and out["explain"]["rule"] == 0
    assert out["explain"]["why"] == "bindings[0] matches its peer"
    assert [b["level"] for b in out["bindings"]] == ["peer", "account", "channel"]
    assert out["default"] == "main"


def test_binding_the_same_match_again_moves_it_and_unbind_removes_it(home, ok, run):
    ok("channel", "bind", "--channel", "telegram", "--peer", "group:-5", "--agent", "ops")
    assert ok("channel", "bind", "--channel", "telegram", "--peer", "group:-5", "--agent",
              "main") == "Bound telegram group:-5 to main.\n"
    assert len(read_json(home / "fased.json")["bindings"]) == 1
    assert ok("channel", "unbind", "--channel", "telegram", "--peer", "group:-5") == \
        "Unbound telegram group:-5.\n"
    assert "bindings" not in read_json(home / "fased.json")
    assert fails(run, home, 1, "channel", "unbind", "--channel", "telegram") == \
        "Error: no binding matches exactly telegram"


def test_bad_bindings_are_refused_and_change_nothing(home, run):
    assert fails(run, home, 1, "channel", "bind", "--channel", "telegram", "--agent",
                 "nosuch") == "Error: no agent 'nosuch'"
    assert fails(run, home, 2, "channel", "bind", "--channel", "telegram", "--peer",
                 "dm:1:2", "--agent", "ops") == "Error: invalid peer 'dm:1:2'"
    assert fails(run, home, 2, "channel", "bind", "--channel", "Tele gram", "--agent",
                 "ops") == "Error: invalid channel 'Tele gram'"
    assert fails(run, home, 2, "config", "set", "bindings",
                 '[{"match": {"channel": "telegram"}, "agent": "ghost"}]') == \
        "Error: fased.json: bindings[0].agent: no agent 'ghost'"


def test_a_hand_edit_binding_an_unknown_agent_names_it(home, run):
    path = home / "fased.json"
    doc = read_json(path)
    doc["bindings"] = [{"match": {"channel": "telegram"}, "agent": "ghost"}]
    path.write_text(json.dumps(doc, indent=2))
    result = run("channel", "routes")
    assert result.exit_code == 2
    assert "bindings[0].agent: no agent 'ghost'" in error_line(result)


def test_deleting_a_bound_agent_needs_force_and_then_unbinds_it(home, ok, run):
    ok("channel", "bind", "--channel", "telegram", "--agent", "ops")
    assert fails(run, home, 3, "agent", "delete", "ops") == \
        "Error: agent 'ops' answers channel bindings (telegram)"
    ok("agent", "delete", "ops", "--force")
    assert "bindings" not in read_json(home / "fased.json")


# -- sessions -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("scope", "session"), [
    (None, "dm:111"), ("per-peer", "dm:111"), ("per-channel-peer", "telegram:dm:111"),
    ("main", "main")])
def test_dm_scope_names_the_session(home, ok, scope, session):
    ok("config", "set", "channels.telegram.dmPolicy", "open")
    if scope:
        ok("config", "set", "session.dmScope", scope)
    st = store(home)
    assert admit(st, dm("111")).session == session
    ok("config", "set", "channels.telegram.groupPolicy", "open")
    assert admit(st, group("-100200")).session == "telegram:group:-100200"  # whatever the scope


def test_a_bad_dm_scope_is_refused(home, run):
    assert "session.dmScope" in fails(run, home, 2, "config", "set", "session.dmScope", "x")


@pytest.mark.parametrize("bad", ["1:2", "a b", "x\n", "", "1" * 65, "\u202e1", "../1"])
def test_untrusted_ids_never_name_a_session(home, ok, bad):
    ok("config", "set", "channels.telegram.dmPolicy", "open")
    st = store(home)
    got = admit(st, dm(bad))
    assert (got.action, got.session, got.reason) == ("ignore", None, "invalid-message")
    refused = [e for e in events(home) if e["type"] == "channel.refused"]
    assert len(refused) == 1 and refused[0]["data"]["reason"] == "invalid-message"
    assert "\n" not in refused[0]["data"]["peer"] and len(refused[0]["data"]["peer"]) <= 64
    admit(st, dm(bad + "x" if bad else "\t"))  # another bad id: still the one record this hour
    assert types(home).count("channel.refused") == 1


# -- pairing ------------------------------------------------------------------------------------

def test_a_stranger_gets_a_code_and_no_turn(home):
    st = store(home)
    got = admit(st, dm("111"))
    assert got.action == "reply" and got.session is None
    code = code_of(got.reply)
    assert re.fullmatch(r"[A-HJKMNP-Z2-9]{8}", code)  # no 0/O, 1/I/L
    assert "fased pairing approve telegram " + code in got.reply
    assert "Your telegram user id: 111" in got.reply
    requested = [e for e in events(home) if e["type"] == "pairing.requested"]
    assert [e["data"] for e in requested] == [{
        "channel": "telegram", "account": "default", "code": code, "sender": "111",
        "name": "Ann", "peer": "111", "expires": ts("2026-03-02T09:00:00Z")}]
    again = admit(st, dm("111", text="hello?"))
    assert code_of(again.reply) == code and again.reason == "pairing-pending"
    assert types(home).count("pairing.requested") == 1  # the same code, not a new one


def test_codes_are_random_and_look_alike_free(home):
    st = store(home)
    codes = {code_of(admit(st, dm(str(i))).reply) for i in range(3)}
    assert len(codes) == 3
    assert not set("".join(codes)) & set("01OIL")


def test_a_code_expires_after_an_hour(home, ok, run, at):
    st = store(home)
    old = code_of(admit(st, dm("111")).reply)
    at("2026-03-02T08:59:59Z")
    assert code_of(admit(st, dm("111")).reply) == old
    at("2026-03-02T09:00:00Z")
    new = code_of(admit(st, dm("111")).reply)
    assert new != old
    assert "expired" in fails(run, home, 1, "pairing", "approve", "telegram", old)
    listed = json.loads(ok("pairing", "list", "--all", "--json"))
    assert [(r["code"], r["state"]) for r in listed] == [(old, "expired"), (new, "pending")]


def test_at_most_three_codes_wait_and_a_fourth_sender_is_ignored_and_recorded(home, ok, at):
    st = store(home)
    for sender in ("1", "2", "3"):
        assert admit(st, dm(sender)).action == "reply"
    fourth = admit(st, dm("4", name="Dee"))
    assert (fourth.action, fourth.reply, fourth.reason) == ("ignore", None, "pairing-full")
    refused = [e["data"] for e in events(home) if e["type"] == "channel.refused"]
    assert refused == [{"channel": "telegram", "account": "default", "peer_kind": "dm",
                        "peer": "4", "sender": "4", "name": "Dee", "reason": "pairing-full",
                        "quiet_until": ts("2026-03-02T09:00:00Z")}]
    assert len(json.loads(ok("pairing", "list", "--json"))) == 3
    at("2026-03-02T09:00:01Z")  # the three expired: room again
    assert admit(st, dm("4")).action == "reply"


def test_approve_lets_the_sender_talk_and_survives_a_rebuild(home, ok):
    st = store(home)
    code = code_of(admit(st, dm("111")).reply)
    out = ok("pairing", "approve", "telegram", code.lower())
    assert out == "Approved 111 (Ann) on telegram: their next message is answered.\n"
    assert read_json(home / "fased.json")["channels"]["telegram"]["allowFrom"] == ["111"]
    assert types(home)[-2:] == ["pairing.approved", "config.set"]
    got = admit(st, dm("111", text="now?"))
    assert (got.action, got.agent, got.session) == ("turn", "main", "dm:111")
    assert json.loads(ok("pairing", "list", "--json")) == []
    st.close()
    (home / "state.db").unlink()
    assert admit(store(home), dm("111")).action == "turn"
    assert rows(home, "SELECT state FROM pairings") == [{"state": "approved"}]


def test_approve_on_an_account_adds_to_that_accounts_allowlist(home, ok):
    st = store(home)
    code = code_of(admit(st, dm("5", account="biz")).reply)
    ok("pairing", "approve", "telegram", code)
    doc = read_json(home / "fased.json")["channels"]["telegram"]
    assert doc == {"accounts": {"biz": {"allowFrom": ["5"]}}}
    assert admit(st, dm("5", account="biz")).action == "turn"
    assert admit(st, dm("5")).action == "reply"  # the default account has not approved them


def test_deny_keeps_the_sender_refused_and_recorded_once_an_hour(home, ok, run, at):
    st = store(home)
    code = code_of(admit(st, dm("111")).reply)
    assert ok("pairing", "deny", "telegram", code) == \
        "Denied 111 (Ann) on telegram: they are not answered.\n"
    for _ in range(5):
        got = admit(st, dm("111"))
        assert (got.action, got.reply, got.reason) == ("ignore", None, "pairing-denied")
    assert types(home).count("channel.refused") == 1
    at("2026-03-02T09:00:00Z")
    admit(st, dm("111"))
    assert types(home).count("channel.refused") == 2
    assert rows(home, "SELECT records, last_at FROM channel_refusals") == [
        {"records": 2, "last_at": ts("2026-03-02T09:00:00Z")}]
    assert "already denied" in fails(run, home, 1, "pairing", "approve", "telegram", code)
    ok("config", "set", "channels.telegram.allowFrom", '["111"]')  # the owner changes their mind
    assert admit(st, dm("111")).action == "turn"


def test_pairing_commands_refuse_bad_codes(home, run):
    assert fails(run, home, 2, "pairing", "approve", "telegram", "0OIL0OIL") == \
        "Error: invalid pairing code '0OIL0OIL'"
    assert fails(run, home, 1, "pairing", "deny", "telegram", "ABCDEFGH") == \
        "Error: no pairing code ABCDEFGH for telegram"


def test_pairing_list_shows_who_waits(home, ok, run):
    result = run("pairing", "list")
    assert result.exit_code == 0 and result.stdout == ""
    assert "No pairing request is waiting." in result.stderr
    code = code_of(admit(store(home), dm("111", name="\x1b[31mAnn")).reply)
    out = ok("pairing", "list")
    assert code in out and "telegram/default" in out and "\x1b" not in out


# -- who may talk -------------------------------------------------------------------------------

def test_allowlist_answers_only_allowfrom(home, ok):
    ok("config", "set", "channels.telegram.dmPolicy", "allowlist")
    ok("config", "set", "channels.telegram.allowFrom", '[111, "tg:222"]')
    st = store(home)
    assert admit(st, dm("111")).action == "turn"
    assert admit(st, dm("222")).action == "turn"
    stranger = admit(st, dm("333"))
    assert (stranger.action, stranger.reply, stranger.reason) == (
        "ignore", None, "not-allowlisted")
    assert "pairing.requested" not in types(home)
    assert types(home).count("channel.refused") == 1


def test_disabled_dms_are_refused_even_for_the_allowlisted(home, ok):
    ok("config", "set", "channels.telegram.allowFrom", "[111]")
    ok("config", "set", "channels.telegram.dmPolicy", "disabled")
    got = admit(store(home), dm("111"))
    assert (got.action, got.reason) == ("ignore", "dm-disabled")
    assert [e["data"]["reason"] for e in events(home) if e["type"] == "channel.refused"] == [
        "dm-disabled"]


def test_an_accounts_policy_overrides_the_channels(home, ok):
    ok("config", "set", "channels.telegram.accounts.public.dmPolicy", "open")
    st = store(home)
    assert admit(st, dm("9", account="public")).action == "turn"
    assert admit(st, dm("9")).action == "reply"  # the channel's own: pairing


def test_groups_are_allowlisted_and_answer_only_when_mentioned(home, ok):
    st = store(home)
    not_listed = admit(st, group("-100200"))
    assert (not_listed.action, not_listed.reason) == ("ignore", "group-not-allowed")
    ok("config", "set", "channels.telegram.groups", '["-100200"]')
    assert admit(st, group("-100200", mentioned=True)).action == "turn"
    quiet = admit(st, group("-100200", mentioned=False))
    assert (quiet.action, quiet.reason) == ("ignore", "not-mentioned")
    assert admit(st, group("-100999")).reason == "group-not-allowed"
    ok("config", "set", "channels.telegram.requireMention", "false")
    got = admit(st, group("-100200", mentioned=False))
    assert (got.action, got.session) == ("turn", "telegram:group:-100200")
    refused = [e["data"] for e in events(home) if e["type"] == "channel.refused"]
    # one record per group and reason; "not mentioned" is not a refusal
    assert [(r["peer"], r["reason"]) for r in refused] == [
        ("-100200", "group-not-allowed"), ("-100999", "group-not-allowed")]


def test_group_policy_open_and_disabled(home, ok):
    ok("config", "set", "channels.telegram.groupPolicy", "open")
    st = store(home)
    assert admit(st, group("-1")).action == "turn"
    assert admit(st, group("-1", mentioned=False)).reason == "not-mentioned"
    ok("config", "set", "channels.telegram.groupPolicy", "disabled")
    assert admit(st, group("-1")).reason == "group-disabled"
    ok("config", "set", "channels.telegram.groups", '["*"]')
    ok("config", "set", "channels.telegram.groupPolicy", "allowlist")
    assert admit(st, group("-2")).action == "turn"  # "*" allows every group


def test_a_refusal_is_recorded_once_per_sender_per_hour(home, ok, at):
    ok("config", "set", "channels.telegram.dmPolicy", "allowlist")
    st = store(home)
    for _ in range(10):
        admit(st, dm("333"))
    admit(st, dm("444"))
    assert [e["data"]["sender"] for e in events(home) if e["type"] == "channel.refused"] == [
        "333", "444"]
    at("2026-03-02T08:59:00Z")
    admit(st, dm("333"))
    assert types(home).count("channel.refused") == 2
    at("2026-03-02T09:00:00Z")
    admit(st, dm("333"))
    assert types(home).count("channel.refused") == 3


def test_routes_reads_only_and_explains(home, ok):
    before = len(events(home))
    out = ok("channel", "routes", "--explain", "telegram/dm:42")
    assert "(default)  anything else  main   default agent" in out
    assert "Who may talk on telegram: dmPolicy pairing (allowFrom: none)" in out
    assert ("telegram/default dm:42: agent main (no binding matches: the default agent), "
            "session dm:42; it would not be answered: the sender would get a pairing code.") in out
    data = json.loads(ok("channel", "routes", "--explain", "telegram/group:-7", "--json"))
    assert data["explain"]["reason"] == "group-not-allowed"
    assert data["explain"]["session"] == "telegram:group:-7"
    assert len(events(home)) == before  # neither a code nor a refusal was recorded


def test_routes_explain_refuses_a_bad_target(home, run):
    assert "give CHANNEL[/ACCOUNT]/dm:ID|group:ID" in fails(
        run, home, 2, "channel", "routes", "--explain", "telegram")


def test_a_hand_edited_binding_may_give_the_peer_id_as_a_number(home, ok):
    path = home / "fased.json"
    doc = read_json(path)
    doc["bindings"] = [{"match": {"channel": "telegram", "peer": {"kind": "dm", "id": 222}},
                        "agent": "ops"}]
    doc["channels"] = {"telegram": {"dmPolicy": "open"}}
    path.write_text(json.dumps(doc, indent=2))
    ok("config", "validate")
    assert admit(store(home), dm("222")).agent == "ops"
    assert "config.edited" in types(home)
    assert ok("channel", "bind", "--channel", "telegram", "--peer", "dm:222", "--agent",
              "ops") == "telegram dm:222 already goes to ops.\n"
