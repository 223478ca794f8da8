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

MAX_DEPTH = 40  # nesting of substitutions and groups; deeper input is refused, not recursed
OPERATORS = ("&&", "||", ";;&", ";;", ";&", "|&", "&>>", "&>", "<<<", "<<-", "<<", ">>",
             "<&", ">&", "<>", ">|", "((", ";", "&", "|", "(", ")", "<", ">")
REDIRECTIONS = frozenset({"<", ">", ">>", "<>", ">|", "&>", "&>>", "<&", ">&", "<<", "<<-",
                          "<<<"})
_BREAK = frozenset(" \t\n;&|()<>")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\+?=")
_SPECIAL_PARAM = "@*#?-$!0123456789"
_OPENERS = {"if": "fi", "while": "done", "until": "done", "{": "}"}
_MIDDLES = {"then": "fi", "elif": "fi", "else": "fi", "do": "done"}
_UNSUPPORTED = {
    "case": "`case ... esac`", "select": "`select`", "function": "a function definition",
    "coproc": "`coproc`", "[[": "`[[ ... ]]`", "]]": "`]]`", "in": "a stray `in`",
    "esac": "a stray `esac`",
}
_IO_NUMBER = re.compile(r"\d+(?=[<>])")
_BLANKS = re.compile(r"(?:[ \t]|\\\n)*")
_ANSI_C = re.compile(r"\$'(?:[^'\\]|\\.)*'", re.S)
_PARAMETER = re.compile(r"[#!]?([A-Za-z_][A-Za-z0-9_]*|\d+|[@*#?$!-])")
_NUMERIC_INDEX = re.compile(r"\[[@*\d]\d*\]|\[|:(?![-=?+])")
_NUMERIC_TAIL = re.compile(r"[\d\s:+\-*/()\[\]]*\}")
_ARITHMETIC_OK = re.compile(r"[\d\s+\-*/%()<>=!&|^~?:]*")


class Unsure(Exception):
    """The line holds something this reader cannot follow for certain; the reason says what."""


@dataclass
class Word:
    """One shell word: as written; its value after quote removal, None when it expands (a
    substitution, or an unquoted glob or brace list the shell turns into other words); an
    fnmatch pattern with the quoted characters escaped; its first `$`/backtick expansion."""

    source: str
    value: str | None
    pattern: str
    quoted: bool
    expansion: str | None = None
    glob: bool = False


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


class _Parser:
    def __init__(self, text: str, state: _State, depth: int, offset: int):
        if depth > MAX_DEPTH:
            raise Unsure("it is nested too deeply to check")
        self.text, self.state, self.depth, self.offset = text, state, depth, offset
        self.pos = 0
        self.heredocs: list[tuple[str, bool, bool]] = []  # delimiter, quoted, strip tabs

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
        return pos < len(self.text) and self.text[pos] not in _BREAK | {"#"} and not \
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
        if not isinstance(name, Word) or not name.value or not _NAME.fullmatch(name.value):
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

    def word(self) -> Word:
        """One word from here: quoting, escapes and expansions followed to their ends."""
        text, n, start = self.text, len(self.text), self.pos
        value: list[str] = []
        pattern: list[str] = []
        bare: list[str] = []  # unquoted characters, "\0" for anything else: globs, braces
        expansion: str | None = None
        quoted = False
        while self.pos < n:
            c = text[self.pos]
            if c in _BREAK and not (self.pos == start and text.startswith(("<(", ">("), start)):
                break
            if c == "\\":
                if text.startswith("\\\n", self.pos):
                    self.pos += 2
                    continue
                if self.pos + 1 >= n:
                    raise Unsure("it ends with a backslash")
                value.append(text[self.pos + 1])
                pattern.append(_escape(text[self.pos + 1]))
                bare.append("\0")
                quoted = True
                self.pos += 2
            elif c == "'":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise Unsure("a ' quote is not closed")
                chunk = text[self.pos + 1:end]
                value.append(chunk)
                pattern.append("".join(map(_escape, chunk)))
                bare.append("\0")
                quoted = True
                self.pos = end + 1
            elif c == '"':
                self.pos += 1
                chunk, dynamic = self.double_quoted()
                value.append(chunk)
                pattern.append("".join(map(_escape, chunk)))
                expansion = expansion or dynamic
                bare.append("\0")
                quoted = True
            elif c in "$`" or text.startswith(("<(", ">("), self.pos):
                begin = self.pos
                if not self.expansion("bare"):
                    value.append(c)
                    pattern.append(_escape(c))
                    bare.append(c)
                    self.pos += 1
                    continue
                expansion = expansion or text[begin:self.pos]
                bare.append("\0")
            else:
                value.append(c)
                pattern.append(c)
                bare.append(c)
                self.pos += 1
        glob = _glob("".join(bare))
        static = expansion is None and not glob
        return Word(text[start:self.pos], "".join(value) if static else None,
                    "".join(pattern), quoted, expansion, glob)

    def double_quoted(self) -> tuple[str, str | None]:
        """From after an opening `"` to after its close: the literal text, first expansion."""
        text, n = self.text, len(self.text)
        out: list[str] = []
        dynamic = None
        while self.pos < n:
            c = text[self.pos]
            if c == '"':
                self.pos += 1
                return "".join(out), dynamic
            if c == "\\" and self.pos + 1 < n and text[self.pos + 1] in '$`"\\\n':
                if text[self.pos + 1] != "\n":
                    out.append(text[self.pos + 1])
                self.pos += 2
            elif c in "$`":
                begin = self.pos
                if self.expansion("dquote"):
                    dynamic = dynamic or text[begin:self.pos]
                else:
                    out.append(c)
                    self.pos += 1
            else:
                out.append(c)
                self.pos += 1
        raise Unsure('a " quote is not closed')

    def expansion(self, context: str) -> bool:
        """Read the `$...`, backtick or `<( )` here, recording the commands in it; False (and
        nothing read) for a `$` that is only a character. context: "bare", "dquote" (inside
        double quotes) or "heredoc" (an unquoted here-document body)."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unsure("it is nested too deeply to check")
        try:
            return self._expansion(context)
        finally:
            self.depth -= 1

    def _expansion(self, context: str) -> bool:
        text, pos = self.text, self.pos
        nxt = text[pos + 1:pos + 2]
        if text[pos] == "$" and text.startswith("\\\n", pos + 1):
            raise Unsure("a line continuation right after `$` is not checked")
        if text[pos] == "`":
            self.backticks(context)
        elif text[pos] in "<>":
            self.pos += 2
            self.nested(")")
        elif text.startswith("$((", pos):
            self.arithmetic()
        elif nxt == "(":
            self.pos += 2
            self.nested(")")
        elif nxt == "{":
            self.parameter(context)
        elif nxt == "[":
            raise Unsure("`$[` (bash arithmetic) is not checked")
        elif nxt == "'" and context == "bare":
            match = _ANSI_C.match(text, pos)  # bash; sh reads `$` and a '...' string
            if not match or match.end() != text.find("'", pos + 2) + 1:
                raise Unsure("a $'...' string that sh and bash read differently is not checked")
            self.pos = match.end()
        elif nxt == '"' and context == "bare":
            self.pos += 2
            self.double_quoted()
        elif nxt and (_NAME.match(nxt) or nxt in _SPECIAL_PARAM):
            name = _NAME.match(text, pos + 1)
            self.pos = name.end() if name else pos + 2
        else:
            return False
        return True

    def backticks(self, context: str) -> None:
        """`` `...` ``: unescape its text the way the shell does and read that as commands."""
        text, n, start = self.text, len(self.text), self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < n:
            c = text[self.pos]
            if c == "`":
                self.pos += 1
                inner = _Parser("".join(out), self.state, self.depth + 1, start + self.offset)
                inner.script()
                return
            if c == "\\" and self.pos + 1 < n:
                nxt = text[self.pos + 1]
                if nxt in "$`\\" or (context == "dquote" and nxt == '"'):
                    out.append(nxt)
                    self.pos += 2
                    continue
            out.append(c)
            self.pos += 1
        raise Unsure("a ` quote is not closed")

    def arithmetic(self) -> None:
        """`$(( ))` of numbers only: the shell evaluates names and expanded text as
        arithmetic, and bash runs `a[$(...)]` found there. `$((a) (b))` is `$(` and groups."""
        text, n, start = self.text, len(self.text), self.pos
        depth, pos = 0, start + 3
        while pos < n:
            c = text[pos]
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    break
                depth -= 1
            pos += 1
        if text.startswith("))", pos):
            body = text[start + 3:pos]
            if not _ARITHMETIC_OK.fullmatch(body) or re.search(r"(?<![=!<>])=(?!=)|\+\+|--",
                                                               body):
                raise Unsure(f"arithmetic `$(({body}))` on variables or text is not checked")
            self.pos = pos + 2
            return
        self.pos = start + 2
        self.nested(")")

    def parameter(self, context: str) -> None:
        """`${...}`: `${x=...}` and `${x:=...}` set x; the word after an operator is read
        for substitutions; substring offsets and subscripts must be numbers."""
        text, n = self.text, len(self.text)
        self.pos += 2
        match = _PARAMETER.match(text, self.pos)
        if not match:
            raise Unsure("a `${` expansion is not understood")
        self.pos = match.end()
        name = match.group(1)
        if text.startswith((":=", "="), self.pos) and _NAME.fullmatch(name):
            self.state.sets.append(name)
        rest = _NUMERIC_INDEX.match(text, self.pos)
        if rest and rest.group() in ("[", ":") and not _NUMERIC_TAIL.match(text, self.pos):
            raise Unsure("a substring or subscript in `${` that is not a number is not checked")
        while self.pos < n:
            c = text[self.pos]
            if c == "}":
                self.pos += 1
                return
            if c == "\\":
                self.pos += 2
            elif c == "'" and context == "bare":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise Unsure("a ' quote is not closed")
                self.pos = end + 1
            elif c == '"':
                self.pos += 1
                self.double_quoted()
            elif c in "$`":
                if not self.expansion(context):
                    self.pos += 1
            else:
                self.pos += 1
        raise Unsure("a `${` expansion is not closed")

    # -- here-documents -------------------------------------------------------------------

    def here_document(self, target: Word, strip_tabs: bool) -> None:
        if target.value is None or not target.value:
            raise Unsure(f"the here-document delimiter `{target.source}` is not understood")
        self.heredocs.append((target.value, target.quoted, strip_tabs))

    def read_here_documents(self) -> None:
        """After a newline: the bodies of the here-documents begun on that line, in order;
        an unquoted body is read for substitutions (it is expanded as it is fed in)."""
        pending, self.heredocs = self.heredocs, []
        text, n = self.text, len(self.text)
        for delimiter, quoted, strip_tabs in pending:
            begin = self.pos
            while True:
                if self.pos >= n:
                    raise Unsure(f"the here-document has no end line `{delimiter}`")
                end = text.find("\n", self.pos)
                end = n if end < 0 else end
                line = text[self.pos:end]
                body_end = self.pos
                self.pos = min(end + 1, n)
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
            if not quoted:
                body = text[begin:body_end]
                if re.search(r"\\$", body, re.M):  # bash joins such a line to the next
                    raise Unsure("a here-document line ending in `\\` is not checked")
                _Parser(body, self.state, self.depth + 1, begin + self.offset).body()

    def body(self) -> None:
        """An unquoted here-document body: only its expansions matter."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c == "\\":
                self.pos += 2
            elif c in "$`":
                if not self.expansion("heredoc"):
                    self.pos += 1
            else:
                self.pos += 1


def _escape(c: str) -> str:
    return f"[{c}]" if c in "*?[" else c


def _glob(unquoted: str) -> bool:
    """Whether the unquoted part of a word is a glob or a brace list (bash), which the shell
    turns into other words."""
    return bool("*" in unquoted or "?" in unquoted or re.search(r"\[[^\]]*\]", unquoted)
                or re.search(r"\{[^{}]*(,|\.\.)[^{}]*\}", unquoted))
