"""The async evaluator: per group and interval, evaluate each rule per series and persist transitions.

State changes and the ``alert_transition`` rows they emit are written in one transaction, so the
incidents stage sees exactly the transitions of the state the evaluator remembers after a crash.

The CPU work of a cycle (ingesting snapshots into the rules' history and evaluating the expressions)
runs in one dedicated worker thread, so the API stays responsive while a large group evaluates; the
bookkeeping (which series are pending or firing, what to persist) stays on the event loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import delete, select

from fsincident.config import Rule, RuleGroup
from fsincident.config.slo import Slo
from fsincident.core import AlertState, Clock, Labels, Sample, Severity, SourceError, ensure_utc, isoformat
from fsincident.evaluation.rules import RuleSet
from fsincident.evaluation.state import Emit, SeriesState, step
from fsincident.expr import compile_expr
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
    """A pending or firing series of a rule (or an inactive one that only remembers its flap history)."""

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


@dataclass
class SloStatus:
    """The last evaluation of an SLO's error-budget expression."""

    last_evaluation: datetime | None = None
    last_error: str | None = None
    budget: dict[Labels, float] = field(default_factory=dict)


@dataclass
class _Plan:
    """What the worker thread evaluates for one rule: its firing alerts (fingerprint -> labels; with
    ``resolve_expr`` they stay active until it holds), and a query's result."""

    rule: Rule
    firing: dict[str, Labels]
    samples: dict[Labels, float] | None = None


@dataclass
class _Outcome:
    active: dict[str, tuple[Labels, float | None, Labels | None]]
    errors: list[str]
    evaluated: int
    seconds: float


Active = dict[str, tuple[Labels, float | None, Labels | None]]


def _persisted(t: Tracked, exact_last_active: bool) -> tuple[Any, ...]:
    """The fields of a series' row that must reach SQL when they change.

    ``last_active`` moves at every true evaluation; it is written each cycle only where a restart needs it
    (a firing series of a rule with ``keep_firing_for``); everywhere else it is written with the other changes.
    """
    s = t.state
    return (
        s.state,
        s.active_since,
        s.fired_at,
        s.condition,
        s.changes,
        s.flapping,
        s.last_active if exact_last_active else None,
    )


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
        self.slos: dict[str, Slo] = {}
        self.tracked: dict[str, dict[str, Tracked]] = {}
        self.status: dict[str, RuleStatus] = {}
        self.slo_status: dict[str, SloStatus] = {}
        self._slo_groups: dict[str, list[str]] = {}
        self._pending_removal: list[tuple[str, Tracked]] = []
        # One lock per group (groups evaluate concurrently; a slow query delays only its own group),
        # and one for the shared bookkeeping (removed rules, SourceDown).
        self._group_locks: dict[str, asyncio.Lock] = {}
        self._lock = asyncio.Lock()
        # The rules, their history and the expression work live in one worker thread: every use of the
        # RuleSet (install, ingest, evaluate) is a job of this single-thread pool, so they never overlap.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fsincident-eval")
        self._rs = RuleSet((), lookback=None)
        self._generation = 0  # bumped by set_groups (loop side)
        self._rs_generation = 0  # the generation installed in the RuleSet (worker side)
        self._ingested: dict[str, datetime] = {}  # source -> time of the last snapshot ingested (worker side)

    # ---------------------------------------------------------------- lifecycle

    async def restore(self, reset: bool = False) -> None:
        """Load the series state from SQL so a restart neither re-pages nor forgets a pending or held alert; with
        ``reset`` (a replica promoted to leader) what SQL holds replaces what memory remembers. Raises on a
        database error.

        ``last_active`` is restored as persisted: ``keep_firing_for`` counts from the last evaluation where the
        condition held, which the row records exactly (see ``_persisted``), so a restart neither cuts the hold
        short nor extends it by the downtime.
        """
        async with self.store.session() as s:
            rows = (await s.exec(select(RuleSeriesState))).all()
        if reset:  # the leader before this one evaluated meanwhile: its state in SQL is the truth
            self.tracked.clear()
            self._pending_removal = []
        for r in rows:
            st = SeriesState(
                AlertState(r.state),
                ensure_utc(r.active_since),  # type: ignore[arg-type]
                ensure_utc(r.last_active),  # type: ignore[arg-type]
                ensure_utc(r.fired_at),
                bool(r.condition),
                tuple(_parse_times(r.changes)),
                bool(r.flapping),
            )
            self.tracked.setdefault(r.rule, {})[r.fingerprint] = Tracked(
                st, Labels(r.labels), r.value, dict(r.annotations)
            )
        log.info("rule_state_restored", series=len(rows))

    def set_groups(self, groups: tuple[RuleGroup, ...], slos: Iterable[Slo] = ()) -> None:
        """Install (re)loaded groups and SLOs; firing series of rules that no longer exist are resolved next cycle."""
        self.groups = {g.name: g for g in groups}
        self.slos = {s.name: s for s in slos}
        keys = {r.key for g in groups for r in g.rules} | {SOURCE_DOWN.key}
        for key in list(self.tracked):
            if key not in keys:
                for t in self.tracked.pop(key).values():
                    self._pending_removal.append((key, t))
        for key in list(self.status):
            if key not in keys:
                del self.status[key]
        # An SLO's error budget is evaluated with the group of its burn-rate rules (named after the SLO).
        group_of = {r.key: g.name for g in groups for r in g.rules}
        self._slo_groups = {}
        for slo in self.slos.values():
            group = next((group_of[k] for k in slo.rules if k in group_of), None)
            if group is None and slo.name in self.groups:
                group = slo.name
            if group is None:
                log.warning("slo_without_group", slo=slo.name)
                continue
            self._slo_groups.setdefault(group, []).append(slo.name)
        for name in list(self.slo_status):
            if name not in self.slos:
                del self.slo_status[name]
        self.metrics.slo_budget.keep(self.slos)
        self._generation += 1
        rules = [r for g in groups for r in g.rules]
        self._pool.submit(self._install, rules, list(self.slos.values()), self._generation)

    def _install(self, rules: list[Rule], slos: list[Slo], generation: int) -> None:
        """Worker thread: swap the RuleSet's rules and SLOs (keeping the history still in use)."""
        try:
            self._rs.update(rules, slos=slos)
        except Exception:  # never leave the worker on a generation whose rules are not installed
            log.exception("ruleset_update_failed")
            self._rs = RuleSet(rules, slos=slos, lookback=None)
            self._ingested.clear()
        self._rs_generation = generation

    async def close(self) -> None:
        """Stop the worker thread after the job it is running; queued jobs are dropped. Never fails."""
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

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
            active: Active = {}
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
            generation = self._generation
            transitions: list[AlertTransition] = []
            upserts: list[tuple[str, str, Tracked]] = []
            deletes: list[tuple[str, str]] = []
            snaps: dict[str, tuple[datetime, Mapping[str, Mapping[Labels, float]]]] = {}
            plans: list[_Plan] = []
            for rule in group.rules:
                plan = await self._prepare(rule, now, snaps, transitions, upserts, deletes)
                if plan is not None:
                    plans.append(plan)
            slos = [self.slos[n] for n in self._slo_groups.get(name, ()) if n in self.slos]
            for slo in slos:
                snap = self.snapshots(slo.source)
                if snap is not None and snap.at is not None:
                    snaps.setdefault(slo.source, (snap.at, snap.metrics))
            if plans or slos:
                loop = asyncio.get_running_loop()
                try:
                    done = await loop.run_in_executor(self._pool, self._compute, generation, now, snaps, plans, slos)
                except RuntimeError:  # the worker was shut down: the daemon is stopping
                    return
                if done is not None and generation == self._generation:  # else a reload replaced the rules
                    outcomes, budgets = done
                    for plan, outcome in zip(plans, outcomes, strict=True):
                        self._apply(plan.rule, outcome, now, transitions, upserts, deletes)
                    for slo, budget in zip(slos, budgets, strict=True):
                        self._set_budget(slo, budget, now)
            if generation != self._generation:
                # A reload replaced the rules while this cycle awaited a query or the worker: its results belong
                # to rules that may be gone (applying them would recreate state the reload just resolved).
                return
            if transitions or upserts or deletes:
                await self._persist(transitions, upserts, deletes)
            self.metrics.rule_evaluations.labels(group.name).inc(len(group.rules))
            self.metrics.rule_eval_seconds.labels(group.name).observe(time.perf_counter() - t0)
            self._update_gauges()
        if transitions:
            self.kick()

    async def _prepare(
        self,
        rule: Rule,
        now: datetime,
        snaps: dict[str, tuple[datetime, Mapping[str, Mapping[Labels, float]]]],
        transitions: list[AlertTransition],
        upserts: list[tuple[str, str, Tracked]],
        deletes: list[tuple[str, str]],
    ) -> _Plan | None:
        """Gather what ``rule`` needs (its source's snapshot or its query's result); a rule whose data is
        missing is handled here by its ``on_error`` policy and gets no plan."""
        status = self.status.setdefault(rule.key, RuleStatus())
        tracked = self.tracked.setdefault(rule.key, {})
        error: str | None = None
        samples: dict[Labels, float] | None = None
        if rule.query is not None:
            try:
                if self.query is None:
                    raise SourceError("queries are not available")
                result = await self.query(rule.source, rule.query, now)
            except SourceError as e:
                error = f"query on source {rule.source!r} failed: {e}"
            else:
                samples = {s.labels: s.value for s in result}
        else:
            snap = self.snapshots(rule.source)
            if snap is None or snap.at is None:
                # The source has not finished its first collection (start-up, reload): nothing is known yet,
                # so no policy applies: neither an error alert nor a resolve of alerts restored from SQL.
                status.last_error = f"source {rule.source!r} has not been collected yet"
                return None
            reads_up = rule.expr.metrics == ("up",)
            if not snap.ok and not reads_up:
                error = f"source {rule.source!r} has no data: {snap.error}"
            else:
                snaps.setdefault(rule.source, (snap.at, snap.metrics))
        if error is not None:
            self._failed(rule, error, now, transitions, upserts, deletes)
            return None
        firing = {fp: t.labels for fp, t in tracked.items() if t.state.state == AlertState.FIRING}
        return _Plan(rule, firing, samples)

    def _compute(
        self,
        generation: int,
        now: datetime,
        snaps: Mapping[str, tuple[datetime, Mapping[str, Mapping[Labels, float]]]],
        plans: list[_Plan],
        slos: list[Slo],
    ) -> tuple[list[_Outcome], list[dict[Labels, float] | str]] | None:
        """Worker thread: ingest new snapshots once each, then evaluate the rules and SLO budgets; None when
        the installed rules are not those of ``generation``. Never raises (failures become rule errors)."""
        if generation != self._rs_generation:
            return None
        for source, (at, metrics) in snaps.items():
            last = self._ingested.get(source)
            if last is None or at > last:
                try:
                    self._rs.ingest(source, at.timestamp(), metrics)
                except Exception:
                    log.exception("ingest_failed", source=source)
                self._ingested[source] = at
        at = now.timestamp()
        outcomes = []
        for plan in plans:
            rule = plan.rule
            t0 = time.perf_counter()
            try:
                if plan.samples is not None:
                    self._rs.ingest_query(rule, at, plan.samples)
                res = self._rs.evaluate(rule, at, firing=plan.firing)
                outcome = _Outcome(dict(res.active), list(res.errors), res.evaluated, 0.0)
            except Exception as e:  # a defect in evaluation costs one rule, not the cycle
                log.exception("rule_crashed", rule=rule.key)
                outcome = _Outcome({}, [f"{rule.file}:{rule.line}: {rule.key}: {type(e).__name__}: {e}"], 0, 0.0)
            outcome.seconds = time.perf_counter() - t0
            outcomes.append(outcome)
        budgets: list[dict[Labels, float] | str] = []
        for slo in slos:
            try:
                budgets.append(self._rs.evaluate_expr(slo.budget_expr, slo.source, at, key=f"slo:{slo.name}"))
            except Exception as e:
                budgets.append(f"{slo.file}:{slo.line}: slo {slo.name}: {type(e).__name__}: {e}")
        return outcomes, budgets

    def _apply(
        self,
        rule: Rule,
        out: _Outcome,
        now: datetime,
        transitions: list[AlertTransition],
        upserts: list[tuple[str, str, Tracked]],
        deletes: list[tuple[str, str]],
    ) -> None:
        """Step the series of ``rule`` with the worker's result (on the loop)."""
        status = self.status.setdefault(rule.key, RuleStatus())
        tracked = self.tracked.setdefault(rule.key, {})
        status.series_evaluated = out.evaluated
        self.metrics.series_evaluations.inc(out.evaluated)
        if out.errors:
            log.warning(
                "rule_error", rule=rule.key, file=rule.file, line=rule.line, error=out.errors[0], errors=len(out.errors)
            )
            if not out.active:
                # The expression failed as a whole (e.g. a many-to-many match): like missing data, not like
                # "no series matched", so the on_error policy decides instead of resolving everything.
                self._failed(rule, out.errors[0], now, transitions, upserts, deletes)
                return
            self.metrics.rule_errors.labels(rule.group, rule.alert).inc()
        status.last_error = out.errors[0] if out.errors else None
        active: Active = {}
        for fp, (labels, value, series) in out.active.items():
            active[fp] = (labels, None if value is not None and math.isnan(value) else value, series)
        special = None
        if out.evaluated == 0 and not out.errors:
            if rule.nodata == "keep_state":
                status.last_evaluation = now
                return
            if rule.nodata == "alerting":
                what = rule.expr.primary or "the query"
                special = self._special(rule, "nodata", f"no series of {what}", active)
        self._advance(rule, tracked, active, now, transitions, upserts, deletes)
        self._describe(rule, special, tracked, transitions)
        status.last_evaluation = now
        status.duration_seconds = out.seconds

    def _failed(
        self,
        rule: Rule,
        error: str,
        now: datetime,
        transitions: list[AlertTransition],
        upserts: list[tuple[str, str, Tracked]],
        deletes: list[tuple[str, str]],
    ) -> None:
        """Apply the rule's ``on_error`` policy: keep the state, resolve (``ok``) or fire a ``reason=error`` alert."""
        status = self.status.setdefault(rule.key, RuleStatus())
        tracked = self.tracked.setdefault(rule.key, {})
        status.last_error, status.last_evaluation = error, now
        self.metrics.rule_errors.labels(rule.group, rule.alert).inc()
        if rule.on_error == "keep_state":
            return  # no false resolves, no false pages while the source is down
        active = self._kept(tracked) if rule.on_error == "alerting" else {}
        special = self._special(rule, "error", error, active) if rule.on_error == "alerting" else None
        self._advance(rule, tracked, active, now, transitions, upserts, deletes)
        self._describe(rule, special, tracked, transitions)

    def _set_budget(self, slo: Slo, budget: dict[Labels, float] | str, now: datetime) -> None:
        st = self.slo_status.setdefault(slo.name, SloStatus())
        st.last_evaluation = now
        if isinstance(budget, str):
            st.last_error, st.budget = budget, {}
            log.warning("slo_error", slo=slo.name, error=budget)
        else:
            st.last_error = None
            st.budget = {labels: v for labels, v in budget.items() if not math.isnan(v)}
        self.metrics.slo_budget.set(slo.name, st.budget)

    @staticmethod
    def _kept(tracked: dict[str, Tracked]) -> Active:
        """The currently pending/firing series, kept active (on_error: alerting keeps them)."""
        return {
            fp: (t.labels, t.value, None)
            for fp, t in tracked.items()
            if t.labels.get("reason") != "error" and t.state.state != AlertState.INACTIVE
        }

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
        active: Active,
        now: datetime,
        transitions: list[AlertTransition],
        upserts: list[tuple[str, str, Tracked]],
        deletes: list[tuple[str, str]],
    ) -> None:
        """Step every tracked or active series of ``rule`` and collect the rows to persist."""
        keep = rule.keep_firing_for > timedelta(0)
        for fp in set(tracked) | set(active):
            prev = tracked.get(fp)
            hit = active.get(fp)
            new_state, emit = step(
                prev.state if prev else None,
                hit is not None,
                now,
                rule.for_,
                rule.keep_firing_for,
                flap_window=rule.flap_window,
                flap_changes=rule.flap_changes,
            )
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
            elif emit == Emit.RESOLVED:
                # Resolved, but its recent condition changes are still remembered for flap detection.
                transitions.append(self._transition(rule.key, prev, "resolved", now))  # type: ignore[arg-type]
                cur.annotations = {}
            tracked[fp] = cur
            exact = keep and new_state.state == AlertState.FIRING
            if prev is None or emit != Emit.NONE or _persisted(prev, exact) != _persisted(cur, exact):
                upserts.append((rule.key, fp, cur))

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
                row.condition = t.state.condition
                row.changes = [isoformat(c) for c in t.state.changes]  # type: ignore[misc]
                row.flapping = t.state.flapping
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
        flapping = 0
        for series in self.tracked.values():
            for t in series.values():
                if t.state.state == AlertState.INACTIVE:
                    continue
                counts[t.state.state.value] = counts.get(t.state.state.value, 0) + 1
                flapping += t.state.flapping
        for k, v in counts.items():
            self.metrics.alerts.labels(k).set(v)
        self.metrics.flapping.set(flapping)
        self.metrics.history_bytes.set(self._rs.history_bytes())

    # ---------------------------------------------------------------- API view

    def rules_view(self) -> list[dict[str, Any]]:
        """State of every group, rule and tracked series, for ``GET /api/v1/rules``."""
        out = []
        for g in self.groups.values():
            rules = []
            for r in g.rules:
                st = self.status.get(r.key, RuleStatus())
                series = [t for t in self.tracked.get(r.key, {}).values() if t.state.state != AlertState.INACTIVE]
                states = [t.state.state for t in series]
                state = (
                    "firing"
                    if AlertState.FIRING in states
                    else "pending"
                    if AlertState.PENDING in states
                    else "inactive"
                )
                flapping = r.flap_changes > 0 and r.flap_window > timedelta(0)
                rules.append(
                    {
                        "name": r.alert,
                        "group": g.name,
                        "expr": r.expr.text,
                        "resolve_expr": r.resolve_expr.text if r.resolve_expr is not None else None,
                        "query": r.query,
                        "source": r.source,
                        "nodata": r.nodata,
                        "on_error": r.on_error,
                        "for": r.for_.total_seconds(),
                        "keep_firing_for": r.keep_firing_for.total_seconds(),
                        "flapping": (
                            {"window": r.flap_window.total_seconds(), "changes": r.flap_changes} if flapping else None
                        ),
                        "slo": r.slo,
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
                                "flapping": t.state.flapping,
                                "annotations": t.annotations,
                            }
                            for t in series
                        ],
                    }
                )
            out.append({"name": g.name, "interval": g.interval.total_seconds(), "file": g.file, "rules": rules})
        return out

    def slos_view(self) -> list[dict[str, Any]]:
        """Every SLO with its generated rules and its error budget left, for ``GET /api/v1/rules``."""
        out = []
        group_of = {n: g for g, names in self._slo_groups.items() for n in names}
        for slo in self.slos.values():
            st = self.slo_status.get(slo.name, SloStatus())
            out.append(
                {
                    "name": slo.name,
                    "source": slo.source,
                    "objective": slo.objective,
                    "window": slo.window.total_seconds(),
                    "group": group_of.get(slo.name),
                    "rules": list(slo.rules),
                    "budget_expr": slo.budget_expr.text,
                    "error_budget_remaining": [
                        {"labels": labels.as_dict(), "value": v if math.isfinite(v) else None}
                        for labels, v in st.budget.items()
                    ],
                    "health": "ok" if st.last_error is None else "error",
                    "last_error": st.last_error,
                    "last_evaluation": isoformat(st.last_evaluation),
                    "file": slo.file,
                    "line": slo.line,
                }
            )
        return out


def _parse_times(values: Any) -> list[datetime]:
    """ISO 8601 strings (a ``changes`` column) as aware UTC datetimes; unreadable entries are skipped."""
    out = []
    for v in values or ():
        try:
            dt = datetime.fromisoformat(str(v))
        except ValueError:
            continue
        out.append(dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC))
    return out
