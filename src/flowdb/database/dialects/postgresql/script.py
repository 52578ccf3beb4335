"""A PostgreSQL script as tokens: split into statements and unqualified without text edits.

``pg_dump`` writes one script whose names are all qualified with the dumped schema. A
snapshot must run in whatever schema the installing connection uses, so those
qualifiers go, and the script is cut into statements. Both are done on tokens, never
on the text: a string literal, a quoted identifier, a dollar-quoted body or a comment
is one token, so a ``;`` or a ``public.`` inside data or a name is never touched.
Only two kinds of string literal name objects and lose the qualifier inside them:
``'schema.name'::regclass`` (a serial column's default) and the first argument of
``pg_catalog.setval`` (a sequence's position).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: One token each, in the order they are tried; the first group that matches wins.
_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<meta>\\[^\n]*)
    | (?P<escape_string>[Ee]'(?:[^'\\]|\\.|'')*')
    | (?P<string>'(?:[^']|'')*')
    | (?P<quoted>"(?:[^"]|"")*")
    | (?P<dollar>\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$)
    | (?P<cast>::)
    | (?P<word>[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)
    | (?P<semicolon>;)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class ScriptError(ValueError):
    """The script does not lex (an unterminated string, identifier, body or comment)."""


@dataclass(frozen=True)
class Token:
    """One lexical unit: its kind (a group name of ``_TOKEN``) and its exact text."""

    kind: str
    text: str

    @property
    def is_string(self) -> bool:
        """Whether this is a string literal (plain or with backslash escapes)."""
        return self.kind in ("string", "escape_string")

    def identifier(self) -> str | None:
        """The name this token spells (folded like PostgreSQL folds it), else ``None``."""
        if self.kind == "word":
            return self.text.lower()
        if self.kind == "quoted":
            return self.text[1:-1].replace('""', '"')
        return None


def tokens(script: str) -> list[Token]:
    """The script's tokens, whose texts joined give back the script exactly."""
    found: list[Token] = []
    position = 0
    while position < len(script):
        match = _TOKEN.match(script, position)
        if match is None or match.lastgroup is None:  # pragma: no cover - ``other`` matches all
            raise ScriptError(f"cannot read the script at offset {position}")
        kind = match.lastgroup
        end = match.end()
        if kind == "block_comment":
            end = _comment_end(script, position)
        elif kind == "dollar":
            closing = script.find(match.group(), end)
            if closing < 0:
                raise ScriptError(f"a {match.group()} body at offset {position} never ends")
            kind, end = "dollar_body", closing + len(match.group())
        elif kind == "other" and match.group() in "'\"":
            raise ScriptError(f"a quote at offset {position} is never closed")
        found.append(Token(kind, script[position:end]))
        position = end
    return found


def _comment_end(script: str, start: int) -> int:
    """Where the (possibly nested, as PostgreSQL allows) block comment at ``start`` ends."""
    depth, position = 0, start
    while position < len(script):
        pair = script[position : position + 2]
        if pair == "/*":
            depth, position = depth + 1, position + 2
        elif pair == "*/":
            depth, position = depth - 1, position + 2
            if depth == 0:
                return position
        else:
            position += 1
    raise ScriptError(f"a comment at offset {start} never ends")


def statements(script: str) -> list[list[Token]]:
    """The script cut at each top-level ``;``, comments and meta-commands left out.

    Each statement is its tokens without the ``;``, leading and trailing space; empty
    statements are left out.
    """
    result: list[list[Token]] = []
    current: list[Token] = []
    for token in tokens(script):
        if token.kind in ("line_comment", "block_comment", "meta"):
            continue
        if token.kind == "semicolon":
            result.append(current)
            current = []
        else:
            current.append(token)
    result.append(current)
    trimmed = [_trim(statement) for statement in result]
    return [statement for statement in trimmed if statement]


def _trim(statement: list[Token]) -> list[Token]:
    """``statement`` without leading and trailing space."""
    words = [i for i, token in enumerate(statement) if token.kind != "space"]
    return statement[words[0] : words[-1] + 1] if words else []


def words(statement: list[Token]) -> list[str]:
    """The statement's tokens other than space, upper-cased (for recognising its kind)."""
    return [token.text.upper() for token in statement if token.kind != "space"]


def unqualified(statement: list[Token], schema: str) -> list[Token]:
    """``statement`` with every ``schema.`` qualifier of a name left out.

    A qualifier is the schema's name as a word or quoted identifier directly followed by
    ``.`` and a name. Inside string literals only the object names PostgreSQL reads from a
    string lose it: ``'schema.seq'::regclass`` and ``pg_catalog.setval('schema.seq', ...)``.
    """
    result: list[Token] = []
    index = 0
    while index < len(statement):
        token = statement[index]
        following = statement[index + 1 : index + 3]
        if (
            token.identifier() == schema
            and len(following) == 2
            and following[0].text == "."
            and following[1].identifier() is not None
        ):
            index += 2  # the qualifier and its dot
            continue
        if token.is_string and _names_an_object(statement, index):
            token = _without_qualifier(token, schema)
        result.append(token)
        index += 1
    return result


def _names_an_object(statement: list[Token], index: int) -> bool:
    """Whether the string at ``index`` is cast to ``regclass`` or is ``setval``'s first argument."""
    after = [t for t in statement[index + 1 :] if t.kind != "space"][:2]
    if [t.text.lower() for t in after] == ["::", "regclass"]:
        return True
    before = [t for t in statement[:index] if t.kind != "space"][-4:]
    return "".join(t.text.lower() for t in before).endswith(("pg_catalog.setval(", "setval("))


def _without_qualifier(token: Token, schema: str) -> Token:
    """A plain string literal naming ``schema.object`` as one naming ``object``."""
    if token.kind != "string":
        return token
    value = token.text[1:-1].replace("''", "'")
    for qualifier in (schema + ".", '"' + schema.replace('"', '""') + '".'):
        if value.startswith(qualifier):
            rest = value[len(qualifier) :]
            return Token("string", "'" + rest.replace("'", "''") + "'")
    return token


def text(statement: list[Token]) -> str:
    """The statement's SQL: its tokens' texts joined."""
    return "".join(token.text for token in statement)
