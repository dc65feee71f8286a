"""The hardened jinja2 sandbox used for annotations and notification templates."""

from __future__ import annotations

import operator
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from fsincident.core import FsIncidentError

MAX_REPEAT_LEN = 100_000
MAX_POW_EXPONENT = 64
MAX_POW_BASE = 10**12
MAX_OUTPUT = 64_000


class TemplateProblem(FsIncidentError):
    """A template failed to compile or render; the message says where and why."""

    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(message)
        self.line = line


class _CappedEnvironment(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment whose ``*`` and ``**`` refuse results that would not fit."""

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if not isinstance(left, int | float) or not isinstance(right, int | float):
                raise SecurityError("'**' needs numbers")
            if abs(right) > MAX_POW_EXPONENT or abs(left) > MAX_POW_BASE:
                raise SecurityError(f"'**' is limited to exponents up to {MAX_POW_EXPONENT}")
            return operator.pow(left, right)
        if operator_ == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int):
                    if len(seq) * max(n, 0) > MAX_REPEAT_LEN:
                        raise SecurityError(f"repeating would exceed {MAX_REPEAT_LEN} items")
        return super().call_binop(context, operator_, left, right)


def _round(value: Any, precision: int = 0) -> Any:
    try:
        if int(precision) <= 0:
            return int(round(float(value), int(precision)))
        return round(float(value), int(precision))
    except (TypeError, ValueError):
        return value


def make_environment() -> ImmutableSandboxedEnvironment:
    """A fresh sandbox: StrictUndefined, capped arithmetic, no constant folding of operators."""
    env = _CappedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    # Sandboxed binary operators go through call_binop at render time instead of being folded
    # at compile time, where an unbounded '**' would hang inside from_string().
    env.intercepted_binops = frozenset({"*", "**", "+", "//", "%", "/", "-"})
    env.filters["round"] = _round
    return env


_ENV = make_environment()


class CompiledTemplate:
    """A template compiled once at load; ``render`` raises TemplateProblem, never hangs on arithmetic."""

    def __init__(self, source: str, *, env: ImmutableSandboxedEnvironment | None = None):
        self.source = source
        env = env or _ENV
        try:
            self._template = env.from_string(source)
        except TemplateError as e:
            raise TemplateProblem(f"template error: {e}", line=getattr(e, "lineno", None)) from None
        except SecurityError as e:
            raise TemplateProblem(f"template refused: {e}") from None

    def render(self, **context: Any) -> str:
        try:
            out = self._template.render(**context)
        except SecurityError as e:
            raise TemplateProblem(f"template refused: {e}") from None
        except TemplateError as e:
            raise TemplateProblem(f"template error: {e}", line=getattr(e, "lineno", None)) from None
        except (ArithmeticError, TypeError, ValueError, KeyError, AttributeError) as e:
            raise TemplateProblem(f"template error: {type(e).__name__}: {e}") from None
        if len(out) > MAX_OUTPUT:
            out = out[:MAX_OUTPUT] + "…"
        return out
