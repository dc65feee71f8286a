"""The async evaluator: per group and interval, evaluate each rule per series and persist transitions.

State changes and the ``alert_transition`` rows they emit are written in one transaction, so the
incidents stage sees exactly the transitions of the state the evaluator remembers after a crash.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import delete, select

from fsincident.config import Rule, RuleGroup
from fsincident.core import AlertState, Clock, Labels, Sample, Severity, SourceError, ensure_utc, isoformat
from fsincident.evaluation.state import Emit, SeriesState, step
from fsincident.expr import ExprError, LabelView, compile_expr, truthy
from fsincident.obs import Metrics, get_logger
from fsincident.plugins import Snapshot
from fsincident.sandbox import TemplateProblem
from fsincident.store import Store
from fsincident.store.tables import AlertTransition, RuleSeriesState

log = get_logger("fsincident.evaluation")

QueryFn = Callable[[str, str, datetime], Awaitable[list[Sample]]]

# The built-in rule behind SourceDown alerts (not in any rules file; key "fsincident/SourceDown").
SOURCE_DOWN = Rule(
    group="fsincident",
    alert="SourceDown",
    source="",
    expr=compile_expr("up == 0"),
    query=None,
    for_=timedelta(0),
    keep_firing_for=timedelta(0),
    severity=Severity.WARNING,
    labels={"severity": "warning"},
    annotations={},
    file="(built-in)",
    line=0,
)


@dataclass
class Tracked:
    """A pending or firing series of a rule."""

    state: SeriesState
    labels: Labels
    value: float | None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class RuleStatus:
    last_evaluation: datetime | None = None
    duration_seconds: float = 0.0
    last_error: str | None = None
    series_evaluated: int = 0


def alert_labels(rule: Rule, series: Labels) -> Labels:
    """Series labels, then the rule's labels, then ``alertname``."""
    d = series.as_dict()
    d.update(rule.labels)
    d["alertname"] = rule.alert
    return Labels(d)


class Evaluator:
    """Evaluates rule groups against source snapshots; ``kick`` is called after transitions are written."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        snapshots: Callable[[str], Snapshot | None],
        kick: Callable[[], None] = lambda: None,
        query: QueryFn | None = None,
        health: Callable[[], dict[str, tuple[Snapshot, int]]] = dict,
    ):
        self.store = store
        self.clock = clock
        self.metrics = metrics
        self.snapshots = snapshots
        self.kick = kick
        self.query = query
        self.health = health
        self.groups: dict[str, RuleGroup] = {}
        self.tracked: dict[str, dict[str, Tracked]] = {}
        self.status: dict[str, RuleStatus] = {}
        self._pending_removal: list[tuple[str, Tracked]] = []
        # One lock per group (groups evaluate concurrently; a slow query delays only its own group),
        # and one for the shared bookkeeping (removed rules, SourceDown).
        self._group_locks: dict[str, asyncio.Lock] = {}
        self._lock = asyncio.Lock()

    # ---------------------------------------------------------------- lifecycle

    async def restore(self) -> None:
        """Load pending/firing series from SQL so a restart neither re-pages nor forgets a pending alert."""
        now = self.clock.now()
        async with self.store.session() as s:
            rows = (await s.exec(select(RuleSeriesState))).all()
        for r in rows:
            st = SeriesState(
                AlertState(r.state),
                ensure_utc(r.active_since),  # type: ignore[arg-type]
                now,  # keep_firing_for counts from the restart, not from the last persisted activity
                ensure_utc(r.fired_at),
            )
            self.tracked.setdefault(r.rule, {})[r.fingerprint] = Tracked(
                st, Labels(r.labels), r.value, dict(r.annotations)
            )
        log.info("rule_state_restored", series=len(rows))

    def set_groups(self, groups: tuple[RuleGroup, ...]) -> None:
        """Install (re)loaded groups; firing series of rules that no longer exist are resolved next cycle."""
        self.groups = {g.name: g for g in groups}
        keys = {r.key for g in groups for r in g.rules} | {SOURCE_DOWN.key}
        for key in list(self.tracked):
            if key not in keys:
                for t in self.tracked.pop(key).values():
                    self._pending_removal.append((key, t))
        for key in list(self.status):
            if key not in keys:
                del self.status[key]

    async def resolve_removed(self) -> None:
        """Resolve the firing alerts of rules that a reload removed, and forget their state."""
        async with self._lock:
            if not self._pending_removal:
                return
            now = self.clock.now()
            transitions, deletes = [], []
            for key, tracked in self._pending_removal:
                if tracked.state.state == AlertState.FIRING:
                    transitions.append(self._transition(key, tracked, "resolved", now))
                deletes.append((key, tracked.labels.fingerprint))
            await self._persist(transitions, [], deletes)
            self._pending_removal = []
        if transitions:
            self.kick()

    async def evaluate_health(self) -> None:
        """The built-in ``SourceDown`` alert: fires for a source after ``down_after`` failed collections."""
        async with self._lock:
            now = self.clock.now()
            tracked = self.tracked.setdefault(SOURCE_DOWN.key, {})
            active: dict[str, tuple[Labels, float | None, Labels | None]] = {}
            health = self.health()
            for name, (snap, down_after) in health.items():
                if snap.failures >= down_after:
                    labels = Labels({"alertname": "SourceDown", "source": name, "severity": "warning"})
                    active[labels.fingerprint] = (labels, float(snap.failures), None)
            transitions: list[AlertTransition] = []
            upserts: list[tuple[str, str, Tracked]] = []
            deletes: list[tuple[str, str]] = []
            self._advance(SOURCE_DOWN, tracked, active, now, transitions, upserts, deletes)
            for t in (t for t in transitions if t.state == "firing"):
                snap = health.get(t.labels["source"], (None, 0))[0]
                t.annotations = {
                    "summary": f"source {t.labels['source']} failed {int(t.value or 0)} times in a row",
                    "error": (snap.error if snap else "") or "",
                }
            if transitions or upserts or deletes:
                await self._persist(transitions, upserts, deletes)
        if transitions:
            self.kick()

    # ---------------------------------------------------------------- evaluation

    async def evaluate_group(self, name: str) -> None:
        """Evaluate every rule of group ``name`` once; never raises (errors are recorded per rule)."""
        group = self.groups.get(name)
        if group is None:
            return
        lock = self._group_locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            return  # the previous cycle of this group is still running: skip, never pile up
        async with lock:
            t0 = time.perf_counter()
            now = self.clock.now()
            transitions: list[AlertTransition] = []
            upserts: list[tuple[str, str, Tracked]] = []
            deletes: list[tuple[str, str]] = []
            for rule in group.rules:
                await self._evaluate_rule(rule, now, transitions, upserts, deletes)
                await asyncio.sleep(0)  # let the API breathe between rules
            if transitions or upserts or deletes:
                await self._persist(transitions, upserts, deletes)
            self.metrics.rule_evaluations.labels(group.name).inc(len(group.rules))
            self.metrics.rule_eval_seconds.labels(group.name).observe(time.perf_counter() - t0)
            self._update_gauges()
        if transitions:
            self.kick()

    async def _evaluate_rule(
        self,
        rule: Rule,
        now: datetime,
        transitions: list[AlertTransition],
        upserts: list[tuple[str, str, Tracked]],
        deletes: list[tuple[str, str]],
    ) -> None:
        status = self.status.setdefault(rule.key, RuleStatus())
        t0 = time.perf_counter()
        tracked = self.tracked.setdefault(rule.key, {})
        error: str | None = None
        if rule.query is not None:
            snap = None
            try:
                if self.query is None:
                    raise SourceError("queries are not available")
                samples = await self.query(rule.source, rule.query, now)
            except SourceError as e:
                error = f"query on source {rule.source!r} failed: {e}"
            else:
                snap = Snapshot(source=rule.source, at=now, last_success=now)
                snap.metrics["value"] = {s.labels: s.value for s in samples}
        else:
            snap = self.snapshots(rule.source)
            if snap is None or snap.at is None:
                # The source has not finished its first collection (start-up, reload): nothing is known yet,
                # so no policy applies: neither an error alert nor a resolve of alerts restored from SQL.
                status.last_error = f"source {rule.source!r} has not been collected yet"
                return
            reads_up = rule.expr.metrics == ("up",)
            if not snap.ok and not reads_up:
                error = f"source {rule.source!r} has no data: {snap.error}"
        if error is not None or snap is None:
            status.last_error, status.last_evaluation = error, now
            self.metrics.rule_errors.labels(rule.group, rule.alert).inc()
            if rule.on_error == "keep_state":
                return  # no false resolves, no false pages while the source is down
            active = self._kept(tracked) if rule.on_error == "alerting" else {}
            special = self._special(rule, "error", error or "", active) if rule.on_error == "alerting" else None
            self._advance(rule, tracked, active, now, transitions, upserts, deletes)
            self._describe(rule, special, tracked, transitions)
            return
        active, errors, evaluated = self._active_series(rule, snap)
        status.series_evaluated = evaluated
        self.metrics.series_evaluations.inc(evaluated)
        status.last_error = errors[0] if errors else None
        if errors:
            self.metrics.rule_errors.labels(rule.group, rule.alert).inc()
            log.warning(
                "rule_error", rule=rule.key, file=rule.file, line=rule.line, error=errors[0], series_failed=len(errors)
            )
        special = None
        if evaluated == 0 and not errors:
            if rule.nodata == "keep_state":
                status.last_evaluation = now
                return
            if rule.nodata == "alerting":
                special = self._special(rule, "nodata", f"no series of {rule.expr.primary or 'the query'}", active)
        self._advance(rule, tracked, active, now, transitions, upserts, deletes)
        self._describe(rule, special, tracked, transitions)
        status.last_evaluation = now
        status.duration_seconds = time.perf_counter() - t0

    @staticmethod
    def _kept(tracked: dict[str, Tracked]) -> dict[str, tuple[Labels, float | None, Labels | None]]:
        """The currently pending/firing series, kept active (on_error: alerting keeps them)."""
        return {fp: (t.labels, t.value, None) for fp, t in tracked.items() if t.labels.get("reason") != "error"}

    @staticmethod
    def _special(rule: Rule, reason: str, detail: str, active: dict[str, Any]) -> tuple[str, str]:
        """Add the rule's single ``reason=nodata|error`` alert to ``active``; returns its fingerprint and detail.

        The detail (an error message) is an annotation, not a label: a message that changes during one
        outage (HTTP 500, then a timeout) must not become a new alert and a new page.
        """
        labels = Labels({**rule.labels, "alertname": rule.alert, "reason": reason})
        active[labels.fingerprint] = (labels, None, None)
        return labels.fingerprint, detail[:500]

    @staticmethod
    def _describe(
        rule: Rule, special: tuple[str, str] | None, tracked: dict[str, Tracked], transitions: list[AlertTransition]
    ) -> None:
        """Put the detail of a newly firing ``reason=`` alert into its annotations (``detail``, and ``summary``
        unless the rule has one)."""
        if special is None:
            return
        fp, detail = special
        extra = {"detail": detail} if "summary" in rule.annotations else {"detail": detail, "summary": detail}
        for tr in transitions:
            if tr.fingerprint == fp and tr.state == "firing":
                tr.annotations = {**(tr.annotations or {}), **extra}
                if fp in tracked:
                    tracked[fp].annotations = tr.annotations

    def _advance(
        self,
        rule: Rule,
        tracked: dict[str, Tracked],
        active: dict[str, tuple[Labels, float | None, Labels | None]],
        now: datetime,
        transitions: list[AlertTransition],
        upserts: list[tuple[str, str, Tracked]],
        deletes: list[tuple[str, str]],
    ) -> None:
        """Step every tracked or active series of ``rule`` and collect the rows to persist."""
        for fp in set(tracked) | set(active):
            prev = tracked.get(fp)
            hit = active.get(fp)
            new_state, emit = step(prev.state if prev else None, hit is not None, now, rule.for_, rule.keep_firing_for)
            if new_state is None:
                if prev is not None:
                    del tracked[fp]
                    deletes.append((rule.key, fp))
                    if emit == Emit.RESOLVED:
                        transitions.append(self._transition(rule.key, prev, "resolved", now))
                continue
            labels, value, series = hit if hit else (prev.labels, prev.value, None)  # type: ignore[union-attr]
            cur = Tracked(new_state, labels, value, prev.annotations if prev else {})
            if emit == Emit.FIRING:
                cur.annotations = self._annotations(rule, labels, value, series)
                transitions.append(self._transition(rule.key, cur, "firing", now))
            tracked[fp] = cur
            if prev is None or prev.state.state != new_state.state or emit != Emit.NONE:
                upserts.append((rule.key, fp, cur))

    def _active_series(
        self, rule: Rule, snap: Snapshot
    ) -> tuple[dict[str, tuple[Labels, float | None, Labels]], list[str], int]:
        expr = rule.expr
        primary = expr.primary or "value"  # a query rule's series are its result, named "value"
        others = expr.metrics[1:]
        active: dict[str, tuple[Labels, float | None, Labels]] = {}
        errors: list[str] = []
        series = snap.metrics.get(primary or "", {})
        n = 0
        for labels, v in series.items():
            names: dict[str, Any] = {primary: v, "value": v, "labels": LabelView(labels)}
            missing = False
            for m in others:
                other = snap.metrics.get(m)
                ov = other.get(labels) if other else None
                if ov is None:
                    missing = True
                    break
                names[m] = ov
            if missing:
                continue
            n += 1
            try:
                result = expr.evaluate(names)
            except ExprError as e:
                errors.append(f"{rule.file}:{rule.line}: {rule.key}: {e} (series {labels!r})")
                continue
            if truthy(result):
                al = alert_labels(rule, labels)
                value = expr.value(names)
                if value is not None and math.isnan(value):
                    value = None
                active[al.fingerprint] = (al, value, labels)
        return active, errors, n

    def _annotations(self, rule: Rule, labels: Labels, value: float | None, series: Labels | None) -> dict[str, str]:
        out = {}
        ctx = {"value": value, "labels": labels.as_dict(), "alertname": rule.alert, "severity": rule.severity.value}
        for name, tpl in rule.annotations.items():
            try:
                out[name] = tpl.render(**ctx)
            except TemplateProblem as e:
                out[name] = f"(annotation failed: {e})"
                self.metrics.rule_errors.labels(rule.group, rule.alert).inc()
                log.warning("annotation_error", rule=rule.key, annotation=name, error=str(e))
        return out

    @staticmethod
    def _transition(rule_key: str, t: Tracked, state: str, now: datetime) -> AlertTransition:
        return AlertTransition(
            fingerprint=t.labels.fingerprint,
            alertname=t.labels.get("alertname", rule_key),
            origin=f"rule:{rule_key}",
            labels=t.labels.as_dict(),
            annotations=t.annotations,
            value=t.value,
            state=state,
            at=now,
        )

    async def _persist(
        self,
        transitions: list[AlertTransition],
        upserts: list[tuple[str, str, Tracked]],
        deletes: list[tuple[str, str]],
    ) -> None:
        async with self.store.session() as s:
            for rule_key, fp in deletes:
                await s.exec(
                    delete(RuleSeriesState).where(RuleSeriesState.rule == rule_key, RuleSeriesState.fingerprint == fp)
                )
            for rule_key, fp, t in upserts:
                row = await s.get(RuleSeriesState, (rule_key, fp))
                if row is None:
                    row = RuleSeriesState(rule=rule_key, fingerprint=fp)
                row.state = t.state.state.value
                row.labels = t.labels.as_dict()
                row.annotations = t.annotations
                row.value = t.value
                row.active_since = t.state.active_since
                row.fired_at = t.state.fired_at
                row.last_active = t.state.last_active
                s.add(row)
            for tr in transitions:
                s.add(tr)
        for tr in transitions:
            log.info(
                "alert_" + tr.state,
                rule=tr.origin.removeprefix("rule:"),
                series=tr.labels,
                value=tr.value,
                fingerprint=tr.fingerprint,
            )

    def _update_gauges(self) -> None:
        counts = {"pending": 0, "firing": 0}
        for series in self.tracked.values():
            for t in series.values():
                counts[t.state.state.value] = counts.get(t.state.state.value, 0) + 1
        for k, v in counts.items():
            self.metrics.alerts.labels(k).set(v)

    # ---------------------------------------------------------------- API view

    def rules_view(self) -> list[dict[str, Any]]:
        """State of every group, rule and tracked series, for ``GET /api/v1/rules``."""
        out = []
        for g in self.groups.values():
            rules = []
            for r in g.rules:
                st = self.status.get(r.key, RuleStatus())
                series = self.tracked.get(r.key, {})
                states = [t.state.state for t in series.values()]
                state = (
                    "firing"
                    if AlertState.FIRING in states
                    else "pending"
                    if AlertState.PENDING in states
                    else "inactive"
                )
                rules.append(
                    {
                        "name": r.alert,
                        "group": g.name,
                        "expr": r.expr.text,
                        "query": r.query,
                        "source": r.source,
                        "nodata": r.nodata,
                        "on_error": r.on_error,
                        "for": r.for_.total_seconds(),
                        "keep_firing_for": r.keep_firing_for.total_seconds(),
                        "severity": r.severity.value,
                        "labels": r.labels,
                        "state": state,
                        "health": "ok" if st.last_error is None else "error",
                        "last_error": st.last_error,
                        "last_evaluation": isoformat(st.last_evaluation),
                        "evaluation_seconds": round(st.duration_seconds, 6),
                        "series_evaluated": st.series_evaluated,
                        "file": r.file,
                        "line": r.line,
                        "alerts": [
                            {
                                "labels": t.labels.as_dict(),
                                "state": t.state.state.value,
                                "value": t.value,
                                "active_since": isoformat(t.state.active_since),
                                "fired_at": isoformat(t.state.fired_at),
                                "annotations": t.annotations,
                            }
                            for t in series.values()
                        ],
                    }
                )
            out.append({"name": g.name, "interval": g.interval.total_seconds(), "file": g.file, "rules": rules})
        return out
