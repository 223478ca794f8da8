"""Read a `/bin/sh -c` command line into the simple commands it can run (for the allowlist).

Not a shell, and not shlex: shlex knows neither `$( )`, backticks, here-documents, `\\`-newline
nor quoting inside a substitution, and its punctuation mode cuts `2>&1` wrongly. This is a
conservative reader of POSIX sh plus the bash forms models write (`&>`, `<<<`, `<( )`,
`$'...'`). It finds every simple command: those joined by `;`, `&`, `&&`, `||`, `|` and
newlines, inside `( )` and `{ }`, `if`/`while`/`until`/`for` bodies, and inside `$( )`,
backticks and process substitutions at any depth (also in double quotes, `${...}` and
unquoted here-documents). What it cannot follow for certain raises `Unsure` with the reason:
unclosed quotes, `case`, function definitions, `[[`, `((`, arithmetic on variables. A word
that expands (`$x`, `$(...)`, an unquoted glob or brace list) has no static value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fased.tools.shellwords import BREAK, MAX_DEPTH, NAME, Lexer, Unsure, Word

__all__ = ["Command", "Redirect", "Script", "Unsure", "Word", "split", "words"]

OPERATORS = ("&&", "||", ";;&", ";;", ";&", "|&", "&>>", "&>", "<<<", "<<-", "<<", ">>",
             "<&", ">&", "<>", ">|", "((", ";", "&", "|", "(", ")", "<", ">")
REDIRECTIONS = frozenset({"<", ">", ">>", "<>", ">|", "&>", "&>>", "<&", ">&", "<<", "<<-",
                          "<<<"})
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\+?=")
_OPENERS = {"if": "fi", "while": "done", "until": "done", "{": "}"}
_MIDDLES = {"then": "fi", "elif": "fi", "else": "fi", "do": "done"}
_UNSUPPORTED = {
    "case": "`case ... esac`", "select": "`select`", "function": "a function definition",
    "coproc": "`coproc`", "[[": "`[[ ... ]]`", "]]": "`]]`", "in": "a stray `in`",
    "esac": "a stray `esac`",
}
_IO_NUMBER = re.compile(r"[0-9]+(?=[<>])")
_BLANKS = re.compile(r"(?:[ \t]|\\\n)*")


@dataclass
class Redirect:
    op: str
    target: Word


@dataclass
class Command:
    """A simple command: NAME=value words before it, its words, its redirections."""

    start: int
    assigns: list[Word] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)
    text: str = ""


@dataclass
class Script:
    """Every simple command of a line, in the order they would start (a substitution before
    the command it is in), and the variables the line sets in the shell itself (standalone
    `x=1`, `for x in`, `${x:=...}`)."""

    commands: list[Command]
    sets: list[str]


def split(text: str) -> Script:
    """The simple commands `text` can run; raises Unsure for anything it cannot follow."""
    state = _State()
    _Parser(text, state, 0, 0).script()
    return Script(state.commands, state.sets)


def words(text: str) -> list[Word]:
    """`text` as shell words and nothing else (an allowlist entry); raises Unsure for an
    operator or a newline in it."""
    parser = _Parser(text, _State(), 0, 0)
    out = []
    while (token := parser.token()) is not None:
        if not isinstance(token, Word):
            raise Unsure(f"`{token.strip() or 'a newline'}` is an operator: an entry is one "
                         "command")
        out.append(token)
    return out


class _State:
    """What every parser of one line adds to, at every depth."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.sets: list[str] = []


class _Op(str):
    """An operator token; `fd` is the number written before a redirection (`2>`)."""

    fd: str = ""


class _Parser(Lexer):
    def __init__(self, text: str, state: _State, depth: int, offset: int):
        super().__init__(text, depth, offset)
        self.state = state

    def inner(self, text: str, offset: int) -> _Parser:
        return _Parser(text, self.state, self.depth + 1, offset)

    def sets_variable(self, name: str) -> None:
        self.state.sets.append(name)

    # -- the grammar, flattened: every simple command is recorded wherever it is -------------

    def script(self) -> None:
        self.commands(None)
        if self.heredocs:
            raise Unsure(f"the here-document has no end line `{self.heredocs[0][0]}`")

    def commands(self, closer: str | None) -> None:
        """Read commands until the end of the text, or until `)` when closer is ")"."""
        if self.depth > MAX_DEPTH:
            raise Unsure("it is nested too deeply to check")
        stack: list[str] = []
        cmd: Command | None = None
        mode = "start"  # start: a command may begin; args: in one; after: a group ended
        need = False  # an operator such as && was read: a command must follow

        def finish() -> None:
            nonlocal cmd
            if cmd is not None:
                cmd.text = self.text[cmd.start - self.offset:start].strip()
                if not cmd.words:
                    self.state.sets.extend(_ASSIGNMENT.match(a.source)[1] for a in cmd.assigns)
                self.state.commands.append(cmd)
            cmd = None

        while True:
            start = self.pos
            token = self.token()
            if token is None or token == ")":
                finish()
                if stack:
                    raise Unsure(f"`{stack[-1]}` is missing")
                if need:
                    raise Unsure("an operator at the end has no command after it")
                if token is None and closer is not None:
                    raise Unsure("a `(` or `$(` is not closed")
                if token == ")" and closer is None:
                    raise Unsure("a `)` has no `(`")
                return
            if isinstance(token, Word):
                keyword = token.value if not token.quoted and token.value else None
                if mode != "args" and cmd is None and keyword in _UNSUPPORTED:
                    raise Unsure(f"{_UNSUPPORTED[keyword]} is not checked")
                if mode != "args" and cmd is None and keyword in (
                        *_OPENERS, *_MIDDLES, "fi", "done", "}", "!", "for"):
                    self.keyword(keyword, stack)
                    mode = "after" if keyword in ("fi", "done", "}") else "start"
                    need = keyword not in ("fi", "done", "}")
                    continue
                if mode == "after":
                    raise Unsure(f"`{token.source}` after a group is not understood")
                if cmd is None:
                    cmd = Command(start + self.offset)
                if not cmd.words and _ASSIGNMENT.match(token.source):
                    cmd.assigns.append(token)
                else:
                    cmd.words.append(token)
                    mode = "args"
                need = False
            elif token in REDIRECTIONS:
                target = self.token()
                if not isinstance(target, Word):
                    raise Unsure(f"`{token}` has no file after it")
                if token in ("<<", "<<-"):
                    self.here_document(target, token == "<<-")
                if token in ("&>", "&>>") and self.word_follows():
                    # sh reads `&` and `>`: the words after the file are a command
                    raise Unsure(f"`{token}` followed by more words is read differently by "
                                 "sh and bash")
                if cmd is None:
                    cmd = Command(start + self.offset)
                cmd.redirects.append(Redirect(str(token), target))
            elif token in (";", "&", "\n"):
                if token != "\n" and (need or (cmd is None and mode == "start")):
                    raise Unsure(f"`{token}` has no command before it")
                finish()
                mode = "start"
            elif token in ("&&", "||", "|", "|&"):
                if need or (cmd is None and mode == "start"):
                    raise Unsure(f"`{token}` has no command before it")
                finish()
                mode, need = "start", True
            elif token == "(":
                if cmd is not None:
                    first = cmd.words[0].source if cmd.words else "it"
                    raise Unsure(f"`{first}(` (a function definition) is not checked")
                if mode != "start":
                    raise Unsure("a `(` after a group is not understood")
                self.nested(")")
                mode, need = "after", False
            elif token == "((":
                raise Unsure("`((` (arithmetic, or two subshells) is not checked")
            else:
                raise Unsure(f"`{token}` is not checked")

    def word_follows(self) -> bool:
        """Whether the next token is a word (looked at, not read)."""
        pos = _BLANKS.match(self.text, self.pos).end()
        return pos < len(self.text) and self.text[pos] not in BREAK | {"#"} and not \
            _IO_NUMBER.match(self.text, pos)

    def nested(self, closer: str) -> None:
        """Commands inside `( )`, `$( )` or `<( )`, read from here to the matching `)`."""
        self.depth += 1
        try:
            self.commands(closer)
        finally:
            self.depth -= 1

    def keyword(self, word: str, stack: list[str]) -> None:
        if word in ("fi", "done", "}"):
            if not stack or stack.pop() != word:
                raise Unsure(f"`{word}` has nothing to close")
        elif word in _MIDDLES:
            if not stack or stack[-1] != _MIDDLES[word]:
                raise Unsure(f"`{word}` is out of place")
        elif word == "for":
            self.for_head()
            stack.append("done")
        elif word in _OPENERS:
            stack.append(_OPENERS[word])
        if len(stack) > MAX_DEPTH:
            raise Unsure("it is nested too deeply to check")

    def for_head(self) -> None:
        """`for NAME [in WORDS]`, up to the `;` or newline before `do`."""
        name = self.token()
        if not isinstance(name, Word) or not name.value or not NAME.fullmatch(name.value):
            raise Unsure("`for` without a variable name is not checked")
        self.state.sets.append(name.value)
        token = self.token()
        while token == "\n":
            token = self.token()
        if isinstance(token, Word) and token.value == "in" and not token.quoted:
            token = self.token()
            while isinstance(token, Word):  # substitutions in them are recorded as read
                token = self.token()
        if token not in (";", "\n"):
            if isinstance(token, Word) and token.value == "do":
                raise Unsure("`for ... do` without `;` before `do` is not checked")
            raise Unsure("this `for` is not understood")

    # -- tokens ---------------------------------------------------------------------------

    def token(self) -> Word | _Op | None:
        """The next word or operator (a newline is one); None at the end."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c in " \t":
                self.pos += 1
            elif text.startswith("\\\n", self.pos):
                self.pos += 2
            elif c == "#":
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                break
        if self.pos >= n:
            return None
        c = text[self.pos]
        if c == "\n":
            self.pos += 1
            self.read_here_documents()
            return _Op("\n")
        if text.startswith(("<(", ">("), self.pos):
            return self.word()
        digits = _IO_NUMBER.match(text, self.pos)
        fd = ""
        if digits:
            fd = digits.group()
            self.pos += len(fd)
        for op in OPERATORS:
            if text.startswith(op, self.pos):
                self.pos += len(op)
                token = _Op(op)
                token.fd = fd
                return token
        return self.word()
