"""Rule expressions: validated and parsed once, evaluated many times per series (simpleeval)."""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import simpleeval

from fsincident.core import FsIncidentError


class ExprError(FsIncidentError):
    """An expression is invalid (at load) or failed to evaluate (at run time)."""

    def __init__(self, message: str, *, column: int | None = None):
        super().__init__(message)
        self.column = column


MAX_ROUND_DIGITS = 1000


def _safe_round(x: float, ndigits: int = 0) -> float:
    n = int(ndigits)
    if abs(n) > MAX_ROUND_DIGITS:  # round(1, -10**9) computes 10**(10**9) and hangs
        raise ValueError(f"round: ndigits must be within ±{MAX_ROUND_DIGITS}")
    return round(x, n)


def _safe_mult(a: Any, b: Any) -> Any:
    if hasattr(a, "__len__") and hasattr(b, "__len__"):  # simpleeval's length check computes b * len(a) first
        raise TypeError(f"can't multiply {type(a).__name__} by {type(b).__name__}")
    return simpleeval.safe_mult(a, b)


def _safe_mod(a: Any, b: Any) -> Any:
    if isinstance(a, str):  # "%0999999999d" % 1 would build a gigabyte string
        raise TypeError("'%' string formatting is not allowed")
    return a % b


FUNCTIONS: dict[str, Any] = {
    "abs": abs,
    "min": min,
    "max": max,
    "round": _safe_round,
    "float": float,
    "int": int,
    "str": str,
    "isnan": math.isnan,
}

# Names with a fixed meaning; every other bare name is a metric of the rule's source.
RESERVED = frozenset({"value", "labels", "True", "False", "None", "nan", "inf"})

_OPERATORS = {
    ast.Add: simpleeval.safe_add,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: _safe_mult,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: _safe_mod,
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Gt: lambda a, b: a > b,
    ast.Lt: lambda a, b: a < b,
    ast.GtE: lambda a, b: a >= b,
    ast.LtE: lambda a, b: a <= b,
    ast.Not: lambda a: not a,
    ast.USub: lambda a: -a,
    ast.UAdd: lambda a: +a,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}

_ALLOWED_NODES = (
    ast.Expression,
    ast.Compare,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.BinOp,
    ast.UnaryOp,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Attribute,
    ast.Call,
    ast.IfExp,
    *(op for op in _OPERATORS),
)

_FORBIDDEN_HINTS = {
    ast.Pow: "'**' is not allowed (unbounded); use multiplication",
    ast.LShift: "'<<' is not allowed (unbounded)",
    ast.RShift: "'>>' is not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.Subscript: "subscripts are not allowed; use labels.NAME",
    ast.NamedExpr: "':=' is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.List: "list literals are not allowed",
}

MAX_CONSTANT = 10**15
MAX_LENGTH = 4096
CONSTANTS = {"nan": math.nan, "inf": math.inf}
MAX_DEPTH = 100


class LabelView:
    """``labels.NAME`` inside expressions: a label's value, or '' when the series lacks it."""

    __slots__ = ("_labels",)

    def __init__(self, labels: Mapping[str, str]):
        self._labels = labels

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._labels.get(name, "")


@dataclass
class CompiledExpr:
    """A validated expression with the metric names it reads; ``primary`` drives the series."""

    text: str
    metrics: tuple[str, ...]
    _node: Any = field(repr=False)
    _value_node: Any = field(repr=False, default=None)
    _evaluator: simpleeval.SimpleEval = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def primary(self) -> str | None:
        return self.metrics[0] if self.metrics else None

    def evaluate(self, names: dict[str, Any]) -> Any:
        """Evaluate with ``names``; raises ExprError for any run-time failure (never another type)."""
        ev = self._evaluator
        ev.names = names
        try:
            return ev.eval(self.text, previously_parsed=self._node)
        except ExprError:
            raise
        except simpleeval.NameNotDefined as e:
            raise ExprError(f"unknown name {e.name!r}") from None
        except (simpleeval.InvalidExpression, ArithmeticError, TypeError, ValueError, KeyError, RecursionError) as e:
            raise ExprError(f"{type(e).__name__}: {e}") from None

    def value(self, names: dict[str, Any]) -> float | None:
        """The value an alert reports: the left side of a top-level comparison, else the primary metric."""
        if self._value_node is not None:
            ev = self._evaluator
            ev.names = names
            try:
                v = ev.eval("", previously_parsed=self._value_node)
            except Exception:
                return None
        else:
            v = names.get(self.primary or "value")
        try:
            return float(v)
        except (TypeError, ValueError):
            return None


def _check_depth(tree: ast.AST) -> None:
    # Evaluation and the checks below recurse once per level: refuse what would exhaust the stack.
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExprError(
                f"expression is nested more than {MAX_DEPTH} levels deep", column=getattr(node, "col_offset", None)
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check(tree: ast.AST) -> list[str]:
    metrics: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp | ast.UnaryOp | ast.BoolOp) and type(node.op) in _FORBIDDEN_HINTS:
            raise ExprError(_FORBIDDEN_HINTS[type(node.op)], column=node.col_offset)  # the operator has no position
        hint = _FORBIDDEN_HINTS.get(type(node))
        if hint:
            raise ExprError(hint, column=getattr(node, "col_offset", None))
        if not isinstance(node, _ALLOWED_NODES):
            raise ExprError(
                f"{type(node).__name__} is not allowed in an expression",
                column=getattr(node, "col_offset", None),
            )
        if isinstance(node, ast.Attribute):
            if not (isinstance(node.value, ast.Name) and node.value.id == "labels"):
                raise ExprError("attribute access is only allowed as labels.NAME", column=node.col_offset)
            if node.attr.startswith("_"):
                raise ExprError(f"invalid label name {node.attr!r}", column=node.col_offset)
        elif isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                name = node.func.id if isinstance(node.func, ast.Name) else "?"
                raise ExprError(
                    f"unknown function {name!r} (available: {', '.join(sorted(FUNCTIONS))})",
                    column=node.col_offset,
                )
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, int | float) and not isinstance(node.value, bool):
                if abs(node.value) > MAX_CONSTANT:
                    raise ExprError(f"number {node.value!r} is too large", column=node.col_offset)
            elif isinstance(node.value, str):
                if len(node.value) > MAX_LENGTH:
                    raise ExprError("string constant is too long", column=node.col_offset)
            elif node.value is not None and not isinstance(node.value, bool):
                raise ExprError(f"constant {node.value!r} is not allowed", column=node.col_offset)
    # Metric names in source order (ast.walk is breadth-first, and `b if a else c` stores `a` first).
    names = [n for n in ast.walk(tree) if isinstance(n, ast.Name)]
    for node in sorted(names, key=lambda n: (n.lineno, n.col_offset)):
        if node.id not in RESERVED and node.id not in FUNCTIONS and node.id not in metrics:
            metrics.append(node.id)
    return metrics


class _Constants(ast.NodeTransformer):
    """Replaces the reserved names ``nan`` and ``inf`` by their values (they are never passed as names)."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in CONSTANTS:
            return ast.copy_location(ast.Constant(CONSTANTS[node.id]), node)
        return node


def compile_expr(text: str, *, require_metric: bool = True) -> CompiledExpr:
    """Validate and parse ``text`` once; raises ExprError with a column for any syntax or safety problem."""
    if not isinstance(text, str) or not text.strip():
        raise ExprError("expression is empty")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression is longer than {MAX_LENGTH} characters")
    src = text.strip()
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError as e:
        # In eval mode CPython reports an error at the end of the input as offset 0: point past the end.
        raise ExprError(f"syntax error: {e.msg}", column=e.offset - 1 if e.offset else len(src)) from None
    except (RecursionError, MemoryError):
        raise ExprError(f"expression is nested more than {MAX_DEPTH} levels deep") from None
    _check_depth(tree)
    metrics = _check(tree)
    if require_metric and not metrics and not any(isinstance(n, ast.Name) and n.id == "value" for n in ast.walk(tree)):
        raise ExprError("expression reads no metric")
    ev = simpleeval.SimpleEval(operators=dict(_OPERATORS), functions=dict(FUNCTIONS), names={})
    node = _Constants().visit(ev.parse(src))
    value_node = None
    body = _Constants().visit(tree).body
    if isinstance(body, ast.Compare) and len(body.ops) == 1:
        value_node = ast.Expr(value=body.left)
    return CompiledExpr(text=src, metrics=tuple(metrics), _node=node, _value_node=value_node, _evaluator=ev)


def truthy(result: Any) -> bool:
    """Whether an expression result counts as 'alerting' (NaN never does)."""
    if isinstance(result, float) and math.isnan(result):
        return False
    return bool(result)
