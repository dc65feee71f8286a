"""Crontab lines keep crontab's meaning in any time zone, across DST changes (fsincident.cron)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.config import cron_trigger as config_cron_trigger
from fsincident.cron import cron_trigger

BERLIN = ZoneInfo("Europe/Berlin")


def fires(expr: str, tz: str, start: datetime, n: int) -> list[datetime]:
    t = cron_trigger(expr, tz)
    out, now = [], start
    for _ in range(n):
        nxt = t.get_next_fire_time(None, now)
        assert nxt is not None
        out.append(nxt)
        now = nxt + timedelta(microseconds=1)
    return out


def test_monthly_in_a_dst_zone_skips_no_month():
    # APScheduler 3.11's own zone-aware CronTrigger jumps from 1 March to 1 May in Europe/Berlin.
    got = [f.astimezone(BERLIN) for f in fires("0 0 1 * *", "Europe/Berlin", datetime(2026, 1, 15, tzinfo=UTC), 5)]
    assert [(f.month, f.day, f.hour) for f in got] == [(2, 1, 0), (3, 1, 0), (4, 1, 0), (5, 1, 0), (6, 1, 0)]


def test_weekday_zero_and_seven_are_sunday_and_names_work():
    start = datetime(2026, 12, 1, tzinfo=UTC)  # a Tuesday
    for expr in ("0 8 * * 0", "0 8 * * 7", "0 8 * * sun"):
        (f,) = fires(expr, "UTC", start, 1)
        assert f == datetime(2026, 12, 6, 8, 0, tzinfo=UTC), expr
    (f,) = fires("0 8 * * 1", "Europe/Berlin", start, 1)
    assert f.astimezone(BERLIN).strftime("%a %H:%M") == "Mon 08:00"


def test_skipped_local_time_fires_shifted_and_repeated_time_fires_once():
    spring = fires("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=UTC), 2)
    assert spring[0] == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 02:30 does not exist: 03:30 CEST
    autumn = fires("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert autumn == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]


def test_config_names_a_bad_line():
    with pytest.raises(ValueError, match=r"invalid schedule '0 8 \* \*'.*expected 5"):
        config_cron_trigger("0 8 * *", "UTC")
    with pytest.raises(ValueError, match="invalid schedule"):
        config_cron_trigger("61 8 * * *", "UTC")


@settings(max_examples=60, deadline=None)
@given(
    minute=st.integers(0, 59),
    hour=st.integers(0, 23),
    tz=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Sydney", "America/Santiago", "UTC"]),
    day=st.integers(0, 700),
)
def test_daily_fires_once_a_local_day_at_its_wall_time(minute, hour, tz, day):
    zone = ZoneInfo(tz)
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=day)
    got = fires(f"{minute} {hour} * * *", tz, start, 4)
    locals_ = [g.astimezone(zone) for g in got]
    days = [loc.date() for loc in locals_]
    assert all(b > a for a, b in itertools.pairwise(got))
    assert all((b - a).days == 1 for a, b in itertools.pairwise(days))  # one fire per local day, none skipped
    for loc in locals_:
        if (loc.hour, loc.minute) != (hour, minute):  # only a time DST skipped may move, and by the gap only
            assert loc.utcoffset() != (loc - timedelta(hours=3)).utcoffset()
