"""Scheduled reports and shift-handoff summaries (issue #9).

:class:`ReportScheduler` is the engine module ``reports`` (leader only). Per configured report,
``report_state.last_fire_at`` marks the last cron fire whose report was queued; each tick finds the latest fire in
``(last_fire_at, now]`` (after downtime only the latest missed one), computes the report of its period
(:func:`report_window`), draws its charts and, in one transaction, moves the mark by compare-and-set and queues one
``report`` outbox row per destination of each target: a ``kill -9`` at any line neither loses nor repeats a report.
The first start only records ``now``.

The delivery stage renders the rows (``templates/report.*.j2``: HTML for e-mail, text elsewhere) and attaches the
PNG charts kept in the row's ``data``. Shift summaries (``analytics.handoff_summary``) are queued the same way by the
schedules' handoff notifier through :meth:`ReportScheduler.handoff_summary`, in the notifier's own transaction.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from fsincident.config import Config, cron_trigger, report_period
from fsincident.config.model import ReportOptions
from fsincident.core import FsIncidentError, ensure_utc, isoformat
from fsincident.obs import get_logger
from fsincident.store.tables import Incident, Outbox, ReportState

log = get_logger("fsincident.reports")

ResolveFn = Callable[[Sequence[str], datetime, AsyncSession | None], Awaitable[list[tuple[str, int]]]]
"""``(targets, now, session) -> [(target, dest_index)]``: a schedule resolved to who is on call, a user to their
low-urgency contacts, a channel to its destinations (the daemon wires the escalation stage's resolver)."""

MAX_INCIDENTS_LISTED = 100
"""The incidents section keeps this many rows in a queued report (the e-mail lists the first ones)."""
MAX_CAPACITY_CHARTS = 3
MAX_GROUP_BARS = 12
RETRY_MIN = timedelta(minutes=1)
RETRY_MAX = timedelta(minutes=30)
SUMMARY_MAX = timedelta(days=31)
"""A shift summary covers at most this much of the outgoing shift (its end)."""
SUMMARY_GRACE = timedelta(hours=1)
"""A handoff older than this when it is noticed (the daemon was down) gets no summary."""
SUMMARY_LISTED = 20
_EPS = timedelta(microseconds=1)
_WINDOWS = (
    timedelta(minutes=2),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=40),
    timedelta(days=400),
    timedelta(days=3000),
)


class _Lost(FsIncidentError):
    """The compare-and-set on ``report_state`` touched no row: another instance queued this fire."""


class UnknownReport(KeyError):
    """No report of that name is configured."""

    def __str__(self) -> str:
        return f"report {self.args[0]!r} is not configured"


# ---------------------------------------------------------------------- pure: periods and fire times


def report_window(period: str | timedelta, fire_at: datetime, timezone: str) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC of the report fired at ``fire_at``: a duration ends at the fire time; ``day``,
    ``week`` (Monday to Monday) and ``month`` are the previous whole calendar one in ``timezone`` (DST included);
    raises ValueError for an unknown period and ZoneInfoNotFoundError for an unknown zone."""
    fire_at = ensure_utc(fire_at)  # type: ignore[assignment]
    if isinstance(period, timedelta):
        return fire_at - period, fire_at
    zone = ZoneInfo(timezone)
    today = fire_at.astimezone(zone).date()
    if period == "day":
        end_d = today
        start_d = end_d - timedelta(days=1)
    elif period == "week":
        end_d = today - timedelta(days=today.weekday())
        start_d = end_d - timedelta(days=7)
    elif period == "month":
        end_d = today.replace(day=1)
        start_d = (end_d - timedelta(days=1)).replace(day=1)
    else:
        raise ValueError(f"unknown period {period!r}")
    return _midnight(start_d, zone), _midnight(end_d, zone)


def _midnight(d: date, zone: ZoneInfo) -> datetime:
    """The first instant of local day ``d`` in UTC: a midnight skipped by DST maps (fold=0, the offset before the
    change) to the instant the gap starts, so consecutive days always meet."""
    return datetime.combine(d, time(0), tzinfo=zone).astimezone(UTC)


def options_window(report: ReportOptions, fire_at: datetime) -> tuple[datetime, datetime]:
    """The period of ``report`` fired at ``fire_at`` (see :func:`report_window`); raises ValueError for a bad period."""
    return report_window(report_period(report.period), fire_at, report.timezone)


@functools.lru_cache(maxsize=256)
def _wall_trigger(schedule: str) -> Any:
    return cron_trigger(schedule, "UTC")


def next_fire(schedule: str, timezone: str, after: datetime) -> datetime | None:
    """The first fire time (UTC) of the 5-field cron line ``schedule`` in ``timezone`` strictly after ``after``, None
    when there is none; raises ValueError for a bad line. The fields match the zone's wall clock (apscheduler's
    zone-aware arithmetic skipped whole months across DST changes): a time skipped by DST fires shifted by the gap
    (02:30 at 03:30), a repeated one fires once."""
    zone = ZoneInfo(timezone)
    trig = _wall_trigger(schedule)
    after = ensure_utc(after)  # type: ignore[assignment]
    wall = after.astimezone(zone).replace(tzinfo=UTC)
    for _ in range(4):
        nxt = trig.get_next_fire_time(None, wall + _EPS)
        if nxt is None:
            return None
        wall = nxt.astimezone(UTC)
        real = wall.replace(tzinfo=zone).astimezone(UTC)
        if real > after:
            return real
    return None


def latest_fire(schedule: str, timezone: str, after: datetime, now: datetime) -> datetime | None:
    """The last fire time (UTC) of ``schedule`` in ``timezone`` in ``(after, now]``, None when there is none; looks
    back through growing windows so a minutely report after a year of downtime costs a few steps, not half a
    million. Raises ValueError for a bad cron line."""
    after, now = ensure_utc(after), ensure_utc(now)  # type: ignore[assignment]
    if now <= after:  # type: ignore[operator]
        return None
    for w in _WINDOWS:
        lo = max(after, now - w)  # type: ignore[operator, type-var]
        found = None
        t = next_fire(schedule, timezone, lo)
        steps = 0
        while t is not None and t <= now and steps < 10_000:  # type: ignore[operator]
            found, t = t, next_fire(schedule, timezone, t)
            steps += 1
        if found is not None or lo == after:
            return found
    return None


# ---------------------------------------------------------------------- pure: charts and text


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def report_charts(report: Mapping[str, Any]) -> list[tuple[str, str, bytes]]:
    """The charts of a report as ``(name, title, png)``: incidents per day, MTTA/MTTR per group and SLA uptime
    against target, each when the report has that data; never raises (a chart that fails is left out and logged)."""
    from fsincident.analytics import charts

    out: list[tuple[str, str, bytes]] = []
    daily = report.get("daily") or []
    if daily:
        try:
            days = [date.fromisoformat(str(d["date"])) for d in daily]
            severities = sorted({s for d in daily for s in (d.get("by_severity") or {})})
            stacks = {s: [int((d.get("by_severity") or {}).get(s, 0)) for d in daily] for s in severities}
            if not stacks:
                stacks = {"incidents": [int(d.get("incidents") or 0) for d in daily]}
            title = "Incidents per day"
            out.append(("incidents-per-day", title, charts.daily_chart(days, stacks, title=title)))
        except Exception as e:
            log.warning("report_chart_failed", chart="incidents-per-day", error=f"{type(e).__name__}: {e}"[:300])
    response = [r for r in (report.get("response") or []) if isinstance(r, Mapping)]
    if response:
        try:
            rows = sorted(response, key=lambda r: -int(r.get("incidents") or 0))[:MAX_GROUP_BARS]
            groups = [str(r.get("group")) for r in rows]

            def minutes(r: Mapping[str, Any], key: str) -> float:
                v = _num((r.get(key) or {}).get("median"))
                return float("nan") if v is None else v / 60.0

            values = {
                "MTTA (median)": [minutes(r, "mtta_seconds") for r in rows],
                "MTTR (median)": [minutes(r, "mttr_seconds") for r in rows],
            }
            by = report.get("group_by") or "group"
            title = f"Time to acknowledge and resolve by {by}"
            out.append(("response-by-group", title, charts.bar_chart(groups, values, title=title, unit="minutes")))
        except Exception as e:
            log.warning("report_chart_failed", chart="response-by-group", error=f"{type(e).__name__}: {e}"[:300])
    sla = [r for r in (report.get("sla") or []) if isinstance(r, Mapping)]
    if sla:
        try:
            names = [str(r.get("service")) for r in sla]
            up = [_num(r.get("uptime_percent")) for r in sla]
            target = [_num(r.get("target_percent")) for r in sla]
            values = {
                "uptime": [float("nan") if v is None else v for v in up],
                "target": [float("nan") if v is None else v for v in target],
            }
            title = "Uptime against target per service"
            out.append(("sla-uptime", title, charts.bar_chart(names, values, title=title, unit="%")))
        except Exception as e:
            log.warning("report_chart_failed", chart="sla-uptime", error=f"{type(e).__name__}: {e}"[:300])
    return out


def _dur(seconds: Any) -> str:
    v = _num(seconds)
    if v is None:
        return "-"
    v = abs(v)
    if v < 90:
        return f"{v:.0f}s"
    if v < 5400:
        return f"{v / 60:.0f}m"
    if v < 172800:
        return f"{v / 3600:.1f}h"
    return f"{v / 86400:.1f}d"


def plain_report(title: str, report: Mapping[str, Any]) -> str:
    """A short plain-text report, stored as the outbox row's body: what goes out when every template fails."""
    p = report.get("period") or {}
    s = report.get("summary") or {}
    lines = [title, f"Period: {p.get('from')} to {p.get('to')}"]
    if s:
        lines.append(
            f"Incidents: {s.get('incidents', 0)} (acknowledged {s.get('acknowledged', 0)}, resolved "
            f"{s.get('resolved', 0)}, open {s.get('open', 0)}); pages: {s.get('pages', 0)}"
        )
        lines.append(
            f"MTTA median {_dur((s.get('mtta_seconds') or {}).get('median'))}, "
            f"MTTR median {_dur((s.get('mttr_seconds') or {}).get('median'))}"
        )
    for r in report.get("sla") or []:
        lines.append(f"SLA {r.get('service')}: {_num(r.get('uptime_percent'))}% (target {r.get('target_percent')}%)")
    return "\n".join(lines)


def plain_summary(title: str, summary: Mapping[str, Any]) -> str:
    """A plain-text shift summary, stored as the outbox row's body (the fallback when the templates fail)."""
    c = summary.get("counts") or {}
    lines = [
        title,
        f"Shift: {summary.get('from')} to {summary.get('to')}",
        f"Opened {c.get('opened', 0)}, acknowledged {c.get('acknowledged', 0)}, resolved {c.get('resolved', 0)}, "
        f"still open {c.get('still_open', 0)}, pages to {summary.get('outgoing')}: {c.get('pages', 0)}",
    ]
    for i in summary.get("still_open") or []:
        lines.append(f"- open #{i.get('id')} [{i.get('severity')}] {i.get('title')}")
    return "\n".join(lines)


def _instant(value: Any) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset) as an aware datetime, None when it is missing or does not parse."""
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def report_data(
    options: ReportOptions | None,
    report: dict[str, Any],
    charts: Sequence[tuple[str, str, bytes]],
    *,
    title: str,
    fire_at: datetime | None,
) -> dict[str, Any]:
    """The ``data`` of a queued report row: the report (its incident list capped), its title, the report's name
    and time zone, and the charts as base64 PNG (``[{"name", "title", "png_base64"}]``)."""
    rep = dict(report)
    listed = rep.get("incidents")
    if isinstance(listed, list):
        # The analytics list only the newest ``limit`` incidents: the period's count is the summary's.
        total = (rep.get("summary") or {}).get("incidents") if isinstance(rep.get("summary"), Mapping) else None
        total = max(total if isinstance(total, int) else 0, len(listed))
        rep["incidents"] = listed[:MAX_INCIDENTS_LISTED]
        if total > len(rep["incidents"]):
            rep["incidents_total"] = total
    return {
        "report": rep,
        "name": options.name if options is not None else None,
        "title": title,
        "timezone": options.timezone if options is not None else rep.get("timezone", "UTC"),
        "sections": list(options.sections) if options is not None else list(rep),
        "fire_at": isoformat(fire_at),
        "charts": [{"name": n, "title": t, "png_base64": _b64(png)} for n, t, png in charts],
    }


# ---------------------------------------------------------------------- the engine module


class ReportScheduler:
    """Queues each ``reports:`` entry's report at its cron fire times (leader only), and the shift summaries."""

    name = "reports"

    def __init__(
        self,
        analytics: Any,
        *,
        resolve: ResolveFn | None = None,
        kick_delivery: Callable[[], None] = lambda: None,
    ):
        self.analytics = analytics
        self.store = analytics.store
        self.clock = analytics.clock
        self.resolve = resolve
        self.kick_delivery = kick_delivery
        self._next: datetime | None = None
        self._retry: dict[str, tuple[datetime, datetime, int]] = {}  # name -> (fire, not before, failures)

    @property
    def config(self) -> Config:
        return self.analytics.config()  # type: ignore[no-any-return]

    def report(self, name: str) -> ReportOptions:
        """The configured report ``name``; raises UnknownReport (a KeyError)."""
        for r in self.config.reports:
            if r.name == name:
                return r
        raise UnknownReport(name)

    # ------------------------------------------------------------------ engine

    async def tick(self, now: datetime) -> bool:
        """Queue the latest due fire of every report; True when any report was queued (a failing report is
        logged, recorded in ``report_state.last_error`` and retried with backoff)."""
        now = now.astimezone(UTC)
        queued = 0
        nxt: datetime | None = None
        for r in self.config.reports:
            try:
                queued += await self._tick_report(r, now)
            except (sa.exc.IntegrityError, _Lost):  # another instance got there first; its rows count
                continue
            except Exception as e:
                log.exception("report_failed", report=r.name)
                await self._failed(r, now, f"{type(e).__name__}: {e}")
            try:
                upcoming = next_fire(r.schedule, r.timezone, now)
            except ValueError:
                upcoming = None
            retry = self._retry.get(r.name)
            if retry is not None and (upcoming is None or retry[1] < upcoming):
                upcoming = retry[1]
            if upcoming is not None and (nxt is None or upcoming < nxt):
                nxt = upcoming
        self._next = nxt
        if queued:
            self.kick_delivery()
        return queued > 0

    async def sleep_hint(self, now: datetime) -> float | None:
        """Seconds until the next fire of any report (or a failed one's retry), so it is queued right on time."""
        return None if self._next is None else (self._next - now).total_seconds()

    async def _state(self, name: str) -> ReportState | None:
        async with self.store.read() as s:
            return (await s.exec(select(ReportState).where(col(ReportState.name) == name))).first()

    async def _tick_report(self, r: ReportOptions, now: datetime) -> int:
        state = await self._state(r.name)
        last = ensure_utc(state.last_fire_at) if state is not None else None
        if state is None or last is None:
            async with self.store.session() as s:  # first run: nothing in the past is sent
                if state is None:
                    s.add(ReportState(name=r.name, last_fire_at=now))
                else:
                    await self._cas(s, r.name, None, {"last_fire_at": now})
            log.info("reports_started", report=r.name, at=isoformat(now))
            return 0
        fire = latest_fire(r.schedule, r.timezone, last, now)
        if fire is None:
            return 0
        retry = self._retry.get(r.name)
        if retry is not None and retry[0] == fire and now < retry[1]:
            return 0
        start, end = options_window(r, fire)
        data = await self.build(r, start, end, fire_at=fire)
        async with self.store.session() as s:
            await self._cas(s, r.name, last, {"last_fire_at": fire, "last_queued_at": now, "last_error": None})
            n = await self._queue(s, r.to, "report", data, now)
        self._retry.pop(r.name, None)
        log.info(
            "report_queued", report=r.name, fire_at=isoformat(fire), start=isoformat(start), end=isoformat(end), rows=n
        )
        return max(n, 1)

    async def _cas(self, s: AsyncSession, name: str, last: datetime | None, values: Mapping[str, Any]) -> None:
        where = col(ReportState.last_fire_at).is_(None) if last is None else col(ReportState.last_fire_at) == last
        res = await s.exec(  # type: ignore[call-overload]
            sa.update(ReportState).where(col(ReportState.name) == name, where).values(**values)
        )
        if res.rowcount != 1:
            raise _Lost()

    async def _failed(self, r: ReportOptions, now: datetime, error: str) -> None:
        """Remember the failure (backoff per fire time) and record it in ``report_state.last_error``."""
        try:
            state = await self._state(r.name)
            last = ensure_utc(state.last_fire_at) if state is not None else None
            fire = latest_fire(r.schedule, r.timezone, last, now) if last is not None else None
        except Exception:
            fire = None
        prev = self._retry.get(r.name)
        failures = prev[2] + 1 if prev is not None and prev[0] == fire else 1
        delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(failures - 1, 10))
        self._retry[r.name] = (fire or now, now + delay, failures)
        try:
            async with self.store.session() as s:
                await s.exec(  # type: ignore[call-overload]
                    sa.update(ReportState).where(col(ReportState.name) == r.name).values(last_error=error[:2000])
                )
        except Exception:
            log.exception("report_state_write_failed", report=r.name)

    # ------------------------------------------------------------------ building and queueing

    def title_of(self, r: ReportOptions | None, start: datetime, end: datetime, timezone: str) -> str:
        """The subject of a report: its ``title`` (else its name) and the period's dates in its time zone."""
        zone = ZoneInfo(timezone)
        a = start.astimezone(zone)
        b = (end - _EPS).astimezone(zone)
        z = end.astimezone(zone)  # whole local days (a DST day is 23 or 25 hours long, still one day)
        if a.time() == time(0) and z.time() == time(0) and z.date() > a.date():
            span = a.strftime("%Y-%m-%d") if a.date() == b.date() else f"{a:%Y-%m-%d} to {b:%Y-%m-%d}"
        else:
            span = f"{a:%Y-%m-%d %H:%M} to {end.astimezone(zone):%Y-%m-%d %H:%M %Z}"
        name = (r.title or r.name) if r is not None else "Report"
        return f"{name}: {span}"

    async def build(
        self, r: ReportOptions, start: datetime, end: datetime, *, fire_at: datetime | None = None
    ) -> dict[str, Any]:
        """The ``data`` of report ``r`` over ``[start, end)``: the analytics report, its charts and capacity charts
        (drawn in a worker thread); raises what the analytics raise (a chart that fails is only left out)."""
        report = await self.analytics.report(
            start, end, group_by=r.group_by, sections=list(r.sections), limit=MAX_INCIDENTS_LISTED, timezone=r.timezone
        )
        charts = await asyncio.to_thread(report_charts, report)
        # The capacity rows are computed at now (the report's generated_at), not at the period's end: their charts
        # end and project from that instant too.
        computed = _instant(report.get("generated_at")) or (self.clock.now() if self.clock is not None else end)
        charts.extend(await self._capacity_charts(report, computed.astimezone(UTC), r.timezone))
        title = self.title_of(r, start, end, r.timezone)
        return report_data(r, report, charts, title=title, fire_at=fire_at)

    async def _capacity_charts(
        self, report: Mapping[str, Any], now: datetime, tz: str = "UTC"
    ) -> list[tuple[str, str, bytes]]:
        rows = [r for r in (report.get("capacity") or []) if isinstance(r, Mapping)]
        rows = [r for r in rows if r.get("seconds_to_exhaustion") is not None][:MAX_CAPACITY_CHARTS]
        if not rows or self.analytics.history is None:
            return []
        try:
            from fsincident.analytics.capacity import capacity_chart
        except ImportError:
            return []
        out = []
        for i, row in enumerate(rows):
            try:
                png = await capacity_chart(row, self.analytics.history, now, tz=tz)
            except Exception as e:
                log.warning("report_chart_failed", chart="capacity", error=f"{type(e).__name__}: {e}"[:300])
                continue
            if png:
                out.append((f"capacity-{i + 1}", f"Capacity: {row.get('rule')} {row.get('metric') or ''}".strip(), png))
        return out

    async def _destinations(self, s: AsyncSession, targets: Sequence[str], now: datetime) -> list[tuple[str, int]]:
        if self.resolve is None:
            return []
        return list(dict.fromkeys(await self.resolve(list(targets), now, s)))

    async def _queue(
        self, s: AsyncSession, targets: Sequence[str], kind: str, data: dict[str, Any], now: datetime
    ) -> int:
        """Add one outbox row of ``kind`` per destination of ``targets`` to transaction ``s``; the number added."""
        pages = await self._destinations(s, targets, now)
        title = str(data.get("title") or kind)[:1000]
        body = (
            plain_summary(title, data["summary"]) if kind == "handoff_summary" else plain_report(title, data["report"])
        )
        for target, index in pages:
            s.add(
                Outbox(
                    incident_id=None,
                    event_id=None,
                    target=target,
                    dest_index=index,
                    kind=kind,
                    severity="info",
                    title=title,
                    body=body,
                    state="pending",
                    next_attempt_at=now,
                    created_at=now,
                    data=data,
                )
            )
        if not pages:
            log.warning("report_no_destinations", kind=kind, targets=list(targets), title=title)
        return len(pages)

    async def send_now(self, name: str, *, now: datetime | None = None) -> dict[str, Any]:
        """Queue report ``name`` now for the period ending now (``report_state`` is left alone): the API's
        ``POST /api/v1/reports/{name}/send`` answer; raises UnknownReport, or what the analytics raise."""
        r = self.report(name)
        now = (now or self.clock.now()).astimezone(UTC)
        start, end = options_window(r, now)
        data = await self.build(r, start, end, fire_at=now)
        async with self.store.session() as s:
            n = await self._queue(s, r.to, "report", data, now)
        log.info("report_sent_on_demand", report=name, start=isoformat(start), end=isoformat(end), rows=n)
        if n:
            self.kick_delivery()
        return {"report": name, "period": {"from": isoformat(start), "to": isoformat(end)}, "queued": n}

    async def listing(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Every configured report with its next fire time and the last one queued (``GET /api/v1/reports``)."""
        now = (now or self.clock.now()).astimezone(UTC)
        async with self.store.read() as s:
            states = {st.name: st for st in (await s.exec(select(ReportState))).all()}
        out = []
        for r in self.config.reports:
            st = states.get(r.name)
            try:
                nxt = next_fire(r.schedule, r.timezone, now)
            except ValueError:
                nxt = None
            out.append(
                {
                    "name": r.name,
                    "title": r.title,
                    "schedule": r.schedule,
                    "timezone": r.timezone,
                    "period": r.period,
                    "to": list(r.to),
                    "sections": list(r.sections),
                    "next_at": isoformat(nxt),
                    # The first start only sets the mark; a fire counts once its report was queued.
                    "last_fire_at": isoformat(st.last_fire_at) if st is not None and st.last_queued_at else None,
                    "last_queued_at": isoformat(st.last_queued_at) if st is not None else None,
                    "last_error": st.last_error if st is not None else None,
                }
            )
        return out

    # ------------------------------------------------------------------ shift summaries

    async def handoff_summary(
        self,
        s: AsyncSession,
        schedule: str,
        outgoing: str | None,
        incoming: str,
        start: datetime,
        at: datetime,
        now: datetime,
    ) -> int:
        """When ``analytics.handoff_summary`` is on, queue in transaction ``s`` a summary of ``outgoing``'s shift
        ``[start, at)`` of ``schedule`` to the outgoing and the incoming person; the rows queued (0 when off, when
        nobody handed over, or for a handoff noticed long after it happened). Raises on a database error."""
        cfg = self.config
        if not cfg.analytics.handoff_summary or not outgoing or outgoing == incoming:
            return 0
        if at < now - SUMMARY_GRACE:
            return 0
        start = max(start, at - SUMMARY_MAX)
        summary = await shift_summary(s, outgoing, start, at)
        summary.update({"schedule": schedule, "outgoing": outgoing, "incoming": incoming})
        tz = cfg.analytics.timezone
        summary["timezone"] = tz
        title = f"Shift summary for {schedule}: {outgoing} handed over to {incoming}"
        data = {"summary": summary, "title": title, "charts": []}
        n = await self._queue(s, [f"user:{outgoing}", f"user:{incoming}"], "handoff_summary", data, now)
        log.info("handoff_summary_queued", schedule=schedule, outgoing=outgoing, incoming=incoming, rows=n)
        return n  # the handoff notifier kicks the delivery once its transaction is committed


def _incident_row(inc: Any) -> dict[str, Any]:
    return {
        "id": inc.id,
        "title": inc.title,
        "severity": inc.severity,
        "state": inc.state,
        "created_at": isoformat(inc.created_at),
        "acknowledged_at": isoformat(inc.acknowledged_at),
        "acknowledged_by": inc.acknowledged_by,
        "resolved_at": isoformat(inc.resolved_at),
        "resolved_by": inc.resolved_by,
    }


def _paged(targets: Iterable[str] | None, users: set[str]) -> bool:
    return any(t in users for t in targets or ())


async def shift_summary(s: AsyncSession, user: str, start: datetime, end: datetime) -> dict[str, Any]:
    """What happened during ``user``'s shift ``[start, end)``: their incidents (those that paged them) opened,
    acknowledged and resolved in it, those still open at its end, and the pages they got, plus the counts over all
    incidents; raises on a database error."""
    target = f"user:{user}"
    mine = {target}
    cols = (
        Incident.id,
        Incident.title,
        Incident.severity,
        Incident.state,
        Incident.targets,
        Incident.created_at,
        Incident.acknowledged_at,
        Incident.acknowledged_by,
        Incident.resolved_at,
        Incident.resolved_by,
    )
    touched = sa.or_(
        sa.and_(col(Incident.created_at) >= start, col(Incident.created_at) < end),
        sa.and_(col(Incident.acknowledged_at) >= start, col(Incident.acknowledged_at) < end),
        sa.and_(col(Incident.resolved_at) >= start, col(Incident.resolved_at) < end),
        sa.and_(
            col(Incident.created_at) < end,
            sa.or_(col(Incident.resolved_at).is_(None), col(Incident.resolved_at) >= end),
        ),
    )
    rows = (await s.exec(select(*cols).where(touched).order_by(col(Incident.id)).limit(20_000))).all()  # type: ignore[call-overload]
    paged_ids = set(
        (
            await s.exec(
                select(Outbox.incident_id)
                .where(
                    col(Outbox.target) == target,
                    col(Outbox.incident_id).is_not(None),
                    col(Outbox.kind) == "trigger",
                )
                .distinct()
            )
        ).all()
    )
    sent = (
        select(Outbox.incident_id, Outbox.event_id, Outbox.target)
        .where(
            col(Outbox.target) == target,
            col(Outbox.incident_id).is_not(None),
            col(Outbox.kind) == "trigger",
            col(Outbox.created_at) >= start,
            col(Outbox.created_at) < end,
        )
        .distinct()
        .subquery()
    )
    pages = (await s.exec(select(sa.func.count()).select_from(sent))).one()  # type: ignore[call-overload]

    def within(v: datetime | None) -> bool:
        v = ensure_utc(v)
        return v is not None and start <= v < end

    counts = {"opened": 0, "acknowledged": 0, "resolved": 0, "still_open": 0, "pages": int(pages or 0)}
    totals = {"opened": 0, "acknowledged": 0, "resolved": 0, "still_open": 0}
    lists: dict[str, list[dict[str, Any]]] = {"opened": [], "acknowledged": [], "resolved": [], "still_open": []}
    for r in rows:
        created, resolved = ensure_utc(r.created_at), ensure_utc(r.resolved_at)
        flags = {
            "opened": within(r.created_at),
            "acknowledged": within(r.acknowledged_at),
            "resolved": within(r.resolved_at),
            "still_open": created is not None and created < end and (resolved is None or resolved >= end),
        }
        own = r.id in paged_ids or _paged(r.targets, mine)
        for k, on in flags.items():
            if not on:
                continue
            totals[k] += 1
            if own:
                counts[k] += 1
                if len(lists[k]) < SUMMARY_LISTED:
                    lists[k].append(_incident_row(r))
    return {
        "from": isoformat(start),
        "to": isoformat(end),
        "user": user,
        "counts": counts,
        "all_incidents": totals,
        **lists,
    }
