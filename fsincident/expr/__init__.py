"""Rule expressions: compile-once, evaluate-many, vectorised over series with numpy.

See ``fsincident.expr.lang`` for the language, ``history`` for the bounded per-metric history,
``vector`` for joins and aggregation, and ``windows`` for the window/anomaly/forecast kernels.
"""

from __future__ import annotations

import math
from typing import Any

from fsincident.expr.history import MetricHistory, Table
from fsincident.expr.lang import FUNCTIONS, RESERVED, CompiledExpr, Context, compile_expr
from fsincident.expr.vector import Caches, ExprError, Vector

__all__ = [
    "FUNCTIONS",
    "RESERVED",
    "Caches",
    "CompiledExpr",
    "Context",
    "ExprError",
    "MetricHistory",
    "Table",
    "Vector",
    "compile_expr",
    "truthy",
]


def truthy(result: Any) -> bool:
    """Whether a scalar result counts as 'alerting': present (not NaN) and not zero."""
    if isinstance(result, float) and math.isnan(result):
        return False
    return bool(result)
