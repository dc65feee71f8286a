"""AnalyticsService: the figures of a period (issue #9) — response times, alert fatigue, on-call load, SLA, capacity.

``report()`` answers the JSON shape of ``GET /api/v1/analytics/report`` (scheduled reports and the CLI render the
same dict). Facts are loaded in one read transaction with column selects and SQL aggregates (see ``load``) and
counted by the pure functions of ``figures``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fsincident.analytics import figures, load
from fsincident.analytics.records import IncidentRecord, ShiftRecord
from fsincident.config import Config
from fsincident.core import Clock, FsIncidentError
from fsincident.matchers import parse_matcher_list, parse_selector
from fsincident.obs import get_logger
from fsincident.store import Store

log = get_logger("fsincident.analytics")

SECTIONS = ("summary", "response", "daily", "fatigue", "oncall", "sla", "capacity", "incidents")
"""What ``report(sections=...)`` may ask for (``daily`` comes with ``summary`` unless sections are given)."""
_META = ("period", "group_by", "generated_at", "timezone")
GROUPS = ("severity", "rule", "route")
"""Group-by keys that are not labels."""
MAX_PERIOD = timedelta(days=400)
DEFAULT_PERIOD = timedelta(days=7)
DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,99}$")


class AnalyticsError(FsIncidentError):
    """A report that cannot be made as asked (bad period, group, section or limit); ``param`` names the input."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


def check_group_by(group_by: str) -> str:
    """``group_by`` when it is ``severity``, ``rule``, ``route`` or a label name; raises AnalyticsError."""
    if group_by in GROUPS or _LABEL.match(group_by):
        return group_by
    raise AnalyticsError(f"invalid group_by {group_by[:64]!r}: write a label name, severity, rule or route", "group_by")


def check_sections(sections: Sequence[str] | None) -> tuple[str, ...]:
    """The asked sections in report order (all when None); raises AnalyticsError naming an unknown one."""
    if sections is None:
        return SECTIONS
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise AnalyticsError(f"unknown section {bad[0][:64]!r}: choose from {', '.join(SECTIONS)}", "sections")
    if not sections:
        raise AnalyticsError("no sections asked for", "sections")
    return tuple(s for s in SECTIONS if s in sections)


def check_period(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``(start, end)`` in UTC; raises AnalyticsError when ``end`` is not after ``start`` or the span is over 400
    days."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        raise AnalyticsError("'from' must be before 'to'", "from")
    if end - start > MAX_PERIOD:
        raise AnalyticsError(f"a report covers at most {MAX_PERIOD.days} days", "period")
    return start, end


_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Keep Python's cyclic garbage collector off while a report loads and counts (process-wide, nested and
    concurrent reports counted; back to its former state when the last one ends; cannot fail). A report makes
    some 500 000 objects, and each young-generation collection they trigger walks them again, and the older
    generations the whole daemon's heap: half of a 100k-incident report's CPU time. The records hold no
    reference cycles (reference counting frees them), and a second without cycle collection costs nothing."""
    global _gc_pauses, _gc_was_enabled
    if _gc_pauses == 0:
        _gc_was_enabled = gc.isenabled()
        gc.disable()
    _gc_pauses += 1
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0 and _gc_was_enabled:
            gc.enable()


class AnalyticsService:
    """Reads the incident history and answers analytics questions over a period ``[start, end)``."""

    parallel = True
    """Run a report's independent queries at the same time (each in its own read transaction) on PostgreSQL. On
    SQLite they run one after the other: each query's thread gives up Python's GIL for every row it steps, so
    queries fetched side by side hand the GIL back and forth per row and together take longer than in turn."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: Callable[[], Config],
        *,
        history: Any = None,
        snapshot: Callable[[str], Any] | None = None,
        shifts: Callable[..., Awaitable[Any]] | None = None,
    ):
        self.store = store
        self.clock = clock
        self.config = config
        self.history = history  # history.HistoryService (range queries over recorded series) or None
        self.snapshot = snapshot  # SourceRunner.snapshot(source name) -> the source's current window, or None
        self.shifts = shifts  # async (start, end) -> [(schedule, user, start, end)] final on-call shifts

    def default_period(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """The default period: the 7 days before now."""
        end = (now or self.clock.now()).astimezone(UTC)
        return end - DEFAULT_PERIOD, end

    async def report(
        self,
        start: datetime,
        end: datetime,
        *,
        group_by: str | None = None,
        sections: Sequence[str] | None = None,
        ack_within: timedelta | None = None,
        limit: int = DEFAULT_LIMIT,
        timezone: str | None = None,
    ) -> dict[str, Any]:
        """The report of incidents opened in ``[start, end)`` (the JSON shape of ``/api/v1/analytics/report``) with
        ``sections`` (all when None), grouped by ``group_by`` (default ``analytics.group_by``), the incidents
        section listing the newest ``limit``, days counted in ``timezone`` (default ``analytics.timezone``; a
        scheduled report passes its own); raises AnalyticsError for bad input and lets store errors through."""
        t0 = time.perf_counter()
        cfg = self.config()
        opts = cfg.analytics
        start, end = check_period(start, end)
        group = check_group_by(group_by or opts.group_by)
        wanted = check_sections(sections)
        if sections is None or "summary" in wanted:
            wanted = tuple(s for s in SECTIONS if s in wanted or (s == "daily" and "summary" in wanted))
        within = ack_within if ack_within is not None else opts.ack_within
        if within < timedelta(0):
            raise AnalyticsError("ack_within must not be negative", "ack_within")
        if not 1 <= limit <= MAX_LIMIT:
            raise AnalyticsError(f"limit must be between 1 and {MAX_LIMIT}", "limit")
        zone = timezone or opts.timezone
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise AnalyticsError(f"unknown time zone {zone[:64]!r}", "timezone") from None
        now = self.clock.now().astimezone(UTC)
        a, b, n = start.timestamp(), end.timestamp(), now.timestamp()
        with gc_paused():
            facts = await self._load(wanted, start, end, group, limit, opts)
            recs, people, outages, rows = facts["recs"], facts["people"], facts["outages"], facts["rows"]
            loaded = time.perf_counter()
            shifts = await self._shifts(start, end) if "oncall" in wanted else []
            series = await self._sla_series(cfg, start, end) if "sla" in wanted else {}
            # The counting is plain Python over every incident: in a worker thread, so the loop keeps serving.
            out = await asyncio.to_thread(
                self._figures, cfg, wanted, recs, people, shifts, outages, series, rows, (a, b, n), group, within, zone
            )
        if "capacity" in wanted:
            out["capacity"] = await self._capacity(cfg, now)
            out = {k: out[k] for k in (*_META, *SECTIONS) if k in out}  # the shape's order
        incs = recs.values()
        log.debug(
            "analytics_report",
            incidents=len(incs),
            pages=sum(r.pages for r in incs),
            load_ms=round((loaded - t0) * 1000, 1),
            total_ms=round((time.perf_counter() - t0) * 1000, 1),
        )
        return out

    async def _load(
        self, wanted: Sequence[str], start: datetime, end: datetime, group: str, limit: int, opts: Any
    ) -> dict[str, Any]:
        """The facts of the report: the period's incidents, their timeline counts, the pages to people, re-opens,
        the services' outage spans and the listed incidents. The independent queries run at the same time, each
        in its own read transaction (the database works on them on several cores; a row written meanwhile may be
        seen by one and not another); on SQLite one after the other."""
        sqlite = self.store.is_sqlite
        need_people = "fatigue" in wanted or "oncall" in wanted
        need_incidents = bool({"summary", "response", "daily", "fatigue", "incidents"} & set(wanted)) or need_people
        out: dict[str, Any] = {
            "recs": {},
            "pages": {},
            "people": [],
            "firsts": [],
            "outages": {},
            "rows": [],
            "timeline": ([], []),
            "before": [],
        }
        if need_incidents:
            async with self.store.read() as s:
                ids = await load.id_range(s, start, end)
        else:
            ids = None

        async def incidents(s: Any) -> None:
            out["recs"] = await load.incidents(s, sqlite, start, end, group)

        async def alerts(s: Any) -> None:
            out["firsts"] = await load.first_alerts(s, sqlite, ids)  # type: ignore[arg-type]

        async def timeline(s: Any) -> None:
            out["timeline"] = await load.timeline(s, sqlite, ids)  # type: ignore[arg-type]

        async def pages(s: Any) -> None:
            out["pages"], out["people"] = await load.pages(s, sqlite, ids, need_people)  # type: ignore[arg-type]

        async def rest(s: Any) -> None:
            if ids is not None:
                out["before"] = await load.resolved_before(s, sqlite, start, end, opts.flap_window)
            if "incidents" in wanted and ids is not None:
                out["rows"] = await load.incident_rows(s, start, end, limit)
            if "sla" in wanted:
                services = [
                    (
                        svc.name,
                        [str(x) for x in svc.severities],
                        [m for t in svc.matchers for m in parse_matcher_list(t)],
                    )
                    for svc in opts.services
                ]
                out["outages"] = await load.outage_spans(s, sqlite, start, end, services)

        parts = [rest]
        if ids is not None:
            parts = [incidents, pages, timeline, alerts, rest]

        async def run(part: Callable[[Any], Awaitable[None]]) -> None:
            async with self.store.read() as s:
                if not sqlite:  # PostgreSQL would JIT-compile these big-looking scans: 0.3 s lost per query
                    await (await s.connection()).exec_driver_sql("SET LOCAL jit = off")
                await part(s)

        if not self.parallel or sqlite:  # SQLite: see ``parallel``
            for part in parts:
                await run(part)
        else:
            try:
                async with asyncio.TaskGroup() as tg:
                    for part in parts:
                        tg.create_task(run(part))
            except ExceptionGroup as eg:  # the first failure as itself (a store error), the rest were cancelled
                raise eg.exceptions[0] from None
        recs = out["recs"]
        if recs:
            load.apply_pages(recs, out["pages"])
            load.apply_first_alerts(recs, out["firsts"])
            load.apply_timeline(recs, *out["timeline"])
            load.mark_reopens(recs, out["before"], opts.flap_window)
            out["people"] = [p for p in out["people"] if p[0] in recs]
        return out

    @staticmethod
    def _figures(
        cfg: Config,
        wanted: Sequence[str],
        recs: dict[int, IncidentRecord],
        people: list[Any],
        shifts: list[ShiftRecord],
        outages: dict[str, list[tuple[float, float | None]]],
        series: dict[str, list[list[tuple[float, float]]]],
        rows: list[tuple[Any, ...]],
        times: tuple[float, float, float],
        group: str,
        within: timedelta,
        zone: str,
    ) -> dict[str, Any]:
        """The report's sections (all but capacity) from the loaded facts, days counted in ``zone``; pure."""
        opts = cfg.analytics
        a, b, n = times
        incs = list(recs.values())
        secs = within.total_seconds()
        out: dict[str, Any] = {
            "period": {"from": load.utc(a), "to": load.utc(b), "seconds": b - a},
            "group_by": group,
            "generated_at": load.utc(n),
            "timezone": zone,
        }
        if "summary" in wanted and "response" in wanted:
            out["summary"], out["response"] = figures.summary_and_response(incs, secs)
        elif "summary" in wanted:
            out["summary"] = figures.counts(incs, secs)
        elif "response" in wanted:
            out["response"] = figures.response(incs, secs)
        if "daily" in wanted:
            out["daily"] = figures.daily(incs, a, b, zone)
        load_by_user: dict[str, dict[str, int]] = {}
        if "fatigue" in wanted or "oncall" in wanted:
            clock = figures.PageClock(figures.Hours.of(opts.working_hours), {u.name: u.timezone for u in cfg.users})
            load_by_user = figures.page_load(people, clock)
        if "fatigue" in wanted:
            out["fatigue"] = {
                "rules": figures.fatigue_rules(incs, opts.flap_count),
                "people": figures.fatigue_people(load_by_user),
            }
        if "oncall" in wanted:
            out["oncall"] = figures.oncall(shifts, load_by_user, a, b)
        if "sla" in wanted:
            out["sla"] = []
            for svc in opts.services:
                spans = [(c, r if r is not None else n) for c, r in outages.get(svc.name, [])]
                if svc.series is None:
                    out["sla"].append(figures.sla_from_incidents(svc.name, svc.target, spans, a, b))
                else:
                    rows_ = series.get(svc.name, [])
                    out["sla"].append(figures.sla_from_series(svc.name, svc.target, rows_, a, b, len(spans)))
        if "incidents" in wanted:
            out["incidents"] = [AnalyticsService._incident(recs[r[0]], r) for r in rows if r[0] in recs]
        return out

    async def section(
        self,
        name: str,
        start: datetime,
        end: datetime,
        *,
        group_by: str | None = None,
        ack_within: timedelta | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Any:
        """One section of the report (``summary``, ``response``, ``daily``, ...); raises AnalyticsError like
        :meth:`report`."""
        check_sections([name])
        rep = await self.report(start, end, group_by=group_by, sections=[name], ack_within=ack_within, limit=limit)
        return rep[name]

    # ------------------------------------------------------------------ parts

    @staticmethod
    def _incident(r: IncidentRecord, row: tuple[Any, ...]) -> dict[str, Any]:
        _, title, labels = row
        return {
            "id": r.id,
            "title": title,
            "severity": r.severity,
            "state": r.state,
            "group": r.group,
            "created_at": load.utc(r.created),
            "acknowledged_at": load.utc(r.acked),
            "resolved_at": load.utc(r.resolved),
            "tta_seconds": None if r.tta is None else round(r.tta, 3),
            "ttr_seconds": None if r.ttr is None else round(r.ttr, 3),
            "labels": dict(labels or {}),
        }

    async def _shifts(self, start: datetime, end: datetime) -> list[ShiftRecord]:
        if self.shifts is None:
            return []
        try:
            raw = await self.shifts(start, end)
        except Exception as e:  # a schedule problem must not fail the whole report
            log.warning("analytics_shifts_failed", error=f"{type(e).__name__}: {e}")
            return []
        return [ShiftRecord(sch, user, a.timestamp(), b.timestamp()) for sch, user, a, b in raw]

    async def _sla_series(
        self, cfg: Config, start: datetime, end: datetime
    ) -> dict[str, list[list[tuple[float, float]]]]:
        return {svc.name: await self._series(svc, start, end) for svc in cfg.analytics.services if svc.series}

    async def _series(self, svc: Any, start: datetime, end: datetime) -> list[list[tuple[float, float]]]:
        """The service's probe series as ``(t, avg)`` buckets; empty when there is no history or it fails."""
        if self.history is None or svc.source is None or svc.series is None:
            return []
        sel = parse_selector(svc.series)
        try:
            data = await self.history.range(
                svc.source, sel.metric, sel.matchers, start=start, end=end, max_points=20_000
            )
        except Exception as e:  # HistoryError (a user-fit message) or a peer failure: the row says no coverage
            log.warning("analytics_sla_series_failed", service=svc.name, error=str(getattr(e, "message", e)))
            return []
        return [[(p[0], p[1]) for p in d.points] for d in data]

    async def _capacity(self, cfg: Config, now: datetime) -> list[dict[str, Any]]:
        try:
            from fsincident.analytics.capacity import capacity_report
        except ImportError:  # not built yet
            return []
        try:
            return list(await capacity_report(cfg, self.snapshot or (lambda _name: None), self.history, now))
        except Exception:
            log.exception("analytics_capacity_failed")
            return []
