"""Programs that run other programs, for the exec allowlist.

A launcher runs whatever command it is given (`sudo`, `env`, `xargs`, a shell, ...), or
does with some option or subcommand (`find -exec`, `rsync -e`, `git -c`, `git rebase -x`,
`uv run`, `npm exec`), or through its own syntax (`git config alias.x '!cmd'`, a git alias,
sqlite3's `.shell`, psql's `\\!`). A long option counts also abbreviated, as getopt_long reads
it. The names looked at are those of programs.names_of.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator

from fased.tools.programs import Stdin, descriptor, long_option, matched_option, option_set
from fased.tools.shellsplit import Word

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
_GIT_COMMANDS = option_set("""
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
_GIT_HARMLESS_KEYS = option_set("""
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
        if name in QUERY_TOOLS:
            return _query_tool(name, args, stdin)
        options = RUNS_COMMANDS.get(name)
        if options:
            for word in args:
                if word.value is None:
                    return f"may run a command given in its arguments (`{word.source}`)"
                hit = matched_option(word.value, options)
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
            hit = next((o for o in options for r in rest
                        if matched_option(r, (o,)) or r == o), None)
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
            option = long_option(value, _GIT_CONFIG_OPTIONS)
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
    found, reads = QUERY_TOOLS[name](args)
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


def _next_text(words: Iterator[Word]) -> tuple[str, str | None]:
    """An option's value in the next word: its text ("" when there is none), and the
    word's source when it expands (what it says cannot be known), else None."""
    word = next(words, None)
    if word is None:
        return "", None
    return ("", word.source) if word.value is None else (word.value, None)


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
            text, expands = _next_text(words)
            if expands is not None:
                return f"${expands}", False
            if option == "-cmd":
                texts.append(text)
            elif option == "-init" and descriptor(text):
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
            option = long_option(value, _PSQL_LONG)
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
            tail, expands = _next_text(words)
            if expands is not None:
                return f"${expands}", False
        if option == "--command":
            texts.append(tail)
            named = True
        elif option == "--file":
            reads = reads or descriptor(tail) is not None
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


QUERY_TOOLS = {"sqlite": _sqlite, "psql": _psql}  # by name: `sqlite3` is sqlite version 3
