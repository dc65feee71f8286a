"""Pure figures over loaded records: response times, groupings, per-day counts, alert fatigue, on-call load, SLA.

Every function here is a plain calculation over its arguments (times are Unix seconds), so tests can check each
figure by hand and with hypothesis; the service loads the records and calls these.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fsincident.analytics.records import IncidentRecord, ShiftRecord

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RARELY_ACTED_PERCENT = 25.0
"""A rule whose incidents were acted on less often than this (percent) has pages that are rarely acted on."""
RARELY_ACTED_MIN = 3
"""... counted only for rules with at least this many incidents."""


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``values`` with linear interpolation between closest ranks (numpy's default);
    None for no values."""
    n = len(values)
    if n == 0:
        return None
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return values[lo] + (values[hi] - values[lo]) * frac


def stats(values: Iterable[float]) -> dict[str, Any]:
    """``{"median", "p90", "n"}`` of durations in seconds (median and p90 None when there are none)."""
    v = sorted(values)
    med, p90 = quantile(v, 0.5), quantile(v, 0.9)
    return {"median": _round(med), "p90": _round(p90), "n": len(v)}


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def percent(part: float, whole: float) -> float | None:
    """``100 * part / whole`` rounded to 2 digits, None when ``whole`` is 0."""
    return None if not whole else round(100.0 * part / whole, 2)


# ---------------------------------------------------------------------- summary and response


def counts(incidents: Sequence[IncidentRecord], ack_within: float) -> dict[str, Any]:
    """The summary keys (counts, MTTA/MTTR/TTD stats, acknowledged within ``ack_within`` seconds) of
    ``incidents``."""
    return _summary(_tally(incidents, ack_within), ack_within)


class _Tally:
    """The counts and durations of some incidents, before the stats: tallies of groups add up to the whole's."""

    __slots__ = (
        "acked",
        "escalations",
        "n",
        "open",
        "pages",
        "reopens",
        "resolved",
        "retriggers",
        "ttas",
        "ttds",
        "ttrs",
        "within",
    )

    def __init__(self) -> None:
        self.n = self.acked = self.resolved = self.open = self.pages = self.escalations = 0
        self.retriggers = self.reopens = self.within = 0
        self.ttas: list[float] = []
        self.ttrs: list[float] = []
        self.ttds: list[float] = []

    def add(self, other: _Tally) -> None:
        for k in ("n", "acked", "resolved", "open", "pages", "escalations", "retriggers", "reopens", "within"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.ttas += other.ttas
        self.ttrs += other.ttrs
        self.ttds += other.ttds


def _tally(incidents: Sequence[IncidentRecord], ack_within: float) -> _Tally:
    t = _Tally()
    t.n = len(incidents)
    acked = resolved = open_ = pages = escalations = retriggers = reopens = within = 0
    ttas, ttrs, ttds = t.ttas, t.ttrs, t.ttds
    for r in incidents:  # the hot loop of a report: attributes read once, TTA/TTR as IncidentRecord defines them
        c, a, res = r.created, r.acked, r.resolved
        if a is not None:
            acked += 1
            tta: float | None = a - c if a > c else 0.0
        else:
            if r.ack_events:
                acked += 1
            tta = None
        if res is not None:
            resolved += 1
            ttr = res - c if res > c else 0.0
            ttrs.append(ttr)
            if tta is None:
                tta = ttr
        else:
            open_ += 1
        if tta is not None:
            ttas.append(tta)
            if tta <= ack_within:
                within += 1
        pages += r.pages
        escalations += r.escalations
        retriggers += r.retriggers
        if r.reopen:
            reopens += 1
        if r.ttd is not None:
            ttds.append(r.ttd)
    t.acked, t.resolved, t.open, t.pages, t.escalations = acked, resolved, open_, pages, escalations
    t.retriggers, t.reopens, t.within = retriggers, reopens, within
    return t


def _summary(t: _Tally, ack_within: float) -> dict[str, Any]:
    return {
        "incidents": t.n,
        "acknowledged": t.acked,
        "resolved": t.resolved,
        "open": t.open,
        "pages": t.pages,
        "escalations": t.escalations,
        "retriggers": t.retriggers,
        "reopens": t.reopens,
        "mtta_seconds": stats(t.ttas),
        "mttr_seconds": stats(t.ttrs),
        "ttd_seconds": stats(t.ttds),
        "acked_within": {"seconds": ack_within, "count": t.within, "percent": percent(t.within, t.n)},
    }


def grouped(incidents: Iterable[IncidentRecord]) -> dict[str, list[IncidentRecord]]:
    """The incidents per group, groups in name order (``(none)`` like any other name)."""
    out: dict[str, list[IncidentRecord]] = defaultdict(list)
    for r in incidents:
        out[r.group].append(r)
    return {k: out[k] for k in sorted(out)}


def response(incidents: Sequence[IncidentRecord], ack_within: float) -> list[dict[str, Any]]:
    """One row per group: ``{"group", ...the summary keys...}``, the busiest group first."""
    return summary_and_response(incidents, ack_within)[1]


def summary_and_response(
    incidents: Sequence[IncidentRecord], ack_within: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(counts(incidents), response(incidents))`` in one pass over the incidents: the summary adds up the
    groups' tallies (the same numbers, the durations sorted together for the stats)."""
    whole = _Tally()
    rows = []
    for g, rs in grouped(incidents).items():
        t = _tally(rs, ack_within)
        rows.append({"group": g, **_summary(t, ack_within)})
        whole.add(t)
    rows.sort(key=lambda r: -r["incidents"])  # stable: equal counts stay in name order
    return _summary(whole, ack_within), rows


def daily(incidents: Iterable[IncidentRecord], start: float, end: float, tz: str) -> list[dict[str, Any]]:
    """Incidents opened per calendar day in ``tz``, by severity; every day of ``[start, end)`` is listed."""
    zone = ZoneInfo(tz)
    first = datetime.fromtimestamp(start, zone).date()
    last = datetime.fromtimestamp(max(start, end - 1e-6), zone).date()
    days: list[date] = []
    d = first
    while d <= last:
        days.append(d)
        d += timedelta(days=1)
    # Each day's first instant (DST-aware), so a time's day is one bisect away.
    starts = [datetime.combine(x, datetime.min.time(), zone).timestamp() for x in days]
    per_day: list[Counter[str]] = [Counter() for _ in days]
    extra: dict[date, Counter[str]] = {}
    day_of = _DayOf(zone)
    for r in incidents:
        i = bisect.bisect_right(starts, r.created) - 1
        if 0 <= i < len(days) and (i + 1 == len(days) or r.created < starts[i + 1]):
            per_day[i][r.severity] += 1
        else:  # outside the period's days (not for the records of a report)
            extra.setdefault(day_of(r.created), Counter())[r.severity] += 1
    rows = list(zip(days, per_day, strict=True)) + list(extra.items())
    return [
        {"date": x.isoformat(), "incidents": sum(c.values()), "by_severity": dict(sorted(c.items()))}
        for x, c in sorted(rows, key=lambda dc: dc[0])
    ]


class _DayOf:
    """The local date of Unix times, cached per UTC hour (zone offsets change on whole quarter hours at most, and
    a cache per hour is exact for every zone whose offsets are whole hours; others are looked up per call)."""

    def __init__(self, zone: ZoneInfo):
        self.zone = zone
        self.cache: dict[int, int] = {}

    def offset(self, t: float) -> int:
        h = int(t // 3600)
        off = self.cache.get(h)
        if off is None:
            o = datetime.fromtimestamp(h * 3600, UTC).astimezone(self.zone).utcoffset()
            o2 = datetime.fromtimestamp(h * 3600 + 3599, UTC).astimezone(self.zone).utcoffset()
            if o != o2:  # a change inside this hour: no cache
                return int(datetime.fromtimestamp(t, UTC).astimezone(self.zone).utcoffset().total_seconds())  # type: ignore[union-attr]
            off = int(o.total_seconds()) if o is not None else 0
            self.cache[h] = off
        return off

    def __call__(self, t: float) -> date:
        return date.fromordinal(_EPOCH_ORDINAL + int((t + self.offset(t)) // 86400))


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


# ---------------------------------------------------------------------- working hours


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


@dataclass(frozen=True)
class Hours:
    """Working hours as local minutes of the day and weekday numbers (Monday 0)."""

    days: frozenset[int]
    start: int
    end: int
    night_start: int
    night_end: int

    @classmethod
    def of(cls, wh: Any) -> Hours:
        """From ``analytics.working_hours`` (``days`` names, ``HH:MM`` times)."""
        return cls(
            frozenset(WEEKDAYS.index(d[:3].lower()) for d in wh.days),
            _minutes(wh.start),
            _minutes(wh.end),
            _minutes(wh.night_start),
            _minutes(wh.night_end),
        )

    def classify(self, weekday: int, minute: int) -> tuple[bool, bool, bool]:
        """``(out_of_hours, night, weekend)`` of a local weekday (Monday 0) and minute of the day."""
        weekend = weekday not in self.days
        if self.start <= self.end:
            working = self.start <= minute < self.end
        else:  # a working day that wraps midnight
            working = minute >= self.start or minute < self.end
        if self.night_start <= self.night_end:
            night = self.night_start <= minute < self.night_end
        else:
            night = minute >= self.night_start or minute < self.night_end
        return (weekend or not working, night, weekend)


class PageClock:
    """Classifies page times in each person's time zone against the working hours (offsets cached per hour, the
    answer looked up per minute of the local week)."""

    def __init__(self, hours: Hours, zones: Mapping[str, str]):
        self.hours = hours
        self.zones = dict(zones)
        self._day_of: dict[str, _DayOf] = {}
        self.week = [hours.classify(m // 1440, m % 1440) for m in range(7 * 1440)]
        """``(out_of_hours, night, weekend)`` per minute of the week from Monday 00:00."""

    def offset_of(self, user: str) -> _DayOf:
        """The cached UTC offsets of ``user``'s time zone (UTC for an unknown user)."""
        d = self._day_of.get(user)
        if d is None:
            d = self._day_of[user] = _DayOf(ZoneInfo(self.zones.get(user) or "UTC"))
        return d

    def classify(self, user: str, t: float) -> tuple[bool, bool, bool]:
        """``(out_of_hours, night, weekend)`` of a page to ``user`` at ``t``."""
        local = t + self.offset_of(user).offset(t)
        return self.week[(int(local // 60) + 3 * 1440) % (7 * 1440)]  # 1970-01-01 was a Thursday


# ---------------------------------------------------------------------- fatigue


def fatigue_rules(incidents: Iterable[IncidentRecord], flap_count: int) -> list[dict[str, Any]]:
    """Per rule (the incident's ``alertname``): incidents, pages, how many were acted on, re-opens and re-triggers,
    whether its pages are rarely acted on and whether it is flapping; the most paging rule first."""
    by: dict[str, list[int]] = {}  # incidents, pages, acted, re-opens, re-triggers: one pass
    for r in incidents:
        t = by.get(r.rule)
        if t is None:
            t = by[r.rule] = [0, 0, 0, 0, 0]
        t[0] += 1
        t[1] += r.pages
        if r.acted:
            t[2] += 1
        if r.reopen:
            t[3] += 1
        t[4] += r.retriggers
    rows = []
    for rule in sorted(by):
        n, pages, acted, reopens, retriggers = by[rule]
        rows.append(
            {
                "rule": rule,
                "incidents": n,
                "pages": pages,
                "acted": acted,
                "acted_percent": percent(acted, n),
                "rarely_acted": n >= RARELY_ACTED_MIN and 100.0 * acted / n < RARELY_ACTED_PERCENT,
                "reopens": reopens,
                "retriggers": retriggers,
                "flapping": reopens + retriggers >= flap_count,
            }
        )
    rows.sort(key=lambda r: (-r["pages"], -r["incidents"]))
    return rows


def page_load(pages: Iterable[tuple[int, str, float]], clock: PageClock) -> dict[str, dict[str, int]]:
    """Per person: ``{"pages", "night", "weekend", "out_of_hours"}`` of ``(incident_id, user, time)`` pages."""
    acc: dict[str, list[int]] = {}
    zones: dict[str, _DayOf] = {}
    week = clock.week
    for _, user, t in pages:
        row = acc.get(user)
        if row is None:
            row = acc[user] = [0, 0, 0, 0]
            zones[user] = clock.offset_of(user)
        zone = zones[user]
        off = zone.cache.get(int(t // 3600))
        local = t + (off if off is not None else zone.offset(t))
        ooh, night, weekend = week[(int(local // 60) + 3 * 1440) % (7 * 1440)]
        row[0] += 1
        row[1] += night
        row[2] += weekend
        row[3] += ooh
    return {u: {"pages": r[0], "night": r[1], "weekend": r[2], "out_of_hours": r[3]} for u, r in acc.items()}


def fatigue_people(load: Mapping[str, Mapping[str, int]]) -> list[dict[str, Any]]:
    """``[{"user", "pages", "night", "weekend", "out_of_hours"}]``, the most paged person first."""
    rows = [{"user": u, **v} for u, v in sorted(load.items())]
    rows.sort(key=lambda r: -r["pages"])
    return rows


# ---------------------------------------------------------------------- on-call load


def union_seconds(intervals: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """The length of the union of ``intervals`` cut to ``[start, end)``."""
    cut = sorted((max(a, start), min(b, end)) for a, b in intervals if min(b, end) > max(a, start))
    total = 0.0
    cur_a: float | None = None
    cur_b = 0.0
    for a, b in cut:
        if cur_a is None or a > cur_b:
            if cur_a is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None:
        total += cur_b - cur_a
    return total


def oncall(
    shifts: Iterable[ShiftRecord], load: Mapping[str, Mapping[str, int]], start: float, end: float
) -> list[dict[str, Any]]:
    """Per person who was on call or paged: hours on call (union over all schedules, cut to the period), shifts,
    pages and those out of hours, at night, at the weekend; the most hours first."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in shifts:
        if min(s.end, end) > max(s.start, start):
            spans[s.user].append((s.start, s.end))
    rows = []
    for user in sorted(set(spans) | set(load)):
        p = load.get(user, {})
        rows.append(
            {
                "user": user,
                "hours_on_call": round(union_seconds(spans.get(user, []), start, end) / 3600.0, 3),
                "shifts": len(spans.get(user, [])),
                "pages": p.get("pages", 0),
                "out_of_hours_pages": p.get("out_of_hours", 0),
                "night_pages": p.get("night", 0),
                "weekend_pages": p.get("weekend", 0),
            }
        )
    rows.sort(key=lambda r: (-r["hours_on_call"], -r["pages"]))
    return rows


# ---------------------------------------------------------------------- SLA


def budget(target_percent: float, period: float, downtime: float) -> dict[str, Any]:
    """Error budget of a period: ``budget_seconds``, ``budget_left_seconds``, ``budget_left_percent`` (negative
    when blown)."""
    b = (1.0 - target_percent / 100.0) * period
    left = b - downtime
    return {
        "budget_seconds": round(b, 3),
        "budget_left_seconds": round(left, 3),
        "budget_left_percent": None if b <= 0 else round(100.0 * left / b, 2),
    }


def sla_from_incidents(
    name: str, target: float, spans: Sequence[tuple[float, float]], start: float, end: float
) -> dict[str, Any]:
    """An SLA row from the outage spans (``[opened, resolved or now)``) of a service's incidents."""
    period = end - start
    down = union_seconds(spans, start, end)
    return {
        "service": name,
        "source": "incidents",
        "target_percent": target,
        "uptime_percent": None if period <= 0 else round(100.0 * (1.0 - down / period), 4),
        "downtime_seconds": round(down, 3),
        **budget(target, period, down),
        "incidents": len(spans),
        "coverage_percent": 100.0,
    }


def series_uptime(
    series: Sequence[Sequence[tuple[float, float]]], start: float, end: float
) -> tuple[float | None, float, float]:
    """``(uptime 0..1, covered seconds, slot width)`` of probe series given as ``(t, avg)`` buckets of equal width
    (NaN = no data): the time-weighted mean over covered slots of all series; None when nothing was recorded."""
    ts = sorted({t for s in series for t, v in s if not math.isnan(v) and start <= t < end})
    if not ts:
        return None, 0.0, 0.0
    diffs = [b - a for a, b in itertools.pairwise(ts) if b > a]
    width = min(diffs) if diffs else max(1.0, end - ts[0])
    total = weight = 0.0
    for s in series:
        for t, v in s:
            if not math.isnan(v) and start <= t < end:
                total += min(1.0, max(0.0, v))
                weight += 1.0
    covered = min(end - start, len(ts) * width)
    return (total / weight if weight else None), covered, width


def sla_from_series(
    name: str, target: float, series: Sequence[Sequence[tuple[float, float]]], start: float, end: float, incidents: int
) -> dict[str, Any]:
    """An SLA row from a ``probe_success``-style series (1 = up): downtime is the down share of the covered time."""
    period = end - start
    up, covered, _ = series_uptime(series, start, end)
    down = 0.0 if up is None else (1.0 - up) * covered
    return {
        "service": name,
        "source": "series",
        "target_percent": target,
        "uptime_percent": None if up is None else round(100.0 * up, 4),
        "downtime_seconds": round(down, 3),
        **budget(target, period, down),
        "incidents": incidents,
        "coverage_percent": 0.0 if period <= 0 else round(min(100.0, 100.0 * covered / period), 2),
    }
