"""The exec allowlist: a command runs unasked only if every command in it is allowed.

The line is read by fased.tools.shellsplit into its simple commands (across `;`, `&&`, `||`,
pipes, groups and substitutions at any depth); each is checked, and one that is not allowed,
or anything that cannot be followed for certain, makes the whole line need asking.

An entry is `[NAME=PATTERN ...] PROGRAM [ARG ...]`, written as shell words:
- PROGRAM is a bare name, looked up on the PATH the command runs with (its absolute
  directories only: never `.` or the workspace), or an absolute path. A command's program is
  resolved the way the shell does it (a name with a `/` from the working directory), so
  `git *` covers `git log` run from /usr/bin but never `./git log`. Paths are compared by
  the real directory and the file name as written (a busybox link named `ls` is `ls`).
  Shell builtins resolve to themselves (`printf`, `kill`, ...).
- Each ARG is an fnmatch pattern for one argument (`*`, `?`, `[...]`; quoted characters
  are literal), except a lone `*`, which stands for any number of arguments, none included:
  `git *`, `npm test`, `git log *`, `pytest tests/*.py`. A command's argument that the shell
  expands (`$x`, `$(...)`, an unquoted glob) is matched only by a lone `*`.
- NAME=PATTERN words allow those environment assignments before the program (`CI=1 npm
  test`); a command that sets variables for its program needs an entry that names them.
- Launchers (shells, env, xargs, sudo, nohup, timeout, ...; `find -exec`, `git config
  alias.x ...`, sqlite3's `.shell` and the like) run whatever they are given: only an entry
  without patterns, for exactly that command, allows one, and `check_entry` refuses a
  pattern entry for one.
- Inline code (`python -c`, `node -e`, `bash -c`, awk programs that run commands, a program
  read from stdin unless the command's own `<` gives it a file ...) needs asking even when
  allowlisted, while `strict_inline` (tools.exec.strictInlineEval) is on.
Without an entry: the builtins `cd`, `echo`, `test`/`[`, `true`, `false`, `:`, `pwd` and a
few more; redirections to files inside the working directory, but not into `.git`;
`set -e`-style options.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from fased.tools.inline import inline_code
from fased.tools.launchers import launcher_use
from fased.tools.programs import Stdin, names_of, reads_descriptor
from fased.tools.shellsplit import Command, Redirect, Unsure, Word, split, words

SAFE_BUILTINS = frozenset({"cd", "echo", "true", "false", ":", "test", "[", "pwd", "exit",
                           "return", "break", "continue", "wait", "jobs", "times", "type",
                           "shift"})
CODE_BUILTINS = frozenset({"eval", "source", ".", "trap", "fc", "builtin", "enable"})
STATE_BUILTINS = frozenset({"export", "unset", "readonly", "local", "declare", "typeset",
                            "alias", "unalias", "hash", "read", "getopts", "let", "mapfile",
                            "readarray", "shopt", "pushd", "popd", "bind", "complete"})
BUILTINS = SAFE_BUILTINS | CODE_BUILTINS | STATE_BUILTINS | {
    "command", "exec", "set", "printf", "kill", "umask", "ulimit"}
# Variables the shell itself reads to find or run commands: never set by a command line.
SHELL_VARIABLES = frozenset({"PATH", "IFS", "ENV", "BASH_ENV", "CDPATH", "SHELLOPTS",
                             "BASHOPTS", "GLOBIGNORE", "PS4", "PROMPT_COMMAND", "FPATH",
                             "HOME", "BASH_XTRACEFD"})
_SHELL_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_")
_SAFE_SET = re.compile(r"[-+][euxvCf]*(o?)")
_SAFE_SET_OPTIONS = frozenset({"errexit", "nounset", "xtrace", "verbose", "pipefail",
                               "noclobber", "noglob"})
_DEVICES = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})
_READS = frozenset({"<", "<<", "<<-", "<<<", "<&"})


@dataclass(frozen=True)
class Segment:
    """One simple command that may run: its text, what it runs (an absolute path, `builtin
    NAME`, or "" for assignments and redirections alone), and the entry that allows it
    (None when it needs none)."""

    text: str
    program: str
    entry: str | None


@dataclass(frozen=True)
class Verdict:
    """Allowed (every segment with its entry), or not, with the reason worded for the user;
    `suggestion` is an entry that would allow the segment that was not, when one could."""

    allowed: bool
    reason: str
    segments: tuple[Segment, ...] = ()
    suggestion: str | None = None

    @property
    def entries(self) -> list[str]:
        """The entries that allow it, each once, in the order used."""
        return list(dict.fromkeys(s.entry for s in self.segments if s.entry is not None))


class _Ask(Exception):
    """A segment needs asking; the message says why (with `{where}` for its place)."""

    def __init__(self, message: str, suggestion: str | None = None):
        super().__init__(message)
        self.suggestion = suggestion


def check(command: str, entries: list[str], *, cwd: Path | None, path: str,
          strict_inline: bool = True, env_names: Collection[str] | None = None,
          env: Mapping[str, str] | None = None) -> Verdict:
    """Whether `command` may run unasked under `entries`. cwd: where it runs (None: not
    known); path: the PATH it runs with; env_names: the variables of its environment (None:
    not known, so no line may set a variable); env: variables the call adds for it."""
    try:
        script = split(command)
    except Unsure as exc:
        return Verdict(False, f"cannot check this command: {exc}")
    except RecursionError:
        return Verdict(False, "cannot check this command: it is nested too deeply")
    if not script.commands:
        return Verdict(False, "there is no command in it")
    checker = _Checker(entries, cwd, path, strict_inline, env_names, env or {})
    done: list[Segment] = []
    try:
        for name in script.sets:
            checker.settable(name)
        for number, cmd in enumerate(script.commands, 1):
            where = f" in segment {number}" if len(script.commands) > 1 else ""
            try:
                done.append(checker.segment(cmd))
            except _Ask as exc:
                raise _Ask(str(exc).replace("{where}", where), exc.suggestion) from None
    except _Ask as exc:
        return Verdict(False, str(exc), tuple(done), exc.suggestion)
    verdict = Verdict(True, "", tuple(done))
    used = verdict.entries
    reason = f"allowed by {'; '.join(used)}" if used else "it needs no allowlist entry"
    return Verdict(True, reason, tuple(done))


def check_entry(entry: str) -> str | None:
    """Why `entry` cannot be an allowlist entry (worded for the user), or None if it can."""
    try:
        parsed = _Entry.parse(entry)
    except _Ask as exc:
        return str(exc)
    name = parsed.program.value or ""
    base = name.rsplit("/", 1)[-1]
    if "/" in name and not name.startswith("/"):
        return (f"`{name}` is a relative path; write it absolute (an entry never matches a "
                "program found from the working directory)")
    if base in CODE_BUILTINS or base in STATE_BUILTINS or base in ("command", "exec"):
        return f"`{base}` runs or changes shell code; it is always asked about"
    launcher = launcher_use(names_of(base, base), [w for w in parsed.args if w.value])
    if launcher and not parsed.exact:
        return (f"`{entry}` would let any command through: `{base}` {launcher}. Allowlist "
                "the commands themselves, or one exact command line (no patterns)")
    return None


def argv_entry(argv: list[str]) -> str:
    """An entry that matches exactly this argv (quoted, so no character is a pattern)."""
    return " ".join(shlex.quote(a) for a in argv)


def _resolve(name: str, *, cwd: Path | None, path: str, entry: bool = False) -> str:
    """What the shell runs for `name`: `builtin NAME`, or an absolute path. For an entry,
    relative PATH directories are skipped. Raises _Ask when it cannot be told (the message
    has a `{where}` for the segment's place)."""
    if not name:
        raise _Ask("an empty command name{where} cannot run")
    if "/" in name:
        full = name
        if not name.startswith("/"):
            if cwd is None:
                raise _Ask(f"cannot tell what `{name}`{{where}} runs (the working directory "
                           "is not known here)")
            full = os.path.join(cwd, name)
        if not _executable(full):
            raise _Ask(f"`{name}`{{where}} is not an executable file")
        return _identity(full)
    if name in BUILTINS:
        return f"builtin {name}"
    for directory in path.split(":"):
        if not directory.startswith("/"):
            if entry:
                continue
            if cwd is None:
                raise _Ask(f"cannot tell what `{name}`{{where}} runs: PATH has the relative "
                           f"directory `{directory or '.'}`")
            directory = os.path.join(cwd, directory)
        candidate = os.path.join(directory, name)
        if _executable(candidate):
            return _identity(candidate)
    raise _Ask(f"`{name}`{{where}} is not found on PATH")


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _identity(path: str) -> str:
    """The real directory and the file name as written: argv[0] picks a multi-call binary."""
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(directory), base)


@dataclass
class _Entry:
    text: str
    assigns: list[Word]
    program: Word
    args: list[Word]
    exact: bool

    @classmethod
    def parse(cls, text: str) -> _Entry:
        try:
            parsed = words(str(text))
        except Unsure as exc:
            raise _Ask(f"cannot read the entry: {exc}") from None
        assigns = []
        while parsed and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", parsed[0].source):
            assigns.append(parsed.pop(0))
        if not parsed:
            raise _Ask("an entry needs a program")
        program, args = parsed[0], parsed[1:]
        for word in parsed + assigns:
            if word.expansion:
                raise _Ask(f"`{word.expansion}` in an entry is an expansion; entries match "
                           "what a command says (quote it to mean the characters)")
        if program.glob or program.value is None:
            raise _Ask(f"the program `{program.source}` cannot be a pattern: name one program")
        exact = not any(w.glob for w in parsed + assigns)
        return cls(str(text), assigns, program, args, exact)

    def matches_args(self, args: list[Word]) -> bool:
        """Lone `*` = any number of words; other patterns one static word each."""
        pats = [None if (w.source == "*") else w.pattern for w in self.args]
        reach = [True] + [False] * len(args)  # reach[j]: the patterns so far match args[:j]
        for pat in pats:
            if pat is None:
                for j in range(1, len(args) + 1):
                    reach[j] = reach[j] or reach[j - 1]
                continue
            reach = [False] + [reach[j] and args[j].value is not None
                               and fnmatch.fnmatchcase(args[j].value, pat)
                               for j in range(len(args))]
        return reach[len(args)]

    def allows_assignment(self, name: str, value: str | None) -> bool:
        for word in self.assigns:
            if word.source.partition("=")[0] != name:
                continue
            if word.source.endswith("=*") if value is None else fnmatch.fnmatchcase(
                    f"{name}={value}", word.pattern):
                return True
        return False


class _Checker:
    def __init__(self, entries: list[str], cwd: Path | None, path: str, strict: bool,
                 env_names: Collection[str] | None, env: Mapping[str, str]):
        self.cwd, self.path, self.strict, self.env = cwd, path, strict, env
        self.env_names = env_names
        self.cwd_known = cwd is not None
        self.found: dict[str, str] = {}
        self.entries: list[tuple[_Entry, str | None]] = []
        for text in entries:
            try:
                entry = _Entry.parse(text)
            except _Ask:
                continue
            try:
                program = _resolve(entry.program.value or "", cwd=None, path=path, entry=True)
            except _Ask:
                program = None
            self.entries.append((entry, program))

    def settable(self, name: str) -> None:
        """A variable the line sets in the shell itself (`x=1`, `for x in`, `${x:=1}`)."""
        if name in SHELL_VARIABLES or name.startswith(_SHELL_PREFIXES):
            raise _Ask(f"it sets {name}, which decides what the shell runs")
        if self.env_names is None or name in self.env_names or name in self.env:
            raise _Ask(f"it sets `{name}`, a variable the commands after it may read")

    def segment(self, cmd: Command) -> Segment:
        for redirect in cmd.redirects:
            self.redirect(redirect.op, redirect.target)
        argv = list(cmd.words)
        if not argv:
            return Segment(cmd.text, "", None)
        while True:
            head = argv[0]
            if head.value is None or head.source.startswith("~"):
                raise _Ask(f"cannot tell what `{head.source}`{{where}} runs")
            name, args = head.value, argv[1:]
            if name == "command" and args and args[0].value == "--":
                argv = args[1:]
            elif name in ("command", "exec") and args and args[0].value is not None and \
                    not args[0].value.startswith("-"):
                argv = args
            else:
                break
        if name in BUILTINS:
            return self.builtin(cmd, name, args)
        for word in cmd.assigns:
            variable = word.source.partition("=")[0].rstrip("+")
            if variable in SHELL_VARIABLES or variable.startswith(_SHELL_PREFIXES):
                raise _Ask(f"`{word.source}` before `{name}`{{where}} changes what runs")
        if not self.cwd_known and self.cwd is not None and (
                ("/" in name and not name.startswith("/")) or ("/" not in name and any(
                    not d.startswith("/") for d in self.path.split(":")))):
            raise _Ask(f"after `cd`, cannot tell what `{name}`{{where}} runs")
        if name not in self.found:  # a line of many segments looks each name up once
            self.found[name] = _resolve(name, cwd=self.cwd, path=self.path)
        program = self.found[name]
        names = names_of(name, program)
        stdin = stdin_of(cmd.redirects, cmd.text)
        code = inline_code(names, args, stdin)
        if code and self.strict:
            raise _Ask(code)
        launcher = launcher_use(names, args, stdin)
        for entry, resolved in self.entries:
            if resolved != program or (launcher and not entry.exact):
                continue
            if entry.matches_args(args) and self.assignments_allowed(entry, cmd):
                return Segment(cmd.text, program, entry.text)
        if launcher:
            raise _Ask(f"`{name}`{{where}} {launcher}: only an entry for exactly this "
                       "command allows it")
        shown = f" (it runs {program})" if "/" in name else ""
        if (cmd.assigns or self.env) and any(
                e.matches_args(args) for e, r in self.entries if r == program):
            names = ", ".join([w.source.partition("=")[0] for w in cmd.assigns] + list(self.env))
            raise _Ask(f"`{name}`{{where}} is allowlisted, but not with {names} set for it")
        suggestion = None if "/" in name and not name.startswith("/") else \
            argv_entry([name]) + " *"
        raise _Ask(f"`{name}`{{where}} is not allowlisted{shown}", suggestion)

    def assignments_allowed(self, entry: _Entry, cmd: Command) -> bool:
        pairs = [(w.source.partition("=")[0].rstrip("+"),
                  None if w.value is None else w.value.partition("=")[2]) for w in cmd.assigns]
        pairs += list(self.env.items())
        return all(entry.allows_assignment(name, value) for name, value in pairs)

    def builtin(self, cmd: Command, name: str, args: list[Word]) -> Segment:
        for word in cmd.assigns:  # before a special builtin they stay set afterwards
            self.settable(word.source.partition("=")[0].rstrip("+"))
        if name in CODE_BUILTINS:
            raise _Ask(f"`{name}`{{where}} runs code fased cannot see; it needs asking")
        if name in STATE_BUILTINS or (name == "printf" and (
                not args or args[0].value in (None, "-v"))) or (name == "exec" and args):
            raise _Ask(f"`{name}`{{where}} changes the shell for the commands after it; "
                       "it needs asking")
        if name == "command":
            if args and args[0].value not in ("-v", "-V"):
                raise _Ask("`command` with options{where} needs asking")
            return Segment(cmd.text, "builtin command", None)
        if name == "set":
            self.set_options(args)
            return Segment(cmd.text, "builtin set", None)
        if name == "cd":
            self.cwd_known = False
        if name in SAFE_BUILTINS or name == "exec":
            return Segment(cmd.text, f"builtin {name}", None)
        program = f"builtin {name}"
        for entry, resolved in self.entries:
            if resolved == program and entry.matches_args(args) and \
                    self.assignments_allowed(entry, cmd):
                return Segment(cmd.text, program, entry.text)
        raise _Ask(f"`{name}`{{where}} is not allowlisted", argv_entry([name]) + " *")

    def set_options(self, args: list[Word]) -> None:
        words_ = iter(args)
        for word in words_:
            flags = _SAFE_SET.fullmatch(word.value or "")
            if flags and len(flags.group()) > 1 and not flags.group(1):
                continue
            if flags and flags.group(1) and next(words_, word).value in _SAFE_SET_OPTIONS:
                continue
            raise _Ask(f"`set {word.source}`{{where}} changes how the shell runs commands; "
                       "it needs asking")

    def redirect(self, op: str, target: Word) -> None:
        """Reading is the program's business; writing only inside the working directory."""
        value = target.value
        if op in _READS or (op == ">&" and value is not None and re.fullmatch(r"[0-9]+|-", value)):
            return
        if value is None:
            raise _Ask(f"cannot tell where `{op} {target.source}`{{where}} writes")
        if value in _DEVICES:
            return
        if "\0" in value:
            raise _Ask(f"`{op} {target.source}`{{where}} is not a file name")
        if not self.cwd_known or self.cwd is None:
            why = "after `cd`" if self.cwd is not None else "here (the working directory is " \
                "not known)"
            raise _Ask(f"cannot tell where `{op} {value}`{{where}} writes {why}")
        base = os.path.realpath(self.cwd)
        real = os.path.realpath(os.path.join(base, value))
        if value.startswith("~") or (real != base and not real.startswith(base + os.sep)):
            raise _Ask(f"`{op} {value}`{{where}} writes outside the working directory")
        if ".git" in real.lower().split(os.sep):  # its config and hooks name programs
            raise _Ask(f"`{op} {value}`{{where}} writes into `.git`, where git finds commands "
                       "to run")


def stdin_of(redirects: list[Redirect], text: str) -> Stdin:
    """What a simple command's own redirections give it on stdin (the last one wins): a file
    (`< prog.py`, not a descriptor such as `/dev/stdin`), a here-string's text, or not known.
    A Redirect keeps no descriptor number, so a command with one (`3< a.py`) is not known."""
    reads = [r for r in redirects if r.op in _READS or r.op == "<>"]
    if not reads or re.search(r"[0-9]<", text):
        return Stdin()
    value = reads[-1].target.value
    if value is None:
        return Stdin()
    if reads[-1].op in ("<", "<>") and not reads_descriptor(value):
        return Stdin(file=True)
    return Stdin(text=value) if reads[-1].op == "<<<" else Stdin()


def first_program(command: str) -> str | None:
    """`NAME *` for the first program a command runs that is not a builtin, when such an
    entry could allow it (a name or an absolute path, no launcher); else None."""
    try:
        commands = split(command).commands
    except (Unsure, RecursionError):
        return None
    for cmd in commands:
        head = cmd.words[0].value if cmd.words else ""
        if head is None:
            return None
        if not head or head in BUILTINS:
            continue
        if ("/" in head and not head.startswith("/")) or launcher_use(names_of(head, ""), []):
            return None
        return argv_entry([head]) + " *"
    return None
