"""The compiled rule model the evaluator runs: ``Rule`` and ``RuleGroup`` (built by the loader, never by hand)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fsincident.core import Severity
from fsincident.expr import CompiledExpr
from fsincident.sandbox import CompiledTemplate

DEFAULT_INTERVAL = timedelta(seconds=15)


@dataclass(frozen=True)
class Rule:
    """A rule ready to evaluate: compiled expression and annotation templates, resolved source."""

    group: str
    alert: str
    source: str
    expr: CompiledExpr
    query: str | None
    for_: timedelta
    keep_firing_for: timedelta
    severity: Severity
    labels: dict[str, str]
    annotations: dict[str, CompiledTemplate]
    file: str
    line: int
    nodata: str = "ok"
    on_error: str = "keep_state"
    resolve_expr: CompiledExpr | None = None
    """When set, a firing alert resolves only once this holds for its series (hysteresis)."""
    flap_window: timedelta = timedelta(0)
    flap_changes: int = 0
    """``flap_changes`` state changes within ``flap_window`` mark the alert flapping; 0 = off."""
    slo: str | None = None
    """Name of the SLO that generated this burn-rate rule, else None."""

    @property
    def key(self) -> str:
        """Stable identity across reloads: ``group/alert``."""
        return f"{self.group}/{self.alert}"


@dataclass(frozen=True)
class RuleGroup:
    name: str
    interval: timedelta
    source: str | None
    rules: tuple[Rule, ...]
    file: str
