"""What a model call is sent, decided in one place: the system prompt fased assembles (a base
section, the workspace's bootstrap files under budgets, agents.defaults.systemPrompt), the
tools offered, and the session's history with every tool call paired with its result, trimmed
to the context window.

Everything here reads the projections and the workspace; nothing is recorded. The loop records
what this returns (files and prompts once per content hash, see `snapshots`), so a past request
is rebuilt exactly by `render_history` with the recorded parameters (`replay --turn --request`).

Tokens are estimated at 4 characters each. When the history does not fit, old tool results are
shortened first (with a marker), then whole earlier turns are dropped, oldest first: a call is
never sent without its result, nor a result without its call.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from fased.tokens import estimate as estimate_tokens

FORMAT = 1  # how history is rendered; recorded with each request
DEFAULT_CONTEXT_WINDOW = 32768
REPLY_RESERVE = 1024
FILE_MAX_CHARS = 20_000
TOTAL_MAX_CHARS = 60_000
RESULT_CAP = 16_000
SHORTEN_TO = 2_000
# the order bootstrap files go into the prompt (BOOTSTRAP.md only while it exists)
PROMPT_FILES = ("AGENTS.md", "SOUL.md", "TOOLS.md", "IDENTITY.md", "USER.md", "HEARTBEAT.md",
                "BOOTSTRAP.md", "MEMORY.md")
FIRST_RUN = "BOOTSTRAP.md"
# templates that are only placeholders for the user to fill in: unchanged, they tell the model
# nothing (AGENTS.md, SOUL.md, IDENTITY.md and BOOTSTRAP.md say something even unchanged)
PLACEHOLDERS = ("TOOLS.md", "USER.md", "HEARTBEAT.md", "MEMORY.md")
# sections of a shipped template that explain tools: left out, while the file is unchanged,
# for a model offered no tools (a model told of tools it lacks talks about them, and every
# token of context slows a CPU model's decoding)
TOOL_SECTIONS = {"AGENTS.md": "## Memory"}
NEEDS_TOOLS = "memory section needs tools"
SHOWN = (None, "truncated", NEEDS_TOOLS)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# -- the system prompt --------------------------------------------------------------------------

@dataclass
class PromptFile:
    """A bootstrap file as the prompt uses it. `reason` says why it is cut or left out:
    truncated, blank, template (what setup wrote, unchanged), missing, removed."""

    name: str
    path: Path
    size: int = 0  # characters
    injected: int = 0
    sha: str | None = None
    text: str = ""
    reason: str | None = None
    #: characters [start, end) of the file not sent (a tool section of a template)
    left_out: tuple[int, int] | None = None
    template: bool = False  # what setup wrote, unchanged


@dataclass
class OfferedSkill:
    """A skill as the prompt offers it: its SKILL.md (recorded like a bootstrap file, by
    content hash) and the folder's content hash; `described` is False when its description
    was dropped to fit skills.limits.maxSkillsPromptChars, `inlined` when the user's message
    asked for it by `$name`."""

    name: str
    description: str
    file: Path
    folder_sha: str
    text: str
    sha: str
    described: bool = True
    inlined: bool = False


@dataclass
class SkillsBlock:
    """The available_skills block: the skills in it, and those left out to fit the cap."""

    skills: list[OfferedSkill] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    cap: int = 0
    warnings: list[str] = field(default_factory=list)
    listed: bool = True  # False: no read tool, so no block (only `$name` inlining)

    @property
    def note(self) -> str | None:
        dropped = sum(not s.described for s in self.skills)
        if not dropped and not self.left_out:
            return None
        bits = []
        if dropped:
            bits.append(f"{dropped} description(s) dropped")
        if self.left_out:
            bits.append(f"{len(self.left_out)} skill(s) left out ({', '.join(self.left_out)})")
        return " and ".join(bits) + (f" to fit skills.limits.maxSkillsPromptChars "
                                     f"({self.cap:,})")


@dataclass
class SystemPrompt:
    """The assembled prompt: its text, and the same as parts (literal strings and slices
    `{"file": sha, "start": i, "end": j}` of recorded files) for the log. An offered skill
    is marked by an empty slice of its SKILL.md with its name and folder hash
    (`{"file": sha, "start": 0, "end": 0, "skill": name, "sha256": folder}`)."""

    text: str
    parts: list
    files: list[PromptFile]
    sha: str
    skills: SkillsBlock = field(default_factory=SkillsBlock)

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.text)


def prompt_files(con: sqlite3.Connection, home: Path, agent: sqlite3.Row,
                 workspace: Path) -> list[PromptFile]:
    """The bootstrap files in prompt order, read now, with why each is left out (if it is)."""
    from fased.agents import render_template

    removed = {r[0] for r in con.execute(
        "SELECT file FROM workspace_files WHERE workspace = ? AND removed_seq IS NOT NULL",
        (str(workspace),))}
    out = []
    for name in PROMPT_FILES:
        path = workspace / name
        if name == "MEMORY.md" and not path.exists() and (workspace / "memory.md").exists():
            path = workspace / "memory.md"
        entry = PromptFile(path.name, path)
        out.append(entry)
        if name == FIRST_RUN and name in removed:
            entry.reason = "removed"  # the first-run ritual is over: never offered again
            continue
        if _links_out(path, workspace):
            entry.reason = "a symlink out of the workspace"
            continue
        try:
            data = _read_bounded(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            entry.reason = "missing"
            continue
        except OSError as exc:
            entry.reason = f"unreadable ({exc.strerror})"
            continue
        text = data.decode("utf-8", "replace")
        entry.text, entry.size, entry.sha = text, len(text), sha256(text)
        if not text.strip():
            entry.reason = "blank"
        elif name in PLACEHOLDERS or name in TOOL_SECTIONS:
            entry.template = _is_template(name, data, agent, render_template)
            if entry.template and name in PLACEHOLDERS:
                entry.reason = "template"
    return out


def _links_out(path: Path, workspace: Path) -> bool:
    """Whether a bootstrap file is a link that leads out of the workspace. A workspace is
    often a clone: AGENTS.md -> ~/.ssh/id_rsa would send the key to the model in every
    system prompt, where the file tools refuse to read through such a link."""
    from fased.bounds import path_within

    return os.path.islink(path) and not path_within(os.path.realpath(path),
                                                    os.path.realpath(workspace))


def _read_bounded(path: Path, limit: int = 1 << 20) -> bytes:
    """At most 1 MiB of a regular file (a bootstrap file bigger than that is cut anyway);
    a FIFO or device is an OSError that says so (NotRegularFile), never a wait."""
    from fased.bounds import read_head

    return read_head(path, limit)


def _is_template(name: str, data: bytes, agent, render) -> bool:
    """What setup wrote, unchanged (whitespace aside): the template's placeholders are not
    worth tokens. Detected by comparing with the shipped template rendered for this agent."""
    try:
        template = render(name, {"name": agent["name"], "emoji": agent["emoji"]})
    except (FileNotFoundError, OSError):
        return False
    return data.strip() == template.strip()


def _section(text: str, heading: str | None) -> tuple[int, int] | None:
    """Where the section under `heading` (a line of its own) is in `text`: from the heading
    to the next heading of its level, or the end."""
    if heading is None:
        return None
    start = text.find(f"\n{heading}\n")
    if start < 0:
        return None
    start += 1
    level = heading.split(" ", 1)[0] + " "
    end = text.find(f"\n{level}", start + len(heading))
    return start, len(text) if end < 0 else end + 1


def _span(span: tuple[int, int] | None) -> int:
    return 0 if span is None else span[1] - span[0]


def share_budget(sizes: list[int], per_file: int, total: int) -> list[int]:
    """How many characters each file gets: at most `per_file` each and `total` in all, shared
    fairly (max-min): a short file is never starved by a long one before it."""
    wants = [min(s, per_file) for s in sizes]
    given = [0] * len(sizes)
    left = total
    pending = sorted(range(len(sizes)), key=lambda i: wants[i])
    for k, i in enumerate(pending):
        share = left // (len(pending) - k)
        given[i] = min(wants[i], share)
        left -= given[i]
    return given


def _cut(text: str, limit: int) -> tuple[str, int]:
    """The first `limit` characters, ending at a line end where one is close; (text, lines)."""
    head = text[:limit]
    newline = head.rfind("\n")
    if newline > limit * 0.8:
        head = head[:newline + 1]
    return head, head.count("\n")


def system_prompt(con: sqlite3.Connection, home: Path, agent: sqlite3.Row, workspace: Path,
                  tools: list, settings: dict, turn=None) -> SystemPrompt:
    """The system prompt for `agent`: base section, then Project Context, then the user's
    systemPrompt. Deterministic for the same files, tools and settings (no clock in it), so
    its prefix stays cache-stable."""
    files = prompt_files(con, home, agent, workspace)
    if not tools:  # the ritual is filling in files and deleting this one: a model without
        for f in files:  # tools cannot, and told to, a small one only talks about it
            if f.name == FIRST_RUN and f.reason is None:
                f.reason = "needs tools"
            elif f.template and f.reason is None:
                f.left_out = _section(f.text, TOOL_SECTIONS.get(f.name))
    per_file = int(settings.get("bootstrapMaxChars", FILE_MAX_CHARS))
    total = int(settings.get("bootstrapTotalMaxChars", TOTAL_MAX_CHARS))
    live = [f for f in files if f.reason is None]
    for f, n in zip(live, share_budget([f.size - _span(f.left_out) for f in live], per_file,
                                       total), strict=True):
        f.injected = n
        if n < f.size - _span(f.left_out):
            f.reason, f.left_out = "truncated", None  # cut like any file: from its start
        elif f.left_out is not None:
            f.reason = NEEDS_TOOLS
    first_run = any(f.name == FIRST_RUN and f.reason in SHOWN for f in files)
    where = _sandbox_lines(home, agent, workspace, settings, turn) if tools else [
        f"Your workspace is {workspace}."]
    parts: list = [_base_section(agent, workspace, tools, settings, first_run, where)]
    shown = [f for f in files if f.reason in SHOWN]
    if shown:
        parts.append("\n# Project Context\n\nThese files are in your workspace; they are "
                     "yours and the user's to edit.\n")
    for f in shown:
        parts.append(f"\n## {f.name}\n\n")
        if f.reason == "truncated":
            head, lines = _cut(f.text, f.injected)
            f.injected = len(head)
            parts.append({"file": f.sha, "start": 0, "end": len(head)})
            parts.append(f"\n[... {f.name} goes on: {f.injected:,} of {f.size:,} characters "
                         f"shown. Read the rest with the read tool: read(path=\"{f.name}\", "
                         f"offset={lines + 1})]\n")
        elif f.left_out is not None:
            parts.append({"file": f.sha, "start": 0, "end": f.left_out[0]})
            parts.append({"file": f.sha, "start": f.left_out[1], "end": f.size})
        else:
            parts.append({"file": f.sha, "start": 0, "end": f.size})
    block = offered_skills(con, home, agent, workspace, _skills_cap(con), _message_of(turn),
                           listed=any(t.name == "read" for t in tools))
    parts += skills_parts(block)
    extra = settings.get("systemPrompt")
    if extra:
        parts.append(f"\n{extra}\n")
    parts = _merge_literals(parts)
    texts = {f.sha: f.text for f in files if f.sha}
    texts.update({s.sha: s.text for s in block.skills})
    text = render_parts(parts, texts.__getitem__)
    return SystemPrompt(text, parts, files, sha256(json.dumps(parts, sort_keys=True)), block)


# -- skills -------------------------------------------------------------------------------------

SKILLS_MAX_CHARS = 30_000
SKILL_REF = re.compile(r"(?<![\w$])\$([a-z0-9]+(?:-[a-z0-9]+)*)(?![\w-])")
SKILLS_INTRO = ("\n# Skills\n\nSkills are instructions for particular tasks. When one below "
                "applies, read its SKILL.md with the read tool (at the location given) before "
                "you act, and follow it; files it mentions are in its folder.\n")


def _skills_cap(con: sqlite3.Connection) -> int:
    from fased.config import config_doc

    limits = (config_doc(con).get("skills") or {}).get("limits") or {}
    return int(limits.get("maxSkillsPromptChars", SKILLS_MAX_CHARS))


def _options_of(turn) -> dict | None:
    """The model parameters a turn was queued with (`chat -o`), if any."""
    try:
        text = turn["options"]
    except (KeyError, IndexError):
        return None
    return json.loads(text) if text else None


def _message_of(turn) -> str:
    if turn is None:
        return ""
    try:
        return turn["message"] or ""
    except (KeyError, IndexError):
        return ""


def offered_skills(con: sqlite3.Connection, home: Path, agent, workspace: Path, cap: int,
                   message: str = "", listed: bool = True) -> SkillsBlock:
    """The skills the agent is offered, fitted into `cap` characters: descriptions go first
    (from the last skill back), then whole skills. `$name` in `message` inlines that one.
    Not `listed` (no read tool to open them with): only the inlined ones are kept."""
    from fased.skills.gating import offered

    skills, warnings = offered(con, home, agent["id"], workspace)
    wanted = set(SKILL_REF.findall(message))
    out = []
    for s in skills:
        try:
            text = _read_bounded(s.file).decode("utf-8", "replace")
        except OSError:
            continue
        if listed or s.name in wanted:
            out.append(OfferedSkill(s.name, s.description, s.file, s.sha256, text,
                                    sha256(text), inlined=s.name in wanted))
    block = SkillsBlock(out, [], cap, warnings, listed)
    for s in reversed(block.skills if listed else []):
        if _block_size(block) <= cap:
            break
        s.described = False
    while listed and block.skills and _block_size(block) > cap:
        block.left_out.insert(0, block.skills.pop().name)
    return block


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _skill_entry(s: OfferedSkill) -> str:
    description = f"<description>{_xml(s.description)}</description>\n" if s.described else ""
    return (f"<skill>\n<name>{s.name}</name>\n{description}"
            f"<location>{_xml(str(s.file))}</location>\n</skill>\n")


def _block_size(block: SkillsBlock) -> int:
    if not block.skills:
        return 0
    return len("<available_skills>\n</available_skills>\n") + sum(
        len(_skill_entry(s)) for s in block.skills)


def skills_parts(block: SkillsBlock) -> list:
    """The block as prompt parts, each skill marked with its hashes; then the instructions
    of the skills asked for by `$name`."""
    if not block.skills:
        return []
    parts: list = []
    if block.listed:
        parts += [SKILLS_INTRO, "\n<available_skills>\n"]
        for s in block.skills:
            parts.append({"file": s.sha, "start": 0, "end": 0, "skill": s.name,
                          "sha256": s.folder_sha})
            parts.append(_skill_entry(s))
        parts.append("</available_skills>\n")
    for s in block.skills:
        if s.inlined:
            parts.append(f"\n## Skill {s.name} (the user asked for it with ${s.name})\n\n"
                         f"Its SKILL.md ({s.file}), to follow now:\n\n")
            parts.append({"file": s.sha, "start": 0, "end": len(s.text)})
            parts.append("\n")
    return parts


def _sandbox_lines(home: Path, agent, workspace: Path, settings: dict, turn) -> list[str]:
    """Where the tools really work, when the turn runs in a sandbox."""
    from fased.tools.confine import SandboxSettings

    box = SandboxSettings.of(settings, home)
    if not box.applies(turn if turn is not None else {"source": "chat"}):
        return [f"Your workspace is {workspace}; paths in tool calls are relative to it."]
    net = "with network" if box.network else "with no network"
    if box.access == "rw":
        where = f"Your workspace is {workspace}; paths in tool calls are relative to it."
    else:
        where = (f"Your workspace is the sandbox workspace {box.box_workspace(agent['id'])}; "
                 "paths in tool calls are relative to it.")
        if box.access == "ro":
            where += f" The agent workspace {workspace} can be read but not written."
    return [where, f"Commands run in a sandbox: the system is read-only, /tmp is private, "
                   f"{net}."]


def _base_section(agent, workspace: Path, tools: list, settings: dict, first_run: bool,
                  where: list[str]) -> str:
    emoji = f" {agent['emoji']}" if agent["emoji"] else ""
    lines = [f"You are {agent['name']}{emoji}, a personal AI agent that fased runs for its user "
             "in their shell.", *where,
             f"The user's time zone is {user_timezone(settings)}."]
    if tools:
        lines.append("\nYou can use these tools (call them through the tool interface):")
        lines += [f"- {t.name}: {t.description.splitlines()[0]}" for t in tools]
    else:
        lines.append("\nNo tools are available in this conversation: answer in text.")
    if first_run:
        lines.append(f"\n{FIRST_RUN} is in your workspace: it is your first-run ritual. Follow "
                     "it before anything else, and delete the file when you are done.")
    return "\n".join(lines) + "\n"


def user_timezone(settings: dict) -> str:
    """agents.defaults.userTimezone, else $TZ, else the system's zone (/etc/timezone, the
    /etc/localtime link), else its abbreviation. Only the zone: never the clock."""
    zone = settings.get("userTimezone") or os.environ.get("TZ", "").lstrip(":")
    if zone:
        return zone
    try:
        with open("/etc/timezone", encoding="utf-8") as f:
            zone = f.read(100).strip()
    except OSError:
        zone = ""
    if not zone:
        link = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in link:
            zone = link.split("zoneinfo/", 1)[1]
    if not zone:
        import time

        zone = time.tzname[0]
    return zone or "UTC"


def _merge_literals(parts: list) -> list:
    out: list = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        else:
            out.append(part)
    return out


def render_parts(parts: list, text_of) -> str:
    """A prompt from its parts; `text_of(sha)` gives a recorded file's text."""
    out = []
    for part in parts:
        out.append(part if isinstance(part, str) else
                   text_of(part["file"])[part["start"]:part["end"]])
    return "".join(out)


# -- history ------------------------------------------------------------------------------------

@dataclass
class HistoryPlan:
    """Which history a request carries: turns from `from_seq` (queue order) on, tool results
    of `shortened` calls cut to `shorten_to`, every result cut at `result_cap`."""

    from_seq: int = 0
    shortened: list[str] = field(default_factory=list)
    shorten_to: int = SHORTEN_TO
    result_cap: int = RESULT_CAP
    dropped: int = 0  # messages of earlier turns left out


@dataclass
class _Unit:
    """One earlier turn (with what merged into it) as messages; kept or dropped whole."""

    seq: int
    messages: list[dict]
    results: list[tuple[int, str, int]]  # (message index, call id, full length)


def render_history(con: sqlite3.Connection, turn: sqlite3.Row, plan: HistoryPlan,
                   upto_step: int | None = None) -> list[dict]:
    """The neutral messages for `turn`'s next model call (or its call number `upto_step`):
    earlier turns of the session from `plan.from_seq` on, then this turn's messages and its
    steps before `upto_step`. Every call is followed by exactly one result, by construction."""
    units, current = _units(con, turn, upto_step, plan)
    out: list[dict] = []
    for unit in units:
        if unit.seq >= plan.from_seq:
            out.extend(unit.messages)
    return out + current


def _units(con: sqlite3.Connection, turn: sqlite3.Row, upto_step: int | None,
           plan: HistoryPlan) -> tuple[list[_Unit], list[dict]]:
    shortened = set(plan.shortened)
    rows = con.execute(
        "SELECT t.id, t.message, t.reply, t.state, t.queued_seq, t.merged_into, t.merged_step,"
        " COALESCE(p.queued_seq, t.queued_seq) AS unit_seq, COALESCE(p.id, t.id) AS unit"
        " FROM turns t LEFT JOIN turns p ON p.id = t.merged_into"
        " WHERE t.session = ? AND COALESCE(p.queued_seq, t.queued_seq) <= ?"
        " ORDER BY unit_seq, t.queued_seq",
        (turn["session"], turn["queued_seq"])).fetchall()
    by_unit: dict[str, list[sqlite3.Row]] = {}
    heads: dict[str, sqlite3.Row] = {}
    for r in rows:
        by_unit.setdefault(r["unit"], []).append(r)
        if r["id"] == r["unit"]:
            heads[r["unit"]] = r
    steps = _session_steps(con, turn["session"])
    units: list[_Unit] = []
    current: list[dict] = []
    for unit_id, members in by_unit.items():
        head = heads.get(unit_id)
        if head is None:
            continue
        is_current = unit_id == turn["id"]
        if not is_current and head["state"] != "completed":
            continue
        messages: list[dict] = []
        results: list[tuple[int, str, int]] = []
        steered: dict[int, list[str]] = {}
        for m in members:
            if m["merged_step"] is not None:
                steered.setdefault(m["merged_step"], []).append(m["message"])
            else:
                messages.append({"role": "user", "content": m["message"]})
        _steps(steps.get(unit_id, ()), upto_step if is_current else None, steered, messages,
               results, shortened if not is_current else set(), plan)
        if is_current:
            current = messages
        else:
            messages.append({"role": "assistant", "content": head["reply"] or ""})
            units.append(_Unit(head["queued_seq"], messages, results))
    return units, current


def _session_steps(con: sqlite3.Connection, session: str) -> dict[str, list[sqlite3.Row]]:
    """Every step of the session's turns with its calls (one query), by turn."""
    out: dict[str, list[sqlite3.Row]] = {}
    for r in con.execute(
            "SELECT s.turn, s.step, s.text, c.id, c.name, c.arguments, c.state, c.result"
            " FROM steps s LEFT JOIN tool_calls c ON c.turn = s.turn AND c.step = s.step"
            " WHERE s.session = ? ORDER BY s.turn, s.step, c.idx", (session,)):
        out.setdefault(r["turn"], []).append(r)
    return out


def _steps(rows, upto_step: int | None, steered: dict[int, list[str]], messages: list[dict],
           results: list[tuple[int, str, int]], shortened: set[str],
           plan: HistoryPlan) -> None:
    """Append a turn's steps: the assistant message with its calls, then one result per
    call, then what the user steered in after that step."""
    current_step = None
    pending_results: list[dict] = []

    def flush(step: int | None) -> None:
        if step is None:
            return
        for result in pending_results:
            results.append((len(messages), result["tool_call_id"], len(result["content"])))
            messages.append(result)
        for text in steered.get(step, ()):
            messages.append({"role": "user", "content": text})

    for r in rows:
        if upto_step is not None and r["step"] >= upto_step:
            break
        if r["step"] != current_step:
            flush(current_step)
            current_step = r["step"]
            calls: list[dict] = []
            pending_results = []
            messages.append({"role": "assistant", "content": r["text"], "tool_calls": calls})
        if r["id"] is None:
            continue
        calls.append({"id": r["id"], "name": r["name"], "arguments": r["arguments"]})
        cap = plan.shorten_to if r["id"] in shortened else plan.result_cap
        pending_results.append({"role": "tool", "tool_call_id": r["id"], "name": r["name"],
                                "content": result_text(r["state"], r["result"], cap),
                                "is_error": r["state"] != "ok"})
    flush(current_step)


def result_text(state: str, result: str | None, cap: int) -> str:
    """A call's result as the model gets it: cut at `cap` characters with a marker."""
    if state in ("pending", "running") or result is None:
        text = "The call has no result: it did not run to the end."
    else:
        text = result
    if len(text) > cap:
        text = (text[:cap] + f"\n[... {len(text) - cap:,} more characters not shown: the "
                f"result was cut at {cap:,}]")
    return text


def plan_history(con: sqlite3.Connection, turn: sqlite3.Row, budget: int,
                 result_cap: int = RESULT_CAP) -> tuple[HistoryPlan, list[dict] | None]:
    """Fit the history into `budget` tokens: shorten old large tool results first, then drop
    whole earlier turns, oldest first. The current turn is always sent whole. Returns the
    plan and, when everything fits as it is, the messages already rendered."""
    plan = HistoryPlan(result_cap=result_cap)
    units, current = _units(con, turn, None, plan)
    used = sum(_tokens(m) for m in current)
    sizes = [sum(_tokens(m) for m in u.messages) for u in units]
    if used + sum(sizes) <= budget:
        return plan, [m for u in units for m in u.messages] + current
    long_results = {cid for u in units for _, cid, n in u.results if n > plan.shorten_to}
    if long_results:
        plan.shortened = sorted(long_results)
        units, current = _units(con, turn, None, plan)
        sizes = [sum(_tokens(m) for m in u.messages) for u in units]
    keep_from = len(units)
    for i in range(len(units) - 1, -1, -1):
        if used + sizes[i] > budget:
            break
        used += sizes[i]
        keep_from = i
    kept = units[keep_from:]
    plan.from_seq = kept[0].seq if kept else turn["queued_seq"]
    plan.dropped = sum(len(u.messages) for u in units[:keep_from])
    kept_ids = {cid for u in kept for _, cid, _ in u.results}
    plan.shortened = [c for c in plan.shortened if c in kept_ids]
    return plan, None


def _tokens(message: dict) -> int:
    n = estimate_tokens(message.get("content") or "")
    for call in message.get("tool_calls") or ():
        n += estimate_tokens(call["name"]) + estimate_tokens(call["arguments"])
    return n


# -- the whole request ---------------------------------------------------------------------------

@dataclass
class Request:
    """One model call's input, and how to record it."""

    system: SystemPrompt
    tools: list  # ToolSpec
    messages: list[dict]
    plan: HistoryPlan
    window: int
    reply: int = REPLY_RESERVE  # tokens of the window kept for the reply

    @property
    def tools_sha(self) -> str | None:
        return sha256(json.dumps(tools_wire(self.tools), sort_keys=True)) if self.tools else None

    def refs(self, options: dict | None = None) -> dict:
        """The request as recorded in turn.step / turn.completed (by reference)."""
        refs = {"system": self.system.sha, "tools": self.tools_sha,
                "from_seq": self.plan.from_seq, "format": FORMAT,
                "result_cap": self.plan.result_cap}
        if self.plan.shortened:
            refs["shortened"] = list(self.plan.shortened)
            refs["shorten_to"] = self.plan.shorten_to
        if self.plan.dropped:
            refs["dropped"] = self.plan.dropped
        if options:
            refs["options"] = options
        return refs

    @property
    def history_tokens(self) -> int:
        """The estimated tokens of the messages after the system prompt."""
        return sum(_tokens(m) for m in self.messages[1:])


def tools_wire(tools: list) -> list[dict]:
    return [t.wire() for t in tools]


def build_request(con: sqlite3.Connection, home: Path, turn: sqlite3.Row, agent: sqlite3.Row,
                  workspace: Path, tools: list, settings: dict,
                  upto_step: int | None = None, prompt: SystemPrompt | None = None,
                  model: str | None = None, history_limit: int | None = None) -> Request:
    """Everything the next model call of `turn` sends (`prompt`: the system prompt already
    assembled for an earlier call of the same turn), planned for the window of `model`
    when fased knows it to be smaller than the configured one, and in at most
    `history_limit` estimated tokens of messages when the model refused more."""
    from fased.params import model_window, reply_room

    if prompt is None:
        prompt = system_prompt(con, home, agent, workspace, tools, settings, turn)
    window = int(settings.get("contextWindow") or DEFAULT_CONTEXT_WINDOW)
    window = min(window, model_window(con, model) or window)
    cap = int(settings.get("tools", {}).get("maxResultChars", RESULT_CAP))
    tool_tokens = sum(estimate_tokens(json.dumps(t)) for t in tools_wire(tools))
    reply = reply_room(con, agent["id"], model, _options_of(turn), REPLY_RESERVE)
    budget = window - reply - prompt.tokens - tool_tokens
    if history_limit is not None:
        budget = min(budget, history_limit)
    plan, history = plan_history(con, turn, budget, cap)
    if history is None or upto_step is not None:
        history = render_history(con, turn, plan, upto_step)
    messages = [{"role": "system", "content": prompt.text}, *history]
    return Request(prompt, tools, messages, plan, window, reply)


def render_recorded(con: sqlite3.Connection, turn: sqlite3.Row, refs: dict,
                    step: int | None) -> dict:
    """A past request rebuilt from what the log recorded: system prompt and tools by hash,
    history by plan. `step` is the model call (None: the turn's last one)."""
    def body(sha: str) -> str:
        row = con.execute("SELECT body FROM snapshots WHERE sha256 = ?", (sha,)).fetchone()
        if row is None:
            raise KeyError(sha)
        return row[0]

    parts = json.loads(body(refs["system"]))
    system = render_parts(parts, body)
    tools = json.loads(body(refs["tools"])) if refs.get("tools") else []
    plan = HistoryPlan(refs.get("from_seq", 0), refs.get("shortened", []),
                       refs.get("shorten_to", SHORTEN_TO), refs.get("result_cap", RESULT_CAP),
                       refs.get("dropped", 0))
    messages = [{"role": "system", "content": system},
                *render_history(con, turn, plan, step)]
    return {"messages": messages, "tools": tools, "options": refs.get("options", {})}


def preview(con: sqlite3.Connection, home: Path, agent_id: str | None,
            session: str | None) -> dict:
    """What the agent's next turn in `session` would send (`fased agent context`)."""
    from fased.agents import get_agent, workspace_for
    from fased.settings import agent_settings
    from fased.tools import specs
    from fased.tools.policy import offered_names

    agent = get_agent(con, agent_id)
    if session is None:
        session = agent["current_session"]
    elif con.execute("SELECT 1 FROM sessions WHERE id = ? AND agent = ?",
                     (session, agent["id"])).fetchone() is None:
        row = con.execute("SELECT id FROM sessions WHERE name = ? AND agent = ?",
                          (session, agent["id"])).fetchone()
        if row is None:
            from fased.errors import NotFoundError

            raise NotFoundError(f"no session {session!r} of agent {agent['id']}",
                                hint=f"`fased session list --agent {agent['id']}`")
        session = row[0]
    from fased.params import model_tools

    settings = agent_settings(con, agent["id"])
    workspace = workspace_for(con, home, agent)
    override = con.execute("SELECT model_override FROM sessions WHERE id = ?",
                           (session,)).fetchone()
    first = (override[0] if override else None) or agent["primary_model"]
    # as the loop decides: a model that cannot use tools is offered none
    tools = specs(offered_names(settings["tools"])) if first is None or model_tools(
        con, first) else []
    next_turn = {"id": "", "session": session or "", "queued_seq": 1 << 62, "source": "chat"}
    request = build_request(con, home, next_turn, agent, workspace, tools, settings,
                            model=first)
    tool_tokens = sum(estimate_tokens(json.dumps(t)) for t in tools_wire(tools))
    return {
        "agent": agent["id"], "session": session, "workspace": str(workspace),
        "files": [{"name": f.name, "path": str(f.path), "size": f.size,
                   "injected": f.injected, "reason": f.reason, "sha256": f.sha}
                  for f in request.system.files],
        "tools": [t.name for t in tools],
        "skills": [{"name": sk.name, "path": str(sk.file), "sha256": sk.folder_sha,
                    "described": sk.described, "inlined": sk.inlined}
                   for sk in request.system.skills.skills],
        "skills_left_out": request.system.skills.left_out,
        "skills_note": request.system.skills.note,
        "tokens": {"system": request.system.tokens, "tools": tool_tokens,
                   "history": request.history_tokens, "reply": request.reply,
                   "total": request.system.tokens + tool_tokens + request.history_tokens},
        "window": request.window, "dropped": request.plan.dropped,
        "system_prompt": request.system.text,
    }
