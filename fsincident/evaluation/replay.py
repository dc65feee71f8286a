"""Replay rules over recorded samples, synchronously: the engine behind ``fsincident test`` and ``backtest``.

A replay feeds samples (``feed``) and evaluates every rule at chosen times (``step``) with the same
expression engine (:class:`~fsincident.evaluation.rules.RuleSet`) and the same pure alert state machine
(:func:`~fsincident.evaluation.state.step`) as the daemon, so ``for``, ``keep_firing_for``, ``resolve_expr``
and flap detection behave exactly as they would have. All fed series form one source: a rule's ``source``
does not matter in a replay. Rules with ``query:`` cannot be replayed (their data comes from the source).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fsincident.config import Rule, RuleGroup
from fsincident.core import AlertState, FsIncidentError, Labels
from fsincident.evaluation.rules import RuleSet
from fsincident.evaluation.state import Emit, SeriesState, step
from fsincident.sandbox import TemplateProblem

__all__ = ["STALE", "STALE_NAN", "Alert", "Replay", "ReplayError", "Transition", "load_rule_files"]


class ReplayError(FsIncidentError):
    """The rules cannot be replayed (e.g. a ``query:`` rule); the message names the rule, file and line."""


class _Stale:
    """The stale marker of Prometheus' test notation: the series ends here (no 5-minute lookback)."""

    def __repr__(self) -> str:
        return "stale"


STALE = _Stale()
"""A sample value meaning "this series has ended" (``stale`` in promtool's series notation)."""

STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
"""How a stale marker is stored: Prometheus' staleness NaN (a NaN with its own bit pattern)."""

Value = float | _Stale


@dataclass(frozen=True)
class Transition:
    """An alert starting (``firing``) or ending (``resolved``) at ``at`` (Unix seconds)."""

    rule: Rule
    labels: Labels
    state: str
    at: float
    value: float | None
    annotations: dict[str, str]

    @property
    def alert(self) -> str:
        return self.rule.alert

    @property
    def at_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)


@dataclass
class Alert:
    """A pending or firing alert of a rule, as the replay sees it now."""

    rule: Rule
    labels: Labels
    state: SeriesState
    value: float | None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def firing(self) -> bool:
        return self.state.state == AlertState.FIRING


def _where(rule: Rule) -> str:
    return f"{rule.file}:{rule.line}: {rule.key}"


def load_rule_files(paths: Iterable[str | Path]) -> tuple[RuleGroup, ...]:
    """Load fsincident rule files with the daemon's validation (any ``source`` name is accepted, none is needed);
    raises ConfigError listing every problem, located."""
    from fsincident.config import load_rule_files as load

    return load(paths, placeholder_source="replay")


class Replay:
    """Evaluates ``rules`` over fed samples; ``interval`` is the nominal evaluation interval (seconds),
    ``lookback`` how long an instant read still sees a series' last sample (Prometheus: 5 minutes)."""

    def __init__(self, rules: Iterable[Rule], *, interval: float, lookback: float = 300.0):
        self.rules: tuple[Rule, ...] = tuple(rules)
        for r in self.rules:
            if r.query is not None:
                raise ReplayError(
                    f"{_where(r)}: a query: rule cannot be replayed (its data comes from the source's query); "
                    "remove it from the rule files given"
                )
        self.interval = float(interval)
        self.lookback = float(lookback)
        self.ruleset = RuleSet(self.rules, lookback=self.lookback)
        self.sources = sorted({r.source for r in self.rules})
        self.tracked: dict[str, dict[str, Alert]] = {r.key: {} for r in self.rules}
        self.errors: list[str] = []
        """Evaluation errors of the last ``step`` (``file:line: group/alert: message``)."""
        self.warnings: list[str] = []
        """Annotation templates that failed in the last ``step`` (the annotation reads ``(annotation failed: …)``)."""
        self.now: float | None = None

    # ---------------------------------------------------------------- input

    def feed(self, at: float, metrics: Mapping[str, Mapping[Labels, Value]]) -> None:
        """Add the samples taken at ``at`` (metric -> labels -> value); never fails."""
        clean: dict[str, dict[Labels, float]] = {}
        for name, series in metrics.items():
            clean[name] = {lab: (STALE_NAN if v is STALE else float(v)) for lab, v in series.items()}  # type: ignore[arg-type]
        for source in self.sources:
            self.ruleset.ingest(source, at, clean)

    # ---------------------------------------------------------------- evaluation

    def step(self, at: float) -> list[Transition]:
        """Evaluate every rule at ``at``; returns the alerts that started or ended (errors go to ``errors``)."""
        self.now = at
        self.errors = []
        self.warnings = []
        now = datetime.fromtimestamp(at, UTC)
        out: list[Transition] = []
        for rule in self.rules:
            tracked = self.tracked[rule.key]
            firing = {fp: a.labels for fp, a in tracked.items() if a.firing}
            res = self.ruleset.evaluate(rule, at, firing)
            self.errors.extend(res.errors)
            active: dict[str, tuple[Labels, float | None]] = {
                fp: (labels, value) for fp, (labels, value, _series) in res.active.items()
            }
            special: tuple[str, str] | None = None
            if res.errors and not res.active:
                # Failed as a whole: like the daemon, the rule's on_error policy decides (not "nothing matched").
                if rule.on_error == "keep_state":
                    continue
                if rule.on_error == "alerting":
                    kept = (a for a in tracked.values() if a.state.state != AlertState.INACTIVE)
                    active = {
                        a.labels.fingerprint: (a.labels, a.value) for a in kept if a.labels.get("reason") != "error"
                    }
                    special = self._special(rule, "error", res.errors[0][:500], active)
            elif res.evaluated == 0 and not res.errors:
                if rule.nodata == "keep_state":
                    continue
                if rule.nodata == "alerting":
                    special = self._special(rule, "nodata", f"no series of {rule.expr.primary or 'the query'}", active)
            out.extend(self._advance(rule, tracked, active, now, at, special))
        return out

    @staticmethod
    def _special(
        rule: Rule, reason: str, detail: str, active: dict[str, tuple[Labels, float | None]]
    ) -> tuple[str, str]:
        labels = Labels({**rule.labels, "alertname": rule.alert, "reason": reason})
        active[labels.fingerprint] = (labels, None)
        return labels.fingerprint, detail

    def _advance(
        self,
        rule: Rule,
        tracked: dict[str, Alert],
        active: dict[str, tuple[Labels, float | None]],
        now: datetime,
        at: float,
        special: tuple[str, str] | None,
    ) -> list[Transition]:
        out = []
        for fp in sorted(set(tracked) | set(active)):
            prev = tracked.get(fp)
            hit = active.get(fp)
            new, emit = step(
                prev.state if prev else None,
                hit is not None,
                now,
                rule.for_,
                rule.keep_firing_for,
                flap_window=rule.flap_window,
                flap_changes=rule.flap_changes,
            )
            if new is None:
                tracked.pop(fp, None)
                if emit == Emit.RESOLVED and prev is not None:
                    out.append(Transition(rule, prev.labels, "resolved", at, prev.value, prev.annotations))
                continue
            labels, value = hit if hit else (prev.labels, prev.value)  # type: ignore[union-attr]
            if value is not None and math.isnan(value):
                value = None
            cur = Alert(rule, labels, new, value, prev.annotations if prev else {})
            if emit == Emit.FIRING:
                cur.annotations = self._annotations(rule, labels, value)
                if special is not None and fp == special[0]:
                    extra = {"detail": special[1]}
                    if "summary" not in rule.annotations:
                        extra["summary"] = special[1]
                    cur.annotations = {**cur.annotations, **extra}
                out.append(Transition(rule, labels, "firing", at, value, cur.annotations))
            elif emit == Emit.RESOLVED:
                out.append(Transition(rule, labels, "resolved", at, value, cur.annotations))
            tracked[fp] = cur
        return out

    def _annotations(self, rule: Rule, labels: Labels, value: float | None) -> dict[str, str]:
        ctx = {"value": value, "labels": labels.as_dict(), "alertname": rule.alert, "severity": rule.severity.value}
        out = {}
        for name, tpl in rule.annotations.items():
            try:
                out[name] = tpl.render(**ctx)
            except TemplateProblem as e:
                out[name] = f"(annotation failed: {e})"
                self.warnings.append(f"{_where(rule)}: annotation {name!r}: {e}")
        return out

    # ---------------------------------------------------------------- state

    def alerts(self, rule_or_name: Rule | str, *, pending: bool = False) -> list[Alert]:
        """The firing alerts (with ``pending``: also pending ones) of a rule, or of every rule of that alert name."""
        if isinstance(rule_or_name, str):
            keys = [r.key for r in self.rules if r.alert == rule_or_name]
        else:
            keys = [rule_or_name.key]
        out = []
        for key in keys:
            for a in self.tracked.get(key, {}).values():
                if a.firing or (pending and a.state.state == AlertState.PENDING):
                    out.append(a)
        return out
