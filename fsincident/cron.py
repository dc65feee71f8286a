"""Crontab lines as apscheduler triggers with crontab's meaning (used by heartbeat checks and scheduled reports).

Where APScheduler 3 differs from cron, cron wins: 0 and 7 are Sunday, a line restricting both day of month and day
of week fires on either, and times are read on the time zone's wall clock across DST changes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

_TICK = timedelta(microseconds=1)
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _weekday(token: str) -> int:
    t = token.strip().lower()
    if t.isdigit() and 0 <= int(t) <= 7:
        return int(t)  # 7 is Sunday too; kept as 7 so that ranges such as 5-7 work
    if t in _DAYS:
        return _DAYS.index(t)
    raise ValueError(f"bad day of week {token!r} (0-7 with 0 and 7 Sunday, or sun..sat)")


def _weekdays(field: str) -> str:
    """Crontab day-of-week (0 or 7 = Sunday) as day names, which APScheduler 3 reads as cron does (not 0 = Monday)."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        rng, slash, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else 0
        if slash and step < 1:
            raise ValueError(f"bad step in day of week {part!r}")
        if rng == "*":
            lo, hi = 0, 6
        elif "-" in rng:
            lo, hi = (_weekday(x) for x in rng.split("-", 1))
            if lo > hi:
                raise ValueError(f"bad range in day of week {part!r}")
        else:
            lo = _weekday(rng)
            hi = max(lo, 6) if slash else lo
        days.update(d % 7 for d in range(lo, hi + 1, step or 1))
    return ",".join(_DAYS[d] for d in sorted(days))


def cron_trigger(expr: str, timezone: str = "UTC") -> BaseTrigger:
    """A trigger firing like crontab ``expr`` in ``timezone``; raises ValueError naming what is wrong.

    Standard cron semantics are kept where APScheduler 3 differs: 0 and 7 are Sunday, and when both day of
    month and day of week are restricted the schedule fires on either (not only when both match).
    """
    fields = _MACROS.get(expr.strip().lower(), expr).split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields: got {len(fields)}, expected 5 (minute hour day month weekday)")
    minute, hour, day, month, dow = fields
    zone = ZoneInfo(timezone)

    def make(d: str, w: str) -> CronTrigger:
        return CronTrigger(minute=minute, hour=hour, day=d, month=month, day_of_week=w, timezone=UTC)

    weekdays = _weekdays(dow)
    inner: BaseTrigger = make(day, weekdays)
    if day not in ("*", "?") and weekdays != "*":
        inner = OrTrigger([make(day, "*"), make("*", weekdays)])
    return inner if timezone in ("UTC", "Etc/UTC") else WallClockTrigger(inner, zone)


class WallClockTrigger(BaseTrigger):
    """A cron trigger read on ``zone``'s wall clock: ``inner`` is built in UTC and its times are taken as local
    times of ``zone``. APScheduler 3.11's zone-aware CronTrigger skips whole months across DST changes (``0 0 1 * *``
    in Europe/Berlin went from 1 March to 1 May); this does not. A local time skipped by DST fires shifted by the
    gap (02:30 at 03:30), a repeated one fires once (the first time)."""

    def __init__(self, inner: BaseTrigger, zone: ZoneInfo):
        self.inner = inner
        self.zone = zone

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        """The first fire time at or after ``now`` (UTC), or None when the schedule never fires again."""
        now = now.astimezone(UTC)
        wall = now.astimezone(self.zone).replace(tzinfo=UTC)
        for _ in range(8):
            nxt = self.inner.get_next_fire_time(None, wall)
            if nxt is None:
                return None
            real = nxt.replace(tzinfo=self.zone).astimezone(UTC)
            if real >= now:
                return real
            wall = nxt + _TICK

        return None

    def __str__(self) -> str:
        return f"wallclock[{self.zone.key}]({self.inner})"
