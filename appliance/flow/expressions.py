"""The branch condition language: a small, safe subset of Python expressions, never `eval`.

Allowed: variable names, string/number/bool/None literals, lists of literals, `and`, `or`,
`not`, comparisons (== != < <= > >= in, not in) and unary minus. Anything else is refused
when the flow is checked, with the offending part named.
"""

from __future__ import annotations

import ast
import operator
from typing import Any

_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


class ExpressionError(ValueError):
    pass


class Expression:
    def __init__(self, source: str):
        self.source = source
        try:
            self.tree = ast.parse(source.strip(), mode="eval").body
        except SyntaxError as exc:
            raise ExpressionError(f"cannot parse {source!r}: {exc.msg}") from exc
        except (RecursionError, MemoryError, ValueError) as exc:
            raise ExpressionError("the condition is nested too deeply") from exc
        self.names: set[str] = set()
        try:
            self._check(self.tree)
        except RecursionError as exc:
            raise ExpressionError("the condition is nested too deeply") from exc

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            self.names.add(node.id)
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (str, int, float, bool, type(None))):
                raise ExpressionError(f"literal {node.value!r} is not allowed")
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            self._check(node.operand)
        elif isinstance(node, ast.Compare):
            if not all(type(op) in _COMPARE for op in node.ops):
                raise ExpressionError("only == != < <= > >= in and not in compare values")
            self._check(node.left)
            for comparator in node.comparators:
                self._check(comparator)
        elif isinstance(node, (ast.List, ast.Tuple)):
            for element in node.elts:
                self._check(element)
        else:
            raise ExpressionError(f"'{ast.unparse(node)}' is not allowed in a condition")

    def evaluate(self, variables: dict[str, Any]) -> bool:
        return bool(self._eval(self.tree, variables))

    def _eval(self, node: ast.AST, env: dict[str, Any]) -> Any:
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(self._eval(v, env) for v in node.values)
            return any(self._eval(v, env) for v in node.values)
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, env)
            return (not value) if isinstance(node.op, ast.Not) else -_number(value)
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, env)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self._eval(right_node, env)
                if not _compare(op, left, right):
                    return False
                left = right
            return True
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self._eval(e, env) for e in node.elts]
        raise ExpressionError(f"'{ast.unparse(node)}' is not allowed")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0


def _compare(op: ast.cmpop, left: Any, right: Any) -> bool:
    # Variables from DTMF and webhooks are often strings of digits: compare them as numbers
    # when one side is a number, and treat impossible comparisons as false, not as a crash.
    if isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) or (
        isinstance(op, (ast.Eq, ast.NotEq)) and isinstance(right, (int, float)) != isinstance(left, (int, float))
    ):
        if isinstance(left, (int, float)) or isinstance(right, (int, float)):
            try:
                left, right = float(left), float(right)
            except OverflowError:
                pass  # an int too large for a float: Python compares it with the other number exactly
            except (TypeError, ValueError):
                return isinstance(op, ast.NotEq)
    if isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, list):
        # Membership follows ==, so the key "1" is in [1, 2] as it equals 1.
        found = any(_compare(ast.Eq(), left, item) for item in right)
        return found if isinstance(op, ast.In) else not found
    try:
        return bool(_COMPARE[type(op)](left, right))
    except TypeError:
        return isinstance(op, (ast.NotEq, ast.NotIn))
