"""`fased setup`: create fased.json, the default agent `main` and its workspace."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fased.agents import get_agent
from fased.commands.output import echo_json, json_option, note, say, store
from fased.commands.types import LinePath
from fased.errors import FasedError, UsageError


@click.command()
@click.option("--workspace", metavar="DIR", type=LinePath(file_okay=False),
              help="Workspace of the default agent (sets agents.defaults.workspace).")
@click.option("--non-interactive", "-y", is_flag=True, help="Ask nothing; use defaults.")
@click.option("--no-detect", is_flag=True,
              help="Do not probe for local model servers (the embedded model is still "
              "pulled when nothing else is set up, and the next step said).")
@json_option
def setup(workspace: str | None, non_interactive: bool, no_detect: bool, json_: bool) -> None:
    """Set up fased: config, the default agent `main`, its workspace files.

    Safe to run again: it creates only what is missing and never overwrites your edits.
    Bootstrap files (AGENTS.md, SOUL.md, TOOLS.md, IDENTITY.md, USER.md, HEARTBEAT.md,
    MEMORY.md) are created from templates when missing; BOOTSTRAP.md only in a brand-new
    workspace, and never again once you delete it. Set agents.defaults.skipBootstrap to
    true to create none (for pre-seeded workspaces).

    It looks for local model servers (Ollama, LM Studio, vLLM, LiteLLM) on their default
    ports and says what answered where: a server that lists its models is registered and
    gives the agent its primary model (one the server has loaded, else the first it lists);
    one that needs a key is registered and named with the auth command to run. With no
    server found and no provider set up, and fased[local] installed, it pulls the embedded
    model (a tiny demo model, 98 MB once) and makes it the primary. When that pull fails
    (offline, a full disk), on a terminal it says why in one line and goes on to the guided
    choice below; with --non-interactive, --json or no terminal it reports what it did,
    then the pull's error, and exits 1.

    On a terminal, when the agent still has no model, setup offers to finish the job: pick
    a detected server or a hosted provider, paste its key (hidden), choose the primary from
    the provider's own model list, and a probe proves that it answers. With
    --non-interactive (or no terminal) it asks nothing and prints the next step instead.

    \b
    Examples:
      fased setup
      fased setup --workspace ~/agents/main --non-interactive
      fased --home /tmp/try setup -y
    """
    from fased.settings import env_flag
    from fased.setup import run_setup

    for name in ("FASED_EMBEDDED", "FASED_NO_TTY", "FASED_ASSUME_TTY"):
        env_flag(name)  # a value setup cannot read is refused before it does anything
    st = store()
    interactive = not non_interactive and not json_ and _on_a_terminal()
    if workspace is None and interactive and not _already_set_up(st):
        default = str(st.home / "workspace")
        answer = click.prompt("Workspace for the default agent", default=default)
        workspace = None if answer == default else answer
    report = run_setup(st, Path(workspace).expanduser().absolute() if workspace else None,
                       detect=not no_detect, say=(lambda line, done: None) if json_ else _show,
                       guided=None if interactive else _how_to_be_guided())
    failure = report.pop("failure", None)
    if json_:
        if failure is not None:
            report["error"] = {"message": failure.message, "hint": failure.hint}
        echo_json(report)
    if failure is not None and not interactive:  # after the report of what was done
        raise failure
    if interactive:
        if failure is not None:  # the guided choice below still gives the agent a model
            note(f"{failure.message[0].upper()}{failure.message[1:]}; later, {failure.hint}")
        _guide(st, any(line.startswith("Set ") for line in report["notes"]))


def _show(line: str, done: bool) -> None:
    """A line of setup's report as it happens: what it did on stdout, notes on stderr."""
    if done:
        say(line)
    else:
        note(line)


def _already_set_up(st) -> bool:
    return (st.home / "fased.json").exists()


def _stdin_is_a_terminal() -> bool:
    """Whether stdin is a terminal (FASED_ASSUME_TTY=1 says it is, for tests)."""
    from fased.settings import env_flag

    return sys.stdin.isatty() or env_flag("FASED_ASSUME_TTY")


def _on_a_terminal() -> bool:
    """Whether to ask: stdin is a terminal, and FASED_NO_TTY is not set."""
    from fased.settings import env_flag

    return not env_flag("FASED_NO_TTY") and _stdin_is_a_terminal()


def _how_to_be_guided() -> str:
    """What a user who was asked nothing does to be guided, for the hints: only one who is
    not on a terminal is told to go to one."""
    from fased.setup import GUIDED

    if not _stdin_is_a_terminal():
        return GUIDED
    from fased.settings import env_flag

    if env_flag("FASED_NO_TTY"):
        return "unset FASED_NO_TTY and run `fased setup`"
    return "run `fased setup`"  # without -y and --json


def _guide(st, primary_just_set: bool) -> None:
    """Give the agent a model: pick a provider, paste its key (hidden), choose the primary
    from the provider's own model list, and prove it with a probe."""
    from fased.setup import next_step, provider_choices

    con = st.db()
    if next_step(con) is None:
        if primary_just_set:
            _probe(st)
        return
    choices = provider_choices(con)
    agent = get_agent(con, None)["id"]
    say(f"\n{agent} has no model yet. Which provider should it use?")
    for i, (_, label) in enumerate(choices, start=1):
        say(f"  {i}) {label}")
    say(f"  {len(choices) + 1}) none for now")
    pick = click.prompt("Provider", type=click.IntRange(1, len(choices) + 1), default=1)
    if pick > len(choices):
        note(f"Next: {next_step(st.db(), guided=_how_to_be_guided())}")
        return
    provider = choices[pick - 1][0]
    models = _models_with_a_key(st, provider)
    if not models:
        raise FasedError(f"{provider} lists no models",
                         hint=f"`fased agent models set primary {provider}/MODEL` with a model "
                         "it serves (for Ollama: `ollama pull llama3.2` first)")
    shown = models[:MENU_MODELS]
    say(f"Models of {provider}:")
    for i, name in enumerate(shown, start=1):
        say(f"  {i}) {name}")
    if len(models) > len(shown):
        say(f"  ... and {len(models) - len(shown)} more: type a name")
    answer = click.prompt("Primary model (number or name)", default="1").strip()
    number = answer.isascii() and answer.isdigit()  # "²" is a digit to isdigit()
    model = shown[int(answer) - 1] if number and 1 <= int(answer) <= len(shown) \
        else answer
    if model not in models:
        note(f"note: {provider} does not list {model!r}; using it anyway")
    from fased.setup import set_primary

    ref = f"{provider}/{model}"
    say(f"Set {set_primary(st, ref)}'s primary model to {ref}")
    _probe(st)


MENU_MODELS = 20


def _models_with_a_key(st, provider: str) -> list[str]:
    """The provider's models; asks for its key (hidden) when it has none or is refused."""
    from fased.detect import needs_key
    from fased.setup import credential_missing, ensure_provider, list_models, store_key

    ensure_provider(st, provider)
    if not credential_missing(st, provider):
        try:
            return list_models(st, provider)
        except FasedError as exc:
            if not needs_key(exc):
                raise
            note(f"{provider} wants a key: {exc.message}")
    key = click.prompt(f"API key for {provider} (hidden)", hide_input=True).strip()
    if not key or "\n" in key:
        raise UsageError("no key was entered; nothing was stored",
                         hint=f"later: fased agent models auth {provider}")
    say(f"Stored a key for {provider} (fingerprint {store_key(st, provider, key)}).")
    return list_models(st, provider)


def _probe(st) -> None:
    """Send the primary a minimal real request; a failure is an error naming what to fix."""
    from fased.status import agent_model_status

    report = agent_model_status(st, None, probe=True)
    ref = report["refs"][0]["ref"]
    if not report["ready"]:
        raise FasedError(f"{ref} did not answer the probe ({report['reason']})",
                         hint="`fased agent models status --probe` checks it again")
    say(f"Probed {ref}: it answers. Try: fased chat \"hello\"")
