"""A small, safe arithmetic evaluator for the retail ``calculate`` tool.

Agent text must never reach ``eval``: even with the character set restricted to
digits and ``+-*/(). ``, Python's ``eval`` would accept ``**`` (unbounded exponents,
e.g. ``9**9**9`` hangs the process). So this module tokenizes the expression itself
and evaluates it with a recursive-descent parser over plain floats:

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := ("+" | "-")* atom
    atom   := NUMBER | "(" expr ")"

Inputs are bounded (length, parenthesis depth) so evaluation time is bounded too.
"""

from __future__ import annotations

import math

from trace_envs.errors import ToolError

MAX_LENGTH = 256
MAX_DEPTH = 32
ALLOWED_CHARS = frozenset("0123456789+-*/(). ")
_OPERATORS = frozenset("+-*/()")


def _tokenize(expression: str) -> list[str]:
    """Split into number and operator tokens; raise ToolError on anything else."""
    tokens: list[str] = []
    i, n = 0, len(expression)
    while i < n:
        ch = expression[i]
        if ch == " ":
            i += 1
        elif ch in _OPERATORS:
            if ch == "*" and i + 1 < n and expression[i + 1] == "*":
                raise ToolError("Error: invalid expression: '**' (exponentiation) is not allowed")
            tokens.append(ch)
            i += 1
        else:  # digits and '.', since the character set was checked beforehand
            j = i
            while j < n and (expression[j].isdigit() or expression[j] == "."):
                j += 1
            number = expression[i:j]
            if number.count(".") > 1 or number == ".":
                raise ToolError(f"Error: invalid number {number!r} in expression")
            tokens.append(number)
            i = j
    return tokens


class _Parser:
    """Recursive-descent evaluator over a token list."""

    __slots__ = ("tokens", "pos", "depth")

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expr(self) -> float:
        value = self.term()
        while (tok := self.peek()) in ("+", "-"):
            self.pos += 1
            rhs = self.term()
            value = value + rhs if tok == "+" else value - rhs
        return value

    def term(self) -> float:
        value = self.unary()
        while (tok := self.peek()) in ("*", "/"):
            self.pos += 1
            rhs = self.unary()
            if tok == "*":
                value *= rhs
            elif rhs == 0:
                raise ToolError("Error: division by zero")
            else:
                value /= rhs
        return value

    def unary(self) -> float:
        # Signs are folded iteratively so a long run of them cannot exhaust the stack.
        negative = False
        while (tok := self.peek()) in ("+", "-"):
            self.pos += 1
            negative ^= tok == "-"
        value = self.atom()
        return -value if negative else value

    def atom(self) -> float:
        tok = self.peek()
        if tok is None:
            raise ToolError("Error: invalid expression: unexpected end of expression")
        if tok == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ToolError(f"Error: expression nested deeper than {MAX_DEPTH} parentheses")
            self.pos += 1
            value = self.expr()
            if self.peek() != ")":
                raise ToolError("Error: invalid expression: missing ')'")
            self.pos += 1
            self.depth -= 1
            return value
        if tok in _OPERATORS:
            raise ToolError(f"Error: invalid expression: unexpected {tok!r}")
        self.pos += 1
        return float(tok)


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression and return the result rounded to 2 decimals."""
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"Error: expression longer than {MAX_LENGTH} characters")
    bad = sorted(set(expression) - ALLOWED_CHARS)
    if bad:
        raise ToolError(
            f"Error: invalid characters in expression: {''.join(bad)!r}; "
            "only digits, + - * / ( ) . and spaces are allowed"
        )
    tokens = _tokenize(expression)
    if not tokens:
        raise ToolError("Error: empty expression")
    parser = _Parser(tokens)
    value = parser.expr()
    if parser.pos != len(tokens):
        raise ToolError(f"Error: invalid expression: unexpected {tokens[parser.pos]!r}")
    if not math.isfinite(value):
        raise ToolError("Error: result is not a finite number")
    return round(value, 2) + 0.0  # + 0.0 turns -0.0 into 0.0
