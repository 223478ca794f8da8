"""Habits every command shares: typo suggestions and help lists in every group."""

from __future__ import annotations

import click
import pytest

from fased.commands.main import cli


def groups(group: click.Group, path: tuple[str, ...] = ()):
    """(path, group) of every group under `group`, lazily loaded ones included."""
    ctx = click.Context(group)
    yield path, group
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from groups(command, (*path, name))


@pytest.mark.parametrize(("args", "suggestion"), [
    (["chatt"], "chat"), (["agent", "modles"], "models"), (["agent", "toosl"], "tools"),
    (["agent", "models", "statsu"], "status"), (["task", "lst"], "list"),
    (["agent", "models", "providers", "detetc"], "detect")])
def test_a_mistyped_command_suggests_the_one_meant(run, args, suggestion):
    """In every group, the lazily loaded ones (root, agent) included."""
    result = run(*args)

    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: No such command '{args[-1]}'. Did you mean '{suggestion}'?")


@pytest.mark.parametrize("path", [p for p, _ in groups(cli)], ids=" ".join)
def test_group_help_lists_each_commands_whole_summary(run, path):
    group = dict(groups(cli))[path]
    result = run(*path, "--help", env={"COLUMNS": "80"})

    assert result.exit_code == 0
    listed = result.stdout.split("Commands:\n", 1)[1]
    assert "..." not in listed
    flat = " ".join(listed.split())
    for name in group.list_commands(click.Context(group)):
        summary = " ".join(group.get_command(click.Context(group), name).help.split(
            "\n\n")[0].split())
        first = summary.split(". ")[0].rstrip(".")
        assert f"{name} {first}" in flat, (name, first)
