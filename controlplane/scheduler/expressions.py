"""Parses ECS placement syntax into plain data: memberOf expressions and attribute fields.

    memberOf   "attribute:zone == a"  "attribute:zone != a"
               "attribute:zone in [a, b]"  "attribute:zone not_in [a, b]"
               (clauses joined with " and ")
    strategy   the field of spread:attribute:NAME

The subset of ECS's cluster query language Berth supports, read by a linear
tokenizer and a small recursive-descent parser: every character is looked at
once, so the time to parse (or refuse) is proportional to the length, which is
bounded by `MAX_EXPRESSION_LENGTH` before anything else happens. (A
backtracking regex used to take tens of seconds on a 40 KB expression, on the
event loop that serves every RPC.)

Pure text to data; which filter or scorer the data becomes is `policies`'s
business. Errors are `InvalidArgument` with one line saying what to write instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from berth.errors import InvalidArgument
from berth.names import shown

_ATTRIBUTE_PREFIX = "attribute:"

MAX_EXPRESSION_LENGTH = 2000  # ECS: an expression is at most 2000 characters
MAX_CLAUSES = 10
MAX_VALUES = 50  # values of one `in [...]` list
MAX_ATTRIBUTE_LENGTH = 128  # ECS: attribute names and values are at most 128 characters

# Characters of a word (attribute:NAME, a value, a keyword). ECS allows
# backslashes and spaces in attribute values too; Berth's subset does not.
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/@:")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/")
_PUNCTUATION = frozenset("[],")
_OPERATORS = ("==", "!=")
_LIST_OPERATORS = ("in", "not_in")

_HELP = "write attribute:NAME == VALUE, attribute:NAME != VALUE or attribute:NAME in [V1, V2]"


@dataclass(frozen=True)
class AttributeClause:
    attribute: str
    operator: str  # "==", "!=", "in", "not_in"
    values: tuple[str, ...]

    def matches(self, actual: str | None) -> bool:
        if self.operator in ("==", "in"):
            return actual is not None and actual in self.values
        return actual is None or actual not in self.values

    def __str__(self) -> str:
        if self.operator in _LIST_OPERATORS:
            return f"attribute:{self.attribute} {self.operator} [{', '.join(self.values)}]"
        return f"attribute:{self.attribute} {self.operator} {self.values[0]}"


@dataclass(frozen=True)
class _Token:
    text: str
    position: int


def _tokenize(expression: str) -> list[_Token]:
    """Words, "==", "!=", "[", "]" and ","; whitespace separates. One pass, no backtracking."""
    tokens: list[_Token] = []
    i, end = 0, len(expression)
    while i < end:
        char = expression[i]
        if char in " \t":
            i += 1
        elif char in _PUNCTUATION:
            tokens.append(_Token(char, i))
            i += 1
        elif expression.startswith(_OPERATORS, i):
            tokens.append(_Token(expression[i : i + 2], i))
            i += 2
        elif char in _WORD_CHARS:
            start = i
            while i < end and expression[i] in _WORD_CHARS:
                i += 1
            tokens.append(_Token(expression[start:i], start))
        else:
            raise InvalidArgument(
                f"placement expression: unexpected character {char!r} at position {i + 1}: {_HELP}"
            )
    return tokens


class _Parser:
    """expression := clause ("and" clause)*
    clause     := "attribute:"NAME ("==" | "!=") VALUE
                | "attribute:"NAME ("in" | "not_in") "[" VALUE ("," VALUE)* "]"
    """

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._next = 0

    def _peek(self) -> _Token | None:
        return self._tokens[self._next] if self._next < len(self._tokens) else None

    def _take(self, wanted: str) -> _Token:
        token = self._peek()
        if token is None:
            raise InvalidArgument(f"placement expression ends too early: expected {wanted}; {_HELP}")
        self._next += 1
        return token

    def _fail(self, token: _Token, wanted: str) -> InvalidArgument:
        return InvalidArgument(
            f"placement expression: expected {wanted} at position {token.position + 1}, "
            f"found {shown(token.text, 32)}; {_HELP}"
        )

    def _value(self) -> str:
        token = self._take("a value")
        if token.text[0] not in _WORD_CHARS or token.text in ("and", *_LIST_OPERATORS):
            raise self._fail(token, "a value")
        if len(token.text) > MAX_ATTRIBUTE_LENGTH:
            raise InvalidArgument(
                f"placement expression: value {shown(token.text, 32)} is longer than "
                f"{MAX_ATTRIBUTE_LENGTH} characters"
            )
        return token.text

    def _clause(self) -> AttributeClause:
        token = self._take("attribute:NAME")
        name = token.text.removeprefix(_ATTRIBUTE_PREFIX)
        if not token.text.startswith(_ATTRIBUTE_PREFIX) or not name or not set(name) <= _NAME_CHARS:
            raise self._fail(token, "attribute:NAME")
        if len(name) > MAX_ATTRIBUTE_LENGTH:
            raise InvalidArgument(
                f"placement expression: attribute name {shown(name, 32)} is longer than "
                f"{MAX_ATTRIBUTE_LENGTH} characters"
            )
        operator = self._take("==, !=, in or not_in")
        if operator.text in _OPERATORS:
            return AttributeClause(name, operator.text, (self._value(),))
        if operator.text not in _LIST_OPERATORS:
            raise self._fail(operator, "==, !=, in or not_in")
        opening = self._take("[")
        if opening.text != "[":
            raise InvalidArgument(
                f"placement expression: the values of {operator.text} go in [ ], "
                f"e.g. attribute:{name} {operator.text} [a, b]"
            )
        values = [self._value()]
        while (separator := self._take("',' or ']'")).text != "]":
            if separator.text != ",":
                raise self._fail(separator, "',' or ']'")
            values.append(self._value())
            if len(values) > MAX_VALUES:
                raise InvalidArgument(f"placement expression: at most {MAX_VALUES} values in one list")
        return AttributeClause(name, operator.text, tuple(values))

    def expression(self) -> tuple[AttributeClause, ...]:
        clauses = [self._clause()]
        while (token := self._peek()) is not None:
            if token.text != "and":
                raise self._fail(token, "'and' or the end")
            self._next += 1
            clauses.append(self._clause())
            if len(clauses) > MAX_CLAUSES:
                raise InvalidArgument(f"placement expression: at most {MAX_CLAUSES} clauses joined by and")
        return tuple(clauses)


def parse_expression(expression: str) -> tuple[AttributeClause, ...]:
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise InvalidArgument(
            f"placement expression is {len(expression)} characters: the limit is {MAX_EXPRESSION_LENGTH}"
        )
    tokens = _tokenize(expression)
    if not tokens:
        raise InvalidArgument(f"placement expression is empty: {_HELP}")
    return _Parser(tokens).expression()


def attribute_field(field: str) -> str | None:
    """The NAME of a strategy field "attribute:NAME", or None when the field is not one."""
    name = field.removeprefix(_ATTRIBUTE_PREFIX)
    if field.startswith(_ATTRIBUTE_PREFIX) and name and len(name) <= MAX_ATTRIBUTE_LENGTH:
        if set(name) <= _NAME_CHARS:
            return name
    return None
