"""Compiled rules over a bounded history: which series of a rule are active at an instant (pure, no I/O).

Used by the daemon's evaluator (one snapshot per source collection) and by ``fsincident test`` and
``fsincident backtest`` (replayed history). Not thread-safe: one caller at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fsincident.config import Rule
from fsincident.core import Labels
from fsincident.expr import Caches, CompiledExpr, ExprError, MetricHistory, Vector

QUERY = "\x00query"  # history key prefix of a query rule's results (never a source name)
MAX_LABEL_CACHE = 200_000

Active = dict[str, tuple[Labels, float | None, Labels]]


@dataclass
class Result:
    """What one evaluation of a rule found: active series by alert fingerprint, errors, series looked at."""

    active: Active = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    evaluated: int = 0


class _Ctx:
    __slots__ = ("_lookup", "cache", "lookback", "now", "seen")

    def __init__(self, now: float, lookback: float | None, cache: Caches, lookup: Any):
        self.now = now
        self.lookback = lookback
        self.cache = cache
        self.seen = 0
        self._lookup = lookup

    def metric(self, name: str) -> MetricHistory | None:
        return self._lookup(name)


def _history_key(rule_key: str, source: str, query: bool, metric: str) -> tuple[str, str]:
    if query and metric == "value":
        return (QUERY, rule_key)
    return (source, metric)


class RuleSet:
    """The rules of a config and the history their expressions read.

    ``lookback`` None = daemon semantics (a series' instant value is its sample in the latest snapshot of
    its source); a number = Prometheus semantics (the latest sample at most that many seconds old).
    """

    def __init__(self, rules: Iterable[Rule] = (), *, slos: Iterable[Any] = (), lookback: float | None = None):
        self.lookback = lookback
        self.cache = Caches()
        self._hist: dict[tuple[str, str], MetricHistory] = {}
        self._by_source: dict[str, list[tuple[str, MetricHistory]]] = {}
        self._alert_labels: dict[tuple[str, Labels], Labels] = {}
        self._series: dict[str, dict[str, Labels]] = {}
        self.update(rules, slos=slos)

    # ------------------------------------------------------------------------------------------ setup

    def update(self, rules: Iterable[Rule], *, slos: Iterable[Any] = ()) -> None:
        """Install a new rule list; the history of (source, metric) pairs still read is kept."""
        need: dict[tuple[str, str], float] = {}
        ttl: dict[tuple[str, str], float] = {}
        extra = self.lookback or 0.0

        def add(rule_key: str, source: str, query: bool, expr: CompiledExpr | None) -> None:
            if expr is None:
                return
            for metric, span in expr.spans.items():
                key = _history_key(rule_key, source, query, metric)
                need[key] = max(need.get(key, 0.0), span + extra)
                ttl[key] = max(ttl.get(key, 0.0), expr.ttls.get(metric, 0.0))

        self.rules = list(rules)
        for r in self.rules:
            add(r.key, r.source, r.query is not None, r.expr)
            add(r.key, r.source, r.query is not None, getattr(r, "resolve_expr", None))
        self.slos = list(slos)
        for s in self.slos:
            add(f"slo:{s.name}", s.source, False, s.budget_expr)
        for key in list(self._hist):
            if key not in need:
                del self._hist[key]
        for key, span in need.items():
            h = self._hist.get(key)
            if h is None:
                # Replays (a lookback is set) keep exact float64 samples and Prometheus' staleness markers.
                self._hist[key] = MetricHistory(span, ttl[key], exact=self.lookback is not None)
            else:
                h.set_span(span, ttl[key])
        self._by_source = {}
        for (source, metric), h in self._hist.items():
            if source != QUERY:
                self._by_source.setdefault(source, []).append((metric, h))
        keys = {r.key for r in self.rules}
        self._series = {k: v for k, v in self._series.items() if k in keys}
        self._alert_labels.clear()

    def history_bytes(self) -> int:
        """Bytes held by all history arrays (``fsincident_rule_history_bytes``)."""
        return sum(h.nbytes() for h in self._hist.values())

    # ------------------------------------------------------------------------------------------ input

    def ingest(self, source: str, at: float, metrics: Mapping[str, Mapping[Labels, float]]) -> None:
        """Record one snapshot of ``source`` taken at unix time ``at`` (older or repeated ones are ignored)."""
        empty: Mapping[Labels, float] = {}
        for metric, h in self._by_source.get(source, ()):
            h.ingest(at, metrics.get(metric, empty))

    def ingest_query(self, rule: Rule, at: float, samples: Mapping[Labels, float]) -> None:
        """Record the result of a ``query:`` rule (its ``value``)."""
        h = self._hist.get((QUERY, rule.key))
        if h is not None:
            h.ingest(at, samples)

    # ------------------------------------------------------------------------------------------ evaluation

    def _ctx(self, rule_key: str, source: str, query: bool, now: float) -> _Ctx:
        hist = self._hist

        def lookup(metric: str) -> MetricHistory | None:
            return hist.get(_history_key(rule_key, source, query, metric))

        return _Ctx(now, self.lookback, self.cache, lookup)

    def evaluate_expr(self, expr: CompiledExpr, source: str, now: float, *, key: str = "") -> dict[Labels, float]:
        """Evaluate any compiled expression over ``source``'s history; raises ExprError."""
        ctx = self._ctx(key, source, False, now)
        out = expr.evaluate(ctx)
        if isinstance(out, Vector):
            return dict(out.items())
        return {} if math.isnan(out) else {Labels(): out}

    def evaluate(self, rule: Rule, now: float, firing: Mapping[str, Labels] | Iterable[str] = ()) -> Result:
        """Active series of ``rule`` at ``now``; never raises (failures are in ``errors``).

        ``firing`` (alert fingerprint -> alert labels, or just fingerprints) are the rule's firing alerts:
        with ``resolve_expr`` a firing series stays active until ``resolve_expr`` holds for it (or it vanishes).
        """
        res = Result()
        ctx = self._ctx(rule.key, rule.source, rule.query is not None, now)
        try:
            out = rule.expr.evaluate(ctx)
        except ExprError as e:
            res.errors.append(self._error(rule, e))
            res.evaluated = ctx.seen
            return res
        res.evaluated = ctx.seen
        self._collect(rule, out, res.active)
        seen = self._series.setdefault(rule.key, {})
        for fp, (_, _, series) in res.active.items():
            seen[fp] = series
        resolve = getattr(rule, "resolve_expr", None)
        if resolve is not None:
            fps = set(firing)
            held = [fp for fp in fps if fp not in res.active]
            if held:
                self._hold(rule, resolve, ctx, held, firing, res)
            for fp in list(seen):
                if fp not in res.active and fp not in fps:
                    del seen[fp]
        elif len(seen) > len(res.active):
            self._series[rule.key] = {fp: res.active[fp][2] for fp in res.active}
        return res

    def _hold(
        self,
        rule: Rule,
        resolve: CompiledExpr,
        ctx: _Ctx,
        held: list[str],
        firing: Mapping[str, Labels] | Iterable[str],
        res: Result,
    ) -> None:
        """Hysteresis: keep firing series active unless resolve_expr holds for them or they vanished."""
        try:
            resolved = resolve.evaluate(ctx)
            presence = rule.expr.evaluate_presence(ctx)
        except ExprError as e:
            res.errors.append(self._error(rule, e, what="resolve_expr"))
            for fp in held:  # cannot tell: keep firing rather than resolve on an error
                series = self._series_of(rule, fp, firing)
                if series is not None:
                    res.active[fp] = (self._alert(rule, series), None, series)
            return
        for fp in held:
            series = self._series_of(rule, fp, firing)
            if series is None:
                continue
            if _value_of(resolved, series) is not None:
                continue  # resolve_expr holds: let it resolve
            v = _value_of(presence, series)
            if v is None:
                continue  # the series is gone: resolves like any vanished series
            res.active[fp] = (self._alert(rule, series), v, series)

    def _series_of(self, rule: Rule, fp: str, firing: Mapping[str, Labels] | Iterable[str]) -> Labels | None:
        known = self._series.get(rule.key, {}).get(fp)
        if known is not None:
            return known
        if isinstance(firing, Mapping) and fp in firing:
            alert = firing[fp]
            drop = set(rule.labels) | {"alertname"}
            return Labels({k: v for k, v in alert.items() if k not in drop})
        return None

    def _alert(self, rule: Rule, series: Labels) -> Labels:
        key = (rule.key, series)
        al = self._alert_labels.get(key)
        if al is None:
            d = series.as_dict()
            d.update(rule.labels)
            d["alertname"] = rule.alert
            al = Labels(d)
            if len(self._alert_labels) >= MAX_LABEL_CACHE:
                self._alert_labels.clear()
            self._alert_labels[key] = al
        return al

    def _collect(self, rule: Rule, out: Vector | float, active: Active) -> None:
        if isinstance(out, Vector):
            idx = np.flatnonzero(~np.isnan(out.values))
            labels = out.table.labels
            values = out.values
            for i in idx.tolist():
                series = labels[i]
                al = self._alert(rule, series)
                v = float(values[i])
                active[al.fingerprint] = (al, v, series)
        elif not math.isnan(out):
            series = Labels()
            al = self._alert(rule, series)
            active[al.fingerprint] = (al, float(out), series)

    @staticmethod
    def _error(rule: Rule, e: ExprError, what: str = "expr") -> str:
        return f"{rule.file}:{rule.line}: {rule.key}: {what}: {e}"


def _value_of(v: Vector | float, series: Labels) -> float | None:
    if not isinstance(v, Vector):
        return None if math.isnan(v) else float(v)
    i = v.table.index.get(series)
    if i is None or i >= len(v.values):
        return None
    x = float(v.values[i])
    return None if math.isnan(x) else x
