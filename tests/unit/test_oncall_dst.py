"""Handoffs keep their local wall-clock time on both sides of every DST change in 2026-2028.

The transitions are enumerated with zoneinfo; the expected handoff instants come from an
independent conversion (``reference_instant``) built on that list, not on the engine's code.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsincident.escalation.oncall import Layer, Restriction, Schedule, layer_shifts, local_to_utc

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Chatham", "UTC")
USERS = ("a", "b", "c")


@cache
def transitions(zone: str) -> tuple[tuple[datetime, timedelta, timedelta], ...]:
    """Every UTC-offset change of ``zone`` in 2026-2028 as (instant, offset before, offset after), to the second."""
    tz = ZoneInfo(zone)
    out = []
    t, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2029, 1, 1, tzinfo=UTC)
    step = timedelta(hours=6)
    while t < end:
        before, after = t.astimezone(tz).utcoffset(), (t + step).astimezone(tz).utcoffset()
        if before != after:
            lo, hi = t, t + step
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(tz).utcoffset() == before:
                    lo = mid
                else:
                    hi = mid
            out.append((hi.replace(microsecond=0), before, after))
        t += step
    return tuple(out)


ALL = [(z, tr) for z in ZONES for tr in transitions(z)]


def test_the_transitions_are_found():
    counts = {z: len(transitions(z)) for z in ZONES}
    assert counts == {z: 0 if z in ("Asia/Kolkata", "UTC") else 6 for z in ZONES}
    # Lord Howe moves by 30 minutes, Chatham at 02:45 local: the odd ones are covered.
    assert {after - before for _, before, after in transitions("Australia/Lord_Howe")} == {
        timedelta(minutes=30),
        timedelta(minutes=-30),
    }
    spring = next(t for t, b, a in transitions("Pacific/Chatham") if a > b)
    assert (spring + timedelta(hours=12, minutes=45)).strftime("%H:%M") == "02:45"


def reference_instant(naive: datetime, zone: str) -> datetime:
    """Independent wall-clock -> instant: the gap rule and the first-occurrence rule from the transition list."""
    for when, before, after in transitions(zone):
        wall_before, wall_after = when + before, when + after  # local readings at the change, as UTC-naive arithmetic
        wb, wa = wall_before.replace(tzinfo=None), wall_after.replace(tzinfo=None)
        if after > before and wb <= naive < wa:  # in the gap: the first instant after it
            return when
        if after < before and wa <= naive < wb:  # in the fold: the first occurrence, at the old offset
            return (naive - before).replace(tzinfo=UTC)
    offset = ZoneInfo(zone).utcoffset(naive)
    return (naive - offset).replace(tzinfo=UTC)


def wall_times(layer: Layer, lo: datetime, hi: datetime) -> list[datetime]:
    """The layer's handoff wall-clock times between the local dates of lo and hi (with a day's margin)."""
    first_day = layer.start
    if layer.rotation == "weekly":
        first_day += timedelta(days=(layer.handoff_day - first_day.weekday()) % 7)
    first = datetime.combine(first_day, layer.handoff)
    period = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}.get(layer.rotation, layer.every)
    start = lo.replace(tzinfo=None) - timedelta(days=2)
    k = max(0, (start - first) // period)
    out = []
    while first + k * period <= hi.replace(tzinfo=None) + timedelta(days=2):
        out.append(first + k * period)
        k += 1
    return out


def check_handoffs(layer: Layer, zone: str, lo: datetime, hi: datetime) -> int:
    """Assert the layer's boundaries in [lo, hi) are exactly the reference handoff instants; returns their count."""
    schedule = Schedule("s", zone, (layer,))
    shifts = layer_shifts(schedule, layer, lo, hi)
    boundaries = [s.start for s in shifts if s.start > lo]
    by_instant: dict[datetime, list[datetime]] = {}
    for w in wall_times(layer, lo, hi):
        by_instant.setdefault(reference_instant(w, zone), []).append(w)
    want = sorted(x for x in by_instant if lo < x < hi)
    assert boundaries == want, (zone, layer)
    tz = ZoneInfo(zone)
    for b in boundaries:
        shown = b.astimezone(tz)
        naive = shown.replace(tzinfo=None)
        walls = by_instant[b]
        if naive in walls:  # the configured wall-clock time, at its first occurrence
            assert shown.fold == 0, b
        else:  # a wall-clock time that does not exist: the first instant after the gap
            just_before = (b - timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None)
            assert all(just_before < w < naive for w in walls), (b, walls)
    # Round robin: consecutive periods go to consecutive users.
    for x, y in itertools.pairwise(shifts):
        if x.end == y.start:
            assert USERS.index(y.user) in {(USERS.index(x.user) + i) % len(USERS) for i in (1, 2)}
    return len(boundaries)


def interesting_times(zone: str, when: datetime, before: timedelta, after: timedelta) -> list[time]:
    """Wall-clock times at, inside and around the change, plus ordinary ones."""
    lo_wall = (when + min(before, after)).replace(tzinfo=None)
    hi_wall = (when + max(before, after)).replace(tzinfo=None)
    mid = lo_wall + (hi_wall - lo_wall) / 2
    picks = {
        lo_wall,
        mid,
        hi_wall,
        lo_wall - timedelta(minutes=1),
        hi_wall + timedelta(hours=1),
        lo_wall - timedelta(hours=1),
    }
    return sorted({p.time().replace(second=0, microsecond=0) for p in picks} | {time(0), time(9), time(23, 30)})


@pytest.mark.parametrize(("zone", "change"), ALL, ids=[f"{z}-{tr[0]:%Y-%m-%d}" for z, tr in ALL])
def test_handoffs_keep_wall_clock_time_across_each_change(zone: str, change: tuple):
    when, before, after = change
    lo, hi = when - timedelta(days=4), when + timedelta(days=4)
    day = (when + after).date()
    count = 0
    for at in interesting_times(zone, when, before, after):
        start = day - timedelta(days=30)
        count += check_handoffs(Layer(1, "daily", None, None, at, start, USERS), zone, lo, hi)
        count += check_handoffs(Layer(1, "weekly", None, day.weekday(), at, start, USERS), zone, lo, hi)
        for every in (timedelta(hours=12), timedelta(hours=5), timedelta(hours=2), timedelta(days=3)):
            count += check_handoffs(Layer(1, "every", every, None, at, start, USERS), zone, lo, hi)
    assert count > 100


def test_every_12h_lands_on_the_same_two_wall_times_for_three_years():
    for zone in ZONES:
        tz = ZoneInfo(zone)
        layer = Layer(1, "every", timedelta(hours=12), None, time(8), date(2026, 1, 1), USERS)
        shifts = layer_shifts(
            Schedule("s", zone, (layer,)), layer, datetime(2026, 1, 2, tzinfo=UTC), datetime(2029, 1, 1, tzinfo=UTC)
        )
        assert {s.start.astimezone(tz).strftime("%H:%M") for s in shifts[1:]} == {"08:00", "20:00"}
        # Two handoffs every local day: 2 * days, give or take the partial days at the ends.
        assert abs(len(shifts) - 2 * (date(2029, 1, 1) - date(2026, 1, 2)).days) <= 2


@pytest.mark.parametrize("zone", ZONES)
def test_restriction_windows_follow_the_wall_clock(zone: str):
    # A night window 22:00 -> 06:00 on every day: its ends are at those wall-clock times on every date.
    night = Restriction(frozenset(range(7)), time(22), time(6))
    layer = Layer(1, "daily", None, None, time(12), date(2025, 12, 1), USERS, (night,))
    tz = ZoneInfo(zone)
    shifts = layer_shifts(
        Schedule("s", zone, (layer,)), layer, datetime(2026, 1, 1, tzinfo=UTC), datetime(2029, 1, 1, tzinfo=UTC)
    )
    starts = {s.start.astimezone(tz).strftime("%H:%M") for s in shifts[1:]}
    ends = {s.end.astimezone(tz).strftime("%H:%M") for s in shifts[:-1]}
    assert starts == {"22:00"} and ends == {"06:00"}
    # One window a night: the time between windows is the 16 h day, give or take a DST change.
    gaps = {b.start - a.end for a, b in itertools.pairwise(shifts)}
    assert gaps <= {timedelta(hours=16) + timedelta(minutes=m) for m in (-60, -30, 0, 30, 60)}
    assert timedelta(hours=16) in gaps


def test_restriction_window_over_a_gap_is_shorter():
    # Berlin, 2026-03-29: 01:00 -> 04:00 local is two real hours (02:00-03:00 does not exist).
    win = Restriction(frozenset({6}), time(1), time(4))
    layer = Layer(1, "daily", None, None, time(12), date(2026, 1, 1), USERS, (win,))
    [shift] = layer_shifts(
        Schedule("s", "Europe/Berlin", (layer,)),
        layer,
        datetime(2026, 3, 28, tzinfo=UTC),
        datetime(2026, 3, 30, tzinfo=UTC),
    )
    assert (shift.start, shift.end) == (datetime(2026, 3, 29, 0, tzinfo=UTC), datetime(2026, 3, 29, 2, tzinfo=UTC))


@st.composite
def near_change(draw: st.DrawFn) -> tuple[str, datetime]:
    zone, (when, _, _) = draw(st.sampled_from([x for x in ALL]))
    wall = (when + ZoneInfo(zone).utcoffset((when - timedelta(days=1)).replace(tzinfo=None))).replace(tzinfo=None)
    return zone, wall + timedelta(minutes=draw(st.integers(-180, 180)))


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(near_change())
def test_local_to_utc_matches_the_reference_near_every_change(case: tuple[str, datetime]):
    zone, naive = case
    got = local_to_utc(naive, ZoneInfo(zone))
    assert got == reference_instant(naive, zone)
    shown = got.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    assert shown >= naive  # never earlier than asked; later only by the gap


# Every change of the four DST zones, and some instants of the two zones without DST.
CENTERS = [(z, when) for z, (when, _, _) in ALL] + [
    (z, datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=d))
    for z in ("Asia/Kolkata", "UTC")
    for d in range(0, 1096, 73)
]


@PROPERTY
@given(
    st.sampled_from(CENTERS),
    st.sampled_from(("daily", "weekly", "every")),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(60, 6000),
    st.integers(0, 6),
    st.integers(1, 60),
)
def test_random_layers_hand_off_at_wall_clock_time_around_changes(
    center: tuple[str, datetime], rotation: str, hour: int, minute: int, every_min: int, day: int, start_back: int
):
    zone, when = center
    every = timedelta(minutes=every_min) if rotation == "every" else None
    start = (when - timedelta(days=start_back)).date()
    layer = Layer(1, rotation, every, day if rotation == "weekly" else None, time(hour, minute), start, USERS)
    check_handoffs(layer, zone, when - timedelta(days=3), when + timedelta(days=3))
