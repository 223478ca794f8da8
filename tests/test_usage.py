"""Usage and cost: the cost a server reports (a LiteLLM proxy's header or streamed usage),
recorded per model call and summed per turn, `fased usage`, the summaries of `agent show` and
`session show`, prices from fased.json, and wallets that refuse a turn past a limit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import error_line, events, rows

from fased.upcast import upcast

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import Reply

LITE = "lite/fake-model"
HELLO = [{"role": "user", "content": "hello"}]
COST = "x-litellm-response-cost"


@pytest.fixture
def at(monkeypatch):
    """Pin the clock (FASED_NOW) for what runs next."""

    def _at(when: str) -> None:
        monkeypatch.setenv("FASED_NOW", when)

    _at("2026-11-20T10:00:00Z")
    return _at


@pytest.fixture
def lite(at, set_up, ok, server) -> Path:
    """Agent main answers through a LiteLLM proxy (the fake server), no retries."""
    ok("agent", "models", "providers", "add", "lite", "--kind", "litellm", "--base-url",
       server.url)
    ok("agent", "models", "set", "primary", LITE)
    ok("config", "set", "agents.defaults.retries", "0")
    ok("config", "set", "agents.defaults.cooldownSeconds", "0")
    return set_up


def of_type(home: Path, etype: str) -> list[dict]:
    return [e for e in events(home) if e["type"] == etype]


def read_call(path: str) -> tuple[str, str]:
    return ("read", json.dumps({"path": path}))


# -- what servers report --------------------------------------------------------------------

def client(server, family: str = "openai"):
    from fased.providers import client_for

    base = server.url + "/v1" if family == "openai" else server.url
    return client_for(family, base, api_key="sk-test-key-0000", read_timeout=5.0)


def test_a_streamed_reply_carries_its_cost_in_the_last_usage_chunk(server):
    server.script(Reply("hi there", usage=(12, 3), cost=0.00042))

    result = client(server).chat("fake-model", HELLO)

    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.cost) == (
        12, 3, 0.00042)


@pytest.mark.parametrize("family", ["openai", "ollama", "anthropic"])
def test_a_whole_reply_carries_its_cost_in_the_litellm_header(server, family):
    server.script(Reply("hi", usage=(5, 1), headers={COST: "0.000415"}))

    result = client(server, family).chat("fake-model", HELLO, stream=False)

    assert result.usage.cost == 0.000415


def test_the_body_cost_wins_and_a_streamed_header_is_not_a_price(server):
    # a stream's headers leave before the model has answered: they cannot know the cost
    server.script(Reply("hi", headers={COST: "0.5"}),
                  Reply("hi", cost=0.25, headers={COST: "0.5"}))

    assert client(server).chat("fake-model", HELLO).usage.cost is None
    assert client(server).chat("fake-model", HELLO, stream=False).usage.cost == 0.25


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e999", "", "1" * 50])
def test_a_cost_header_that_is_no_amount_is_unknown(server, value):
    server.script(Reply("hi", headers={COST: value}))

    assert client(server).chat("fake-model", HELLO, stream=False).usage.cost is None


@pytest.mark.parametrize("value", [-0.5, "x", True, [1], {"usd": 1}])
def test_a_usage_cost_that_is_no_amount_is_unknown(server, value):
    server.script(Reply("hi", cost=value))

    assert client(server).chat("fake-model", HELLO).usage.cost is None


def test_a_free_call_costs_zero_not_unknown(server):
    server.script(Reply("hi", headers={COST: "0"}))

    assert client(server).chat("fake-model", HELLO, stream=False).usage.cost == 0.0


# -- the log and the projections -------------------------------------------------------------

def test_a_turn_records_the_cost_beside_its_tokens(lite, run, server):
    server.script(Reply("fine", usage=(7, 3), cost=0.0021))

    result = run("chat", "--json", "hi")

    assert result.exit_code == 0, result.stderr
    [done] = of_type(lite, "turn.completed")
    assert done["v"] == 2
    assert done["data"]["usage"] == {"input_tokens": 7, "output_tokens": 3, "cost": 0.0021}
    assert json.loads(result.stdout)["usage"] == {"input_tokens": 7, "output_tokens": 3,
                                                  "cost": 0.0021}
    assert rows(lite, "SELECT input_tokens, output_tokens, cost, model_calls, total_input_tokens,"
                      " total_output_tokens, total_cost FROM turns") == [
        {"input_tokens": 7, "output_tokens": 3, "cost": 0.0021, "model_calls": 1,
         "total_input_tokens": 7, "total_output_tokens": 3, "total_cost": 0.0021}]
    transcript = (lite / "agents/main/sessions/s-1.jsonl").read_text().splitlines()
    assert json.loads(transcript[-1])["usage"] == {"input_tokens": 7, "output_tokens": 3,
                                                   "cost": 0.0021}


def test_a_retried_chat_reports_the_same_cost(lite, run, server):
    server.script(Reply("fine", usage=(7, 3), cost=0.0021))
    first = run("--idempotency-key", "k-1", "chat", "--json", "hi")

    again = run("--idempotency-key", "k-1", "chat", "--json", "hi")

    assert json.loads(again.stdout)["usage"] == json.loads(first.stdout)["usage"] == {
        "input_tokens": 7, "output_tokens": 3, "cost": 0.0021}
    assert len(server.requests) == 1


def test_on_a_terminal_the_status_line_shows_the_cost(lite, server):
    import os
    import pty
    import re
    import subprocess

    from test_chat import FASED, read_terminals

    server.script(Reply("streamed", usage=(4, 1), cost=0.0123))
    (out_main, out_child), (err_main, err_child) = pty.openpty(), pty.openpty()
    proc = subprocess.Popen([*FASED, "chat", "hi"], stdin=subprocess.DEVNULL, stdout=out_child,
                            stderr=err_child)
    os.close(out_child)
    os.close(err_child)
    _, err = read_terminals(out_main, err_main)
    proc.wait(timeout=30)

    assert re.fullmatch(rb"\[lite/fake-model \xc2\xb7 4 in / 1 out \xc2\xb7 \$0\.0123 \xc2\xb7 "
                        rb"\d+\.\d s\]\r\n", err), err


def test_a_call_without_a_reported_cost_leaves_it_unknown(lite, ok, server):
    server.script(Reply("fine", usage=(7, 3)))

    ok("chat", "hi")

    [done] = of_type(lite, "turn.completed")
    assert done["data"]["usage"] == {"input_tokens": 7, "output_tokens": 3}
    assert rows(lite, "SELECT cost, total_input_tokens, total_cost FROM turns") == [
        {"cost": None, "total_input_tokens": 7, "total_cost": None}]


def test_a_turn_with_tool_steps_sums_its_model_calls(lite, ok, server):
    (lite / "workspace" / "notes.txt").write_text("42\n")
    server.script(Reply("", tool_calls=[read_call("notes.txt")], usage=(100, 10), cost=0.001),
                  Reply("It says 42.", usage=(130, 5), cost=0.002))

    ok("chat", "what do my notes say?")

    [step] = of_type(lite, "turn.step")
    assert step["v"] == 2
    assert step["data"]["usage"] == {"input_tokens": 100, "output_tokens": 10, "cost": 0.001}
    [turn] = rows(lite, "SELECT id, input_tokens, model_calls, total_input_tokens,"
                        " total_output_tokens, total_cost FROM turns")
    assert turn["input_tokens"] == 130  # the reply's own call, as the transcript shows it
    assert (turn["model_calls"], turn["total_input_tokens"], turn["total_output_tokens"]) == (
        2, 230, 15)
    assert turn["total_cost"] == pytest.approx(0.003)
    [bucket] = rows(lite, "SELECT * FROM usage_buckets")
    assert {k: bucket[k] for k in ("bucket", "agent", "session", "model", "calls",
                                   "input_tokens", "output_tokens", "costed")} == {
        "bucket": "2026-11-20T10:00", "agent": "main", "session": "s-1", "model": LITE,
        "calls": 2, "input_tokens": 230, "output_tokens": 15, "costed": 2}
    assert bucket["cost"] == pytest.approx(0.003)
    # the session's own counters say the same as `fased usage`: every call, not the last
    [session] = [s for s in json.loads(ok("session", "list", "--json")) if s["id"] == "s-1"]
    assert session["tokens"] == {"input": 230, "output": 15}
    totals = json.loads(ok("usage", "--session", "s-1", "--json"))
    assert totals["total"]["input_tokens"] == 230


def test_one_call_without_a_cost_makes_the_turns_cost_unknown(lite, ok, server):
    (lite / "workspace" / "notes.txt").write_text("42\n")
    server.script(Reply("", tool_calls=[read_call("notes.txt")], usage=(100, 10), cost=0.001),
                  Reply("It says 42.", usage=(130, 5)))

    ok("chat", "what do my notes say?")

    assert rows(lite, "SELECT total_input_tokens, total_cost FROM turns") == [
        {"total_input_tokens": 230, "total_cost": None}]


@pytest.mark.parametrize("etype", ["turn.completed", "turn.step"])
def test_a_v1_usage_upcasts_to_v2_without_a_cost(etype):
    data = {"usage": {"input_tokens": 3, "output_tokens": 1}}
    record = {"type": etype, "v": 1, "seq": 9, "data": data}

    current = upcast(record)

    assert (current["v"], current["data"]) == (2, data)


def test_a_rebuild_gives_the_same_usage(lite, ok, server):
    server.script(Reply("a", usage=(7, 3), cost=0.5), Reply("b", usage=(1, 1)))
    ok("chat", "one")
    ok("chat", "two")
    query = ("SELECT * FROM usage_buckets ORDER BY bucket, model; SELECT id, cost, model_calls,"
             " total_input_tokens, total_cost FROM turns ORDER BY id")
    before = [rows(lite, q) for q in query.split("; ")]

    ok("replay", "--rebuild")

    assert [rows(lite, q) for q in query.split("; ")] == before
    assert before[0][0]["calls"] == 2 and before[0][0]["costed"] == 1


# -- fased usage ------------------------------------------------------------------------------

def chat_at(ok, at, when: str, *args: str) -> None:
    at(when)
    ok("chat", *args)


def test_usage_sums_tokens_and_cost_by_day_and_model(lite, ok, at, server):
    ok("agent", "models", "providers", "add", "local", "--kind", "ollama", "--base-url",
       server.url)
    server.script(Reply("a", usage=(10, 2), cost=0.01), Reply("b", usage=(20, 4), cost=0.02),
                  Reply("c", usage=(5, 1)))
    chat_at(ok, at, "2026-11-20T09:00:00Z", "one")
    chat_at(ok, at, "2026-11-21T09:00:00Z", "two")
    chat_at(ok, at, "2026-11-21T10:00:00Z", "-m", "local/fake-small", "three")

    by_day = json.loads(ok("usage", "--by", "day", "--json"))
    assert [(r["day"], r["calls"], r["input_tokens"], r["output_tokens"], r["cost"],
             r["calls_without_cost"]) for r in by_day["rows"]] == [
        ("2026-11-20", 1, 10, 2, 0.01, 0), ("2026-11-21", 2, 25, 5, 0.02, 1)]
    assert by_day["total"] == {"calls": 3, "input_tokens": 35, "output_tokens": 7,
                               "tokens": 42, "cost": 0.03, "calls_without_cost": 1}
    assert by_day["zone"] == "UTC"

    by_model = json.loads(ok("usage", "--by", "model", "--json"))["rows"]
    assert [(r["model"], r["tokens"], r["cost"]) for r in by_model] == [
        ("lite/fake-model", 36, 0.03), ("local/fake-small", 6, None)]

    result = ok("usage", "--by", "model")
    assert result.splitlines() == [
        "MODEL             CALLS  INPUT  OUTPUT  COST",
        "lite/fake-model   2      30     6       $0.0300",
        "local/fake-small  1      5      1       -",
        "total             3      35     7       $0.0300*",
    ]


def test_usage_says_which_calls_have_no_cost(lite, run, server):
    server.script(Reply("a", usage=(10, 2)))
    run("chat", "one")

    result = run("usage")

    assert result.exit_code == 0
    assert result.stdout.splitlines()[1].split() == ["total", "1", "10", "2", "-"]
    assert "fased: *: 1 call(s) have no cost" in result.stderr


def test_prices_from_fased_json_cost_the_calls_without_one(lite, ok, server):
    server.script(Reply("a", usage=(1_000_000, 200_000)), Reply("b", usage=(10, 2), cost=0.5))
    ok("chat", "one")
    ok("chat", "two")
    ok("config", "set", "models.prices", json.dumps({LITE: {"input": 2.5, "output": 10}}))

    total = json.loads(ok("usage", "--json"))["total"]

    # 2.5 for the million input tokens, 2 for 200,000 output; the reported 0.5 is kept
    assert (total["cost"], total["calls_without_cost"]) == (5.0, 0)


@pytest.mark.parametrize("value", ['{"lite/fake-model": {"input": -1, "output": 1}}',
                                   '{"lite/fake-model": {"input": 1}}',
                                   '{"lite/fake-model": {"input": 1, "output": 1, "cache": 2}}',
                                   '{"lite/fake-model": 3}'])
def test_a_bad_price_is_refused(lite, run, value):
    before = len(events(lite))

    result = run("config", "set", "models.prices", value)

    assert result.exit_code == 2, result.stderr
    assert error_line(result).startswith("Error: ")
    assert len(events(lite)) == before


def test_usage_filters_by_agent_session_and_since(lite, ok, at, server):
    server.default = Reply("x", usage=(10, 1), cost=0.1)
    ok("agent", "create", "ops")
    ok("agent", "models", "set", "primary", LITE, "--agent", "ops")
    chat_at(ok, at, "2026-11-20T09:00:00Z", "one")
    ok("session", "new", "--name", "later")
    chat_at(ok, at, "2026-11-20T12:00:00Z", "two")
    chat_at(ok, at, "2026-11-20T13:00:00Z", "--agent", "ops", "three")

    def calls(*args: str) -> int:
        return json.loads(ok("usage", "--json", *args))["total"]["calls"]

    assert calls() == 3
    assert calls("--agent", "main") == 2
    assert calls("--agent", "ops") == 1
    assert calls("--session", "later") == 1
    assert calls("--session", "s-1") == 1
    assert calls("--since", "2026-11-20T11:00:00Z") == 2
    assert calls("--since", "30m") == 1  # the clock says 13:00
    by_agent = json.loads(ok("usage", "--by", "agent", "--json"))["rows"]
    assert [(r["agent"], r["calls"]) for r in by_agent] == [("main", 2), ("ops", 1)]
    by_session = json.loads(ok("usage", "--by", "session", "--agent", "main", "--json"))["rows"]
    assert [(r["session"], r["calls"]) for r in by_session] == [("s-1", 1), ("s-2", 1)]


def test_since_counts_from_the_start_of_its_quarter_of_an_hour(lite, ok, at, server):
    server.default = Reply("x", usage=(10, 1), cost=0.1)
    for when in ("2026-11-20T11:59:59Z", "2026-11-20T12:00:00Z", "2026-11-20T12:05:00Z",
                 "2026-11-20T12:14:59Z", "2026-11-20T12:15:00Z"):
        chat_at(ok, at, when, "hi")

    def report(since: str) -> dict:
        return json.loads(ok("usage", "--json", "--since", since))

    assert (report("2026-11-20T12:05:00Z")["since"], report("2026-11-20T12:05:00Z")["total"][
        "calls"]) == ("2026-11-20T12:00:00.000000Z", 4)
    assert report("2026-11-20T12:15:00Z")["total"]["calls"] == 1
    assert report("2026-11-20T12:14:59.5Z")["total"]["calls"] == 4
    [day] = json.loads(ok("usage", "--json", "--by", "day", "--since", "2026-11-20T12:05:00Z")
                       )["rows"]
    assert (day["day"], day["calls"], day["tokens"]) == ("2026-11-20", 4, 44)


def test_days_are_those_of_the_users_zone(lite, ok, at, server):
    server.default = Reply("x", usage=(1, 1))
    ok("config", "set", "agents.defaults.userTimezone", "Asia/Kolkata")  # UTC+05:30
    chat_at(ok, at, "2026-11-20T18:15:00Z", "late in India")  # 23:45 there
    chat_at(ok, at, "2026-11-20T18:45:00Z", "after midnight")  # 00:15 on the 21st

    report = json.loads(ok("usage", "--by", "day", "--json"))

    assert report["zone"] == "Asia/Kolkata"
    assert [(r["day"], r["calls"]) for r in report["rows"]] == [
        ("2026-11-20", 1), ("2026-11-21", 1)]
    since = json.loads(ok("usage", "--since", "2026-11-21", "--json"))  # midnight in India
    assert (since["since"], since["total"]["calls"]) == ("2026-11-20T18:30:00.000000Z", 1)


def test_days_follow_the_zones_daylight_saving_time(lite, ok, at, server):
    server.default = Reply("x", usage=(1, 1))
    ok("config", "set", "agents.defaults.userTimezone", "Europe/Berlin")
    # summer time starts on 2026-03-29 at 01:00 UTC: +01:00 before, +02:00 after
    for when in ("2026-03-28T22:50:00Z", "2026-03-28T23:10:00Z", "2026-03-29T21:50:00Z",
                 "2026-03-29T22:10:00Z"):
        chat_at(ok, at, when, "hi")

    report = json.loads(ok("usage", "--by", "day", "--json"))

    assert [(r["day"], r["calls"]) for r in report["rows"]] == [
        ("2026-03-28", 1), ("2026-03-29", 2), ("2026-03-30", 1)]


@pytest.mark.parametrize("args, code, message", [
    (("--by", "week"), 2, "Invalid value for '--by'"),
    (("--since", "soon"), 2, "Invalid value for '--since'"),
    (("--agent", "nope"), 1, "Error: no agent 'nope'"),
    (("--session", "nope"), 1, "Error: no session 'nope' for agent main"),
])
def test_usage_bad_input_is_one_line(lite, run, args, code, message):
    before = len(events(lite))

    result = run("usage", *args)

    assert result.exit_code == code
    assert message in error_line(result)
    assert len(events(lite)) == before


def test_usage_reads_and_writes_nothing_new(lite, ok, server):
    server.script(Reply("a", usage=(10, 2)))
    ok("chat", "one")
    before = (lite / "state.db").stat().st_mtime_ns, len(events(lite))

    ok("usage", "--by", "day")

    assert ((lite / "state.db").stat().st_mtime_ns, len(events(lite))) == before


# -- summaries ---------------------------------------------------------------------------------

def test_session_show_sums_every_model_call(lite, ok, server):
    (lite / "workspace" / "notes.txt").write_text("42\n")
    server.script(Reply("", tool_calls=[read_call("notes.txt")], usage=(100, 10), cost=0.001),
                  Reply("It says 42.", usage=(130, 5), cost=0.002))
    ok("chat", "what do my notes say?")

    lines = ok("session", "show").splitlines()
    detail = json.loads(ok("session", "show", "--json"))

    assert "  Usage:      2 model call(s), 230 in / 15 out tokens, $0.0030" in lines
    assert detail["usage"] == {"calls": 2, "input_tokens": 230, "output_tokens": 15,
                               "tokens": 245, "cost": 0.003, "calls_without_cost": 0}


def test_agent_show_has_usage_and_what_the_wallet_has_left(lite, ok, at, server):
    server.default = Reply("x", usage=(300, 100), cost=0.25)
    chat_at(ok, at, "2026-11-19T10:00:00Z", "yesterday")
    chat_at(ok, at, "2026-11-20T10:00:00Z", "today")
    ok("config", "set", "agents.defaults.wallet", '{"tokensPerDay": 1000, "costPerMonth": 2}')

    lines = ok("agent", "show").splitlines()
    detail = json.loads(ok("agent", "show", "--json"))

    assert ("  Usage:         today 400 tokens, $0.2500; this month 800 tokens, $0.5000 "
            "(days in UTC)") in lines
    assert ("  Wallet:        tokensPerDay 1,000: 600 left (resets 2026-11-21 00:00 UTC); "
            "costPerMonth $2.00: $1.50 left (resets 2026-12-01 00:00 UTC)") in lines
    assert detail["usage"]["today"]["tokens"] == 400
    assert detail["usage"]["all"]["calls"] == 2
    assert [(w["limit"], w["max"], w["used"], w["left"], w["reached"], w["resets"])
            for w in detail["wallet"]] == [
        ("tokensPerDay", 1000, 400, 600, False, "2026-11-21T00:00:00.000000Z"),
        ("costPerMonth", 2, 0.5, 1.5, False, "2026-12-01T00:00:00.000000Z")]


def test_agent_show_without_a_wallet_says_so(lite, ok):
    lines = ok("agent", "show").splitlines()

    assert "  Wallet:        no limits (agents.defaults.wallet)" in lines


# -- wallets ------------------------------------------------------------------------------------

def test_a_turn_past_the_daily_token_limit_is_refused_before_any_model_call(lite, run, at,
                                                                             server):
    server.default = Reply("x", usage=(7, 3))
    run("config", "set", "agents.defaults.wallet.tokensPerDay", "10")
    at("2026-11-20T10:00:00Z")
    assert run("chat", "first").exit_code == 0
    asked = len(server.requests)

    result = run("chat", "second")

    assert result.exit_code == 1
    assert error_line(result) == ("Error: wallet limit tokensPerDay (10) reached: 10 used; "
                                  "resets 2026-11-21 00:00 UTC")
    assert len(server.requests) == asked
    [failed] = of_type(lite, "turn.failed")
    assert (failed["data"]["error_class"], failed["data"]["attempts"],
            failed["data"]["models_tried"]) == ("wallet", 0, [])
    assert rows(lite, "SELECT state, error_class FROM turns ORDER BY queued_seq") == [
        {"state": "completed", "error_class": None}, {"state": "failed", "error_class": "wallet"}]

    at("2026-11-21T00:00:00Z")  # a new day
    assert run("chat", "third").exit_code == 0
    assert len(server.requests) == asked + 1


def test_an_agents_own_wallet_counts_cost_per_month_in_the_users_zone(lite, ok, run, at,
                                                                       server):
    server.default = Reply("x", usage=(1, 1), cost=1.5)
    ok("config", "set", "agents.defaults.userTimezone", "America/New_York")
    ok("config", "set", "agents.defaults.wallet", '{"costPerMonth": 100}')
    ok("config", "set", "agents.list[0].wallet", '{"costPerMonth": 1}')
    chat_at(ok, at, "2026-12-01T03:00:00Z", "still November in New York")
    at("2026-12-01T04:00:00Z")  # 23:00 on Nov 30 there

    result = run("chat", "again")

    assert result.exit_code == 1
    assert error_line(result) == ("Error: wallet limit costPerMonth ($1.00) reached: $1.50 "
                                  "used; resets 2026-12-01 00:00 America/New_York")
    at("2026-12-01T05:00:00Z")  # December there
    assert run("chat", "now").exit_code == 0


def test_a_tasks_refused_turn_says_so_in_its_history(lite, ok, run, at, server):
    server.default = Reply("x", usage=(5, 5))
    ok("config", "set", "agents.defaults.wallet.tokensPerDay", "5")
    ok("chat", "hi")
    ok("task", "new", "--every", "1h", "--message", "check the build")
    asked = len(server.requests)
    at("2026-11-20T11:00:00Z")

    result = run("run", "--once")

    assert len(server.requests) == asked
    [h] = json.loads(ok("task", "history", "task-1", "--json"))
    assert h["status"] == "failed"
    assert h["error"].startswith("wallet limit tokensPerDay (5) reached")
    assert "wallet limit tokensPerDay (5) reached" in ok("task", "history", "task-1")
    assert "wallet limit tokensPerDay" in result.stderr


def test_a_wallet_key_that_is_no_limit_is_refused(lite, run):
    before = len(events(lite))

    result = run("config", "set", "agents.defaults.wallet", '{"tokensPerWeek": 5}')

    assert result.exit_code == 2
    assert len(events(lite)) == before


def test_the_embedded_model_costs_nothing_rather_than_an_unknown(set_up, ok, tmp_path):
    """usage said the embedded model's calls 'have no cost' (unknown): it runs in fased,
    on this machine. A price in models.prices still wins."""
    from fased.store import Store
    from fased.usage import Totals, _priced, prices

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    ok("agent", "models", "providers", "add", "mine", "--kind", "local", "--model-path",
       str(model))
    ok("config", "set", "models.aliases", '{"tiny": "mine/m"}')
    table = prices(Store(set_up).db())
    assert table["mine/m"] == table["tiny"] == {"input": 0.0, "output": 0.0}
    # one call of 10 in and 2 out that reported no cost, all of it priceable
    totals: Totals = _priced("mine/m", (1, 10, 2, None, 0, 10, 2, 1), table)
    assert (totals.cost, totals.uncosted, totals.cost_known) == (0.0, 0, True)
    ok("config", "set", "models.prices", '{"mine/m": {"input": 1, "output": 1}}')
    assert prices(Store(set_up).db())["mine/m"] == {"input": 1, "output": 1}
