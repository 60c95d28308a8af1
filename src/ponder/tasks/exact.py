"""Exact rational arithmetic for step checking. Model text is parsed, never evaluated.

Numbers are written as integers (`12`, `-3`) or fractions (`3/4`). A step's tokens are separated by spaces,
because fractions share `/` with division: `6 / 1/4 = 24` is "6 divided by one quarter".
"""

from __future__ import annotations

from fractions import Fraction

OPS = ("+", "-", "*", "/")


def parse_number(token: str) -> Fraction | None:
    """`12`, `-3` or `3/4` as an exact Fraction; None for anything else (including `1.5`, `3/0`)."""
    num, sep, den = token.partition("/")
    if not _is_int(num) or (sep and not (den.isdigit() and den.isascii())):
        return None
    if sep and int(den) == 0:
        return None
    return Fraction(int(num), int(den) if sep else 1)


def _is_int(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return digits.isdigit() and digits.isascii() and len(digits) <= 12


def format_number(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def apply_op(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    """a op b exactly; None for division by zero or an unknown operator."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b if b != 0 else None
    return None


def parse_equation(tokens: list[str]) -> tuple[Fraction, str, Fraction, Fraction] | None:
    """`a op b = c` from its first five tokens; None unless it has exactly that shape."""
    if len(tokens) < 5 or tokens[1] not in OPS or tokens[3] != "=":
        return None
    a, b, c = parse_number(tokens[0]), parse_number(tokens[2]), parse_number(tokens[4])
    if a is None or b is None or c is None:
        return None
    return a, tokens[1], b, c


def evaluate_expression(text: str) -> tuple[Fraction, list[Fraction]] | None:
    """Value of an arithmetic expression over + - * / and parentheses, and the numbers it uses.

    A small recursive-descent parser over exact fractions. Returns None for anything malformed or a
    division by zero.
    """
    tokens = _tokenize(text)
    if tokens is None:
        return None
    parser = _Parser(tokens)
    try:
        value = parser.expr()
    except (_ParseError, ZeroDivisionError):
        return None
    if parser.pos != len(tokens):
        return None
    return value, parser.leaves


class _ParseError(Exception):
    pass


def _tokenize(text: str) -> list[str] | None:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "+-*/()":
            tokens.append(ch)
            i += 1
        elif ch.isdigit() and ch.isascii():
            j = i
            while j < len(text) and text[j].isdigit() and text[j].isascii():
                j += 1
            if j - i > 12:
                return None
            tokens.append(text[i:j])
            i = j
        else:
            return None
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*; factor := int | '(' expr ')' | '-' factor"""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.leaves: list[Fraction] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise _ParseError("unexpected end")
        self.pos += 1
        return token

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            value = value * self.factor() if self.take() == "*" else value / self.factor()
        return value

    def factor(self) -> Fraction:
        token = self.take()
        if token == "(":
            value = self.expr()
            if self.take() != ")":
                raise _ParseError("expected )")
            return value
        if token == "-":
            return -self.factor()
        if token.isdigit():
            self.leaves.append(Fraction(int(token)))
            return Fraction(int(token))
        raise _ParseError(f"unexpected {token!r}")
