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



# an argument with a byte that is not UTF-8 (a Latin-1 terminal): Python hands it over as a
# lone surrogate, which SQLite, the log and HTTP cannot encode
NOT_UTF8 = [
    ("agent", "show", b"\xff"),
    ("session", "show", b"\xff"),
    ("task", "show", b"caf\xe9"),
    ("usage", "--agent", b"\xff"),
    ("memory", "search", "postgres", "--agent", b"\xff"),
    ("memory", "search", "postgres", "--agent", b"\xff", "--json"),
]


@pytest.mark.parametrize("args", NOT_UTF8, ids=lambda a: " ".join(map(str, a[:2])))
def test_an_argument_that_is_not_utf8_is_a_usage_error_not_a_bug(set_up, args):
    import os
    import subprocess
    import sys

    argv = [a if isinstance(a, bytes) else a.encode() for a in args]
    done = subprocess.run([sys.executable.encode(), b"-c",
                           b"from fased.commands.entry import main; main()", *argv],
                          capture_output=True, env=os.environ, timeout=60)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "internal error" not in err and "Traceback" not in err
    lines = err.splitlines()
    assert lines[0].startswith("Error: '") and "' is not UTF-8 text" in lines[0], err
    assert "\\xff" in lines[0] or "\\xe9" in lines[0]
    assert done.stdout == b""


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_output_a_terminal_cannot_encode_is_escaped_not_a_crash(set_up, encoding):
    """A terminal or pipe in another encoding than UTF-8 (PYTHONIOENCODING, a Latin-1
    locale): characters it has no byte for are shown as \\uXXXX, the rest as they are."""
    import os
    import subprocess
    import sys

    (set_up / "workspace" / "MEMORY.md").write_text("The café opens at 9 ✓ 🚀 always.\n")
    done = subprocess.run([sys.executable, "-c", "from fased.commands.entry import main; "
                           "main()", "memory", "search", "café"], capture_output=True,
                          env={**os.environ, "PYTHONIOENCODING": encoding}, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode(encoding)
    assert "\\u2713" in out and "\\U0001f680" in out
    assert ("café" if encoding == "latin-1" else "caf\\xe9") in out


def test_a_table_lines_up_wide_characters_by_the_columns_they_take(capsys):
    """A model named 模型 took two columns a character on a terminal, and the cells after it
    came two columns late: widths were counted in characters."""
    import unicodedata

    from fased.commands.output import table

    def columns(text: str) -> int:
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else
                   0 if unicodedata.combining(c) else 1 for c in text)

    table([("p/模型", "2026", "x"), ("p/ab", "2027", "y"), ("p/e\u0301", "2028", "z")],
          ("REF", "SEEN", "NOTE"), max_width=0)
    lines = capsys.readouterr().out.splitlines()
    starts = {columns(line[:line.index("20")]) for line in lines[1:]}
    assert len(starts) == 1, lines
    assert columns(lines[0][:lines[0].index("SEEN")]) in starts


def test_a_table_cut_to_the_terminal_counts_its_columns(capsys):
    from fased.commands.output import table

    table([("模" * 30, "tail")], ("NAME", "NOTE"), max_width=21)
    line = capsys.readouterr().out.splitlines()[1]
    assert line == "模" * 10 + "…"
