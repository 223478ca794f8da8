"""Interactive chat: a prompt loop with history and slash commands.

`Repl.handle(line)` does the work and returns what to print, so it is tested without a
terminal; `interactive()` wires it to readline, Ctrl-C (stops the reply, recorded as aborted)
and Ctrl-D (leaves). What it prints besides the reply (names, errors, notes) is escaped
(fased.bounds.printable); the reply itself is written as it arrives.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable

from fased.agents import get_agent
from fased.bounds import check_message, printable
from fased.errors import FasedError, UsageError
from fased.sessions import current_session, get_session, new_session
from fased.store import Draft, Store

HELP = """\
Commands:
  /session new [NAME]        start a new session and switch to it
  /session list              this agent's sessions
  /session switch ID|NAME    continue another session
  /model [REF|clear]         show or set this session's model (the agent default is kept)
  /queue [followup|collect|steer|default]   how messages sent during a reply are handled
  /task new WHEN MESSAGE     schedule MESSAGE here; WHEN: every 1h | in 20m | at 09:00 |
                             cron */5 * * * * (quotes optional: /task new 'every 1h' ...)
  /task list | show ID | run ID | cancel ID
  /help                      this list
  /exit                      leave (Ctrl-D works too)
Ctrl-C stops the reply being written (what arrived is kept, marked aborted); before the
reply starts (an earlier turn of the session is answered first) it withdraws the message."""


class Repl:
    """The state of one interactive chat: which agent and session it talks to."""

    def __init__(self, store: Store, agent: str | None = None, session: str | None = None,
                 new: bool = False, write: Callable[[str], None] = sys.stdout.write,
                 warn: Callable[[str], None] = lambda s: print(printable(s, True),
                                                               file=sys.stderr)):
        self.store = store
        self.write = write
        self.warn = warn
        con = store.db()
        self.agent = get_agent(con, agent)["id"]
        if new:
            self.session = self._new_session(None)
        elif session is not None:
            self.session = get_session(con, self.agent, session)["id"]
        else:
            self.session = current_session(con, self.agent) or self._new_session(None)

    @property
    def prompt(self) -> str:
        return f"{self.agent}/{self.session}> "

    def handle(self, line: str) -> str | None:
        """Run one input line; returns text to print (None: nothing). Raises EOFError on /exit."""
        text = line.strip()
        if not text:
            return None
        if text.startswith("/") and not text.startswith("//"):
            try:
                return self.command(text[1:])
            except FasedError as exc:
                return f"Error: {exc.message}" + (f"\nHint: {exc.hint}" if exc.hint else "")
        return self.send(check_message(text[1:] if text.startswith("//") else text))

    def send(self, message: str) -> str | None:
        """Ask the agent; the reply streams to the terminal as it arrives."""
        from fased.chat import StreamSink, answer, queue_turn, take_back
        from fased.signals import Stop, held

        queued = None
        sink = StreamSink(self._write_now, self.warn)
        try:
            with held():  # a Ctrl-C while the turn is recorded comes once it can be withdrawn
                queued = queue_turn(self.store, message, agent=self.agent,
                                    session=self.session, source="interactive")
            result = answer(self.store, queued, sink=sink, note=self.warn)
        except Stop:  # SIGTERM: the turn has ended; so does the chat, on a line of its own
            sink.end_line()
            raise
        except KeyboardInterrupt:
            # Ctrl-C before this message's turn started (an earlier turn of the session was
            # being answered, here or by another runner): withdraw it, as `fased chat` does
            if queued is None or not take_back(self.store, queued, "interrupted", self.warn):
                raise
            return None
        if result.state == "aborted":
            return "\n[stopped: the partial reply is kept, marked aborted]"
        if result.state == "failed":
            return f"Error: {result.error}"
        if not sink.shown:
            self._write_now(result.reply)
            sink.shown = result.reply
        sink.finish()
        return None

    def _write_now(self, text: str) -> None:
        from fased.bounds import shown_on_stdout

        self.write(shown_on_stdout(text))
        if hasattr(sys.stdout, "flush"):
            sys.stdout.flush()

    # -- slash commands ---------------------------------------------------------------------

    def command(self, text: str) -> str | None:
        head, _, rest = text.strip().partition(" ")
        if head.lower() == "task":  # its MESSAGE is taken as typed, quotes and all
            return self._task(rest)
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise UsageError(f"cannot parse the command: {exc}") from None
        name, args = (words[0].lower(), words[1:]) if words else ("help", [])
        handler = {
            "help": lambda a: HELP, "?": lambda a: HELP, "exit": self._exit, "quit": self._exit,
            "session": self._session, "model": self._model, "queue": self._queue,
        }.get(name)
        if handler is None:
            raise UsageError(f"unknown command /{name}", hint="/help lists the commands")
        return handler(args)

    def _exit(self, args) -> None:
        raise EOFError

    def _new_session(self, name: str | None) -> str:
        made: list[str] = []

        def decide(con):
            sid, drafts = new_session(con, self.agent, name)
            made.append(sid)
            return drafts

        self.store.transact(decide)
        return made[-1]

    def _session(self, args: list[str]) -> str:
        from fased.views import session_rows

        sub = args[0] if args else "list"
        if sub == "new":
            from fased.bounds import check_name as printable_name
            from fased.sessions import check_name

            name = (printable_name(check_name(" ".join(args[1:])), "a session name")
                    if len(args) > 1 else None)
            self.session = self._new_session(name)
            return f"New session {self.session}."
        if sub == "list":
            rows = session_rows(self.store.db(), self.agent, include_deleted=False)
            return "\n".join(
                f"{'*' if r['id'] == self.session else ' '} {r['id']:<8} {r['name'] or '':<16} "
                f"{r['messages']} messages, updated {r['updated_at'][:16].replace('T', ' ')}"
                for r in rows) or "No sessions."
        if sub == "switch" and len(args) == 2:
            row = get_session(self.store.db(), self.agent, args[1])

            def decide(con):
                return [Draft("session.switched", f"agent:{self.agent}",
                              {"agent": self.agent, "session": row["id"]})]

            self.store.transact(decide)
            self.session = row["id"]
            return f"Switched to session {self.session}."
        raise UsageError("usage: /session new [NAME] | list | switch ID|NAME")

    def _model(self, args: list[str]) -> str:
        con = self.store.db()
        row = con.execute("SELECT model_override FROM sessions WHERE id = ?",
                          (self.session,)).fetchone()
        agent = get_agent(con, self.agent)
        if not args:
            return (f"Model: {row[0]} (session override)" if row[0] else
                    f"Model: {agent['primary_model'] or '(none)'} (agent default)")
        from fased.models import catalog_note, parse_model_ref
        from fased.sessions import model_override_drafts

        found: list = []

        def decide(c):
            ref, drafts = model_override_drafts(c, self.agent, self.session, args[0])
            found[:] = [ref, bool(drafts)]
            return drafts

        self.store.transact(decide)
        ref, changed = found
        warning = catalog_note(con, parse_model_ref(con, ref)) if ref else None
        if ref:
            said = f"This session {'now' if changed else 'already'} uses {ref}."
        else:
            said = ("Override cleared: this session uses the agent default." if changed else
                    "This session has no override: it uses the agent default.")
        return f"{warning}\n{said}" if warning else said

    def _queue(self, args: list[str]) -> str:
        from fased.settings import QUEUE_MODES, queue_mode

        if not args:
            return f"Queue mode: {queue_mode(self.store.db(), self.session, self.agent)}"
        mode = args[0].lower()
        if mode not in (*QUEUE_MODES, "default"):
            raise UsageError(f"unknown queue mode {mode!r}",
                             hint="followup, collect, steer or default")
        value = None if mode == "default" else mode
        self.store.transact(lambda c: [Draft("session.queue_mode_set", f"session:{self.session}",
                                             {"agent": self.agent, "session": self.session,
                                              "mode": value})])
        return f"Queue mode: {mode}."

    def _task(self, text: str) -> str:
        from fased.tasks import repl_task_command

        return repl_task_command(self.store, self.agent, self.session, text)


def interactive(store: Store, agent: str | None = None, session: str | None = None,
                new_session: bool = False, model: str | None = None) -> None:
    """The terminal loop."""
    repl = Repl(store, agent, session, new_session)
    _load_history(store)
    if model:
        print(printable(repl.handle(f"/model {model}") or "", multiline=True))
    print(f"fased chat with {repl.agent}, session {repl.session}. /help for commands, "
          "Ctrl-D to leave.", file=sys.stderr)
    if not model:
        from fased.sessions import override_notice

        kept = override_notice(store.db(), repl.session, changed=False)
        if kept:
            print(printable(kept), file=sys.stderr)
    while True:
        try:
            line = input(repl.prompt)
        except EOFError:
            print(file=sys.stderr)
            break
        except KeyboardInterrupt:
            print("^C", file=sys.stderr)
            continue
        try:
            out = repl.handle(line)
        except EOFError:
            break
        except KeyboardInterrupt:
            print("\n[stopped]", file=sys.stderr)
            continue
        except FasedError as exc:
            out = f"Error: {exc.message}"
        if out:
            print(printable(out, multiline=True))
    _save_history(store)


def _load_history(store: Store) -> None:
    try:
        import readline
    except ImportError:  # pragma: no cover - not every Python has it
        return
    with contextlib.suppress(OSError):
        readline.read_history_file(store.home / "chat_history")
    readline.set_history_length(1000)


def _save_history(store: Store) -> None:
    try:
        import readline

        readline.write_history_file(store.home / "chat_history")
    except (ImportError, OSError):
        pass
