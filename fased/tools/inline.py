"""Programs that run other programs, and arguments that are code: for the exec allowlist.

A launcher runs whatever command it is given (`sudo`, `env`, `xargs`, a shell, ...), or
does with some option or subcommand (`find -exec`, `rsync -e`, `git -c`, `git rebase -x`,
`uv run`, `npm exec`). Inline code is a program text in the arguments (`python -c`,
`node -e`, `perl -e`, `bash -c`, an awk program that calls `system` or pipes, a GNU sed
script with `e` or `w`, `make SHELL=...`): what it does cannot be told from the entry that
allows the interpreter. Both look at the program's name as typed, as found, and
as its real file (unless that is a multi-call binary such as busybox, which acts on argv[0]);
version suffixes are ignored (`python3.12` is `python`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

from fased.tools.shellsplit import Word

MULTICALL = frozenset({"busybox", "toybox", "coreutils"})
SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "mksh", "pdksh", "oksh", "yash",
                    "posh", "fish", "csh", "tcsh", "rc", "es", "elvish", "nu", "xonsh", "pwsh",
                    "busybox", "toybox"})
LAUNCHERS = frozenset({
    "env", "xargs", "sudo", "doas", "su", "runuser", "pkexec", "sg", "newgrp", "nohup", "nice",
    "ionice", "chrt", "taskset", "numactl", "prlimit", "timeout", "time", "watch", "strace",
    "ltrace", "gdb", "lldb", "valgrind", "setsid", "stdbuf", "unbuffer", "chroot", "unshare",
    "nsenter", "flock", "script", "expect", "parallel", "ssh", "rsh", "sshpass", "systemd-run",
    "at", "batch", "screen", "tmux", "firejail", "bwrap", "proot", "fakeroot", "faketime",
    "torsocks", "proxychains", "rlwrap", "entr", "catchsegv", "npx", "bunx", "pnpx", "uvx"})
# Programs that run a command given in one of these options (short ones also in clusters).
RUNS_COMMANDS = {
    "find": ("-exec", "-execdir", "-ok", "-okdir"),
    "fd": ("-x", "-X", "--exec", "--exec-batch"), "fdfind": ("-x", "-X", "--exec",
                                                             "--exec-batch"),
    "rsync": ("-e", "--rsh", "--rsync-path"),
    "tar": ("-I", "--use-compress-program", "--to-command", "--checkpoint-action",
            "--info-script", "-F", "--new-volume-script", "--rsh-command", "--rmt-command"),
    "git": ("--config-env", "--exec", "--exec-path", "--upload-pack", "--receive-pack",
            "--extcmd", "--template", "--config"),
    "zip": ("-TT", "--unzip-command"), "sort": ("--compress-program",),
    "scp": ("-S", "-o", "-F"), "sftp": ("-S", "-o", "-F", "-D"),
}
# Programs with a subcommand that runs the command it is given (`uv run`, `npm exec`).
SUBCOMMAND_LAUNCHERS = {
    "npm": ("exec", "x"), "pnpm": ("exec", "dlx"), "yarn": ("exec", "dlx"), "bun": ("x",),
    "uv": ("run", "tool"), "poetry": ("run",), "pipx": ("run",), "pdm": ("run",),
    "hatch": ("run",), "conda": ("run",), "mamba": ("run",), "micromamba": ("run",),
    "pixi": ("run", "exec"), "bundle": ("exec",), "nix": ("run", "shell", "develop"),
    "nix-shell": ("--run", "--command"), "docker": ("run", "exec"), "podman": ("run", "exec"),
    "kubectl": ("exec", "run", "debug"), "flatpak": ("run",), "snap": ("run",)}
# git subcommands that run a command given to them (with this option, or always)
_GIT_RUNS = {"rebase": ("-x", "--exec"), "bisect": ("run",), "submodule": ("foreach",),
             "filter-branch": (), "difftool": ("-x", "--extcmd", "-t", "--tool"),
             "mergetool": ("-t", "--tool"), "clone": ("-u", "-c"), "ls-remote": ("-u",),
             "archive": ("--remote",)}
# Options whose whole name abbreviates a longer option above (`tar --checkpoint=10`).
_WHOLE_NAMES = frozenset({"--checkpoint"})
_VERSION = re.compile(r"[0-9.]+\Z")
_AWK_RISK = re.compile(r"system|\||>|@")
# gawk's long options that take a value (the first of an ambiguous abbreviation is the one
# that matters most), and those that write a file named in theirs
_AWK_LONG = ("--source", "--load", "--file", "--exec", "--include", "--assign",
             "--field-separator", "--dump-variables", "--pretty-print", "--profile", "--debug")
_AWK_WRITES = frozenset({"--dump-variables", "--pretty-print", "--profile"})
_MAKE_VALUES = "CfIoWjlO"  # make's short options with a value: the rest of the word or the next


def names_of(name: str, program: str) -> frozenset[str]:
    """The names a program goes by (typed, found, real file), without version suffixes."""
    names = {os.path.basename(name)}
    if program.startswith("/"):
        names.add(os.path.basename(program))
        real = os.path.basename(os.path.realpath(program))
        if _VERSION.sub("", real) not in MULTICALL:
            names.add(real)
    return frozenset({_VERSION.sub("", n) or n for n in names})


def launcher_use(names: Iterable[str], args: list[Word]) -> str | None:
    """How this command runs another command (for the reason), or None."""
    for name in names:
        if name in SHELLS:
            return "is a shell: it runs whatever it is given"
        if name in LAUNCHERS:
            return "runs the command it is given"
        subcommands = SUBCOMMAND_LAUNCHERS.get(name, ())
        for word in args:
            if word.value is None and subcommands:
                return f"may run a command given in its arguments (`{word.source}`)"
            if word.value in subcommands:
                return f"runs the command given to `{name} {word.value}`"
        options = RUNS_COMMANDS.get(name)
        if options:
            for word in args:
                if word.value is None:
                    return f"may run a command given in its arguments (`{word.source}`)"
                hit = _option(word.value, options)
                if hit:
                    return f"runs a command given with `{hit}`"
            if name == "git":
                return _git(args)
    return None


def _git(args: list[Word]) -> str | None:
    """git's `-c NAME=VALUE` before the subcommand (core.pager, alias.x=!cmd ... run
    commands), and subcommands that run one they are given."""
    words = iter(args)
    for word in words:
        value = word.value or ""
        if value == "-c" or (value.startswith("-c") and len(value) > 2):
            return "runs commands set with `-c` (core.pager, aliases, ...)"
        if value in ("-C", "--git-dir", "--work-tree", "--namespace"):
            next(words, None)
        elif not value.startswith("-"):
            options = _GIT_RUNS.get(value)
            if options is None:
                return None
            rest = [w.value or "" for w in words]
            hit = next((o for o in options for r in rest if _option(r, (o,)) or r == o), None)
            if hit or not options:
                return f"runs a command given to `git {value}`" + (f" with `{hit}`" if hit
                                                                    else "")
            return None
    return None


def inline_code(names: Iterable[str], args: list[Word]) -> str | None:
    """Why this command runs code written in its arguments (for the reason), or None."""
    names = set(names)
    label = ""
    if names & {"python", "pypy", "ipython"}:
        label, found = "python", _python(args)
    elif names & {"node", "nodejs", "bun"}:
        label, found = "node", _any(args, {"-e", "--eval", "-p", "--print", "-pe", "-ep"},
                                    ("--eval=", "--print=")) or _data_url(args)
    elif "deno" in names:
        label, found = "deno", _any(args, {"eval", "--eval"}, ("--eval=",)) or _data_url(args)
    elif names & {"ruby", "lua", "luajit"}:
        label, found = sorted(names & {"ruby", "lua", "luajit"})[0], _cluster(args, "e")
    elif "perl" in names:
        label, found = "perl", _cluster(args, "eE")
    elif "php" in names:
        label, found = "php", _any(args, {"-r", "--run", "-B", "--process-begin", "-R",
                                          "--process-code", "-E", "--process-end"}, ())
    elif names & {"Rscript", "R", "osascript"}:
        label, found = sorted(names & {"Rscript", "R", "osascript"})[0], _any(
            args, {"-e", "--expr"}, ())
    elif names & SHELLS:
        label, found = sorted(names & SHELLS)[0], _cluster(args, "c") or _any(
            args, {"--command"}, ())
    elif names & {"awk", "gawk", "mawk", "nawk"}:
        label, found = "awk", _awk(args)
    elif names & {"sed", "gsed"}:
        label, found = "sed", _sed(args)
    elif names & {"make", "gmake"}:
        label, found = "make", _make(args)
    else:
        return None
    if found is None:
        return None
    if found.startswith("$"):
        return (f"cannot tell whether `{label}`{{where}} is given inline code "
                f"(`{found[1:]}`); it needs asking")
    return f"inline code ({label} {found}){{where}} needs asking"


def _option(value: str, options: tuple[str, ...]) -> str | None:
    """Which of `options` the word `value` gives: a `--long` one also abbreviated, a short
    one also in a cluster (`-xI`), any other (`-exec`) as written."""
    for option in options:
        if option.startswith("--"):
            given = _long(value, (option,)) is not None
        else:
            given = value == option or value.startswith(option + "=") or (
                len(option) == 2
                and re.fullmatch(rf"-[A-Za-z0-9]*{re.escape(option[1])}.*", value) is not None)
        if given:
            return option
    return None


def _long(value: str, options: Iterable[str]) -> str | None:
    """The long option of `options` that the word `value` (`--name`, `--name=...`) gives: its
    name, or any abbreviation of it, the way getopt_long reads one. An abbreviation of two
    options is refused there (nothing runs), so the first one listed is as good as any; a word
    that is the whole name of another option of the program (`--checkpoint`) is that one."""
    key = value.partition("=")[0]
    if len(key) < 3 or not key.startswith("--"):
        return None
    if key in options:
        return key
    if key in _WHOLE_NAMES:
        return None
    return next((option for option in options if option.startswith(key)), None)


def _any(args: list[Word], flags: set[str], prefixes: tuple[str, ...]) -> str | None:
    for word in args:
        if word.value is None:
            return f"${word.source}"
        if word.value in flags or (prefixes and word.value.startswith(prefixes)):
            return word.value.split("=")[0]
    return None


def _data_url(args: list[Word]) -> str | None:
    """A module given as a `data:` URL (`--import data:...`) is code in the arguments."""
    return next(("data:" for w in args if w.value and "data:" in w.value), None)


def _make(args: list[Word]) -> str | None:
    """`--eval` (`-E`), and variables set on the command line to make code (`SHELL=`,
    `$(shell`). Every word is looked at, an option's value too."""
    for word in args:
        value = word.value
        if value is None:
            return f"${word.source}"
        if _long(value, ("--eval",)):
            return "--eval"
        if re.match(r"-[^-]", value):
            for letter in value[1:]:
                if letter == "E":
                    return "-E"
                if letter in _MAKE_VALUES:
                    break
            continue
        name, eq, rest = value.partition("=")
        if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*[:+?!]?", name) and (
                name.rstrip(":+?!") in ("SHELL", ".SHELLFLAGS", "MAKEFLAGS", "MAKE")
                or re.search(r"[$`]", rest)):
            return value if len(value) <= 24 else value[:24] + "..."
    return None


def _cluster(args: list[Word], letters: str) -> str | None:
    """A short option cluster with one of `letters` (`-e`, `-ne`, `-lc`)."""
    for word in args:
        if word.value is None:
            return f"${word.source}"
        if re.fullmatch(rf"-[A-Za-z0-9]*[{letters}].*", word.value, re.S):
            return word.value if len(word.value) <= 4 else word.value[:4]
    return None


def _python(args: list[Word]) -> str | None:
    """`-c` among python's own options, which end at the script, `-m` or `-`."""
    words = iter(args)
    for word in words:
        value = word.value
        if value is None:
            return f"${word.source}"
        if value in ("-", "--") or not value.startswith("-"):
            return None
        if value.startswith("--"):
            if value == "--check-hash-based-pycs":
                next(words, None)
            continue
        for i, letter in enumerate(value[1:]):
            if letter == "c":
                return "-c"
            if letter == "m":
                return None
            if letter in "WX":
                if i == len(value) - 2:
                    next(words, None)
                break
    return None


def _value(words: Iterator[Word], tail: str) -> str | None:
    """An option's value: the rest of its word, else the next word (None if it expands)."""
    if tail:
        return tail
    word = next(words, None)
    return None if word is None else word.value


def _awk(args: list[Word]) -> str | None:
    """An awk program (inline, -e, --source, -W source=) that runs commands (`system`, `|`),
    writes files (`>`, a file for --profile and the like) or loads extensions (`@load`, -l).
    Options are looked for in every argument, as getopt permutes them."""
    programs: list[str | None] = []
    first: Word | None = None
    from_file, words = False, iter(args)
    for word in words:
        value = word.value
        if value is None:
            return f"${word.source}"
        if value == "--":
            first = first or next(words, None)
            break
        if value == "-" or not value.startswith("-"):
            first = first or word
            continue
        if value.startswith("-W"):
            wide = _value(words, value[2:])
            if wide is None:
                return "$an option value"
            typed = "--" + wide.partition("=")[0]
            option = _long(typed, _AWK_LONG)
            if option and option != typed:  # mawk reads -W abbreviations its own way
                return f"$-W {typed[2:]}"
            value = "--" + wide
        if value.startswith("--"):
            option = _long(value, _AWK_LONG)
            _, eq, rest = value.partition("=")
            if option == "--load":
                return "-l"
            if option in _AWK_WRITES:
                if eq:
                    return option
                continue
            given = rest if eq else _value(words, "") if option else None
            if option == "--source":
                programs.append(given)
            from_file = from_file or option in ("--file", "--exec")
            continue
        for i, letter in enumerate(value[1:], 2):
            if letter == "l":
                return "-l"
            if letter in "efEivF":
                given = _value(words, value[i:])
                if letter == "e":
                    programs.append(given)
                from_file = from_file or letter in "fE"
                break
            if letter in "dopDL":  # an optional value: the rest of the word
                if value[i:] and letter in "dop":
                    return f"-{letter}"
                break
    if first is not None and not from_file and not programs:
        if first.value is None:
            return f"${first.source}"
        programs.append(first.value)
    for text in programs:
        if text is None:
            return "$an option value"
        if _AWK_RISK.search(text):
            return "program that runs commands or writes files"
    return None


def _sed(args: list[Word]) -> str | None:
    """A sed script with a command that runs commands or writes files (GNU `e`, `w`, `W`,
    the `e` and `w` flags of `s`); a script that cannot be read counts as one."""
    if any(w.value == "--sandbox" for w in args):
        return None
    scripts: list[str | None] = []
    first: Word | None = None
    from_file, words = False, iter(args)
    for word in words:
        value = word.value
        if value is None:
            return f"${word.source}"
        if value == "--":
            first = first or next(words, None)
            break
        if value == "-" or not value.startswith("-"):
            first = first or word
        elif value.startswith("--"):
            option = _long(value, ("--expression", "--file", "--line-length"))
            _, eq, rest = value.partition("=")
            if option in ("--expression", "--file"):
                given = rest if eq else _value(words, "")
                if option == "--expression":
                    scripts.append(given)
                from_file = from_file or option == "--file"
            elif option == "--line-length" and not eq:
                next(words, None)
        else:
            for i, letter in enumerate(value[1:], 2):
                if letter in "efl":
                    given = _value(words, value[i:])
                    if letter == "e":
                        scripts.append(given)
                    from_file = from_file or letter == "f"
                    break
                if letter == "i":
                    break
    if first is not None and not from_file and not scripts:
        if first.value is None:
            return f"${first.source}"
        scripts.append(first.value)
    for script in scripts:
        if script is None or _sed_risky(script):
            return "script that runs commands or writes files"
    return None


_SED_ADDRESS = re.compile(r"\s*(?:[0-9]+(?:~[0-9]+)?|\$|/(?:[^/\\\n]|\\.)*/[IM]*|\\(.)(?:.)*?\1)?"
                          r"(?:\s*,\s*(?:[+~]?[0-9]+|\$|/(?:[^/\\\n]|\\.)*/[IM]*))?\s*!?\s*")


def _sed_risky(script: str) -> bool:
    pos, n = 0, len(script)
    while pos < n:
        pos = _SED_ADDRESS.match(script, pos).end()
        if pos >= n:
            return False
        c = script[pos]
        pos += 1
        if c in ";{}\n" or c.isspace():
            continue
        if c in "#aicrR":  # a comment, text or a file to read: to the end of the line
            end = script.find("\n", pos)
            pos = n if end < 0 else end
        elif c in ":btT":  # a label: GNU sed ends it at ; too
            pos = re.compile(r"[^;\n]*").match(script, pos).end()
        elif c in "ewW":
            return True
        elif c in "sy":
            if pos >= n or script[pos] in "\\\n":
                return True
            delimiter, pos = script[pos], pos + 1
            for _ in range(2):
                while pos < n and script[pos] != delimiter:
                    pos += 2 if script[pos] == "\\" else 1
                if pos >= n:
                    return True
                pos += 1
            flags = re.compile(r"[gpiImM0-9]*").match(script, pos)
            pos = flags.end()
            if c == "s" and pos < n and script[pos] in "ew":
                return True
        elif c in "=dDgGhHlnNpPqQxzFL":
            pos = re.compile(r"\s*[0-9]*").match(script, pos).end()
        else:
            return True
    return False
