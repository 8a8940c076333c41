"""A small GraphQL reader for the text the runpod SDK and dstack send.

It covers what those clients use: one query or mutation, optional name and variable definitions, nested
selection sets, aliases, and argument values (strings, numbers, booleans, null, enums, lists, objects,
variables). Fragments and directives are refused with a clear error rather than half-supported, so a
client that starts sending them fails loudly in tests instead of getting a wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class GraphQLSyntaxError(Exception):
    """The document is not valid GraphQL (RunPod answers these with HTTP 400, GRAPHQL_PARSE_FAILED)."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"Syntax Error: {message}")
        self.line = line
        self.column = column


class GraphQLInputError(Exception):
    """A well-formed document whose values don't fit (unknown variable, wrong type, unknown field)."""


@dataclass(frozen=True)
class Variable:
    name: str


@dataclass(frozen=True)
class EnumValue:
    name: str


@dataclass
class Field:
    name: str
    alias: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    selections: list[Field] | None = None
    line: int = 1
    column: int = 1

    @property
    def response_key(self) -> str:
        return self.alias or self.name


@dataclass
class Operation:
    kind: str  # "query" or "mutation"
    name: str | None
    variable_types: dict[str, str]
    selections: list[Field]


@dataclass(frozen=True)
class _Token:
    kind: str  # name, punct, string, int, float, eof
    value: str
    line: int
    column: int


_PUNCTUATORS = set("{}()[]:!$=,@|&")
_NAME_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | set("0123456789")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, line, line_start = 0, 1, 0
    n = len(text)
    while i < n:
        ch = text[i]
        column = i - line_start + 1
        if ch == "\n":
            i += 1
            line, line_start = line + 1, i
        elif ch in " \t\r,\ufeff":
            i += 1  # commas are insignificant in GraphQL
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch == "." and text.startswith("...", i):
            raise GraphQLSyntaxError("fragments are not supported by the emulator.", line, column)
        elif ch in _PUNCTUATORS:
            tokens.append(_Token("punct", ch, line, column))
            i += 1
        elif ch in _NAME_START:
            j = i
            while j < n and text[j] in _NAME_CHARS:
                j += 1
            tokens.append(_Token("name", text[i:j], line, column))
            i = j
        elif ch == "-" or ch.isdigit():
            j = i + 1
            while j < n and (text[j].isdigit() or text[j] in ".eE+-"):
                j += 1
            raw = text[i:j]
            kind = "float" if any(c in raw for c in ".eE") else "int"
            try:
                float(raw)
            except ValueError:
                raise GraphQLSyntaxError(f'Invalid number, found "{raw}".', line, column) from None
            tokens.append(_Token(kind, raw, line, column))
            i = j
        elif ch == '"':
            if text.startswith('"""', i):
                end = text.find('"""', i + 3)
                if end < 0:
                    raise GraphQLSyntaxError("Unterminated string.", line, column)
                tokens.append(_Token("string", text[i + 3 : end], line, column))
                line += text.count("\n", i, end)
                i = end + 3
                continue
            j, chars = i + 1, []
            while True:
                if j >= n or text[j] == "\n":
                    raise GraphQLSyntaxError("Unterminated string.", line, column)
                c = text[j]
                if c == '"':
                    break
                if c == "\\":
                    nxt = text[j + 1] if j + 1 < n else ""
                    if nxt == "u":
                        hex_digits = text[j + 2 : j + 6]
                        try:
                            chars.append(chr(int(hex_digits, 16)))
                        except ValueError:
                            raise GraphQLSyntaxError("Invalid Unicode escape sequence.", line, column) from None
                        j += 6
                        continue
                    if nxt not in _ESCAPES:
                        raise GraphQLSyntaxError(f'Invalid character escape sequence: "\\{nxt}".', line, column)
                    chars.append(_ESCAPES[nxt])
                    j += 2
                    continue
                chars.append(c)
                j += 1
            tokens.append(_Token("string", "".join(chars), line, column))
            i = j + 1
        else:
            raise GraphQLSyntaxError(f"Unexpected character: {ch!r}.", line, column)
    tokens.append(_Token("eof", "", line, i - line_start + 1))
    return tokens


def _describe(token: _Token) -> str:
    if token.kind == "eof":
        return "<EOF>"
    if token.kind == "string":
        # Never echo a string's content: it may be part of an env value holding a token.
        return f"String ({len(token.value)} characters)"
    if token.kind == "name":
        return f'Name "{token.value}"'
    if token.kind in ("int", "float"):
        return f'{token.kind.capitalize()} "{token.value}"'
    return f'"{token.value}"'


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def fail(self, expected: str) -> GraphQLSyntaxError:
        token = self.peek()
        return GraphQLSyntaxError(f"Expected {expected}, found {_describe(token)}.", token.line, token.column)

    def expect_punct(self, value: str) -> _Token:
        if self.peek().kind == "punct" and self.peek().value == value:
            return self.take()
        raise self.fail(f'"{value}"')

    def at_punct(self, value: str) -> bool:
        return self.peek().kind == "punct" and self.peek().value == value

    def expect_name(self) -> _Token:
        if self.peek().kind == "name":
            return self.take()
        raise self.fail("Name")

    def document(self) -> Operation:
        if self.at_punct("{"):
            operation = Operation("query", None, {}, self.selection_set())
        else:
            keyword = self.expect_name()
            if keyword.value not in ("query", "mutation"):
                raise GraphQLSyntaxError(
                    f'Unexpected Name "{keyword.value}" (only query and mutation are supported).',
                    keyword.line,
                    keyword.column,
                )
            name = self.take().value if self.peek().kind == "name" else None
            variable_types = self.variable_definitions() if self.at_punct("(") else {}
            if self.at_punct("@"):
                raise self.fail('"{" (directives are not supported)')
            operation = Operation(keyword.value, name, variable_types, self.selection_set())
        if self.peek().kind != "eof":
            raise self.fail("<EOF> (one operation per request)")
        return operation

    def variable_definitions(self) -> dict[str, str]:
        self.expect_punct("(")
        types: dict[str, str] = {}
        while not self.at_punct(")"):
            self.expect_punct("$")
            name = self.expect_name().value
            self.expect_punct(":")
            types[name] = self.type_reference()
            if self.at_punct("="):
                raise self.fail('")" (variable defaults are not supported)')
        self.take()
        return types

    def type_reference(self) -> str:
        if self.at_punct("["):
            self.take()
            inner = self.type_reference()
            self.expect_punct("]")
            text = f"[{inner}]"
        else:
            text = self.expect_name().value
        if self.at_punct("!"):
            self.take()
            text += "!"
        return text

    def selection_set(self) -> list[Field]:
        self.expect_punct("{")
        fields: list[Field] = []
        while not self.at_punct("}"):
            fields.append(self.field())
        self.take()
        if not fields:
            raise self.fail("Name")
        return fields

    def field(self) -> Field:
        first = self.expect_name()
        alias, name = None, first.value
        if self.at_punct(":"):
            self.take()
            alias, name = first.value, self.expect_name().value
        arguments: dict[str, Any] = {}
        if self.at_punct("("):
            self.take()
            while not self.at_punct(")"):
                arg_name = self.expect_name().value
                self.expect_punct(":")
                arguments[arg_name] = self.value()
            self.take()
        if self.at_punct("@"):
            raise self.fail("a field (directives are not supported)")
        selections = self.selection_set() if self.at_punct("{") else None
        return Field(name, alias, arguments, selections, first.line, first.column)

    def value(self) -> Any:
        token = self.peek()
        if token.kind == "punct" and token.value == "$":
            self.take()
            return Variable(self.expect_name().value)
        if token.kind == "string":
            return self.take().value
        if token.kind == "int":
            return int(self.take().value)
        if token.kind == "float":
            return float(self.take().value)
        if token.kind == "name":
            self.take()
            if token.value == "true":
                return True
            if token.value == "false":
                return False
            if token.value == "null":
                return None
            return EnumValue(token.value)
        if token.kind == "punct" and token.value == "[":
            self.take()
            items = []
            while not self.at_punct("]"):
                items.append(self.value())
            self.take()
            return items
        if token.kind == "punct" and token.value == "{":
            self.take()
            fields: dict[str, Any] = {}
            while not self.at_punct("}"):
                key = self.expect_name().value
                self.expect_punct(":")
                fields[key] = self.value()
            self.take()
            return fields
        raise self.fail("a value")


def parse(text: str) -> Operation:
    """Parse one GraphQL operation; raises GraphQLSyntaxError with the position of the first problem."""
    return _Parser(text).document()


def substitute_variables(value: Any, variables: dict[str, Any], declared: dict[str, str]) -> Any:
    """Replace `$name` references with the request's variables (JSON values, so enums arrive as strings)."""
    if isinstance(value, Variable):
        if value.name not in declared:
            raise GraphQLInputError(f'Variable "${value.name}" is not defined.')
        if value.name not in variables:
            if declared[value.name].endswith("!"):
                raise GraphQLInputError(
                    f'Variable "${value.name}" of required type "{declared[value.name]}" was not provided.'
                )
            return None
        return variables[value.name]
    if isinstance(value, list):
        return [substitute_variables(item, variables, declared) for item in value]
    if isinstance(value, dict):
        return {key: substitute_variables(item, variables, declared) for key, item in value.items()}
    return value
