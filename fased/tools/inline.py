"""Programs that run other programs, and arguments that are code: for the exec allowlist.

A launcher runs whatever command it is given (`sudo`, `env`, `xargs`, a shell, ...), or
does with some option or subcommand (`find -exec`, `rsync -e`, `git -c`, `git rebase -x`,
`uv run`, `npm exec`), or through its own syntax (`git config alias.x '!cmd'`, a git alias,
sqlite3's `.shell`, psql's `\\!`). Inline code is a program text in the arguments (`python
-c`, `node -e`, `perl -e`, `bash -c`, an awk program that calls `system` or pipes, a GNU sed
script with `e` or `w`, `make SHELL=...`) or on stdin (`echo ... | python3`, `sed -f -`, a
here-document): what it does cannot be told from the entry that allows the interpreter. A
long option counts also abbreviated, as getopt_long reads it (`tar --to-comm=...`). Both look
at the program's name as typed, as found, and as its real file (unless that is a multi-call
binary such as busybox, which acts on argv[0]); version suffixes are ignored (`python3.12` is
`python`).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fased.tools.shellsplit import Word


def _options(text: str) -> frozenset[str]:
    return frozenset(text.split())


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
             "archive": ("--remote",), "grep": ("-O", "--open-files-in-pager"),
             "submodule--helper": (), "for-each-repo": (), "merge-index": (),
             "bisect--helper": (), "hook": ("run",), "daemon": ("--access-hook",),
             "instaweb": (), "web--browse": (), "shell": (), "remote-ext": (),
             "send-email": ("--smtp-server", "--to-cmd", "--cc-cmd", "--header-cmd",
                            "--sendmail-cmd")}
# What git ships (up to 2.51): any other subcommand is an alias or a `git-NAME` program.
_GIT_COMMANDS = _options("""
    add am annotate apply archive backfill bisect bisect--helper blame branch bugreport bundle
    cat-file check-attr check-ignore check-mailmap check-ref-format checkout checkout--worker
    checkout-index cherry cherry-pick clean clone column commit commit-graph commit-tree config
    count-objects credential credential-cache credential-cache--daemon credential-store daemon
    describe diagnose diff diff-files diff-index diff-pairs diff-tree difftool difftool--helper
    env--helper fast-export fast-import fetch fetch-pack filter-branch fmt-merge-msg
    for-each-ref for-each-repo format-patch fsck fsck-objects fsmonitor--daemon gc
    get-tar-commit-id grep hash-object help hook http-backend http-fetch http-push imap-send
    index-pack init init-db instaweb interpret-trailers last-modified log ls-files ls-remote
    ls-tree mailinfo mailsplit maintenance merge merge-base merge-file merge-index
    merge-octopus merge-one-file merge-ours merge-recursive merge-recursive-ours
    merge-recursive-theirs merge-resolve merge-subtree merge-tree mergetool mktag mktree
    multi-pack-index mv name-rev notes pack-objects pack-redundant pack-refs patch-id pickaxe
    prune prune-packed pull push quiltimport range-diff read-tree rebase receive-pack reflog
    refs remote remote-ext remote-fd remote-ftp remote-ftps remote-http remote-https repack
    replace replay repo request-pull rerere reset restore rev-list rev-parse revert rm
    send-email send-pack shell shortlog show show-branch show-index show-ref sparse-checkout
    stage stash status stripspace submodule submodule--helper subtree switch symbolic-ref tag
    unpack-file unpack-objects update-index update-ref update-server-info upload-archive
    upload-archive--writer upload-pack var verify-commit verify-pack verify-tag version
    web--browse whatchanged worktree write-tree""")
# `git config` keys that name no program, hook, config file or remote helper: setting any
# other (alias.*, core.pager, core.fsmonitor, filter.*.clean, include.path ...) is asked.
_GIT_HARMLESS_KEYS = _options("""
    user.* color.* advice.* column.* i18n.* status.* log.* init.defaultbranch core.autocrlf
    core.safecrlf core.eol core.filemode core.ignorecase core.quotepath core.symlinks
    core.precomposeunicode core.longpaths core.whitespace core.abbrev core.compression
    core.untrackedcache core.preloadindex core.checkstat core.trustctime core.logallrefupdates
    core.bigfilethreshold pull.rebase pull.ff push.default push.autosetupremote push.followtags
    fetch.prune fetch.prunetags fetch.parallel merge.ff merge.conflictstyle merge.log
    merge.renames merge.autostash merge.stat rebase.autostash rebase.autosquash
    rebase.updaterefs rebase.stat diff.renames diff.algorithm diff.colormoved
    diff.mnemonicprefix diff.noprefix diff.context diff.submodule diff.renamelimit
    diff.relative diff.indentheuristic commit.gpgsign commit.verbose commit.status
    commit.cleanup tag.gpgsign tag.sort branch.sort branch.autosetupmerge
    branch.autosetuprebase branch.*.remote branch.*.merge branch.*.description
    branch.*.pushremote remote.*.url remote.*.pushurl remote.*.fetch remote.*.push
    remote.*.prune remote.*.tagopt gc.auto gc.autodetach rerere.enabled rerere.autoupdate
    http.postbuffer http.sslverify protocol.version feature.manyfiles""")
# git config's long options: those that act first (an ambiguous abbreviation is refused)
_GIT_CONFIG_VALUES = ("--file", "--blob", "--type", "--default", "--comment", "--value", "--url")
_GIT_CONFIG_READS = ("--get", "--get-all", "--get-regexp", "--get-urlmatch", "--get-color",
                     "--get-colorbool", "--list", "--unset", "--unset-all", "--remove-section")
_GIT_CONFIG_OPTIONS = ("--edit", "--rename-section", *_GIT_CONFIG_VALUES, *_GIT_CONFIG_READS)
_SQLITE_VALUES = frozenset({"-cmd", "-init", "-separator", "-newline", "-nullvalue", "-vfs",
                            "-mmap", "-heap", "-maxsize", "-nonce", "-escape"})
_PSQL_LONG = ("--command", "--file", "--output", "--dbname", "--field-separator", "--host",
              "--log-file", "--port", "--pset", "--record-separator", "--table-attr",
              "--username", "--set", "--variable")
_PSQL_SHORT = {"c": "--command", "f": "--file", "o": "--output", "d": "--dbname",
               "F": "--field-separator", "h": "--host", "L": "--log-file", "p": "--port",
               "P": "--pset", "R": "--record-separator", "T": "--table-attr",
               "U": "--username", "v": "--variable"}
# psql: a shell escape, backquotes (run in meta-command arguments), the editor, output piped
# to a command, COPY to or from a program
_PSQL_RUNS = re.compile(r"\\(!)|(`)|\\(e|edit|ef|ev)(?![A-Za-z])|\\(o|out|g|gx|w|write)\s*\||"
                        r"\b(to|from)\s+program\b", re.I)
# Options whose whole name abbreviates a longer option above (`tar --checkpoint=10`).
_WHOLE_NAMES = frozenset({"--checkpoint"})
_VERSION = re.compile(r"[0-9.]+\Z")
# where a program comes from when it is not a file: stdin, or another file descriptor
_STDIN, _FD = "<stdin", "<fd"
_DESCRIPTOR = re.compile(r"(?:.*/)?(?:dev/(?:stdin|fd/([0-9]+))|proc/[^/]+/(?:task/[^/]+/)?fd/"
                         r"([0-9]+))")
_AWK_RISK = re.compile(r"system|\||>|@")
# gawk's long options that take a value (the first of an ambiguous abbreviation is the one
# that matters most), and those that write a file named in theirs
_AWK_LONG = ("--source", "--load", "--file", "--exec", "--include", "--assign",
             "--field-separator", "--dump-variables", "--pretty-print", "--profile", "--debug")
_AWK_WRITES = frozenset({"--dump-variables", "--pretty-print", "--profile"})
_MAKE_VALUES = "CfIoWjlO"  # make's short options with a value: the rest of the word or the next


@dataclass(frozen=True)
class Stdin:
    """What a command reads on stdin, as far as the line says: a file it names (`< prog.py`),
    a here-string's text, or neither (a pipe, a here-document, or what exec gives it: a
    background process's stdin is a pipe the model writes to)."""

    file: bool = False
    text: str | None = None


def reads_descriptor(path: str) -> bool:
    """Whether `path` names an open file descriptor (`/dev/stdin`, `/dev/fd/3`,
    `/proc/self/fd/0`), which may be a pipe, rather than a file."""
    return _descriptor(path) is not None


def _descriptor(path: str) -> str | None:
    """_STDIN for `-` and the names of descriptor 0, _FD for another descriptor, else None."""
    if path == "-":
        return _STDIN
    found = _DESCRIPTOR.fullmatch(os.path.normpath(path))
    if found is None:
        return None
    return _STDIN if (found.group(1) or found.group(2) or "0") == "0" else _FD


def names_of(name: str, program: str) -> frozenset[str]:
    """The names a program goes by (typed, found, real file), without version suffixes."""
    names = {os.path.basename(name)}
    if program.startswith("/"):
        names.add(os.path.basename(program))
        real = os.path.basename(os.path.realpath(program))
        if _VERSION.sub("", real) not in MULTICALL:
            names.add(real)
    return frozenset({_VERSION.sub("", n) or n for n in names})


def launcher_use(names: Iterable[str], args: list[Word], stdin: Stdin | None = None) -> str | None:
    """How this command runs another command (for the reason), or None. stdin: what it
    reads there, for the tools that take commands on it (None: an entry, no command)."""
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
        if name in _QUERY_TOOLS:
            return _query_tool(name, args, stdin)
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
    commands), `git config` setting such a key, a subcommand git does not have (an alias, or
    a `git-NAME` program), and subcommands that run a command they are given."""
    words = iter(args)
    for word in words:
        value = word.value or ""
        if value == "-c" or (value.startswith("-c") and len(value) > 2):
            return "runs commands set with `-c` (core.pager, aliases, ...)"
        if value in ("-C", "--git-dir", "--work-tree", "--namespace", "--super-prefix",
                     "--attr-source"):
            next(words, None)
        elif not value.startswith("-"):
            if value == "config":
                return _git_config(list(words))
            if value not in _GIT_COMMANDS:
                return f"may run an alias or a program named `git-{value}`"
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


def _git_config(args: list[Word]) -> str | None:
    """`git config` (old syntax, or `set`/`edit`/...) that sets a key not known to be
    harmless, opens an editor, or renames a section (`user` to `alias`)."""
    edit, rename = "opens an editor with `git config`", "renames a section with `git config`"
    positional: list[str] = []
    reading, words = False, iter(args)
    for word in words:
        value = word.value or ""
        if value == "--":
            positional += [w.value or "" for w in words]
        elif value.startswith("--"):
            option = _long(value, _GIT_CONFIG_OPTIONS)
            if option == "--edit":
                return edit
            if option == "--rename-section":
                return rename
            if option in _GIT_CONFIG_VALUES and "=" not in value:
                next(words, None)
            reading = reading or option in _GIT_CONFIG_READS
        elif value.startswith("-") and len(value) > 1:
            for i, letter in enumerate(value[1:], 2):
                if letter == "e":
                    return edit
                reading = reading or letter == "l"
                if letter == "f":
                    if not value[i:]:
                        next(words, None)
                    break
        else:
            positional.append(value)
    action = positional[0] if positional else ""
    if action == "edit":
        return edit
    if action == "rename-section":
        return rename
    if action == "set":
        key = positional[1] if len(positional) > 1 else None
    elif reading or action in ("get", "list", "unset", "remove-section") or len(positional) < 2:
        key = None
    else:
        key = action
    if key is None or any(fnmatch.fnmatchcase(key.lower(), k) for k in _GIT_HARMLESS_KEYS):
        return None
    return f"sets `{key}` with `git config`, a key that may name a program git runs"


def _query_tool(name: str, args: list[Word], stdin: Stdin | None) -> str | None:
    """sqlite3's and psql's commands that run programs, in the arguments or on stdin."""
    found, reads = _QUERY_TOOLS[name](args)
    if found is None and reads and stdin is not None and not stdin.file:
        if stdin.text is None:
            example = "`\\!`" if name == "psql" else "`.shell`"
            return f"may run a command given on its stdin ({example}, ...)"
        found = _query_runs(name, stdin.text)
    if found is None:
        return None
    if found.startswith("$"):
        return f"may run a command given in its arguments (`{found[1:]}`)"
    return "runs a command given in backquotes" if found == "`" else \
        f"runs a command given with `{found}`"


def _sqlite(args: list[Word]) -> tuple[str | None, bool]:
    """What in sqlite3's arguments runs a program (`.shell`, `.once |cmd`, `edit()`; `$x`
    if one expands), and whether it reads commands from stdin (no SQL argument, or -init
    from a descriptor)."""
    texts: list[str] = []
    databases, reads, safe, words = 0, False, False, iter(args)
    for word in words:
        value = word.value
        if value is None:
            return f"${word.source}", False
        if not value.startswith("-") or value == "-":
            databases += 1
            if databases > 1:
                texts.append(value)
            continue
        option = "-" + value.lstrip("-")
        if option == "-A":  # .archive and its arguments: no commands
            return None, False
        safe = (safe or option == "-safe") and option != "-nonce"
        for _ in range(2 if option in ("-lookaside", "-pagecache") else
                       option in _SQLITE_VALUES):
            given = next(words, None)
            if given is not None and given.value is None:
                return f"${given.source}", False
            text = given.value if given is not None else ""
            if option == "-cmd":
                texts.append(text)
            elif option == "-init" and _descriptor(text):
                reads = True
    if safe:  # safe mode refuses every command that runs one
        return None, False
    found = next(filter(None, (_query_runs("sqlite", t) for t in texts)), None)
    return found, reads or databases <= 1


def _psql(args: list[Word]) -> tuple[str | None, bool]:
    """What in psql's arguments runs a program (`\\!` in -c, `-o |cmd`; `$x` if one
    expands), and whether it reads commands from stdin (no -c or -f, or `-f -`)."""
    texts: list[str] = []
    named, reads, words = False, False, iter(args)
    for word in words:
        value = word.value
        if value is None:
            return f"${word.source}", False
        if value.startswith("--"):
            option = _long(value, _PSQL_LONG)
            tail = value.partition("=")[2] if "=" in value else None
        elif value.startswith("-") and len(value) > 1:
            letter = next((c for c in value[1:] if c in _PSQL_SHORT), None)
            option = _PSQL_SHORT.get(letter or "")
            tail = value[value.index(letter) + 1:] or None if letter else None
        else:
            continue
        if option is None:
            continue
        if tail is None:
            following = next(words, None)
            if following is not None and following.value is None:
                return f"${following.source}", False
            tail = following.value if following is not None else ""
        if option == "--command":
            texts.append(tail)
            named = True
        elif option == "--file":
            reads = reads or _descriptor(tail) is not None
            named = True
        elif option == "--output" and tail.startswith("|"):
            return "-o |", False
    found = next(filter(None, (_query_runs("psql", t) for t in texts)), None)
    return found, reads or not named


def _query_runs(name: str, text: str) -> str | None:
    """The command in sqlite3 or psql input that runs a program, or None."""
    if name == "psql":
        found = _PSQL_RUNS.search(text)
        if found is None:
            return None
        shell, quote, editor, pipe, program = found.groups()
        if pipe:
            return f"\\{pipe} |"
        return f"{program.lower()} program" if program else quote or f"\\{shell or editor}"
    found = re.search(r"\b(edit|load_extension)\s*\(", text, re.I)
    if found:
        return found.group(1).lower() + "("
    for line in text.splitlines():
        command = re.match(r"\s*\.(\S*)(.*)", line)
        if command is None:
            continue
        dot, rest = command.groups()
        runs = dot != "" and any(o.startswith(dot) for o in ("shell", "system", "load", "excel",
                                                               "www"))
        opens = dot != "" and any(o.startswith(dot) for o in ("once", "output")) and \
            re.search(r"(?:^|\s)-", rest) is not None  # -x, -e: a spreadsheet, an editor
        if runs or opens or re.search(r"(?:^|\s)['\"]?\|", rest):  # |cmd: a pipe
            return f".{dot}"
    return None


def inline_code(names: Iterable[str], args: list[Word], stdin: Stdin = Stdin()) -> str | None:
    """Why this command runs code written in its arguments or read from its stdin (for the
    reason), or None."""
    names = set(names)
    label = ""
    if names & {"python", "pypy", "ipython"}:
        label, found = "python", _source(args, _PYTHON)
    elif names & {"node", "nodejs", "bun"}:
        label, found = "node", _any(args, {"-e", "--eval", "-p", "--print", "-pe", "-ep"},
                                    ("--eval=", "--print=")) or _data_url(args) or (
            _named_stdin(args, "repl") if "bun" in names else _source(args, _NODE))
    elif "deno" in names:
        label, found = "deno", _any(args, {"eval", "--eval"}, ("--eval=",)) or _data_url(
            args) or _named_stdin(args, "repl", alone=True)
    elif names & {"ruby", "lua", "luajit"}:
        label = sorted(names & {"ruby", "lua", "luajit"})[0]
        found = _cluster(args, "e") or _source(args, _RUBY if label == "ruby" else _LUA)
    elif "perl" in names:
        label, found = "perl", _cluster(args, "eE") or _perl_modules(args) or _source(
            args, _PERL)
    elif "php" in names:
        label, found = "php", _any(args, {"-r", "--run", "-B", "--process-begin", "-R",
                                          "--process-code", "-E", "--process-end"},
                                   ()) or _php_streams(args) or _source(args, _PHP)
    elif names & {"Rscript", "R", "osascript"}:
        label = sorted(names & {"Rscript", "R", "osascript"})[0]
        found = _any(args, {"-e", "--expr"}, ()) or _source(
            args, {"Rscript": _RSCRIPT, "R": _R, "osascript": _OSASCRIPT}[label])
    elif "pwsh" in names:
        label, found = "pwsh", _pwsh(args)
    elif names & SHELLS:
        label = sorted(names & SHELLS)[0]
        found = _cluster(args, "c") or _any(args, {"--command"}, ()) or _source(
            args, _FISH if "fish" in names else _SHELL)
    elif names & {"awk", "gawk", "mawk", "nawk"}:
        label, found = "awk", _awk(args, stdin)
    elif names & {"sed", "gsed"}:
        label, found = "sed", _sed(args, stdin)
    elif names & {"make", "gmake"}:
        label, found = "make", _make(args)
    elif names & _QUERY_TOOLS.keys():  # commands in the arguments and here-strings: launchers
        tool = sorted(names & _QUERY_TOOLS.keys())[0]
        label = "sqlite3" if tool == "sqlite" else tool
        found = _STDIN if _QUERY_TOOLS[tool](args)[1] and stdin.text is None else None
    else:
        return None
    if found is None or (found == _STDIN and stdin.file):
        return None
    if found in (_STDIN, _FD):
        what = {"sed": "script", "make": "makefile", "sqlite3": "commands",
                "psql": "commands"}.get(label, "program")
        where = "stdin" if found == _STDIN else "a file descriptor"
        return f"inline code ({label} {what} from {where}){{where}} needs asking"
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


def _named_stdin(args: list[Word], repl: str, alone: bool = False) -> str | None:
    """A program read from `-` or a descriptor, or a REPL (`deno repl`; `deno` alone)."""
    for word in args:
        if word.value is None:
            return f"${word.source}"
        found = _descriptor(word.value)
        if found:
            return found
    positional = [w.value for w in args if w.value and not w.value.startswith("-")]
    return _STDIN if positional[:1] == [repl] or (alone and not positional) else None


def _perl_modules(args: list[Word]) -> str | None:
    """`-M`, `-m` and `-d:` become `use MODULE ...;` in the program: anything but a module
    name there (`-M'strict;system(...)'`) is code. What follows `=` is quoted."""
    for word in args:
        found = re.fullmatch(r"-[A-Za-z]*?([Mm]|dt?:)(.*)", word.value or "", re.S)
        if found and not re.fullmatch(r"-?[A-Za-z_][\w:]*(?:=.*)?", found.group(2), re.S):
            return f"-{found.group(1)}"
    return None


def _php_streams(args: list[Word]) -> str | None:
    """A script or prepended file that is a stream of code (`php://stdin`, `data:`), or the
    program's stdin or another descriptor."""
    for word in args:
        value = word.value or ""
        if re.search(r"php://|data:", value):
            return "php://" if "php:" in value else "data:"
        found = re.search(r"auto_(?:prepend|append)_file=(.*)", value)
        if found and _descriptor(found.group(1)):
            return _descriptor(found.group(1))
    return None


def _pwsh(args: list[Word]) -> str | None:
    """`-Command` and `-EncodedCommand` (any abbreviation, any case); with no `.ps1` file or
    with `-`, the program is read from stdin."""
    for word in args:
        if word.value is None:
            return f"${word.source}"
        low = word.value.lower()
        if len(low) > 1 and any(o.startswith(low) for o in (
                "-command", "-encodedcommand", "-commandwithargs", "-ec", "-cwa")):
            return word.value
    if any(w.value == "-" for w in args) or not any(
            (w.value or "").lower().endswith(".ps1") for w in args):
        return _STDIN
    return None


def _make(args: list[Word]) -> str | None:
    """`--eval` (`-E`), a makefile read from stdin (`-f -`), and variables set on the command
    line to make code (`SHELL=`, `$(shell`). Every word is looked at, an option's value too."""
    for number, word in enumerate(args):
        value = word.value
        if value is None:
            return f"${word.source}"
        following = args[number + 1].value if number + 1 < len(args) else ""
        option = _long(value, ("--eval", "--file", "--makefile"))
        if option == "--eval":
            return "--eval"
        if option:
            makefile: str | None = value.partition("=")[2] if "=" in value else following
            if makefile is None or _descriptor(makefile):
                return _descriptor(makefile) if makefile else "$an option value"
            continue
        if re.match(r"-[^-]", value):
            for i, letter in enumerate(value[1:], 2):
                if letter == "E":
                    return "-E"
                if letter == "f":
                    makefile = value[i:] or following
                    if makefile is None or _descriptor(makefile):
                        return _descriptor(makefile) if makefile else "$an option value"
                if letter in _MAKE_VALUES:
                    break
            continue
        name, eq, rest = value.partition("=")
        if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*[:+?!]?", name) and (
                name.rstrip(":+?!") in ("SHELL", ".SHELLFLAGS", "MAKEFLAGS", "MAKE")
                or re.search(r"[$`]", rest)):
            return value if len(value) <= 24 else value[:24] + "..."
    return None


def _program_file(given: str | None, stdin: Stdin, texts: list[str | None]) -> str | None:
    """For a program file an option names (`-f`): _STDIN or _FD when it is read from a
    descriptor that cannot be read here (a here-string's text is added to `texts`, to be
    checked with the rest), `$...` when it expands, else None."""
    if given is None:
        return "$an option value"
    found = _descriptor(given)
    if found == _STDIN and stdin.text is not None:
        texts.append(stdin.text)
        return None
    return None if found == _STDIN and stdin.file else found


def _cluster(args: list[Word], letters: str) -> str | None:
    """A short option cluster with one of `letters` (`-e`, `-ne`, `-lc`)."""
    for word in args:
        if word.value is None:
            return f"${word.source}"
        if re.fullmatch(rf"-[A-Za-z0-9]*[{letters}].*", word.value, re.S):
            return word.value if len(word.value) <= 4 else word.value[:4]
    return None


@dataclass(frozen=True)
class _Interpreter:
    """How an interpreter's options say where its program comes from. Short options may be
    in clusters (`-Sc`); one with a value takes the rest of its word or the next word."""

    inline: frozenset[str] = frozenset()  # the value is the program (`-c`, `--eval`)
    values: frozenset[str] = frozenset()  # other options with a value
    rest: frozenset[str] = frozenset()  # a value only in the rest of the word (`-i.bak`)
    preload: frozenset[str] = frozenset()  # the value is a file of code run too (`-r`)
    program: frozenset[str] = frozenset()  # the value is the program file (`-f`)
    ends: frozenset[str] = frozenset()  # it runs a module or checks syntax: no program to read
    stops: frozenset[str] = frozenset()  # the words after are arguments (R's `--args`)
    info: frozenset[str] = frozenset()  # it prints something and exits
    info_alone: frozenset[str] = frozenset()  # that, unless a program is named (`ruby -v`)
    interactive: frozenset[str] = frozenset()  # it reads code from stdin after the program
    stdin: frozenset[str] = frozenset()  # it reads the program from stdin (`sh -s`)
    script: bool = True  # the first word that is not an option is the program file
    reads_stdin: bool = True  # with no program named, it reads one from stdin
    dash_ends: bool = False  # a lone `-` ends the options (shells), not names stdin
    signs: tuple[str, ...] = ("-",)
    # Long options known to take no value, by prefix; any other may take the next word (node
    # hands options it does not know to V8, whose options may). None: all others take none.
    flags: tuple[str, ...] | None = None


def _source(args: list[Word], spec: _Interpreter) -> str | None:
    """Where the program comes from: an inline option (`-c`), _STDIN, _FD, `$word` (cannot
    tell), or None (a file or module it names, or no program at all)."""
    words = iter(args)
    interactive = alone = stopped = False
    for word in words:
        value = word.value
        if value is None:
            return f"${word.source}"
        if value == "--" or (value == "-" and spec.dash_ends):
            following = next(words, None)
            return _STDIN if following is None else _script(following, interactive)
        if value == "-" or not value.startswith(spec.signs):
            if spec.script:
                return _script(word, interactive)
            continue
        if value.startswith("--"):
            name, eq, tail = value.partition("=")
            if spec.flags is not None:  # node reads `--a_b` as `--a-b`
                name = name.replace("_", "-")
            cluster = [(name, tail if eq else "")]
        else:
            cluster = [(value[0] + c, value[i:]) for i, c in enumerate(value[1:], 2)]
        for option, tail in cluster:
            if option in spec.info or option in spec.ends:
                return None
            if option in spec.inline:
                return option
            if option in spec.stdin:
                return _STDIN
            stopped = option in spec.stops
            interactive = interactive or option in spec.interactive
            alone = alone or option in spec.info_alone
            loose = option.startswith("--") and spec.flags is not None and \
                not option.startswith(spec.flags)
            if stopped or option in spec.rest:
                break
            if loose or option in spec.values | spec.preload | spec.program:
                given: str | None = tail
                if not tail:
                    following = next(words, None)
                    given = following.value if following else ""
                if loose or option in spec.preload | spec.program:
                    found = _descriptor(given) if given is not None else f"${option}"
                    if found or option in spec.program:
                        return found
                break
        if stopped:
            break
    return _STDIN if (spec.reads_stdin or interactive) and not alone else None


def _script(word: Word, interactive: bool) -> str | None:
    if word.value is None:
        return f"${word.source}"
    return _descriptor(word.value) or (_STDIN if interactive else None)


_PYTHON = _Interpreter(
    inline=_options("-c"), ends=_options("-m"), values=_options("-W -X --check-hash-based-pycs"),
    interactive=_options("-i"),
    info=_options("-h -? -V --help --help-env --help-xoptions --help-all --version"))
_PERL = _Interpreter(
    inline=_options("-e -E"), values=_options("-I"), rest=_options("-M -m -d -x -i -0 -l -C -D -F"),
    interactive=_options("-d"), info=_options("-v -V -h"))
_RUBY = _Interpreter(
    inline=_options("-e"), preload=_options("-r"),
    values=_options("-I -C -E --enable --disable --encoding --external-encoding "
                    "--internal-encoding --dump --backtrace-limit"),
    rest=_options("-F -0 -x -T -W -i -K"), info=_options("-h --help --version --copyright"),
    info_alone=_options("-v"))
_LUA = _Interpreter(inline=_options("-e"), values=_options("-l"), interactive=_options("-i"),
                    info_alone=_options("-v"))
_PHP = _Interpreter(
    inline=_options("-r -B -R -E"), program=_options("-f -F"),
    values=_options("-c -d -t -z -S --rf --rc --re --rz --ri"), interactive=_options("-a"),
    ends=_options("-l -s -w -S"), info=_options("-h -v -i -m --ini"))
_RSCRIPT = _Interpreter(inline=_options("-e"), info=_options("--help --version"),
                        reads_stdin=False)
_R = _Interpreter(inline=_options("-e"), program=_options("-f --file"), values=_options("-d -g"),
                  stops=_options("--args"), info=_options("-h --help --version"), script=False)
_OSASCRIPT = _Interpreter(inline=_options("-e"), values=_options("-l -s"))
_NODE = _Interpreter(
    inline=_options("-e -p --eval --print"), preload=_options(
        "-r --require --import --loader --experimental-loader"),
    values=_options(
        "-C --conditions --allow-fs-read --allow-fs-write --build-snapshot-config "
        "--cpu-prof-dir --cpu-prof-interval --cpu-prof-name --diagnostic-dir --disable-proto "
        "--disable-warning --dns-result-order --env-file --env-file-if-exists "
        "--experimental-default-type --experimental-policy --experimental-sea-config "
        "--experimental-config-file --heap-prof-dir --heap-prof-interval --heap-prof-name "
        "--heapsnapshot-near-heap-limit --heapsnapshot-signal --icu-data-dir --input-type "
        "--inspect-port --debug-port --inspect-publish-uid --localstorage-file "
        "--max-http-header-size --openssl-config --policy-integrity --redirect-warnings "
        "--report-directory --report-dir --report-filename --report-signal --secure-heap "
        "--secure-heap-min --snapshot-blob --test-concurrency --test-name-pattern "
        "--test-skip-pattern --test-reporter --test-reporter-destination --test-shard "
        "--test-timeout --title --tls-cipher-list --tls-keylog --trace-event-categories "
        "--trace-event-file-pattern --trace-require-module --unhandled-rejections "
        "--use-largepages --v8-pool-size --watch-path"),
    interactive=_options("-i --interactive"),
    ends=_options("-c --check --test --run --prof-process"),
    info=_options("-h -v --help --version --v8-options --completion-bash"),
    flags=("--no-", "--experimental-", "--trace-", "--tls-", "--allow-", "--enable-",
           "--expose", "--report-", "--test-", "--inspect", "--heap-prof", "--cpu-prof",
           "--prof", "--watch", "--preserve-symlinks", "--use-", "--openssl-", "--force-",
           "--harmony", "--frozen-intrinsics", "--jitless", "--pending-deprecation",
           "--throw-deprecation", "--abort-on-uncaught-exception", "--insecure-http-parser",
           "--zero-fill-buffers", "--disallow-code-generation-from-strings",
           "--track-heap-objects", "--huge-max-old-generation-size", "--node-memory-debug",
           "--interpreted-frames-native-stack", "--build-snapshot", "--entry-url",
           "--disable-wasm-trap-handler"))
_SHELL = _Interpreter(
    inline=_options("-c"), values=_options("-o +o -O +O --rcfile --init-file"),
    stdin=_options("-s"), info=_options("--help --version"), dash_ends=True, signs=("-", "+"))
_FISH = _Interpreter(
    inline=_options("-c -C --command --init-command"), values=_options("-d --debug -o "
                                                                      "--debug-output"),
    info=_options("-h -v --help --version"))



def _value(words: Iterator[Word], tail: str) -> str | None:
    """An option's value: the rest of its word, else the next word (None if it expands)."""
    if tail:
        return tail
    word = next(words, None)
    return None if word is None else word.value


def _awk(args: list[Word], stdin: Stdin) -> str | None:
    """An awk program (inline, -e, --source, -W source=, a here-string read with `-f -`) that
    runs commands (`system`, `|`), writes files (`>`, a file for --profile and the like) or
    loads extensions (`@load`, -l); a program read from stdin otherwise, or gawk's debugger
    (-D), which reads commands there. Options are looked for in every argument, as getopt
    permutes them."""
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
            if option == "--debug":
                found = _program_file(rest if eq else "-", stdin, programs)
                if found:
                    return found
                continue
            given = rest if eq else _value(words, "") if option else None
            if option == "--source":
                programs.append(given)
            elif option in ("--file", "--exec", "--include"):
                found = _program_file(given, stdin, programs)
                if found:
                    return found
            from_file = from_file or option in ("--file", "--exec")
            continue
        for i, letter in enumerate(value[1:], 2):
            if letter == "l":
                return "-l"
            if letter in "efEivF":
                given = _value(words, value[i:])
                if letter == "e":
                    programs.append(given)
                elif letter in "fEi":
                    found = _program_file(given, stdin, programs)
                    if found:
                        return found
                from_file = from_file or letter in "fE"
                break
            if letter in "dopDL":  # an optional value: the rest of the word
                if value[i:] and letter in "dop":
                    return f"-{letter}"
                found = _program_file(value[i:] or "-", stdin, programs) if letter == "D" \
                    else None
                if found:
                    return found
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


def _sed(args: list[Word], stdin: Stdin) -> str | None:
    """A sed script with a command that runs commands or writes files (GNU `e`, `w`, `W`,
    the `e` and `w` flags of `s`); a script that cannot be read counts as one, and one read
    from stdin (`-f -`) is checked only when it is a here-string."""
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
                elif found := _program_file(given, stdin, scripts):
                    return found
                from_file = from_file or option == "--file"
            elif option == "--line-length" and not eq:
                next(words, None)
        else:
            for i, letter in enumerate(value[1:], 2):
                if letter in "efl":
                    given = _value(words, value[i:])
                    if letter == "e":
                        scripts.append(given)
                    elif letter == "f" and (found := _program_file(given, stdin, scripts)):
                        return found
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


_QUERY_TOOLS = {"sqlite": _sqlite, "psql": _psql}  # by name: `sqlite3` is sqlite version 3
