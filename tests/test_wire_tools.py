"""Tool conversations on every wire format: one contract suite, run against each provider
family, streamed and not, over real HTTP (FakeModelServer).

The loop speaks the neutral forms (fased/tools/base.py ToolSpec.wire(), ChatResult.tool_calls,
messages with tool_calls and role "tool"); each test asserts what a server receives or what
the client hands back.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from fased.providers import ProviderError, client_for

sys.path.insert(0, str(Path(__file__).parent))
from fakeserver import Reply, Status, error_body

FAMILIES = ["openai", "ollama", "anthropic"]
STREAMS = [pytest.param(True, id="stream"), pytest.param(False, id="full")]
HELLO = [{"role": "user", "content": "hello"}]
CALLS = [("read", '{"path": "a.txt"}'), ("exec", '{"cmd": "ls -l", "timeout": 5}'),
         ("read", '{"path": "b.txt"}')]
TOOLS = [
    {"name": "read", "description": "Read a file.",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                    "required": ["path"], "additionalProperties": False}},
    {"name": "exec", "description": "Run a command.",
     "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}},
                    "required": ["cmd"]}},
]
NOTE = ("\n\n[The arguments of this call were not a JSON object, so the call shows {} "
        "instead. They were: {\"cmd\": ]")
HISTORY = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "look at a and b"},
    {"role": "assistant", "content": "Reading both.", "tool_calls": [
        {"id": "call_a", "name": "read", "arguments": '{"path": "a.txt"}'},
        {"id": "call_b", "name": "read", "arguments": '{"path":"b.txt"}'}]},
    {"role": "tool", "tool_call_id": "call_a", "name": "read", "content": "alpha",
     "is_error": False},
    {"role": "tool", "tool_call_id": "call_b", "name": "read",
     "content": "b.txt: no such file", "is_error": True},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_c", "name": "exec", "arguments": '{"cmd": '}]},
    {"role": "tool", "tool_call_id": "call_c", "name": "exec",
     "content": "the arguments are not valid JSON", "is_error": True},
    {"role": "user", "content": "and now?"},
]


def make(family: str, url: str):
    base = url + "/v1" if family == "openai" else url
    return client_for(family, base, api_key="k", read_timeout=5.0, connect_timeout=2.0)


def chat(server, family: str, stream: bool, messages=HELLO, **kwargs):
    with make(family, server.url) as client:
        return client.chat("fake-model", messages, stream=stream, **kwargs)


def sent(server) -> dict:
    return server.requests[-1]["json"]


def failure(server, family: str, stream: bool, **kwargs) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        chat(server, family, stream, **kwargs)
    return info.value


def assert_ids(calls) -> None:
    ids = [c.id for c in calls]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == len(ids)


# -- replies: tool calls come back with ids, names and exact arguments ----------------------


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("calls", [CALLS[:1], CALLS], ids=["one", "several"])
def test_reply_tool_calls(server, family, stream, calls):
    server.script(Reply("Let me look.", tool_calls=calls))
    result = chat(server, family, stream, tools=TOOLS)
    assert result.text == "Let me look."
    assert [c.name for c in result.tool_calls] == [n for n, _ in calls]
    assert_ids(result.tool_calls)
    if family == "openai":  # the only format that carries arguments as text
        assert [c.arguments for c in result.tool_calls] == [a for _, a in calls]
    else:
        assert [json.loads(c.arguments) for c in result.tool_calls] == [
            json.loads(a) for _, a in calls]
    if family == "ollama":  # Ollama never sends ids: the client makes them
        assert all(re.fullmatch(r"call_[0-9a-f]{24}", c.id) for c in result.tool_calls)
    else:
        prefix = "toolu_" if family == "anthropic" else "call_"
        assert all(c.id.startswith(prefix) for c in result.tool_calls)


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("family", ["openai", "anthropic"])
@pytest.mark.parametrize("ids", [[None, None, None], ["dup", "dup", "dup"], ["x", "", "x"]],
                         ids=["omitted", "repeated", "mixed"])
def test_missing_or_repeated_ids_become_unique(server, family, stream, ids):
    server.script(Reply("", tool_calls=CALLS, call_ids=ids))
    result = chat(server, family, stream, tools=TOOLS)
    assert [c.name for c in result.tool_calls] == ["read", "exec", "read"]
    assert [json.loads(c.arguments) for c in result.tool_calls] == [
        json.loads(a) for _, a in CALLS]
    assert_ids(result.tool_calls)
    if ids[0] is not None:
        assert result.tool_calls[0].id == ids[0]  # the first holder keeps its id


@pytest.mark.parametrize("ids", [None, [None, None, None], ["dup", "dup", "dup"]],
                         ids=["with-ids", "without-ids", "repeated-ids"])
def test_openai_calls_streamed_whole_without_index_stay_apart(server, ids):
    server.script(Reply("", tool_calls=CALLS, call_ids=ids, tool_index=False))
    result = chat(server, "openai", True, tools=TOOLS)
    assert [(c.name, c.arguments) for c in result.tool_calls] == CALLS
    assert_ids(result.tool_calls)


@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_arguments_split_into_many_fragments_arrive_whole(server, family):
    args = json.dumps({"content": "line\n" * 200, "emoji": "\U0001F600"})
    server.script(Reply("", tool_calls=[("write", args)], arg_chunks=len(args)))
    [call] = chat(server, family, True, tools=TOOLS).tool_calls
    assert call.arguments == args


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("final", [False, True], ids=["own-chunk", "done-chunk"])
def test_ollama_tool_calls_in_any_chunk(server, stream, final):
    server.script(Reply("ok", tool_calls=CALLS, calls_in_final=final))
    result = chat(server, "ollama", stream, tools=TOOLS)
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == [
        (n, json.loads(a)) for n, a in CALLS]
    assert_ids(result.tool_calls)


@pytest.mark.parametrize("stream", STREAMS)
def test_empty_arguments_are_an_empty_object(server, stream):
    server.script(Reply("", tool_calls=[("now", "")]))
    [call] = chat(server, "openai", stream, tools=TOOLS).tool_calls
    assert call.arguments == "{}"


@pytest.mark.parametrize("stream", STREAMS)
def test_invalid_argument_text_is_kept_as_the_model_wrote_it(server, stream):
    server.script(Reply("", tool_calls=[("exec", '{"cmd": "ls')]))
    [call] = chat(server, "openai", stream, tools=TOOLS).tool_calls
    assert call.arguments == '{"cmd": "ls'


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_unprintable_or_huge_ids_and_names_are_made_safe(server, family, stream):
    ids = ["bad id\x1b[2J", "x" * 5000, "call_fine-1"]
    calls = [("read\x1b[31m", "{}"), ("r" * 5000, "{}"), ("read", "{}")]
    server.script(Reply("", tool_calls=calls, call_ids=ids))
    result = chat(server, family, stream, tools=TOOLS)
    assert_ids(result.tool_calls)
    first, second, third = result.tool_calls
    assert re.fullmatch(r"call_[0-9a-f]{24}", first.id)
    assert re.fullmatch(r"call_[0-9a-f]{24}", second.id)
    assert third.id == "call_fine-1"
    assert "\x1b" not in first.name and first.name.startswith("read")
    assert len(second.name) <= 200
    assert third.name == "read"


# -- caps on what one reply may hold --------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("family", FAMILIES)
def test_too_many_tool_calls_is_a_clear_error(server, family, stream):
    server.script(Reply("", tool_calls=[("read", '{"path": "a"}')] * 65))
    err = failure(server, family, stream, tools=TOOLS)
    assert err.kind == "server"
    assert "more than 64 tool calls" in err.message


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("family", FAMILIES)
def test_sixty_four_tool_calls_are_fine(server, family, stream):
    server.script(Reply("", tool_calls=[("read", '{"path": "a"}')] * 64))
    result = chat(server, family, stream, tools=TOOLS)
    assert len(result.tool_calls) == 64
    assert_ids(result.tool_calls)


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("family", FAMILIES)
def test_oversized_arguments_are_a_clear_error(server, family, stream):
    big = json.dumps({"content": "x" * (1024 * 1024)})
    server.script(Reply("", tool_calls=[("write", big)]))
    err = failure(server, family, stream, tools=TOOLS)
    assert err.kind == "server"
    assert "tool-call arguments over 1 MiB" in err.message


# -- requests: tools and the neutral history on each wire format ---------------------------


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("family", FAMILIES)
def test_tool_specs_on_the_wire(server, family, stream):
    chat(server, family, stream, tools=TOOLS)
    tools = sent(server)["tools"]
    if family == "anthropic":
        assert tools == [{"name": t["name"], "description": t["description"],
                          "input_schema": t["parameters"]} for t in TOOLS]
    else:
        assert tools == [{"type": "function", "function": t} for t in TOOLS]
    assert sent(server)["stream"] is stream


@pytest.mark.parametrize("family", FAMILIES)
def test_no_tools_key_without_tools(server, family):
    chat(server, family, True)
    assert "tools" not in sent(server)


EXPECTED = {
    "openai": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "look at a and b"},
        {"role": "assistant", "content": "Reading both.", "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "read", "arguments": '{"path": "a.txt"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "read", "arguments": '{"path":"b.txt"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "alpha"},
        {"role": "tool", "tool_call_id": "call_b", "content": "Error: b.txt: no such file"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_c", "type": "function",
             "function": {"name": "exec", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_c",
         "content": "Error: the arguments are not valid JSON" + NOTE},
        {"role": "user", "content": "and now?"},
    ],
    "ollama": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "look at a and b"},
        {"role": "assistant", "content": "Reading both.", "tool_calls": [
            {"function": {"name": "read", "arguments": {"path": "a.txt"}}},
            {"function": {"name": "read", "arguments": {"path": "b.txt"}}}]},
        {"role": "tool", "content": "alpha", "tool_name": "read"},
        {"role": "tool", "content": "Error: b.txt: no such file", "tool_name": "read"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "exec", "arguments": {}}}]},
        {"role": "tool", "content": "Error: the arguments are not valid JSON" + NOTE,
         "tool_name": "exec"},
        {"role": "user", "content": "and now?"},
    ],
    "anthropic": [
        {"role": "user", "content": "look at a and b"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Reading both."},
            {"type": "tool_use", "id": "call_a", "name": "read", "input": {"path": "a.txt"}},
            {"type": "tool_use", "id": "call_b", "name": "read", "input": {"path": "b.txt"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_a", "content": "alpha"},
            {"type": "tool_result", "tool_use_id": "call_b", "content": "b.txt: no such file",
             "is_error": True}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_c", "name": "exec", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_c",
             "content": "the arguments are not valid JSON" + NOTE, "is_error": True},
            {"type": "text", "text": "and now?"}]},
    ],
}


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("family", FAMILIES)
def test_history_on_the_wire(server, family, stream):
    chat(server, family, stream, messages=HISTORY, tools=TOOLS)
    payload = sent(server)
    assert payload["messages"] == EXPECTED[family]
    if family == "anthropic":
        assert payload["system"] == "be brief"


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_pairs_results_with_their_calls(server, family, stream):
    """A reply's calls, sent back with their results, reach the server paired."""
    server.script(Reply("", tool_calls=CALLS))
    first = chat(server, family, stream, tools=TOOLS)
    history = [*HELLO, {"role": "assistant", "content": first.text, "tool_calls": [
        {"id": c.id, "name": c.name, "arguments": c.arguments} for c in first.tool_calls]}]
    history += [{"role": "tool", "tool_call_id": c.id, "name": c.name, "content": f"out {i}",
                 "is_error": False} for i, c in enumerate(first.tool_calls)]
    chat(server, family, stream, messages=history, tools=TOOLS)
    messages = sent(server)["messages"]
    if family == "anthropic":
        uses = [b["id"] for b in messages[1]["content"] if b["type"] == "tool_use"]
        results = [(b["tool_use_id"], b["content"]) for b in messages[2]["content"]]
        assert results == [(i, f"out {n}") for n, i in enumerate(uses)]
        assert uses == [c.id for c in first.tool_calls]
    elif family == "openai":
        assert [c["id"] for c in messages[1]["tool_calls"]] == [c.id for c in first.tool_calls]
        assert [(m["tool_call_id"], m["content"]) for m in messages[2:]] == [
            (c.id, f"out {i}") for i, c in enumerate(first.tool_calls)]
    else:
        assert [(m["tool_name"], m["content"]) for m in messages[2:]] == [
            (c.name, f"out {i}") for i, c in enumerate(first.tool_calls)]


@pytest.mark.parametrize("family", ["openai", "anthropic"])
def test_ids_the_api_would_refuse_are_mapped_consistently(server, family):
    """Ids from another provider (a fallback model mid-turn) may break this API's rules:
    OpenAI takes at most 40 characters, Anthropic only [A-Za-z0-9_-]."""
    odd = ["functions.read:0", "x" * 41]
    history = [*HELLO, {"role": "assistant", "content": "", "tool_calls": [
        {"id": i, "name": "read", "arguments": "{}"} for i in odd]}]
    history += [{"role": "tool", "tool_call_id": i, "name": "read", "content": "ok",
                 "is_error": False} for i in odd]
    chat(server, family, True, messages=history)
    messages = sent(server)["messages"]
    if family == "anthropic":
        uses = [b["id"] for b in messages[1]["content"]]
        results = [b["tool_use_id"] for b in messages[2]["content"]]
        assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,40}", i) for i in uses)
    else:
        uses = [c["id"] for c in messages[1]["tool_calls"]]
        results = [m["tool_call_id"] for m in messages[2:]]
        assert uses[0] == "functions.read:0"  # fine for OpenAI: kept as the server sent it
        assert all(len(i) <= 40 for i in uses)
    assert uses == results and len(set(uses)) == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_tool_names_the_api_would_refuse_are_mapped_consistently(server, family):
    history = [*HELLO, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "name": "functions.read \ufffd", "arguments": "{}"}]},
        {"role": "tool", "tool_call_id": "c1", "name": "functions.read \ufffd",
         "content": "Unknown tool", "is_error": True}]
    chat(server, family, True, messages=history)
    messages = sent(server)["messages"]
    if family == "anthropic":
        name = messages[1]["content"][0]["name"]
    else:
        name = messages[1]["tool_calls"][0]["function"]["name"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name)
    if family == "ollama":
        assert messages[2]["tool_name"] == name


def test_anthropic_merges_same_role_and_drops_empty_text(server):
    history = [{"role": "user", "content": "one"}, {"role": "assistant", "content": ""},
               {"role": "user", "content": "two"}, {"role": "assistant", "content": "  "},
               {"role": "user", "content": "three"}]
    chat(server, "anthropic", True, messages=history)
    assert sent(server)["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "one"}, {"type": "text", "text": "two"},
        {"type": "text", "text": "three"}]}]


def test_anthropic_puts_tool_results_before_text_in_a_user_message(server):
    """A user message that arrives between the calls and their results (steering) still
    leaves the results first, as Anthropic requires."""
    history = [*HELLO, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "name": "read", "arguments": "{}"}]},
        {"role": "user", "content": "stop that"},
        {"role": "tool", "tool_call_id": "c1", "name": "read", "content": "skipped",
         "is_error": True}]
    chat(server, "anthropic", True, messages=history)
    assert sent(server)["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "c1", "content": "skipped", "is_error": True},
        {"type": "text", "text": "stop that"}]}


def test_plain_conversations_keep_their_shape(server):
    plain = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
             {"role": "assistant", "content": "a"}, {"role": "user", "content": "v"}]
    for family in FAMILIES:
        chat(server, family, True, messages=plain)
        expected = plain[1:] if family == "anthropic" else plain
        assert sent(server)["messages"] == expected


# -- a model that does not take tools -------------------------------------------------------

NO_TOOLS = {
    "ollama": (400, error_body("ollama", 400,
                               "registry.ollama.ai/library/gemma3:4b does not support tools")),
    "openai": (404, {"error": {"message": "No endpoints found that support tool use. To learn "
                               "more about provider routing, visit: https://openrouter.ai/docs",
                               "code": 404}}),
    "llama.cpp": (500, {"error": {"code": 500, "message": "tools param requires --jinja flag",
                                  "type": "server_error"}}),
    "vllm": (400, {"object": "error", "message": '"auto" tool choice requires '
                   "--enable-auto-tool-choice and --tool-call-parser to be set",
                   "type": "BadRequestError", "param": None, "code": 400}),
}


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("server_kind", list(NO_TOOLS))
def test_a_model_without_tools_is_its_own_kind(server, server_kind, stream):
    family = "ollama" if server_kind == "ollama" else "openai"
    code, body = NO_TOOLS[server_kind]
    server.script(Status(code, body=body))
    err = failure(server, family, stream, tools=TOOLS)
    assert err.kind == "no_tools" and err.status == code
    assert not err.retryable and not err.fallback_now
    assert "does not accept tools" in err.message
    assert err.hint and "tools" in err.hint


@pytest.mark.parametrize("server_kind", ["ollama", "openai"])
def test_the_same_answer_without_tools_sent_keeps_its_kind(server, server_kind):
    code, body = NO_TOOLS[server_kind]
    server.script(Status(code, body=body))
    err = failure(server, server_kind, True)
    assert err.kind == {400: "bad_request", 404: "not_found"}[code]


@pytest.mark.parametrize("family", FAMILIES)
def test_odd_recorded_calls_still_make_a_valid_request(server, family):
    """A step without calls, arguments that only Python reads (NaN), an error result that
    already says so, and one with no text."""
    history = [*HELLO, {"role": "assistant", "content": "thinking", "tool_calls": []},
               {"role": "user", "content": "go on"},
               {"role": "assistant", "content": "", "tool_calls": [
                   {"id": "c1", "name": "exec", "arguments": '{"timeout": NaN}'},
                   {"id": "c2", "name": "exec", "arguments": "[1, 2]"}]},
               {"role": "tool", "tool_call_id": "c1", "name": "exec",
                "content": "Error: timeout must be a number", "is_error": True},
               {"role": "tool", "tool_call_id": "c2", "name": "exec", "content": "",
                "is_error": True}]
    chat(server, family, True, messages=history)
    messages = sent(server)["messages"]
    if family == "anthropic":
        assert messages[1] == {"role": "assistant", "content": "thinking"}
        assert [b["input"] for b in messages[3]["content"]] == [{}, {}]
        contents = [b["content"] for b in messages[4]["content"]]
    else:
        assert messages[1] == {"role": "assistant", "content": "thinking"}
        arguments = [c["function"]["arguments"] for c in messages[3]["tool_calls"]]
        assert arguments == (["{}", "{}"] if family == "openai" else [{}, {}])
        contents = [m["content"] for m in messages[4:]]
        assert contents[0].startswith("Error: timeout must be a number\n\n")
        assert contents[1].startswith("Error\n\n")
    assert "They were: {\"timeout\": NaN}]" in contents[0]
    assert "They were: [1, 2]]" in contents[1]
