"""Who is on call: table tests for the documented edge cases, hypothesis properties over random schedules.

The properties run in the six zones the issue names and compare the engine with an independent,
wall-clock-based reading of the schedule away from DST changes (DST itself: test_oncall_dst.py).
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsincident.escalation.oncall import (
    Layer,
    Override,
    Restriction,
    Schedule,
    Shift,
    final_shifts,
    handoffs,
    layer_oncall,
    layer_shifts,
    local_to_utc,
    oncall,
)

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Chatham", "UTC")
WEEK = frozenset(range(7))
WORKDAYS = frozenset(range(5))


def layer(
    number: int,
    users: tuple[str, ...],
    rotation: str = "daily",
    handoff: time = time(9),
    start: date = date(2026, 1, 5),
    day: int | None = None,
    every: timedelta | None = None,
    restrictions: tuple[Restriction, ...] = (),
) -> Layer:
    if rotation == "weekly" and day is None:
        day = 0
    return Layer(number, rotation, every, day, handoff, start, users, restrictions)


def local(tz: str, *args: int, fold: int = 0) -> datetime:
    """An aware UTC instant from a local wall-clock time in ``tz``."""
    return datetime(*args, tzinfo=ZoneInfo(tz), fold=fold).astimezone(UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def who(schedule: Schedule, at: datetime, overrides: tuple[Override, ...] = ()) -> str | None:
    found = oncall(schedule, overrides, at)
    return found[0].user if found else None


# --------------------------------------------------------------------------- table tests: rotations


def test_daily_rotation_round_robin_and_bounds():
    s = Schedule("s", "Europe/Berlin", (layer(1, ("alice", "bob", "carol"), start=date(2026, 1, 5)),))
    shifts = final_shifts(s, [], local("Europe/Berlin", 2026, 1, 5), local("Europe/Berlin", 2026, 1, 9))
    assert [(x.user, x.start, x.end) for x in shifts] == [
        ("alice", local("Europe/Berlin", 2026, 1, 5, 9), local("Europe/Berlin", 2026, 1, 6, 9)),
        ("bob", local("Europe/Berlin", 2026, 1, 6, 9), local("Europe/Berlin", 2026, 1, 7, 9)),
        ("carol", local("Europe/Berlin", 2026, 1, 7, 9), local("Europe/Berlin", 2026, 1, 8, 9)),
        ("alice", local("Europe/Berlin", 2026, 1, 8, 9), local("Europe/Berlin", 2026, 1, 9)),  # cut at the end
    ]
    assert all(x.layer == 1 and x.override is None for x in shifts)
    # oncall gives the whole shift, not the cut one.
    assert oncall(s, [], local("Europe/Berlin", 2026, 1, 8, 23, 59)) == [
        Shift("alice", 1, local("Europe/Berlin", 2026, 1, 8, 9), local("Europe/Berlin", 2026, 1, 9, 9))
    ]


def test_weekly_rotation_starts_at_first_handoff_on_or_after_start():
    # start is a Wednesday; the first Monday 09:00 at or after it is 2026-01-12.
    s = Schedule("s", "America/New_York", (layer(1, ("alice", "bob"), "weekly", start=date(2026, 1, 7), day=0),))
    assert who(s, local("America/New_York", 2026, 1, 12, 8, 59)) is None
    assert who(s, local("America/New_York", 2026, 1, 12, 9)) == "alice"
    assert who(s, local("America/New_York", 2026, 1, 19, 8, 59)) == "alice"
    assert who(s, local("America/New_York", 2026, 1, 19, 9)) == "bob"
    assert who(s, local("America/New_York", 2026, 1, 26, 9)) == "alice"
    # Start on the handoff day itself: that day's handoff is the first.
    s2 = Schedule("s", "UTC", (layer(1, ("alice", "bob"), "weekly", start=date(2026, 1, 12), day=0),))
    assert oncall(s2, [], utc(2026, 1, 12, 9))[0].start == utc(2026, 1, 12, 9)


def test_start_in_the_future_means_nobody_until_the_first_handoff():
    s = Schedule("s", "Asia/Kolkata", (layer(1, ("alice", "bob"), start=date(2027, 6, 1), handoff=time(9)),))
    first = local("Asia/Kolkata", 2027, 6, 1, 9)
    assert first == utc(2027, 6, 1, 3, 30)  # IST is UTC+05:30, no DST
    assert oncall(s, [], utc(2026, 6, 1)) == []
    assert oncall(s, [], first - timedelta(microseconds=1)) == []
    assert oncall(s, [], first)[0].user == "alice"
    assert final_shifts(s, [], utc(2027, 5, 30), utc(2027, 6, 2, 12))[0].start == first
    assert handoffs(s, [], utc(2027, 5, 30), utc(2027, 6, 2, 12)) == [
        (first, None, "alice"),
        (first + timedelta(days=1), "alice", "bob"),
    ]
    assert layer_oncall(s, s.layers[0], utc(2027, 5, 31)) is None


def test_single_user_is_one_long_shift():
    s = Schedule("s", "Europe/Berlin", (layer(1, ("alice",), start=date(2026, 1, 5)),))
    shifts = final_shifts(s, [], utc(2026, 1, 1), utc(2026, 3, 1))
    assert shifts == [Shift("alice", 1, local("Europe/Berlin", 2026, 1, 5, 9), utc(2026, 3, 1))]
    assert handoffs(s, [], utc(2026, 1, 1), utc(2026, 3, 1)) == [(local("Europe/Berlin", 2026, 1, 5, 9), None, "alice")]
    # The layer itself still reports its current rotation period.
    assert layer_oncall(s, s.layers[0], utc(2026, 2, 10, 12)) == Shift(
        "alice", 1, local("Europe/Berlin", 2026, 2, 10, 9), local("Europe/Berlin", 2026, 2, 11, 9)
    )
    # oncall looks a bounded distance around ``at`` for the ends of a never-ending shift.
    [now] = oncall(s, [], utc(2026, 2, 10, 12))
    assert now.start == local("Europe/Berlin", 2026, 1, 5, 9)
    assert now.end == utc(2026, 2, 10, 12) + timedelta(days=366)


def test_every_12h_keeps_local_time_across_dst():
    s = Schedule(
        "s",
        "Europe/Berlin",
        (layer(1, ("erin", "frank"), "every", time(8), date(2026, 3, 27), every=timedelta(hours=12)),),
    )
    bounds = [x.start for x in final_shifts(s, [], utc(2026, 3, 27), utc(2026, 3, 31))]
    assert [b.astimezone(ZoneInfo("Europe/Berlin")).strftime("%d %H:%M %z") for b in bounds] == [
        "27 08:00 +0100",
        "27 20:00 +0100",
        "28 08:00 +0100",
        "28 20:00 +0100",
        "29 08:00 +0200",  # 11 hours after the previous one: the night lost an hour
        "29 20:00 +0200",
        "30 08:00 +0200",
        "30 20:00 +0200",
    ]


# --------------------------------------------------------------------------- table tests: DST gap and fold


@pytest.mark.parametrize(
    ("tz", "handoff", "day", "expected_utc", "local_text"),
    [
        # Spring-forward gap: the handoff moves to the first instant after the gap.
        ("Europe/Berlin", time(2, 30), date(2026, 3, 29), utc(2026, 3, 29, 1), "03:00 +0200"),
        ("Europe/Berlin", time(2, 0), date(2026, 3, 29), utc(2026, 3, 29, 1), "03:00 +0200"),
        ("America/New_York", time(2, 15), date(2027, 3, 14), utc(2027, 3, 14, 7), "03:00 -0400"),
        ("Australia/Lord_Howe", time(2, 15), date(2026, 10, 4), utc(2026, 10, 3, 15, 30), "02:30 +1100"),
        ("Pacific/Chatham", time(3, 0), date(2026, 9, 27), utc(2026, 9, 26, 14), "03:45 +1345"),
        # Fall-back fold: the first occurrence.
        ("Europe/Berlin", time(2, 30), date(2026, 10, 25), utc(2026, 10, 25, 0, 30), "02:30 +0200"),
        ("America/New_York", time(1, 30), date(2028, 11, 5), utc(2028, 11, 5, 5, 30), "01:30 -0400"),
        ("Australia/Lord_Howe", time(1, 45), date(2026, 4, 5), utc(2026, 4, 4, 14, 45), "01:45 +1100"),
        ("Pacific/Chatham", time(2, 50), date(2027, 4, 4), utc(2027, 4, 3, 13, 5), "02:50 +1345"),
        # Just outside the gap and fold: exactly the wall-clock time.
        ("Europe/Berlin", time(3, 0), date(2026, 3, 29), utc(2026, 3, 29, 1), "03:00 +0200"),
        ("Europe/Berlin", time(1, 59), date(2026, 3, 29), utc(2026, 3, 29, 0, 59), "01:59 +0100"),
        ("Europe/Berlin", time(3, 0), date(2026, 10, 25), utc(2026, 10, 25, 2), "03:00 +0100"),
    ],
)
def test_handoff_in_gap_or_fold(tz: str, handoff: time, day: date, expected_utc: datetime, local_text: str):
    s = Schedule("s", tz, (layer(1, ("alice", "bob"), handoff=handoff, start=day - timedelta(days=1)),))
    changes = handoffs(
        s,
        [],
        datetime.combine(day, time(0), UTC) - timedelta(hours=20),
        datetime.combine(day, time(0), UTC) + timedelta(hours=30),
    )
    assert (expected_utc, "alice", "bob") in changes
    assert expected_utc.astimezone(ZoneInfo(tz)).strftime("%H:%M %z") == local_text
    naive = datetime.combine(day, handoff)
    assert local_to_utc(naive, ZoneInfo(tz)) == expected_utc


def test_gap_rule_is_exact_for_any_time_in_the_gap():
    berlin = ZoneInfo("Europe/Berlin")
    for naive in (
        datetime(2026, 3, 29, 2),
        datetime(2026, 3, 29, 2, 59, 59, 999999),
        datetime(2026, 3, 29, 2, 0, 0, 1),
    ):
        assert local_to_utc(naive, berlin) == utc(2026, 3, 29, 1)
    assert local_to_utc(datetime(2026, 3, 29, 3, 0, 0, 1), berlin) == utc(2026, 3, 29, 1) + timedelta(microseconds=1)


def test_fold_day_shift_is_25_hours_and_gap_day_23():
    s = Schedule("s", "Europe/Berlin", (layer(1, ("a", "b", "c", "d"), handoff=time(2, 30), start=date(2026, 1, 1)),))
    spring = oncall(s, [], utc(2026, 3, 28, 12))[0]
    assert spring.end - spring.start == timedelta(hours=23, minutes=30)  # 02:30 CET -> 03:00 CEST (gap rule)
    after = oncall(s, [], utc(2026, 3, 29, 12))[0]
    assert after.end - after.start == timedelta(hours=23, minutes=30)  # 03:00 CEST -> 02:30 CEST
    autumn = oncall(s, [], utc(2026, 10, 25, 12))[0]
    assert autumn.end - autumn.start == timedelta(hours=25)  # first 02:30 (CEST) -> 02:30 CET


# --------------------------------------------------------------------------- table tests: restrictions


def test_restriction_crossing_midnight_shows_lower_layer_outside():
    tz = "Europe/Berlin"
    night = Restriction(frozenset({5}), time(22), time(6))  # Saturday 22:00 -> Sunday 06:00
    s = Schedule(
        "s",
        tz,
        (
            layer(1, ("base",), start=date(2026, 1, 1)),
            layer(2, ("night",), start=date(2026, 1, 1), restrictions=(night,)),
        ),
    )
    assert who(s, local(tz, 2026, 6, 13, 21, 59)) == "base"  # Saturday
    assert who(s, local(tz, 2026, 6, 13, 22)) == "night"
    assert who(s, local(tz, 2026, 6, 14, 5, 59)) == "night"  # Sunday
    assert who(s, local(tz, 2026, 6, 14, 6)) == "base"
    assert who(s, local(tz, 2026, 6, 15, 23)) == "base"  # Monday night: not a listed day
    assert who(s, local(tz, 2026, 6, 14, 22, 30)) == "base"  # Sunday 22:00 is not a window start
    # The night layer's own shift is cut by its handoff at 09:00? No: its window ends first.
    assert layer_oncall(s, s.layers[1], local(tz, 2026, 6, 14, 1)) == Shift(
        "night", 2, local(tz, 2026, 6, 13, 22), local(tz, 2026, 6, 14, 6)
    )
    assert layer_oncall(s, s.layers[1], local(tz, 2026, 6, 14, 7)) is None
    assert [
        (x.user, x.start, x.end) for x in final_shifts(s, [], local(tz, 2026, 6, 13, 12), local(tz, 2026, 6, 14, 12))
    ] == [
        ("base", local(tz, 2026, 6, 13, 12), local(tz, 2026, 6, 13, 22)),
        ("night", local(tz, 2026, 6, 13, 22), local(tz, 2026, 6, 14, 6)),
        ("base", local(tz, 2026, 6, 14, 6), local(tz, 2026, 6, 14, 12)),
    ]


def test_business_hours_layer_is_cut_by_its_handoff_and_window():
    tz = "America/New_York"
    hours = Restriction(WORKDAYS, time(9), time(17))
    s = Schedule(
        "s",
        tz,
        (
            layer(1, ("alice", "bob"), "weekly", day=0, start=date(2026, 1, 5)),
            layer(2, ("dave", "erin"), handoff=time(12), start=date(2026, 1, 5), restrictions=(hours,)),
        ),
    )
    got = [(x.user, x.layer, x.start, x.end) for x in final_shifts(s, [], local(tz, 2026, 1, 6), local(tz, 2026, 1, 7))]
    assert got == [
        ("alice", 1, local(tz, 2026, 1, 6), local(tz, 2026, 1, 6, 9)),
        ("dave", 2, local(tz, 2026, 1, 6, 9), local(tz, 2026, 1, 6, 12)),
        ("erin", 2, local(tz, 2026, 1, 6, 12), local(tz, 2026, 1, 6, 17)),
        ("alice", 1, local(tz, 2026, 1, 6, 17), local(tz, 2026, 1, 7)),
    ]
    # Saturday: the business-hours layer is off all day.
    assert final_shifts(s, [], local(tz, 2026, 1, 10), local(tz, 2026, 1, 11)) == [
        Shift("alice", 1, local(tz, 2026, 1, 10), local(tz, 2026, 1, 11))
    ]


def test_full_day_windows_join_up():
    # from == to: 24 hours; Saturday and Sunday windows join into one weekend.
    weekend = Restriction(frozenset({5, 6}), time(0), time(0))
    s = Schedule("s", "UTC", (layer(1, ("w",), start=date(2026, 1, 1), restrictions=(weekend,)),))
    assert final_shifts(s, [], utc(2026, 1, 9), utc(2026, 1, 13)) == [Shift("w", 1, utc(2026, 1, 10), utc(2026, 1, 12))]


def test_layer_with_only_restricted_time_leaves_gaps():
    hours = Restriction(WORKDAYS, time(9), time(17))
    s = Schedule("s", "UTC", (layer(1, ("a",), start=date(2026, 1, 1), restrictions=(hours,)),))
    assert oncall(s, [], utc(2026, 1, 5, 8)) == []
    assert oncall(s, [], utc(2026, 1, 5, 9)) == [Shift("a", 1, utc(2026, 1, 5, 9), utc(2026, 1, 5, 17))]
    assert handoffs(s, [], utc(2026, 1, 5), utc(2026, 1, 7)) == [
        (utc(2026, 1, 5, 9), None, "a"),
        (utc(2026, 1, 6, 9), None, "a"),
    ]


# --------------------------------------------------------------------------- table tests: overrides

BASE = Schedule("s", "UTC", (layer(1, ("alice", "bob"), handoff=time(0), start=date(2026, 1, 1)),))
# alice: Jan 1, 3, 5, ...; bob: Jan 2, 4, 6, ...


def test_override_wins_only_inside_its_range():
    o = Override(7, "zed", utc(2026, 1, 1, 10), utc(2026, 1, 1, 12))
    assert [
        (x.user, x.layer, x.override, x.start, x.end) for x in final_shifts(BASE, [o], utc(2026, 1, 1), utc(2026, 1, 2))
    ] == [
        ("alice", 1, None, utc(2026, 1, 1), utc(2026, 1, 1, 10)),
        ("zed", 2, 7, utc(2026, 1, 1, 10), utc(2026, 1, 1, 12)),
        ("alice", 1, None, utc(2026, 1, 1, 12), utc(2026, 1, 2)),
    ]
    assert oncall(BASE, [o], utc(2026, 1, 1, 11)) == [Shift("zed", 2, utc(2026, 1, 1, 10), utc(2026, 1, 1, 12), 7)]
    assert who(BASE, utc(2026, 1, 1, 12), (o,)) == "alice"


def test_override_replacing_someone_not_on_call_changes_nothing():
    o = Override(1, "zed", utc(2026, 1, 1, 6), utc(2026, 1, 1, 18), replaces="bob")  # alice's day
    assert final_shifts(BASE, [o], utc(2026, 1, 1), utc(2026, 1, 2)) == final_shifts(
        BASE, [], utc(2026, 1, 1), utc(2026, 1, 2)
    )
    assert handoffs(BASE, [o], utc(2026, 1, 1, 1), utc(2026, 1, 1, 23)) == []


def test_override_replacing_covers_only_that_users_part():
    o = Override(1, "zed", utc(2026, 1, 1, 12), utc(2026, 1, 3, 12), replaces="bob")  # bob has Jan 2
    got = [(x.user, x.start, x.end) for x in final_shifts(BASE, [o], utc(2026, 1, 1), utc(2026, 1, 4))]
    assert got == [
        ("alice", utc(2026, 1, 1), utc(2026, 1, 2)),
        ("zed", utc(2026, 1, 2), utc(2026, 1, 3)),
        ("alice", utc(2026, 1, 3), utc(2026, 1, 4)),
    ]


def test_latest_override_wins_and_replaces_applies_on_top_of_earlier_ones():
    a = Override(1, "zed", utc(2026, 1, 1, 8), utc(2026, 1, 1, 16))
    b = Override(2, "yan", utc(2026, 1, 1, 12), utc(2026, 1, 1, 20))
    c = Override(3, "xia", utc(2026, 1, 1, 9), utc(2026, 1, 1, 10), replaces="zed")  # zed is on call by override 1
    d = Override(4, "wu", utc(2026, 1, 1, 0), utc(2026, 1, 1, 2), replaces="zed")  # zed is not on call then
    got = [
        (x.user, x.override, x.start, x.end) for x in final_shifts(BASE, [d, c, b, a], utc(2026, 1, 1), utc(2026, 1, 2))
    ]
    assert got == [
        ("alice", None, utc(2026, 1, 1), utc(2026, 1, 1, 8)),
        ("zed", 1, utc(2026, 1, 1, 8), utc(2026, 1, 1, 9)),
        ("xia", 3, utc(2026, 1, 1, 9), utc(2026, 1, 1, 10)),
        ("zed", 1, utc(2026, 1, 1, 10), utc(2026, 1, 1, 12)),
        ("yan", 2, utc(2026, 1, 1, 12), utc(2026, 1, 1, 20)),
        ("alice", None, utc(2026, 1, 1, 20), utc(2026, 1, 2)),
    ]


def test_override_where_nobody_is_on_call():
    hours = Restriction(WORKDAYS, time(9), time(17))
    s = Schedule("s", "UTC", (layer(1, ("a",), start=date(2026, 1, 1), restrictions=(hours,)),))
    plain = Override(1, "zed", utc(2026, 1, 5, 6), utc(2026, 1, 5, 10))
    assert [(x.user, x.start, x.end) for x in final_shifts(s, [plain], utc(2026, 1, 5), utc(2026, 1, 6))] == [
        ("zed", utc(2026, 1, 5, 6), utc(2026, 1, 5, 10)),
        ("a", utc(2026, 1, 5, 10), utc(2026, 1, 5, 17)),
    ]
    assert handoffs(s, [plain], utc(2026, 1, 5), utc(2026, 1, 6)) == [
        (utc(2026, 1, 5, 6), None, "zed"),
        (utc(2026, 1, 5, 10), "zed", "a"),
    ]
    replacing = Override(2, "zed", utc(2026, 1, 5, 6), utc(2026, 1, 5, 8), replaces="a")
    assert oncall(s, [replacing], utc(2026, 1, 5, 7)) == []


def test_empty_and_reversed_ranges_and_naive_times():
    assert final_shifts(BASE, [], utc(2026, 1, 2), utc(2026, 1, 1)) == []
    assert handoffs(BASE, [], utc(2026, 1, 2), utc(2026, 1, 2)) == []
    backwards = Override(1, "zed", utc(2026, 1, 1, 12), utc(2026, 1, 1, 10))
    assert who(BASE, utc(2026, 1, 1, 11), (backwards,)) == "alice"
    with pytest.raises(ValueError, match="aware"):
        oncall(BASE, [], datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        final_shifts(BASE, [], datetime(2026, 1, 1), utc(2026, 1, 2))
    # Any aware time zone in, UTC out.
    [shift] = oncall(BASE, [], datetime(2026, 1, 1, 12, tzinfo=ZoneInfo("Asia/Kolkata")))
    assert shift.start.tzinfo is UTC
    assert (shift.user, shift.start) == ("alice", utc(2026, 1, 1))


# --------------------------------------------------------------------------- properties

USERS = ("u0", "u1", "u2", "u3", "u4")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=3 * 365)


@st.composite
def restrictions(draw: st.DrawFn) -> Restriction:
    days = frozenset(draw(st.sets(st.integers(0, 6), min_size=1)))
    start = time(draw(st.integers(0, 23)), draw(st.sampled_from((0, 15, 30, 45))))
    end = time(draw(st.integers(0, 23)), draw(st.sampled_from((0, 15, 30, 45))))
    return Restriction(days, start, end)


@st.composite
def layers(draw: st.DrawFn, number: int) -> Layer:
    rotation = draw(st.sampled_from(("daily", "weekly", "every")))
    every = None
    if rotation == "every":
        every = timedelta(minutes=draw(st.sampled_from((60, 120, 180, 300, 720, 1500, 4320)) | st.integers(60, 20_000)))
    handoff = time(draw(st.integers(0, 23)), draw(st.sampled_from((0, 15, 30, 45)) | st.integers(0, 59)))
    day = draw(st.integers(0, 6)) if rotation == "weekly" else None
    start = date(2025, 12, 1) + timedelta(days=draw(st.integers(0, 365 * 3)))
    users = tuple(draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=4)))
    rs = tuple(draw(st.lists(restrictions(), max_size=2))) if draw(st.booleans()) else ()
    return Layer(number, rotation, every, day, handoff, start, users, rs)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    n = draw(st.integers(1, 3))
    return Schedule("s", draw(st.sampled_from(ZONES)), tuple(draw(layers(i + 1)) for i in range(n)))


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    return EPOCH + timedelta(minutes=draw(st.integers(0, SPAN // timedelta(minutes=1))))


@st.composite
def override_lists(draw: st.DrawFn, around: datetime) -> list[Override]:
    out = []
    for i in range(draw(st.integers(0, 4))):
        start = around + timedelta(minutes=draw(st.integers(-3 * 1440, 3 * 1440)))
        end = start + timedelta(minutes=draw(st.integers(1, 3 * 1440)))
        replaces = draw(st.none() | st.sampled_from(USERS))
        out.append(
            Override(
                draw(st.integers(1, 1000)) * 10 + i, draw(st.sampled_from(("o1", "o2", *USERS))), start, end, replaces
            )
        )
    return out


def near_dst(tz: str, t: datetime, margin: timedelta = timedelta(hours=3)) -> bool:
    z = ZoneInfo(tz)
    return (t - margin).astimezone(z).utcoffset() != (t + margin).astimezone(z).utcoffset()


def expected_layer_user(schedule: Schedule, lay: Layer, t: datetime) -> str | None:
    """An independent reading on the wall clock (valid away from DST changes): count handoffs by local arithmetic."""
    z = ZoneInfo(schedule.timezone)
    lt = t.astimezone(z).replace(tzinfo=None)
    first_day = lay.start
    if lay.rotation == "weekly":
        first_day += timedelta(days=(lay.handoff_day - first_day.weekday()) % 7)
    first = datetime.combine(first_day, lay.handoff)
    if lt < first:
        return None
    period = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}.get(lay.rotation, lay.every)
    k = (lt - first) // period
    if lay.restrictions:
        tod, wd, yesterday = lt.time(), lt.weekday(), (lt.weekday() - 1) % 7
        inside = False
        for r in lay.restrictions:
            if r.end > r.start:
                inside |= wd in r.days and r.start <= tod < r.end
            else:  # runs past midnight (or 24 h when end == start)
                inside |= (wd in r.days and tod >= r.start) or (yesterday in r.days and tod < r.end)
        if not inside:
            return None
    return lay.users[k % len(lay.users)]


def expected_final(schedule: Schedule, overrides: list[Override], t: datetime) -> tuple[str, int, int | None] | None:
    found = None
    for lay in reversed(schedule.layers):
        sh = layer_oncall(schedule, lay, t)
        if sh is not None:
            assert sh.start <= t < sh.end and sh.user in lay.users
            found = (sh.user, lay.number, None)
            break
    for o in sorted(overrides, key=lambda o: o.id):
        if o.start <= t < o.end and (o.replaces is None or (found is not None and found[0] == o.replaces)):
            found = (o.who, len(schedule.layers) + 1, o.id)
    return found


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(schedules(), instants(), st.data())
def test_layers_have_exactly_one_person_when_active(schedule: Schedule, t: datetime, data: st.DataObject):
    for lay in schedule.layers:
        shifts = layer_shifts(schedule, lay, t - timedelta(days=4), t + timedelta(days=4))
        for a, b in itertools.pairwise(shifts):
            assert a.end <= b.start  # no overlap
        for sh in shifts:
            assert sh.start < sh.end and sh.user in lay.users and sh.layer == lay.number
        covering = [sh for sh in shifts if sh.start <= t < sh.end]
        assert len(covering) <= 1
        got = layer_oncall(schedule, lay, t)
        assert (got.user if got else None) == (covering[0].user if covering else None)
        if not near_dst(schedule.timezone, t):
            assert (got.user if got else None) == expected_layer_user(schedule, lay, t)


@PROPERTY
@given(schedules(), instants(), st.data())
def test_final_shifts_tile_and_agree_with_oncall(schedule: Schedule, t: datetime, data: st.DataObject):
    overrides = data.draw(override_lists(t))
    lo = t - timedelta(days=data.draw(st.integers(1, 10)), minutes=data.draw(st.integers(0, 1439)))
    hi = t + timedelta(days=data.draw(st.integers(1, 10)), minutes=data.draw(st.integers(0, 1439)))
    shifts = final_shifts(schedule, overrides, lo, hi)
    for sh in shifts:
        assert lo <= sh.start < sh.end <= hi
    for a, b in itertools.pairwise(shifts):
        assert a.end <= b.start
        if a.end == b.start:  # merged: adjacent pieces differ
            assert (a.user, a.layer, a.override) != (b.user, b.layer, b.override)
        else:  # a gap: nobody is on call in it
            assert expected_final(schedule, overrides, a.end) is None
            assert expected_final(schedule, overrides, b.start - timedelta(microseconds=1)) is None
    if shifts:
        assert (
            shifts[0].start == lo
            or expected_final(schedule, overrides, shifts[0].start - timedelta(microseconds=1)) is None
        )
        assert shifts[-1].end == hi or expected_final(schedule, overrides, shifts[-1].end) is None
    else:
        assert expected_final(schedule, overrides, t) is None
    # Pointwise: the piece at each probe is what the layers and overrides say, and oncall agrees.
    for probe in (
        [t, lo, hi - timedelta(microseconds=1)] + [sh.start for sh in shifts[:5]] + [sh.end for sh in shifts[:5]]
    ):
        if not lo <= probe < hi:
            continue
        piece = next((sh for sh in shifts if sh.start <= probe < sh.end), None)
        expected = expected_final(schedule, overrides, probe)
        assert (None if piece is None else (piece.user, piece.layer, piece.override)) == expected
        now = oncall(schedule, overrides, probe)
        assert [(x.user, x.layer, x.override) for x in now] == ([] if expected is None else [expected])
        if piece is not None:
            [cur] = now
            assert cur.start <= probe < cur.end
            if piece.start > lo:
                assert cur.start == piece.start
            if piece.end < hi:
                assert cur.end == piece.end


@PROPERTY
@given(schedules(), instants(), st.data())
def test_overrides_win_only_inside_their_range(schedule: Schedule, t: datetime, data: st.DataObject):
    overrides = data.draw(override_lists(t))
    lo, hi = t - timedelta(days=4), t + timedelta(days=4)
    plain = final_shifts(schedule, [], lo, hi)
    with_overrides = final_shifts(schedule, overrides, lo, hi)

    def at(shifts: list[Shift], x: datetime) -> tuple | None:
        sh = next((s for s in shifts if s.start <= x < s.end), None)
        return None if sh is None else (sh.user, sh.layer, sh.override)

    edges = sorted({lo, *(s.start for s in plain), *(o.start for o in overrides), *(o.end for o in overrides)})
    for x in edges:
        if not lo <= x < hi:
            continue
        inside = [o for o in overrides if o.start <= x < o.end]
        if not inside:
            assert at(with_overrides, x) == at(plain, x)
        else:
            got = at(with_overrides, x)
            if got is not None and got[2] is not None:
                assert any(o.id == got[2] for o in inside)
            unconditional = [o for o in inside if o.replaces is None]
            if unconditional and max(o.id for o in inside) == max(o.id for o in unconditional):
                top = max(unconditional, key=lambda o: o.id)
                assert got == (top.who, len(schedule.layers) + 1, top.id)


@PROPERTY
@given(schedules(), instants(), st.data())
def test_handoffs_are_the_changes_of_person(schedule: Schedule, t: datetime, data: st.DataObject):
    overrides = data.draw(override_lists(t))
    lo, hi = t - timedelta(days=3), t + timedelta(days=3)
    changes = handoffs(schedule, overrides, lo, hi)
    assert [c[0] for c in changes] == sorted({c[0] for c in changes})
    for when, outgoing, incoming in changes:
        assert lo <= when < hi
        before = oncall(schedule, overrides, when - timedelta(microseconds=1))
        after = oncall(schedule, overrides, when)
        assert [s.user for s in after] == [incoming]
        assert (before[0].user if before else None) == outgoing != incoming
    # And no change of person is missing.
    shifts = final_shifts(schedule, overrides, lo, hi)
    expected = {s.start for s in shifts if s.start > lo}
    for a, b in itertools.pairwise(shifts):
        if a.end == b.start and a.user == b.user:
            expected.discard(b.start)
    assert {c[0] for c in changes if c[0] > lo} == expected
