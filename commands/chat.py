"""`fased chat`: talk to an agent from a terminal, a pipe, a script or cron."""

from __future__ import annotations

import sys

import click

from fased.commands.output import agent_option, echo_json, echo_reply, note, store, turn_json
from fased.commands.types import complete_model_refs, complete_sessions


@click.command()
@click.argument("message", required=False)
@agent_option
@click.option("--session", "-s", metavar="ID|NAME", help="Session (default: the current one).",
              shell_complete=complete_sessions)
@click.option("--new-session", is_flag=True, help="Start a new session for this message.")
@click.option("--model", "-m", metavar="REF", shell_complete=complete_model_refs,
              help="Use this model in this session from now on (the agent default is kept; "
              "`-m clear` or `fased session model ID clear` goes back to it).")
@click.option("--save", is_flag=True, help="With --model: make it the agent's primary model.")
@click.option("--stream/--no-stream", "stream", default=None,
              help="Stream the reply as it arrives (default: on a terminal; a pipe or file "
              "gets the complete reply at once). --no-stream also asks the server for one "
              "document (\"stream\": false).")
@click.option("--queue", "queue_only", is_flag=True,
              help="Only queue the message for `fased run`; print the turn id.")
@click.option("--schedule", metavar="WHEN",
              help="Schedule MESSAGE as a task instead: 'every 1h', 'at 09:00', 'in 20m', "
              "'cron 0 9 * * 1-5'.")
@click.option("--tz", metavar="ZONE", help="Time zone for --schedule (IANA name).")
@click.option("options", "--option", "-o", type=(str, str), multiple=True,
              metavar="KEY VALUE",
              help="A model parameter for this turn (repeatable): temperature (0-2), top_p "
              "(0-1), max_tokens, seed. Over agents.*.params and models.params in fased.json; "
              "`replay --turn ID --request` shows what was sent.")
@click.option("json_", "--json", is_flag=True,
              help="Print one JSON object: reply, model, usage, turn id, timings.")
def chat(message, agent, session, new_session, model, save, stream, queue_only, schedule, tz,
         options, json_):
    """Send a message to an agent and print the reply.

    The message comes from the argument, from stdin when it is not a terminal, or both
    (stdin, a blank line, then the argument). With neither, on a terminal, chat is
    interactive: /help lists its commands, Ctrl-C stops a reply, Ctrl-D leaves.

    The reply goes to stdout; diagnostics (retries, fallbacks, dropped context) to stderr.
    Ctrl-C during the reply keeps what was said (an aborted turn, exit 130; piped or
    --json, it is printed); Ctrl-C before it starts (while an earlier turn of the session
    is answered) withdraws the message.

    \b
    Examples:
      fased chat "what changed in the build?"
      git diff | fased chat "review this diff" > review.md
      fased chat --session ops -m openai/gpt-4o-mini "summarise the incident"
      fased chat --queue "check the build"      # for `fased run` to answer
      fased chat --schedule "every 1h" "check the build"
      fased chat --json "hi" | jq -r .reply
      fased chat -o temperature 0 -o seed 42 "name a colour"

    \b
    Exit codes: 0 ok (also when the reader of a piped reply goes away, `| head -1`: the
    turn ends aborted, "output closed"), 1 error (a turn that failed for another reason
    than its models, such as a request longer than the model holds), 2 usage, 5 every
    model failed, 130 interrupted, 143 terminated (SIGTERM: the turn ends as with Ctrl-C).
    """
    from fased.errors import UsageError
    from fased.params import parse_options

    if save and not model:
        raise UsageError("--save needs --model REF")
    params = parse_options(options)
    _check_schedule_options(schedule, tz, queue=queue_only, model=model, save=save,
                            new_session=new_session, stream=stream, option=bool(params))
    if not (queue_only or schedule):
        from fased.local import check_settings

        check_settings()  # before anything is queued: the embedded model's settings
    text = _message(message)
    if text is None:
        if sys.stdin.isatty() and sys.stdout.isatty() and not json_ and not queue_only:
            if params:
                raise UsageError("-o is for one message; interactive chat takes the "
                                 "parameters of fased.json (agents.defaults.params)")
            from fased.repl import interactive

            interactive(store(), agent=agent, session=session, new_session=new_session,
                        model=model)
            return
        raise UsageError("no message", hint='give one: fased chat "hello" (or pipe text in)')
    if schedule:
        from fased.commands.task import schedule_from_chat

        schedule_from_chat(schedule, text, agent=agent, session=session, tz=tz, json_=json_)
        return
    _one_shot(text, agent, session, new_session, model, save, stream, queue_only, json_,
              params)


def _check_schedule_options(schedule, tz, **given) -> None:
    """--schedule makes a task, not a turn: the options of a turn are refused rather than
    silently dropped, and --tz means nothing without it."""
    from fased.errors import UsageError

    if schedule is None:
        if tz is not None:
            raise UsageError("--tz needs --schedule")
        return
    names = {"queue": "--queue", "model": "--model", "save": "--save",
             "new_session": "--new-session", "option": "--option",
             "stream": "--stream" if given["stream"] else "--no-stream"}
    clash = [names[k] for k, v in given.items() if v or (k == "stream" and v is not None)]
    if clash:
        raise UsageError(f"--schedule cannot be combined with {clash[0]}",
                         hint="a task has its own options: `fased task new --help`")


def _message(argument: str | None) -> str | None:
    """The message from stdin and/or the argument, at most MESSAGE_BYTES (8 MiB) in all."""
    from fased.bounds import check_message

    piped = None
    if not sys.stdin.isatty():
        piped = _read_stdin()
    if argument is not None:
        argument = _valid_text(argument)
    if piped and argument:
        return check_message(f"{piped.rstrip()}\n\n{argument}")
    if piped and piped.strip():
        # the newline that ends a piped file or `echo` is not part of the message
        return piped[:-1] if piped.endswith("\n") else piped
    return check_message(argument) if argument and argument.strip() else None


def _read_stdin() -> str:
    """Piped text, read with a bound: a 50 MB pipe costs 8 MiB of memory and an error."""
    from fased.bounds import MESSAGE_BYTES, check_message, read_stream

    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:  # a text stream without bytes underneath (an embedding caller)
        return check_message(_valid_text(sys.stdin.read(MESSAGE_BYTES + 1)), "the piped message")
    return read_stream(binary, MESSAGE_BYTES, "the piped message").decode("utf-8", "replace")


def _valid_text(text: str) -> str:
    """Bytes that are not UTF-8 (a Latin-1 file piped in) arrive as lone surrogates, which
    can be neither logged nor sent; they become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _one_shot(text, agent, session, new_session, model, save, stream, queue_only, json_,
              params=None):
    from fased.chat import answer, queue_turn, take_back
    from fased.runner import Stop, require_success, sigterm_stops
    from fased.signals import held

    st = store()
    queued = sink = None
    try:
        # `timeout 30 fased chat ...` sends SIGTERM: the turn ends (turn.aborted), never
        # left started for another process to answer once its lease runs out
        with sigterm_stops():
            with held():  # a signal while the turn is recorded comes once it can be withdrawn
                queued = queue_turn(st, text, agent=agent, session=session,
                                    new_session=new_session, override=model, save=save,
                                    options=params)
            _tell_override(st, queued, model)
            if queue_only:
                if json_:
                    echo_json({"turn": queued.turn, "agent": queued.agent,
                               "session": queued.session, "queued": not queued.replayed})
                else:
                    click.echo(queued.turn)
                return
            from fased.commands.approve import show_tool, terminal_approver

            live = (sys.stdout.isatty() if stream is None else stream) and not json_
            sink = _sink(st) if live else None
            result = answer(st, queued, sink=sink, note=note, approver=terminal_approver(),
                            on_tool=show_tool, stream=stream is not False)
    except KeyboardInterrupt:
        if queued is not None and not queue_only:
            take_back(st, queued, "interrupted", note)
        raise
    except Stop as stop:
        if queued is None or queue_only:
            raise click.exceptions.Exit(143) from None
        if not take_back(st, queued, "terminated", note):
            if stop.result is not None:  # what was said, as after Ctrl-C
                _show(stop.result, sink, json_, queued.replayed)
            if sink is not None:
                sink.end_line()
            note(f"fased: terminated; turn {queued.turn} ended with what was said")
        raise click.exceptions.Exit(143) from None
    if sink is not None and result.state == "completed":
        sink.finish()
    elif sink is not None:
        sink.end_line()
    _show(result, sink, json_, queued.replayed)
    if result.state == "aborted":
        raise click.exceptions.Exit(130)
    require_success(result)
    if sys.stderr.isatty() and result.model and not json_:  # --json is for programs
        from fased.usage import amount

        cost = result.usage.get("cost")
        note(f"[{result.model} · {result.usage.get('input_tokens') or '?'} in / "
             f"{result.usage.get('output_tokens') or '?'} out · "
             + ("" if cost is None else f"{amount(cost, 'cost')} · ")
             + f"{(result.latency_ms or 0) / 1000:.1f} s]")


def _show(result, sink, json_: bool, replayed: bool) -> None:
    """A finished turn on stdout: its JSON, or (not shown live) the reply or its part."""
    if json_:
        echo_json(turn_json(result, replayed))
    elif sink is None and result.state in ("completed", "aborted"):
        echo_reply(result.reply)


def _tell_override(st, queued, model: str | None) -> None:
    """One line on stderr when the session answers with a model other than the agent's
    primary, or stops doing so; first a note when -m names a model its provider's fetched
    catalog lacks."""
    from fased.models import catalog_note, parse_model_ref
    from fased.sessions import model_override, override_notice

    con = st.db(check_files=False)
    ref = model_override(con, queued.session)
    if model is not None and ref is not None:
        warning = catalog_note(con, parse_model_ref(con, ref))
        if warning:
            note(warning)
    line = override_notice(con, queued.session, changed=queued.model_set)
    if line:
        note(line)


def _sink(st):
    from fased.bounds import shown_on_stdout
    from fased.chat import BlockSink, StreamSink, block_settings

    def write(text: str) -> None:
        sys.stdout.write(shown_on_stdout(text))
        sys.stdout.flush()

    inner = StreamSink(write, note)
    on, lo, hi, brk = block_settings(st.db())
    return BlockSink(inner, lo, hi, brk) if on else inner
