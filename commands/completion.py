"""`fased completion bash|zsh|fish`: the script that lets a shell complete fased's command
lines (click's shell completion, driven through `_FASED_COMPLETE`)."""

from __future__ import annotations

import click


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL: commands, options and live values (agent,
    session, task and provider ids, model refs), read from the home without changing it.

    \b
    Examples:
      eval "$(fased completion bash)"     # in ~/.bashrc (bash 4.4 or later)
      eval "$(fased completion zsh)"      # in ~/.zshrc
      fased completion fish > ~/.config/fish/completions/fased.fish

    The script asks fased itself for candidates each time you press Tab, so it keeps up
    with new commands and ids; it costs one `fased` start-up per Tab.
    """
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root()
    script = get_completion_class(shell)(root.command, {}, "fased", "_FASED_COMPLETE")
    click.echo(script.source())
