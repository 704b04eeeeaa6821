"""Hints for common mistakes in formulas, appended to the parser's error messages (symsm/model/parse.py).

A formula is Python syntax, and people write the mathematics they know: `x^2` (in Python `^` is bitwise xor,
refused as the operator BitXor), `2x` (no implicit multiplication), `ln(x)`, `e^x`, `abs(x)`. Each hint says
what to write instead; it never changes what the parser accepts.
"""

from __future__ import annotations

import ast
import re

__all__ = ["call_hint", "name_hint", "operator_hint", "syntax_hint"]

_OPERATORS = {
    ast.BitXor: "'^' is not a power in a formula (in Python it is bitwise xor): write x**2 for x squared",
    ast.BitAnd: "'&' is bitwise and; a formula has only + - * / **",
    ast.BitOr: "'|' is bitwise or; for an absolute value there is no smooth function (|x| is not differentiable at 0)",
    ast.FloorDiv: "'//' is floor division (not smooth); write / for division",
    ast.Mod: "'%' is the remainder (not smooth); a formula has only + - * / **",
    ast.MatMult: "'@' is matrix multiplication; write the sum of products entry by entry, e.g. W[0, 0]*x0 + W[0, 1]*x1",
    ast.LShift: "'<<' is a bit shift; a formula has only + - * / **",
    ast.RShift: "'>>' is a bit shift; a formula has only + - * / **",
}

_CALLS = {
    "ln": "write log(x) for the natural logarithm",
    "log10": "write log(x)/log(10)",
    "log2": "write log(x)/log(2)",
    "abs": "|x| is not smooth at 0 and is refused; a smooth stand-in is sqrt(x**2 + c) or log(cosh(x))",
    "Abs": "|x| is not smooth at 0 and is refused; a smooth stand-in is sqrt(x**2 + c) or log(cosh(x))",
    "pow": "write x**y",
    "power": "write x**y",
    "square": "write x**2",
    "arctan": "write atan(x)",
    "arcsinh": "write asinh(x)",
    "arctanh": "write atanh(x)",
    "max": "max is not smooth; a smooth stand-in is log(exp(a) + exp(b))",
    "min": "min is not smooth; a smooth stand-in is -log(exp(-a) + exp(-b))",
}

_NAMES = {
    "e": "write E for Euler's number, or exp(x) for e to the power x",
    "ln": "write log(x) for the natural logarithm",
    "Pi": "write pi",
    "PI": "write pi",
    "inf": "infinity is not a number a formula can use",
}


def operator_hint(op: ast.operator) -> str:
    """' (hint: …)' for a refused binary operator, or ''."""
    hint = _OPERATORS.get(type(op))
    return f" (hint: {hint})" if hint else ""


def call_hint(name: str, declared: bool = False) -> str:
    """' (hint: …)' for a call to a function the formula language does not have, or ''; `declared`: the name is
    a declared symbol, so the "call" is a multiplication written without its `*`."""
    if declared:
        return f" (hint: {name!r} is a variable, not a function: multiplication is written out, (a)*(b), not (a)(b))"
    hint = _CALLS.get(name)
    if hint is None and name.startswith("np."):
        hint = "write the function's plain name, e.g. exp(x), not np.exp(x)"
    return f" (hint: {hint})" if hint else ""


def name_hint(name: str) -> str:
    """' (hint: …)' for an undeclared name that is a known mistake, or ''."""
    hint = _NAMES.get(name)
    return f" (hint: {hint})" if hint else ""


def syntax_hint(text: str) -> str:
    """' (hint: …)' for a syntax error with a recognisable cause, or ''."""
    if re.search(r"(?<![\w.])\d+(?:\.\d*)?[A-Za-z_(]", text) and not re.search(r"\d[eE][+-]?\d", text):
        return " (hint: multiplication is written out: 2*x, not 2x)"
    if re.search(r"\)\s*\(", text) or re.search(r"\)\s*[A-Za-z_]", text):
        return " (hint: multiplication is written out: (a)*(b), not (a)(b))"
    if text.count("(") != text.count(")"):
        return f" (hint: {text.count('(')} opening and {text.count(')')} closing parentheses)"
    if "^" in text:
        return " (hint: write x**2 for a power, not x^2)"
    return ""
