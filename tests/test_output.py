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


def test_the_summaries_help_lists_are_each_commands_own():
    """`fased --help` lists commands from SUMMARIES without importing them: each must be the
    command's own first docstring line, and every command must have one."""
    import sys

    import click

    from fased.commands.main import COMMANDS, SUMMARIES, cli

    assert set(SUMMARIES) == set(COMMANDS)
    ctx = click.Context(cli)
    for name in COMMANDS:
        own = cli.get_command(ctx, name).get_short_help_str(limit=sys.maxsize)
        assert SUMMARIES[name] == own, name


def test_help_lists_every_command_without_importing_them(tmp_path):
    import subprocess
    import sys

    probe = ("import sys; from fased.commands.entry import main; sys.argv = ['fased', '--help']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith('fased.commands.')))")
    # the installed fased, never the source tree in the cwd (no commands/ subpackage there)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=tmp_path, env={"FASED_HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
                                             "PYTHONSAFEPATH": "1"})
    assert done.returncode == 0, done.stderr
    assert "  memory  " in done.stdout and "  hooks  " in done.stdout
    loaded = done.stdout.strip().splitlines()[-1]
    assert "fased.commands.memory" not in loaded and "fased.commands.channel" not in loaded

