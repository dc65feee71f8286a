"""Scheduled reports: the period of a fire time (calendar day/week/month in the report's zone, or a duration) and
the cron fire times (latest missed fire, next fire), with hypothesis: consecutive reports partition time."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.analytics.reports import latest_fire, next_fire, report_charts, report_window

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Asia/Kathmandu"]
CALENDAR_CRON = {"day": "0 8 * * *", "week": "30 6 * * mon", "month": "0 0 1 * *"}


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


def test_day_week_month_in_utc():
    fire = utc(2026, 3, 11, 8, 0)  # a Wednesday
    assert report_window("day", fire, "UTC") == (utc(2026, 3, 10), utc(2026, 3, 11))
    assert report_window("week", fire, "UTC") == (utc(2026, 3, 2), utc(2026, 3, 9))
    assert report_window("month", fire, "UTC") == (utc(2026, 2, 1), utc(2026, 3, 1))
    # January: the previous month is last year's December.
    assert report_window("month", utc(2026, 1, 1, 0, 0), "UTC") == (utc(2025, 12, 1), utc(2026, 1, 1))
    # A duration ends at the fire time.
    assert report_window(timedelta(days=7), fire, "UTC") == (fire - timedelta(days=7), fire)


def test_periods_follow_the_reports_time_zone():
    # 2026-03-11 01:30 in Berlin is still the 10th in UTC: "yesterday" is Berlin's 10th.
    fire = utc(2026, 3, 11, 0, 30)
    start, end = report_window("day", fire, "Europe/Berlin")
    berlin = ZoneInfo("Europe/Berlin")
    assert start == datetime(2026, 3, 10, tzinfo=berlin).astimezone(UTC) == utc(2026, 3, 9, 23)
    assert end == utc(2026, 3, 10, 23)
    assert report_window("day", fire, "UTC") == (utc(2026, 3, 10), utc(2026, 3, 11))


def test_dst_days_are_23_and_25_hours_long():
    # Europe/Berlin: summer time starts 2026-03-29 and ends 2026-10-25.
    start, end = report_window("day", utc(2026, 3, 30, 8), "Europe/Berlin")
    assert end - start == timedelta(hours=23)
    start, end = report_window("day", utc(2026, 10, 26, 8), "Europe/Berlin")
    assert end - start == timedelta(hours=25)
    # The week holding the change is 167 hours long.
    start, end = report_window("week", utc(2026, 3, 30, 8), "Europe/Berlin")
    assert (start, end - start) == (utc(2026, 3, 22, 23), timedelta(hours=167))


def test_a_midnight_skipped_by_dst_starts_the_day_at_the_gap():
    # America/Santiago moves clocks from 24:00 to 01:00 on 2026-09-06: that day starts at 04:00 UTC.
    start, end = report_window("day", utc(2026, 9, 7, 12), "America/Santiago")
    assert start == utc(2026, 9, 6, 4)
    assert end - start == timedelta(hours=23)


def test_unknown_period_is_refused():
    with pytest.raises(ValueError):
        report_window("fortnight", utc(2026, 3, 1), "UTC")


def test_latest_fire_takes_only_the_latest_missed_one():
    trig = ("0 8 * * *", "UTC")
    assert latest_fire(*trig, utc(2026, 3, 1, 8), utc(2026, 3, 5, 9)) == utc(2026, 3, 5, 8)
    assert latest_fire(*trig, utc(2026, 3, 5, 8), utc(2026, 3, 5, 9)) is None  # that one was queued
    assert latest_fire(*trig, utc(2026, 3, 5, 7), utc(2026, 3, 5, 8)) == utc(2026, 3, 5, 8)  # the bound is included
    assert latest_fire(*trig, utc(2026, 3, 5, 7), utc(2026, 3, 5, 7, 59, 59)) is None
    assert latest_fire(*trig, utc(2026, 3, 5, 9), utc(2026, 3, 5, 8)) is None  # a clock that went back


def test_latest_fire_after_a_long_downtime_is_cheap():
    t0 = datetime.now(UTC)
    assert latest_fire("* * * * *", "UTC", utc(2025, 1, 1), utc(2026, 3, 5, 9, 17, 30)) == utc(2026, 3, 5, 9, 17)
    # Only on leap days:
    assert latest_fire("0 0 29 2 *", "UTC", utc(2019, 1, 1), utc(2026, 3, 5)) == utc(2024, 2, 29)
    assert (datetime.now(UTC) - t0).total_seconds() < 2


def test_next_fire_in_the_reports_zone():
    trig = ("0 8 * * mon", "Europe/Berlin")
    assert next_fire(*trig, utc(2026, 3, 11)) == utc(2026, 3, 16, 7)  # 08:00 CET
    assert next_fire(*trig, utc(2026, 3, 30, 6)) == utc(2026, 4, 6, 6)  # 08:00 CEST
    assert next_fire(*trig, utc(2026, 3, 16, 7)) == utc(2026, 3, 23, 7)  # strictly after


def test_monthly_fires_across_dst_are_not_skipped():
    """apscheduler 3.11's zone-aware CronTrigger skips April 1 after March 1 in Berlin (DST in between); the
    wall-clock arithmetic here does not."""
    fires = [utc(2000, 1, 1)]
    for _ in range(5):
        fires.append(next_fire("0 0 1 * *", "Europe/Berlin", fires[-1]))
    local = [f.astimezone(ZoneInfo("Europe/Berlin")).strftime("%m-%d %H:%M") for f in fires[1:]]
    assert local == ["02-01 00:00", "03-01 00:00", "04-01 00:00", "05-01 00:00", "06-01 00:00"]


def test_dst_gap_and_repeat():
    berlin = ("30 2 * * *", "Europe/Berlin")
    # 02:30 does not exist on 2026-03-29 (02:00 -> 03:00): it fires just after the gap, at 03:30 CEST.
    assert next_fire(*berlin, utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1, 30)
    # 02:30 happens twice on 2026-10-25: it fires once (the first).
    first = next_fire(*berlin, utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0, 30)
    assert next_fire(*berlin, first) == utc(2026, 10, 26, 1, 30)


@settings(max_examples=60, deadline=None)
@given(
    period=st.sampled_from(["day", "week", "month"]),
    zone=st.sampled_from(ZONES),
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1)),
)
def test_consecutive_calendar_reports_partition_time(period, zone, start):
    """Each fire's period ends where the next fire's starts, ends no later than its fire, and has the length of a
    calendar day (23-25 h), week (167-169 h) or month (28-31 days, give or take an hour)."""
    trig = (CALENDAR_CRON[period], zone)
    fire = next_fire(*trig, start.replace(tzinfo=UTC))
    windows = []
    for _ in range(4):
        assert fire is not None
        s, e = report_window(period, fire, zone)
        assert s < e <= fire
        windows.append((s, e))
        fire = next_fire(*trig, fire)
    for (_, e1), (s2, _) in itertools.pairwise(windows):
        assert e1 == s2
    lengths = {
        "day": (timedelta(hours=23), timedelta(hours=25)),
        "week": (timedelta(hours=167), timedelta(hours=169)),
        "month": (timedelta(days=28, hours=-1), timedelta(days=31, hours=1)),
    }[period]
    for s, e in windows:
        assert lengths[0] <= e - s <= lengths[1]


@settings(max_examples=60, deadline=None)
@given(
    hours=st.integers(min_value=1, max_value=48),
    zone=st.sampled_from(ZONES),
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1)),
)
def test_duration_reports_fired_at_their_own_interval_partition_time(hours, zone, start):
    """A report of ``Nh`` fired every N hours (in UTC terms) covers exactly the time since the previous fire."""
    t = start.replace(tzinfo=UTC, minute=0, second=0, microsecond=0)
    fires = [t + timedelta(hours=hours * k) for k in range(4)]
    windows = [report_window(timedelta(hours=hours), f, zone) for f in fires]
    for (_, e1), (s2, _) in itertools.pairwise(windows):
        assert e1 == s2
    assert all(e == f for (_, e), f in zip(windows, fires, strict=True))


def test_report_charts_decode_as_png():
    from io import BytesIO

    from PIL import Image

    from fsincident.notify.render import sample_report

    charts = report_charts(sample_report()["report"])
    assert [c[0] for c in charts] == ["incidents-per-day", "response-by-group", "sla-uptime"]
    for _, _, png in charts:
        img = Image.open(BytesIO(png))
        img.verify()
        assert img.format == "PNG"
    assert report_charts({}) == []
    assert report_charts({"daily": [{"date": "not a date"}]}) == []  # a broken chart is left out, never raised


def test_the_subject_names_a_dst_day_like_any_other_day():
    """A daily report's subject is the day's date, also on the 23-hour and 25-hour days of DST changes."""
    from types import SimpleNamespace

    from fsincident.analytics.reports import ReportScheduler

    sched = ReportScheduler.__new__(ReportScheduler)  # title_of reads nothing of the scheduler
    r = SimpleNamespace(title="Daily", name="daily")
    for day in (28, 29, 30):  # the 29th of March 2026 is 23 hours long in Berlin
        start, end = report_window("day", datetime(2026, 3, day + 1, 6, tzinfo=UTC), "Europe/Berlin")
        assert sched.title_of(r, start, end, "Europe/Berlin") == f"Daily: 2026-03-{day:02d}"
    start, end = report_window("day", utc(2026, 10, 26, 6), "Europe/Berlin")  # 25 hours
    assert sched.title_of(r, start, end, "Europe/Berlin") == "Daily: 2026-10-25"
    start, end = report_window("week", utc(2026, 3, 30, 6), "Europe/Berlin")  # 167 hours
    assert sched.title_of(r, start, end, "Europe/Berlin") == "Daily: 2026-03-23 to 2026-03-29"
    start, end = report_window(timedelta(hours=12), utc(2026, 3, 30, 6), "Europe/Berlin")
    assert sched.title_of(r, start, end, "Europe/Berlin") == "Daily: 2026-03-29 20:00 to 2026-03-30 08:00 CEST"
