"""The agent loop: a turn is a small state machine recorded in the log, and this moves it on.

    while True:
        calls of the last step still open?  run them (one started dead: interrupted)
        build the request (fased.context), record what it refers to (once per hash)
        one model call (fased.turn.ModelChain: retries, fallback)
        no tool calls: the turn is complete
        record the assistant message with its calls (turn.step); they are now open

Each call: decide (policy, approval), record `tool.started` durably, run it, record its one
terminal event. State between steps is read back from the projections, so any runner can take
over a turn from whatever was recorded; a call found started and unfinished belongs to a dead
runner and is recorded as interrupted, never run again.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field

from fased.context import SHOWN, build_request, tools_wire
from fased.safetext import scrub
from fased.settings import agent_settings, queue_mode
from fased.store import Draft
from fased.turn import ModelChain, TurnFailed

DEFAULT_MAX_ITERATIONS = 25
DEFAULT_TURN_DEADLINE = 1800.0
LOOP_REPEATS = 3
LOG_RESULT_MAX = 256 * 1024  # characters of a result the log keeps
SKIPPED = "Skipped due to queued user message."
INTERRUPTED = ("The runner stopped while this ran; it may or may not have taken effect. "
               "Check before you run it again.")


@dataclass
class Limits:
    """agents.defaults.tools limits (any layer of `tools` may set them)."""

    max_iterations: int = DEFAULT_MAX_ITERATIONS
    turn_deadline: float = DEFAULT_TURN_DEADLINE
    text_calls: bool = True

    @classmethod
    def of(cls, tools: dict) -> Limits:
        return cls(int(tools.get("maxIterations", DEFAULT_MAX_ITERATIONS)),
                   float(tools.get("turnDeadlineSeconds", DEFAULT_TURN_DEADLINE)),
                   bool(tools.get("textCalls", True)))


class Parked(Exception):
    """The turn waits for the user's decision (an approval request is recorded)."""

    def __init__(self, request: dict):
        super().__init__(request["id"])
        self.request = request


def close_open_calls(con, turn: str, agent: str, session: str) -> list[Draft]:
    """Terminal events for the calls of a turn that ends with calls still open (Ctrl-C, a
    failure): one never started is skipped, one started is interrupted."""
    drafts = []
    for call in con.execute("SELECT id, name, state FROM tool_calls WHERE turn = ? AND state"
                            " IN ('pending', 'running') ORDER BY step, idx", (turn,)):
        running = call["state"] == "running"
        drafts.append(Draft("tool.finished", f"session:{session}", {
            "turn": turn, "agent": agent, "session": session, "call": call["id"],
            "name": call["name"], "status": "interrupted" if running else "skipped",
            "result": INTERRUPTED if running else "The turn ended before this call ran."}))
    return drafts


def calls_of_turn(con, turn: str) -> list[dict]:
    """A turn's tool calls, in order, as `--json` shows them."""
    return [{"id": r["id"], "name": r["name"], "arguments": r["arguments"],
             "status": r["state"], "step": r["step"]}
            for r in con.execute("SELECT id, name, arguments, state, step FROM tool_calls"
                                 " WHERE turn = ? ORDER BY step, idx", (turn,))]


class AgentLoop:
    """Runs one claimed turn to its end; `execute` returns (terminal event type, data).

    `approver(call)` asks the user about a call that needs it (True/False; None when nobody
    can be asked); `on_tool(name, summary)` tells the user a call starts."""

    def __init__(self, runner, claim, sink=None, approver=None, on_tool=None):
        self.runner = runner
        self.claim = claim
        self.sink = sink
        self.models = ModelChain(runner, claim, sink)
        self.approver = approver
        self.on_tool = on_tool or (lambda name, summary: None)
        self.cancel = threading.Event()

    # what the runner reads when it records the outcome
    partial = property(lambda self: self.models.partial)
    current_model = property(lambda self: self.models.current_model)
    cooldowns = property(lambda self: self.models.cooldowns)
    attempts = property(lambda self: self.models.attempts)
    tried = property(lambda self: self.models.tried)

    def execute(self) -> tuple[str, dict]:
        try:
            return self._execute_turn()
        except Parked as parked:
            return "parked", parked.request
        finally:
            self.models.close()

    def _execute_turn(self) -> tuple[str, dict]:
        store = self.runner.store
        con = store.db(check_files=False)
        settings = agent_settings(con, self.claim.agent)
        self.models.configure(settings)
        self.limits = Limits.of(settings["tools"])
        self._tools_settings = settings["tools"]
        self.deadline = time.monotonic() + self.limits.turn_deadline
        refused = self._wallet_refusal(con)
        if refused is not None:
            return "turn.failed", refused
        noted_drop = False
        prompt = None
        env = None
        history_limit = None  # estimated tokens of messages, once the model refused more
        refused: tuple | None = None  # (the refused request, why) until a smaller one is sent
        while True:
            con = store.db(check_files=False)
            turn = con.execute("SELECT * FROM turns WHERE id = ?", (self.claim.turn,)).fetchone()
            env = env or self._environment(con, settings)
            open_calls = self._open_calls(con)
            if open_calls:
                self._run_calls(con, turn, open_calls, env)
                continue
            steps = con.execute("SELECT COUNT(*) FROM steps WHERE turn = ?",
                                (self.claim.turn,)).fetchone()[0]
            stopped = self._stop_reason(con, steps)
            if stopped is not None:
                return self._stopped(con, stopped, steps)
            request = build_request(con, store.home, turn, env.agent, env.workspace, env.tools,
                                    settings, prompt=prompt,
                                    model=self.models.current_model or self.claim.models[0]
                                    if self.claim.models else None,
                                    history_limit=history_limit)
            if refused is not None:
                if request.messages == refused[0].messages:  # nothing older left to drop
                    return "turn.failed", refused[1]
                self.runner.note(f"fased: the model refused {len(refused[0].messages) - 1} "
                                 "message(s) as too long; dropped the "
                                 f"{request.plan.dropped} oldest of session "
                                 f"{self.claim.session}")
                refused = None
                noted_drop = True
            if prompt is None:  # the turn keeps one system prompt: its prefix stays cached
                prompt = request.system
                self._record_context(con, request, env)
            if request.plan.dropped and not noted_drop:
                noted_drop = True
                self.runner.note(f"fased: dropped the {request.plan.dropped} oldest message(s) "
                                 f"of session {self.claim.session} to fit the "
                                 f"{request.window}-token context window")
            try:
                result = self.models.call(con, request.messages, tools_wire(env.tools))
            except TurnFailed as failed:
                if failed.data.get("error_class") != "context_length":
                    return "turn.failed", failed.data
                # the plan's estimate of the tokens was short for this model's tokenizer:
                # the same request with half the history (never the current turn)
                refused = (request, failed.data)
                history_limit = request.history_tokens // 2
                continue
            calls = self._calls_of(result, env)
            if not calls:
                return "turn.completed", self._completed(result, request, steps + 1)
            if self.sink is not None:
                self.sink.next_message()  # the tool summaries start on their own line
            step = self._step_drafts(steps + 1, result, calls, request)
            fresh = [{**c, "state": "pending", "step": steps + 1} for c in calls]
            self._run_calls(con, turn, fresh, env, carry=step)

    def _wallet_refusal(self, con) -> dict | None:
        """The turn.failed of a turn that would start with a wallet limit reached (a turn
        already under way, with steps recorded, goes on)."""
        from fased.usage import wallet_refusal

        if con.execute("SELECT 1 FROM steps WHERE turn = ?", (self.claim.turn,)).fetchone():
            return None
        why = wallet_refusal(con, self.claim.agent, self.runner.clock())
        if why is None:
            return None
        return {"error_class": "wallet", "message": why, "attempts": 0, "models_tried": [],
                "runner": self.runner.id}

    # -- the environment of a turn ---------------------------------------------------------

    def _environment(self, con, settings: dict) -> _Env:
        from fased.agents import get_agent, workspace_for
        from fased.params import model_tools
        from fased.tools import specs
        from fased.tools.policy import offered_names

        agent = get_agent(con, self.claim.agent, include_deleted=True)
        workspace = workspace_for(con, self.runner.store.home, agent)
        # a model that cannot use tools (the embedded one) is offered none, and its prompt
        # describes none
        first = (self.claim.models or [None])[0]
        tools = specs(offered_names(settings["tools"])) if first is None or model_tools(
            con, first) else []
        from fased.models import known_secrets
        from fased.skills.gating import offered, skill_env
        from fased.tools.exec import tool_environment_for

        home = self.runner.store.home
        skills, _ = offered(con, home, agent["id"], workspace)
        # a secret a tool's output carries (a skill's, which its commands are given, or a
        # provider key a command read from a file) never reaches the log or the model
        self._secrets = tuple(sorted(known_secrets(con, home), key=len, reverse=True))
        self._tool_env = tool_environment_for(con, home, dict(os.environ))
        return _Env(agent, workspace, tools, settings["tools"],
                    tuple(s.path for s in skills),
                    skill_env(con, self.runner.store.home, skills))

    # -- the model's answer ----------------------------------------------------------------

    def _calls_of(self, result, env: _Env) -> list[dict]:
        """The calls of a reply, with fased's own ids (the provider's, if any, kept as
        wire_id); a reply that is nothing but a JSON call of an offered tool is one too."""
        calls = [{"id": _call_id(), "name": c.name, "arguments": c.arguments or "{}",
                  "wire_id": c.id} for c in result.tool_calls]
        if not calls and self.limits.text_calls and env.tools:
            found = text_call(result.text, {t.name for t in env.tools})
            if found is not None:
                calls = [{"id": _call_id(), "name": found[0], "arguments": found[1],
                          "source": "text"}]
        return [{k: v for k, v in c.items() if v is not None} for c in calls]

    def _completed(self, result, request, steps: int) -> dict:
        data = {
            "reply": result.text, "model": self.models.current_model,
            "usage": usage_data(result.usage), "finish_reason": result.finish_reason,
            "latency_ms": round((time.monotonic() - self.models.started) * 1000, 1),
            "ttft_ms": None if result.ttft_ms is None else round(result.ttft_ms, 1),
            "attempts": max(1, self.models.attempts), "context_dropped": request.plan.dropped,
            "runner": self.runner.id, "request": request.refs(self.models.sent), "steps": steps}
        if result.replaced_chars:
            data["replaced_chars"] = result.replaced_chars
            self.runner.note(f"fased: the reply from {self.models.current_model} held "
                             f"{result.replaced_chars} character(s) that are not valid Unicode; "
                             "they were replaced with U+FFFD")
        return data

    def _step_drafts(self, step: int, result, calls: list[dict], request) -> list[Draft]:
        """The assistant message with its calls (and cooldowns the step caused): written
        before any of the calls runs."""
        c = self.claim
        data = {"turn": c.turn, "agent": c.agent, "session": c.session, "step": step,
                "model": self.models.current_model, "request": request.refs(self.models.sent),
                "text": result.text, "calls": calls,
                "usage": usage_data(result.usage),
                "finish_reason": result.finish_reason, "attempts": max(1, self.models.attempts),
                "runner": self.runner.id}
        if result.replaced_chars:
            data["replaced_chars"] = result.replaced_chars
        data, _ = scrub(data)
        drafts = [*self.models.cooldowns, Draft("turn.step", f"session:{c.session}", data)]
        self.models.cooldowns.clear()
        return drafts

    def _record_context(self, con, request, env: _Env) -> None:
        """What the request refers to, recorded once per content hash: the files, the prompt,
        the tool specs. A first-run file that is gone is recorded as removed."""
        drafts = []

        def known(sha: str) -> bool:
            return con.execute("SELECT 1 FROM snapshots WHERE sha256 = ?",
                               (sha,)).fetchone() is not None

        seen = set()
        for f in request.system.files:
            if f.sha and f.reason in SHOWN and f.sha not in seen:
                seen.add(f.sha)
                if not known(f.sha):
                    drafts.append(Draft("context.recorded", "context", {
                        "sha256": f.sha, "kind": "file", "agent": self.claim.agent,
                        "name": f.name, "text": f.text}))
            if f.name == "BOOTSTRAP.md" and f.reason == "missing" and con.execute(
                    "SELECT 1 FROM snapshots WHERE kind = 'file' AND name = ? AND agent = ?",
                    (f.name, self.claim.agent)).fetchone():
                drafts.append(Draft("workspace.file_removed", f"agent:{self.claim.agent}", {
                    "agent": self.claim.agent, "workspace": str(env.workspace),
                    "file": f.name}))
        for sk in request.system.skills.skills:
            if sk.sha not in seen and not known(sk.sha):
                seen.add(sk.sha)
                drafts.append(Draft("context.recorded", "context", {
                    "sha256": sk.sha, "kind": "file", "agent": self.claim.agent,
                    "name": f"skills/{sk.name}/SKILL.md", "text": sk.text}))
        if not known(request.system.sha):
            drafts.append(Draft("context.recorded", "context", {
                "sha256": request.system.sha, "kind": "prompt", "parts": request.system.parts}))
        if request.tools and not known(request.tools_sha):
            drafts.append(Draft("context.recorded", "context", {
                "sha256": request.tools_sha, "kind": "tools",
                "tools": tools_wire(request.tools)}))
        if drafts:
            self.runner.store.append_internal(drafts)

    # -- the calls ---------------------------------------------------------------------------

    def _open_calls(self, con) -> list:
        return con.execute(
            "SELECT * FROM tool_calls WHERE turn = ? AND state IN ('pending', 'running')"
            " ORDER BY step, idx", (self.claim.turn,)).fetchall()

    def _run_calls(self, con, turn, calls: list, env: _Env, carry: list | None = None) -> None:
        """Run the open calls of a step in order. Events are carried to the next durable
        write: a call's `tool.started` goes out (fsynced) with what came before it (the step,
        the previous call's end) and always before the call runs."""
        carry = list(carry or [])
        step = calls[0]["step"]
        done_before = not carry and self._step_has_finished_calls(con, step)
        for index, call in enumerate(calls):
            if call["state"] == "running":  # started by a runner that died
                carry.append(self._finished_draft(call, "interrupted", INTERRUPTED, {}))
                continue
            if index > 0 or done_before:
                queued = self._steering(self.runner.store.db(check_files=False), turn)
                if queued:
                    self._steer(step, queued, calls[index:], carry)
                    return
            decision = self._decide(call, env, carry)
            if decision[0] == "park":
                self._park(call, decision, carry)
            if decision[0] == "finish":
                carry.append(self._finished_draft(call, *decision[1:]))
                continue
            _, tool, args, approval = decision
            carry.append(self._started_draft(call, approval))
            self._flush(carry)
            self.on_tool(tool.name, summarize(tool.name, args))
            began = time.monotonic()
            result, status = self._execute(tool, args, call, env)
            carry.append(self._finished_draft(call, status, result.text, result.data,
                                              round((time.monotonic() - began) * 1000, 1)))
        if carry:
            self._flush(carry)

    def _flush(self, drafts: list) -> None:
        """Append carried events now (one durable write), and forget them."""
        if drafts:
            self.runner.record_fenced(self.claim, list(drafts))
            drafts.clear()

    def _step_has_finished_calls(self, con, step: int) -> bool:
        row = con.execute("SELECT 1 FROM tool_calls WHERE turn = ? AND step = ? AND state NOT IN"
                          " ('pending', 'running')", (self.claim.turn, step)).fetchone()
        return row is not None

    def _steering(self, con, turn) -> list[str]:
        """Turns queued in the session while this one ran, when its queue mode is steer."""
        if queue_mode(con, self.claim.session, self.claim.agent) != "steer":
            return []
        return [r[0] for r in con.execute(
            "SELECT id FROM turns WHERE session = ? AND state = 'queued' AND queued_seq > ?"
            " ORDER BY queued_seq", (self.claim.session, turn["queued_seq"]))]

    def _steer(self, step: int, queued: list[str], rest: list, carry: list) -> None:
        c = self.claim
        drafts = [*carry, Draft("turn.steered", f"session:{c.session}", {
            "turn": c.turn, "agent": c.agent, "session": c.session, "step": step,
            "turns": queued})]
        for call in rest:
            drafts.append(self._finished_draft(call, "skipped", SKIPPED, {}))
        self.runner.record_fenced(c, drafts)
        self.runner.note(f"fased: a queued message steers turn {c.turn}: "
                         f"{len(rest)} call(s) skipped")

    def _decide(self, call, env: _Env, carry: list) -> tuple:
        """("finish", status, text, data) for a call that must not run, with the result the
        model gets; ("run", tool, arguments, approval) for one that may. Asking the user
        writes what is carried first (nobody knows how long an answer takes)."""
        from fased.schema import first_error
        from fased.tools.policy import decide_exec, how_to_allow

        name = call["name"]
        tool = next((t for t in env.tools if t.name == name), None) or next(
            (t for t in env.tools if t.name.lower() == str(name).lower()), None)
        if tool is None:
            from fased.tools import FAMILIES

            known = ", ".join(t.name for t in env.tools) or "none"
            if str(name).lower() in FAMILIES:
                return ("finish", "denied", f"Tool '{name}' is not allowed for this agent; "
                        f"nothing ran. Available: {known}", {})
            return "finish", "error", f"Unknown tool '{name}'. Available: {known}", {}
        try:
            args = json.loads(call["arguments"] or "{}")
        except (ValueError, RecursionError) as exc:
            return ("finish", "error", f"The arguments are not valid JSON ({exc}); nothing ran."
                    " Send a JSON object.", {})
        if not isinstance(args, dict):
            return "finish", "error", "The arguments must be a JSON object; nothing ran.", {}
        problem = first_error(args, tool.parameters, tool.parameters, "arguments")
        if problem is not None:
            return "finish", "error", f"Invalid arguments: {problem}; nothing ran.", {}
        if tool.name != "exec":
            return "run", tool, args, None
        command = str(args.get("command", ""))
        decision = decide_exec(command, self._exec_settings(env), cwd=self._call_dir(args, env),
                               env=args.get("env") if isinstance(args.get("env"), dict)
                               else None)
        if decision.verdict == "deny":
            return ("finish", "denied", f"This command is not allowed: {decision.reason}; it "
                    "did not run.", {})
        if decision.verdict == "allow":
            return "run", tool, args, decision.reason
        from fased import approvals

        asked = approvals.for_call(self.runner.store.db(check_files=False), call["id"])
        if asked is not None and asked["state"] == "approved":
            return "run", tool, args, f"approved ({asked['id']} by {asked['decided_by']})"
        if asked is not None and asked["state"] in ("denied", "expired"):
            why = (f"The user denied this command ({asked['id']})"
                   + (f": {asked['note']}" if asked["note"] and asked["state"] == "denied"
                      else "") if asked["state"] == "denied" else
                   f"Nobody approved this command in time ({asked['id']} expired)")
            return "finish", "denied", f"{why}; it did not run.", {}
        if self.approver is None:
            self.runner.note(f"fased: {name} `{command}` needs approval; the turn waits for "
                             f"it. {how_to_allow(command, decision)}")
            return "park", tool, command, decision.reason, str(args.get("workdir") or ".")
        self._flush(carry)
        if not self.approver(call, decision.reason):
            return "finish", "denied", "The user refused to run this command; it did not run.", {}
        return "run", tool, args, "user"

    def _call_dir(self, args: dict, env: _Env):
        """The directory an exec call runs in (its workdir in the tools' workspace), for
        resolving the programs and redirections its command line names."""
        from pathlib import Path

        from fased.tools.confine import tool_workspace

        con = self.runner.store.db(check_files=False)
        turn = con.execute("SELECT * FROM turns WHERE id = ?", (self.claim.turn,)).fetchone()
        base = tool_workspace(con, self.runner.store.home, env.agent, turn,
                              agent_settings(con, self.claim.agent))
        workdir = args.get("workdir")
        return Path(os.path.realpath(base / workdir)) if isinstance(workdir, str) and (
            workdir) else Path(os.path.realpath(base))

    def _exec_settings(self, env: _Env) -> dict:
        """The agent's exec settings with the entries granted from approvals added."""
        from fased.approvals import granted_entries

        exec_settings = dict(env.settings.get("exec") or {})
        granted = granted_entries(self.runner.store.db(check_files=False), self.claim.agent,
                                  self.runner.clock())
        if granted:
            exec_settings["allowlist"] = [*exec_settings.get("allowlist", []), *granted]
        return {**env.settings, "exec": exec_settings}

    def _park(self, call, decision: tuple, carry: list) -> None:
        """Nobody can be asked: record the request with what is carried and stop here; the
        turn waits in the log for a decision, and this runner goes on with other work."""
        from fased import approvals

        _, tool, command, reason, cwd = decision
        draft = approvals.request_draft(self.claim, call["id"], tool.name, command, cwd, reason,
                                        self.runner.clock(), approvals.timeout_of(
                                            self._tools_settings), self.runner.id)
        carry.append(draft)
        self._flush(carry)
        raise Parked(draft.data)

    def _execute(self, tool, args: dict, call, env: _Env):
        """Run the handler in a worker thread, so that Ctrl-C and the turn's deadline reach
        it as `ctx.cancel` (it stops its process group) rather than as an exception inside
        it. Returns (ToolResult, status)."""
        from fased.tools.base import ToolContext, ToolError, ToolResult
        from fased.tools.confine import sandbox_for

        home = self.runner.store.home
        con = self.runner.store.db(check_files=False)
        turn = con.execute("SELECT * FROM turns WHERE id = ?", (self.claim.turn,)).fetchone()
        try:
            sandbox, workspace, readable = sandbox_for(
                con, home, env.agent, turn, agent_settings(con, self.claim.agent))
        except ToolError as exc:
            return ToolResult(str(exc), is_error=True), "error"
        ctx = ToolContext(
            agent=self.claim.agent, session=self.claim.session, turn=self.claim.turn,
            call_id=call["id"], workspace=workspace, home=home,
            readable=(*readable, *env.skill_dirs),
            # in a sandbox the file tools reach what exec reaches
            workspace_only=sandbox.mode != "host" or bool(
                (env.settings.get("fs") or {}).get("workspaceOnly", True)),
            sandbox=sandbox, env=dict(getattr(self, "_tool_env", {})),
            skill_env=dict(env.skill_env),
            cancel=threading.Event())
        box: dict = {}

        def work() -> None:
            try:
                box["result"] = tool.run(args, ctx)
            except ToolError as exc:
                box["result"] = ToolResult(str(exc), is_error=True)
            except Exception as exc:  # a bug in the tool: the model is told, the turn goes on
                from fased.safetext import describe

                box["result"] = ToolResult(f"The tool failed inside fased ({describe(exc)}); "
                                           "this is a bug, not your mistake.", is_error=True)

        worker = threading.Thread(target=work, name=f"tool-{call['id']}", daemon=True)
        worker.start()
        interrupted = None
        try:
            while worker.is_alive():
                worker.join(0.05)
                if time.monotonic() > self.deadline and not ctx.cancel.is_set():
                    interrupted = "the turn's deadline passed"
                    ctx.cancel.set()
        except KeyboardInterrupt:
            ctx.cancel.set()
            worker.join(10)
            result = box.get("result")
            text = "The user interrupted this call (Ctrl-C); it was stopped."
            if result is not None:
                text += "\n" + result.text
            self._finish(call, "interrupted", text, result.data if result else {})
            raise
        result = box.get("result") or ToolResult("The tool did not return.", is_error=True)
        if interrupted:
            return ToolResult(f"Stopped: {interrupted}.\n{result.text}", True,
                              result.data), "interrupted"
        return result, "error" if result.is_error else "ok"

    def _started_draft(self, call, approval: str | None) -> Draft:
        c = self.claim
        data = {"turn": c.turn, "agent": c.agent, "session": c.session, "call": call["id"],
                "name": call["name"], "runner": self.runner.id}
        if approval:
            data["approval"] = approval
        return Draft("tool.started", f"session:{c.session}", data)

    def _finished_draft(self, call, status: str, text: str, extra: dict,
                        duration_ms: float | None = None) -> Draft:
        c = self.claim
        if getattr(self, "_secrets", ()):
            from fased.redact import mask_secrets

            text = mask_secrets(text, self._secrets)
        data = {"turn": c.turn, "agent": c.agent, "session": c.session, "call": call["id"],
                "name": call["name"], "status": status, "result": text[:LOG_RESULT_MAX]}
        if len(text) > LOG_RESULT_MAX:
            data["truncated"] = len(text) - LOG_RESULT_MAX
        if extra:
            data["data"] = extra
        if duration_ms is not None:
            data["duration_ms"] = duration_ms
        data, _ = scrub(data)
        return Draft("tool.finished", f"session:{c.session}", data)

    def _finish(self, call, status: str, text: str, extra: dict,
                duration_ms: float | None = None) -> None:
        self.runner.record_fenced(self.claim, [
            self._finished_draft(call, status, text, extra, duration_ms)])

    # -- ending the loop ---------------------------------------------------------------------

    def _stop_reason(self, con, steps: int) -> str | None:
        if steps >= self.limits.max_iterations:
            return (f"the tool loop reached tools.maxIterations ({self.limits.max_iterations} "
                    "model calls)")
        if time.monotonic() > self.deadline:
            return f"the turn's deadline ({self.limits.turn_deadline:g} s) passed"
        last = con.execute(
            "SELECT name, arguments, result FROM tool_calls WHERE turn = ? AND state = 'ok'"
            " ORDER BY step DESC, idx DESC LIMIT ?", (self.claim.turn, LOOP_REPEATS)).fetchall()
        if len(last) == LOOP_REPEATS and len({tuple(r) for r in last}) == 1:
            return (f"the model called {last[0]['name']} with the same arguments and got the "
                    f"same result {LOOP_REPEATS} times in a row")
        return None

    def _stopped(self, con, reason: str, steps: int) -> tuple[str, dict]:
        text = con.execute("SELECT text FROM steps WHERE turn = ? ORDER BY step DESC LIMIT 1",
                           (self.claim.turn,)).fetchone()
        said = (text[0] if text else "").strip()
        note = f"[fased stopped this turn: {reason}.]"
        self.runner.note(f"fased: {note[1:-1]}")
        return "turn.completed", {
            "reply": f"{said}\n\n{note}" if said else note,
            "model": self.models.current_model or (self.claim.models or ["none"])[0],
            "attempts": max(1, self.models.attempts), "runner": self.runner.id,
            "steps": max(1, steps), "stopped": reason}


@dataclass
class _Env:
    agent: object
    workspace: object
    tools: list
    settings: dict
    skill_dirs: tuple = ()  # the offered skills' folders: `read` may open them
    skill_env: dict = field(default_factory=dict)  # their skills.entries.<name>.env


def usage_data(usage) -> dict:
    """A model call's usage as its event records it: the cost only when the server reported
    one (absent: unknown, never 0)."""
    data = {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
    if usage.cost is not None:
        data["cost"] = usage.cost
    return data


def _call_id() -> str:
    return f"c-{os.urandom(6).hex()}"


def summarize(name: str, args: dict) -> str:
    """One line for the user as a call starts: `-> exec  npm test`."""
    if name == "exec":
        text = str(args.get("command", ""))
    elif "path" in args:
        text = str(args["path"])
    elif name == "process":
        text = " ".join(str(args.get(k, "")) for k in ("action", "id")).strip()
    elif name == "apply_patch":
        text = f"{str(args.get('input', '')).count('*** ')} section(s)"
    else:
        text = json.dumps(args, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= 100 else text[:99] + "…"


def text_call(text: str, offered: set[str]) -> tuple[str, str] | None:
    """A reply that is exactly one JSON tool call of an offered tool, as (name, arguments
    JSON): some local models write calls as text instead of using the API's field."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").strip()
        if body.startswith("json"):
            body = body[4:].strip()
    if not (body.startswith("{") and body.endswith("}")):
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("function"), dict):
        data = data["function"]
    name = data.get("name") or data.get("tool")
    args = next((data[k] for k in ("arguments", "parameters", "args", "input") if k in data), {})
    if not isinstance(name, str) or name not in offered:
        return None
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict) or set(data) - {"name", "tool", "arguments", "parameters",
                                                  "args", "input", "type", "id"}:
        return None
    return name, json.dumps(args, ensure_ascii=False)

