"""Shell words for the allowlist's reader: quoting, escapes and expansions, here-documents.

A word's value is what the shell passes after quote removal, or None when the shell would
compute it (a parameter, a substitution, arithmetic, an unquoted glob or brace list). Every
command inside a word (`$( )`, backticks, `<( )`, also within double quotes, `${...}` and
unquoted here-documents) is handed to the parser (fased.tools.shellsplit) as it is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DEPTH = 40  # nesting of substitutions and groups; deeper input is refused, not recursed
BREAK = frozenset(" \t\n;&|()<>")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL_PARAM = "@*#?-$!0123456789"
_ANSI_C = re.compile(r"\$'(?:[^'\\]|\\.)*'", re.S)
_PARAMETER = re.compile(r"[#!]?([A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!-])")
_NUMERIC_INDEX = re.compile(r"\[[@*0-9][0-9]*\]|\[|:(?![-=?+])")
_NUMERIC_TAIL = re.compile(r"[0-9\s:+\-*/()\[\]]*\}")
_ARITHMETIC_OK = re.compile(r"[0-9\s+\-*/%()<>=!&|^~?:]*")


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


class Lexer:
    """Reads words from `text` at `pos`; the parser built on it reads commands."""

    def __init__(self, text: str, depth: int, offset: int):
        if depth > MAX_DEPTH:
            raise Unsure("it is nested too deeply to check")
        self.text, self.depth, self.offset = text, depth, offset
        self.pos = 0
        self.heredocs: list[tuple[str, bool, bool]] = []  # delimiter, quoted, strip tabs

    def nested(self, closer: str) -> None:
        """Read the commands from here to the matching `)` (the parser does)."""
        raise NotImplementedError

    def inner(self, text: str, offset: int) -> Lexer:
        """A reader for text of its own (a backtick command, a here-document body)."""
        raise NotImplementedError

    def script(self) -> None:
        raise NotImplementedError

    def sets_variable(self, name: str) -> None:
        raise NotImplementedError

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
            if c in BREAK and not (self.pos == start and text.startswith(("<(", ">("), start)):
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
        elif nxt and (NAME.match(nxt) or nxt in _SPECIAL_PARAM):
            name = NAME.match(text, pos + 1)
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
                self.inner("".join(out), start + self.offset).script()
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
        if text.startswith((":=", "="), self.pos) and NAME.fullmatch(name):
            self.sets_variable(name)
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
                self.inner(body, begin + self.offset).body()

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
