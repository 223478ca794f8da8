"""Arguments and inputs that are code, for the exec allowlist.

Inline code is a program text in the arguments (`python -c`, `node -e`, `perl -e`, `bash -c`,
an awk program that calls `system` or pipes, a GNU sed script with `e` or `w`, `make
SHELL=...`) or on stdin (`echo ... | python3`, `sed -f -`, a here-document): what it does
cannot be told from the entry that allows the interpreter. A long option counts also
abbreviated, as getopt_long reads it (`tar --to-comm=...`). The names looked at are those of
programs.names_of: typed, found, and the real file (unless that is a multi-call binary such
as busybox, which acts on argv[0]), without version suffixes (`python3.12` is `python`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fased.tools.launchers import QUERY_TOOLS, SHELLS
from fased.tools.programs import (
    FD,
    NO_STDIN,
    STDIN,
    Stdin,
    descriptor,
    long_option,
    option_set,
    option_value,
)
from fased.tools.shellsplit import Word

_AWK_RISK = re.compile(r"system|\||>|@")
# gawk's long options that take a value (the first of an ambiguous abbreviation is the one
# that matters most), and those that write a file named in theirs
_AWK_LONG = ("--source", "--load", "--file", "--exec", "--include", "--assign",
             "--field-separator", "--dump-variables", "--pretty-print", "--profile", "--debug")
_AWK_WRITES = frozenset({"--dump-variables", "--pretty-print", "--profile"})
_MAKE_VALUES = "CfIoWjlO"  # make's short options with a value: the rest of the word or the next


def inline_code(names: Iterable[str], args: list[Word], stdin: Stdin = NO_STDIN) -> str | None:
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
    elif names & QUERY_TOOLS.keys():  # commands in the arguments and here-strings: launchers
        tool = sorted(names & QUERY_TOOLS.keys())[0]
        label = "sqlite3" if tool == "sqlite" else tool
        found = STDIN if QUERY_TOOLS[tool](args)[1] and stdin.text is None else None
    else:
        return None
    if found is None or (found == STDIN and stdin.file):
        return None
    if found in (STDIN, FD):
        what = {"sed": "script", "make": "makefile", "sqlite3": "commands",
                "psql": "commands"}.get(label, "program")
        where = "stdin" if found == STDIN else "a file descriptor"
        return f"inline code ({label} {what} from {where}){{where}} needs asking"
    if found.startswith("$"):
        return (f"cannot tell whether `{label}`{{where}} is given inline code "
                f"(`{found[1:]}`); it needs asking")
    return f"inline code ({label} {found}){{where}} needs asking"


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
        found = descriptor(word.value)
        if found:
            return found
    positional = [w.value for w in args if w.value and not w.value.startswith("-")]
    return STDIN if positional[:1] == [repl] or (alone and not positional) else None


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
        if found and descriptor(found.group(1)):
            return descriptor(found.group(1))
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
        return STDIN
    return None


def _make(args: list[Word]) -> str | None:
    """`--eval` (`-E`), a makefile read from stdin (`-f -`), and variables set on the command
    line to make code (`SHELL=`, `$(shell`). Every word is looked at, an option's value too."""
    for number, word in enumerate(args):
        value = word.value
        if value is None:
            return f"${word.source}"
        following = args[number + 1].value if number + 1 < len(args) else ""
        option = long_option(value, ("--eval", "--file", "--makefile"))
        if option == "--eval":
            return "--eval"
        if option:
            makefile: str | None = value.partition("=")[2] if "=" in value else following
            if makefile is None or descriptor(makefile):
                return descriptor(makefile) if makefile else "$an option value"
            continue
        if re.match(r"-[^-]", value):
            for i, letter in enumerate(value[1:], 2):
                if letter == "E":
                    return "-E"
                if letter == "f":
                    makefile = value[i:] or following
                    if makefile is None or descriptor(makefile):
                        return descriptor(makefile) if makefile else "$an option value"
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
    """For a program file an option names (`-f`): STDIN or FD when it is read from a
    descriptor that cannot be read here (a here-string's text is added to `texts`, to be
    checked with the rest), `$...` when it expands, else None."""
    if given is None:
        return "$an option value"
    found = descriptor(given)
    if found == STDIN and stdin.text is not None:
        texts.append(stdin.text)
        return None
    return None if found == STDIN and stdin.file else found


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
    """Where the program comes from: an inline option (`-c`), STDIN, FD, `$word` (cannot
    tell), or None (a file or module it names, or no program at all)."""
    words = iter(args)
    interactive = alone = stopped = False
    for word in words:
        value = word.value
        if value is None:
            return f"${word.source}"
        if value == "--" or (value == "-" and spec.dash_ends):
            following = next(words, None)
            return STDIN if following is None else _script(following, interactive)
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
                return STDIN
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
                    found = descriptor(given) if given is not None else f"${option}"
                    if found or option in spec.program:
                        return found
                break
        if stopped:
            break
    return STDIN if (spec.reads_stdin or interactive) and not alone else None


def _script(word: Word, interactive: bool) -> str | None:
    if word.value is None:
        return f"${word.source}"
    return descriptor(word.value) or (STDIN if interactive else None)


_PYTHON = _Interpreter(
    inline=option_set("-c"), ends=option_set("-m"),
    values=option_set("-W -X --check-hash-based-pycs"),
    interactive=option_set("-i"),
    info=option_set("-h -? -V --help --help-env --help-xoptions --help-all --version"))
_PERL = _Interpreter(
    inline=option_set("-e -E"), values=option_set("-I"),
    rest=option_set("-M -m -d -x -i -0 -l -C -D -F"),
    interactive=option_set("-d"), info=option_set("-v -V -h"))
_RUBY = _Interpreter(
    inline=option_set("-e"), preload=option_set("-r"),
    values=option_set("-I -C -E --enable --disable --encoding --external-encoding "
                      "--internal-encoding --dump --backtrace-limit"),
    rest=option_set("-F -0 -x -T -W -i -K"), info=option_set("-h --help --version --copyright"),
    info_alone=option_set("-v"))
_LUA = _Interpreter(inline=option_set("-e"), values=option_set("-l"),
                    interactive=option_set("-i"), info_alone=option_set("-v"))
_PHP = _Interpreter(
    inline=option_set("-r -B -R -E"), program=option_set("-f -F"),
    values=option_set("-c -d -t -z -S --rf --rc --re --rz --ri"), interactive=option_set("-a"),
    ends=option_set("-l -s -w -S"), info=option_set("-h -v -i -m --ini"))
_RSCRIPT = _Interpreter(inline=option_set("-e"), info=option_set("--help --version"),
                        reads_stdin=False)
_R = _Interpreter(inline=option_set("-e"), program=option_set("-f --file"),
                  values=option_set("-d -g"),
                  stops=option_set("--args"), info=option_set("-h --help --version"), script=False)
_OSASCRIPT = _Interpreter(inline=option_set("-e"), values=option_set("-l -s"))
_NODE = _Interpreter(
    inline=option_set("-e -p --eval --print"), preload=option_set(
        "-r --require --import --loader --experimental-loader"),
    values=option_set(
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
    interactive=option_set("-i --interactive"),
    ends=option_set("-c --check --test --run --prof-process"),
    info=option_set("-h -v --help --version --v8-options --completion-bash"),
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
    inline=option_set("-c"), values=option_set("-o +o -O +O --rcfile --init-file"),
    stdin=option_set("-s"), info=option_set("--help --version"), dash_ends=True, signs=("-", "+"))
_FISH = _Interpreter(
    inline=option_set("-c -C --command --init-command"),
    values=option_set("-d --debug -o --debug-output"),
    info=option_set("-h -v --help --version"))


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
            wide = option_value(words, value[2:])
            if wide is None:
                return "$an option value"
            typed = "--" + wide.partition("=")[0]
            option = long_option(typed, _AWK_LONG)
            if option and option != typed:  # mawk reads -W abbreviations its own way
                return f"$-W {typed[2:]}"
            value = "--" + wide
        if value.startswith("--"):
            option = long_option(value, _AWK_LONG)
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
            given = rest if eq else option_value(words, "") if option else None
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
                given = option_value(words, value[i:])
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
            option = long_option(value, ("--expression", "--file", "--line-length"))
            _, eq, rest = value.partition("=")
            if option in ("--expression", "--file"):
                given = rest if eq else option_value(words, "")
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
                    given = option_value(words, value[i:])
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
