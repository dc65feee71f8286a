"""time_intervals (Alertmanager's semantics): wall-clock windows in a time zone, ranges, located problems.

Instants are written in UTC and the expected local wall time is given next to them, so every case can be
checked by hand; DST days of Europe/Berlin and America/New_York are covered minute by minute.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.config.model import TimeIntervalSpec
from fsincident.timeintervals import (
    MONTHS,
    OUTSIDE_ACTIVE,
    WEEKDAYS,
    IntervalError,
    Window,
    compile_window,
    in_any,
    interval_problems,
    muted_by_intervals,
)


def spec(**fields: Any) -> TimeIntervalSpec:
    return TimeIntervalSpec.model_validate(fields)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def minutes_of_utc_day(day: datetime, specs: list[TimeIntervalSpec]) -> int:
    return sum(in_any(specs, day + timedelta(minutes=m)) for m in range(24 * 60))


BUSINESS = spec(
    times=[{"start_time": "09:00", "end_time": "17:00"}], weekdays=["monday:friday"], location="Europe/Berlin"
)


# --------------------------------------------------------------------------- hand cases


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2026, 3, 2, 7, 59), False),  # Monday 08:59 in Berlin (CET, UTC+1)
        (utc(2026, 3, 2, 8, 0), True),  # Monday 09:00
        (utc(2026, 3, 2, 15, 59), True),  # Monday 16:59
        (utc(2026, 3, 2, 16, 0), False),  # Monday 17:00: end is exclusive
        (utc(2026, 3, 6, 12, 0), True),  # Friday 13:00
        (utc(2026, 3, 7, 12, 0), False),  # Saturday
        (utc(2026, 7, 6, 7, 0), True),  # Monday 09:00 in summer (CEST, UTC+2)
        (utc(2026, 7, 6, 6, 59), False),  # Monday 08:59 in summer
        (utc(2026, 3, 1, 23, 30), False),  # Monday 00:30 in Berlin, Sunday in UTC: the local day counts
    ],
)
def test_business_hours_in_berlin(now, expected):
    assert in_any([BUSINESS], now) is expected


def test_no_fields_matches_always_and_any_spec_is_enough():
    always = spec()
    assert in_any([always], utc(2026, 1, 1)) and not in_any([], utc(2026, 1, 1))
    weekend = spec(weekdays=["saturday", "sunday"])
    assert in_any([BUSINESS, weekend], utc(2026, 3, 7, 12, 0)) and in_any([BUSINESS, weekend], utc(2026, 3, 2, 9))
    assert not in_any([BUSINESS, weekend], utc(2026, 3, 3, 20))


def test_times_are_half_open_and_24_00_ends_the_day():
    late = spec(times=[{"start_time": "22:00", "end_time": "24:00"}, {"start_time": "00:00", "end_time": "01:30"}])
    assert in_any([late], utc(2026, 5, 5, 23, 59)) and in_any([late], utc(2026, 5, 6, 0, 0))
    assert in_any([late], utc(2026, 5, 6, 1, 29)) and not in_any([late], utc(2026, 5, 6, 1, 30))
    assert not in_any([late], utc(2026, 5, 6, 21, 59)) and in_any([late], utc(2026, 5, 6, 22, 0))
    assert minutes_of_utc_day(utc(2026, 5, 6), [late]) == 120 + 90


@pytest.mark.parametrize(
    ("days", "hits", "misses"),
    [
        (["-1"], [(2026, 2, 28), (2028, 2, 29), (2026, 4, 30), (2026, 12, 31)], [(2028, 2, 28), (2026, 4, 29)]),
        (["-3:-1"], [(2026, 4, 28), (2026, 4, 30), (2026, 2, 26)], [(2026, 4, 27), (2026, 2, 25)]),
        (["1:5"], [(2026, 1, 1), (2026, 1, 5)], [(2026, 1, 6), (2026, 1, 31)]),
        (["25:-1"], [(2026, 2, 25), (2026, 2, 28), (2026, 1, 31)], [(2026, 2, 24)]),
        (["1:-1"], [(2026, 2, 1), (2026, 2, 28), (2026, 5, 31)], []),
        (["31"], [(2026, 1, 31)], [(2026, 4, 30), (2026, 2, 28)]),  # no 31st in April: never then
        (["29:31"], [(2028, 2, 29), (2026, 3, 30)], [(2026, 2, 28), (2026, 3, 28)]),  # clipped to the month
        (["-31:-29"], [(2026, 3, 1), (2026, 3, 3)], [(2026, 3, 4), (2026, 2, 1)]),  # February has no such days
        ([1, 15, "-1"], [(2026, 6, 1), (2026, 6, 15), (2026, 6, 30)], [(2026, 6, 2), (2026, 6, 29)]),
    ],
)
def test_days_of_month(days, hits, misses):
    s = spec(days_of_month=[str(d) for d in days])
    for d in hits:
        assert in_any([s], utc(*d, 12)), d
    for d in misses:
        assert not in_any([s], utc(*d, 12)), d


def test_months_years_and_names_in_any_case():
    s = spec(months=["December", "january:MARCH", "7"], years=["2026:2027", "2030"])
    assert in_any([s], utc(2026, 12, 24)) and in_any([s], utc(2027, 2, 1)) and in_any([s], utc(2030, 7, 1))
    assert not in_any([s], utc(2026, 4, 1)) and not in_any([s], utc(2028, 1, 1)) and not in_any([s], utc(2026, 8, 1))
    weekend = spec(weekdays=["SATURDAY", "Sunday"])
    assert in_any([weekend], utc(2026, 3, 8)) and in_any([weekend], utc(2026, 3, 7))
    assert not in_any([weekend], utc(2026, 3, 9))


def test_location_decides_the_day():
    # Friday 12:00 UTC is Saturday 01:00 in Auckland (NZDT, UTC+13).
    assert in_any([spec(weekdays=["saturday"], location="Pacific/Auckland")], utc(2026, 1, 9, 12))
    assert not in_any([spec(weekdays=["saturday"])], utc(2026, 1, 9, 12))
    # New Year in Tokyo comes 9 hours before UTC's.
    assert in_any([spec(years=["2027"], months=["january"], location="Asia/Tokyo")], utc(2026, 12, 31, 15))


def test_berlin_spring_forward_skips_the_window():
    # 2026-03-29 02:00 CET becomes 03:00 CEST: no instant has a wall time of 02:xx that day.
    two_am = spec(times=[{"start_time": "02:00", "end_time": "03:00"}], location="Europe/Berlin")
    assert minutes_of_utc_day(utc(2026, 3, 29), [two_am]) == 0
    assert minutes_of_utc_day(utc(2026, 3, 28), [two_am]) == 60
    assert in_any([two_am], utc(2026, 3, 28, 1, 0)) and not in_any([two_am], utc(2026, 3, 29, 1, 0))
    # The whole local day has 23 hours.
    day = spec(days_of_month=["29"], months=["march"], years=["2026"], location="Europe/Berlin")
    assert sum(in_any([day], utc(2026, 3, 28, 12) + timedelta(minutes=m)) for m in range(48 * 60)) == 23 * 60


def test_berlin_fall_back_runs_the_window_twice():
    # 2026-10-25 03:00 CEST becomes 02:00 CET: 02:00-03:00 happens twice, 120 minutes in all.
    two_am = spec(times=[{"start_time": "02:00", "end_time": "03:00"}], location="Europe/Berlin")
    assert minutes_of_utc_day(utc(2026, 10, 25), [two_am]) == 120
    assert in_any([two_am], utc(2026, 10, 25, 0, 0)) and in_any([two_am], utc(2026, 10, 25, 1, 59))
    assert not in_any([two_am], utc(2026, 10, 25, 2, 0))
    day = spec(days_of_month=["25"], months=["october"], location="Europe/Berlin")
    assert sum(in_any([day], utc(2026, 10, 24, 12) + timedelta(minutes=m)) for m in range(48 * 60)) == 25 * 60


def test_new_york_dst_days():
    one_am = spec(times=[{"start_time": "01:00", "end_time": "02:00"}], location="America/New_York")
    two_am = spec(times=[{"start_time": "02:00", "end_time": "03:00"}], location="America/New_York")
    # 2026-03-08 02:00 EST becomes 03:00 EDT; 2026-11-01 02:00 EDT becomes 01:00 EST.
    spring, fall = utc(2026, 3, 8, 5), utc(2026, 11, 1, 4)  # local midnight of each day
    assert minutes_of_utc_day(spring, [two_am]) == 0 and minutes_of_utc_day(spring, [one_am]) == 60
    assert minutes_of_utc_day(fall, [one_am]) == 120 and minutes_of_utc_day(fall, [two_am]) == 60
    # Office hours move with the clock: 09:00 local is 14:00 UTC before the change and 13:00 UTC after.
    office = spec(times=[{"start_time": "09:00", "end_time": "17:00"}], location="America/New_York")
    assert in_any([office], utc(2026, 3, 6, 14, 0)) and not in_any([office], utc(2026, 3, 6, 13, 59))
    assert in_any([office], utc(2026, 3, 9, 13, 0)) and not in_any([office], utc(2026, 3, 9, 12, 59))


def test_naive_time_is_refused():
    with pytest.raises(ValueError, match="aware"):
        in_any([spec()], datetime(2026, 1, 1))


def test_muted_by_intervals():
    intervals = {"office": [BUSINESS], "weekend": [spec(weekdays=["saturday", "sunday"])], "never": [spec(years=["1"])]}
    monday_10, saturday, monday_night = utc(2026, 3, 2, 9), utc(2026, 3, 7, 12), utc(2026, 3, 2, 22)
    assert muted_by_intervals(intervals, ["weekend"], [], saturday) == "weekend"
    assert muted_by_intervals(intervals, ["weekend"], [], monday_10) is None
    assert muted_by_intervals(intervals, [], ["office"], monday_night) == OUTSIDE_ACTIVE
    assert muted_by_intervals(intervals, [], ["office", "weekend"], saturday) is None
    assert muted_by_intervals(intervals, ["never", "weekend"], ["office"], saturday) == "weekend"  # mute first
    assert muted_by_intervals(intervals, ["gone"], ["gone"], saturday) is None  # unknown names are ignored
    assert muted_by_intervals(intervals, [], [], saturday) is None


def test_compile_window_caches_and_refuses_invalid_specs():
    assert compile_window(BUSINESS) is compile_window(spec(**BUSINESS.model_dump()))
    w = Window(weekdays=((6, 6),))
    assert compile_window(w) is w and in_any([w], utc(2026, 3, 7))
    with pytest.raises(IntervalError, match=r"weekdays\.0: invalid weekday 'mon-fri': write monday:friday"):
        compile_window({"weekdays": ["mon-fri"]})


# --------------------------------------------------------------------------- problems


@pytest.mark.parametrize(
    ("fields", "problems"),
    [
        ({"weekdays": ["mon-fri"]}, [(("weekdays", 0), "invalid weekday 'mon-fri': write monday:friday")]),
        ({"weekdays": ["Mon:Fri"]}, [(("weekdays", 0), "invalid weekday 'Mon:Fri': write monday:friday")]),
        ({"weekdays": ["monday", "tues"]}, [(("weekdays", 1), "invalid weekday 'tues': write tuesday")]),
        ({"weekdays": ["holiday"]}, [(("weekdays", 0), "invalid weekday 'holiday': use sunday..saturday")]),
        ({"weekdays": ["1"]}, [(("weekdays", 0), "invalid weekday '1': use sunday..saturday")]),
        (
            {"weekdays": ["friday:monday"]},
            [
                (
                    ("weekdays", 0),
                    "weekday range 'friday:monday' ends before it starts (weeks run sunday:saturday): "
                    "write two ranges, friday:saturday and sunday:monday",
                )
            ],
        ),
        (
            {"weekdays": ["monday:tuesday:friday"]},
            [(("weekdays", 0), "invalid weekday range 'monday:tuesday:friday': write START:END, e.g. monday:friday")],
        ),
        ({"weekdays": []}, [(("weekdays",), "an empty list never matches: leave weekdays out to match always")]),
        (
            {"days_of_month": ["0"]},
            [(("days_of_month", 0), "day of month 0 is out of range: use 1..31, or -31..-1 from the end")],
        ),
        (
            {"days_of_month": ["32"]},
            [(("days_of_month", 0), "day of month 32 is out of range: use 1..31, or -31..-1 from the end")],
        ),
        (
            {"days_of_month": ["-1:5"]},
            [
                (
                    ("days_of_month", 0),
                    "day range '-1:5' starts from the month's end but ends from its start:"
                    " the end must be negative too",
                )
            ],
        ),
        (
            {"days_of_month": ["30:-3"]},
            [(("days_of_month", 0), "day range '30:-3' ends before it starts in every month")],
        ),
        ({"days_of_month": ["5:1"]}, [(("days_of_month", 0), "day range '5:1' ends before it starts in every month")]),
        (
            {"days_of_month": ["-1:-3"]},
            [(("days_of_month", 0), "day range '-1:-3' ends before it starts in every month")],
        ),
        (
            {"days_of_month": ["first"]},
            [(("days_of_month", 0), "invalid day of month 'first': use a number or a range like 1:5 or -7:-1")],
        ),
        (
            {"days_of_month": ["1:"]},
            [(("days_of_month", 0), "invalid day of month range '1:': write START:END, e.g. 1:5 or -7:-1")],
        ),
        ({"months": ["13"]}, [(("months", 0), "month 13 is out of range: use 1..12 or january..december")]),
        ({"months": ["jan:mar"]}, [(("months", 0), "invalid month 'jan:mar': write january:march")]),
        (
            {"months": ["november:february"]},
            [
                (
                    ("months", 0),
                    "month range 'november:february' ends before it starts:"
                    " write two ranges, november:december and january:february",
                )
            ],
        ),
        ({"years": ["2027:2026"]}, [(("years", 0), "year range '2027:2026' ends before it starts")]),
        ({"years": ["0"]}, [(("years", 0), "year 0 is out of range 1..9999")]),
        ({"years": ["soon"]}, [(("years", 0), "invalid year 'soon': use a number or a range like 2026:2028")]),
        (
            {"times": [{"start_time": "9:00", "end_time": "17:00"}]},
            [(("times", 0, "start_time"), "invalid time '9:00': write HH:MM from 00:00 to 24:00, e.g. '09:00'")],
        ),
        (
            {"times": [{"start_time": "10:00", "end_time": "24:01"}]},
            [(("times", 0, "end_time"), "invalid time '24:01': write HH:MM from 00:00 to 24:00, e.g. '09:00'")],
        ),
        (
            {"times": [{"start_time": "10:00", "end_time": "10:00"}]},
            [(("times", 0), "start_time and end_time are both 10:00: the range is empty")],
        ),
        (
            {"times": [{"start_time": "22:00", "end_time": "06:00"}]},
            [
                (
                    ("times", 0),
                    "start_time 22:00 is after end_time 06:00 (a range cannot cross midnight): "
                    "write two ranges, 22:00 to 24:00 and 00:00 to 06:00",
                )
            ],
        ),
        ({"times": []}, [(("times",), "an empty list never matches: leave times out to match the whole day")]),
        (
            {"weekdays": ["someday"], "months": ["smarch"]},
            [
                (("weekdays", 0), "invalid weekday 'someday': use sunday..saturday"),
                (("months", 0), "invalid month 'smarch': use january..december or 1..12"),
            ],
        ),
    ],
)
def test_interval_problems(fields, problems):
    assert interval_problems(spec(**fields)) == problems


@pytest.mark.parametrize(
    "fields",
    [
        {"weekdays": ["Monday:friday", "saturday", "SUNDAY"]},
        {"days_of_month": ["1", "-3:-1", "1:5", "25:-1", "28:-1", "-31:-29", "+5"]},
        {"months": ["1", "march:May", "12", "10:12"]},
        {"years": ["2026", "2027:2030"]},
        {"times": [{"start_time": "00:00", "end_time": "24:00"}, {"start_time": "17:00", "end_time": "23:59"}]},
        {"location": "America/New_York"},
        {},
    ],
)
def test_what_alertmanager_accepts_is_valid(fields):
    assert interval_problems(spec(**fields)) == []
    compile_window(spec(**fields))


def test_numbers_as_yaml_reads_them():
    # Plain YAML numbers are what was written; base-60 numbers from unquoted 17:00 or 1:5 get a hint.
    assert interval_problems({"days_of_month": [1, -1], "years": [2026], "months": [12]}) == []
    assert interval_problems({"times": [{"start_time": "09:00", "end_time": 1020}]}) == [
        (
            ("times", 0, "end_time"),
            "invalid time 1020: write the time in quotes, e.g. '17:00' "
            "(YAML reads an unquoted 17:00 as the number 1020)",
        )
    ]
    assert interval_problems({"days_of_month": [65]}) == [
        (
            ("days_of_month", 0),
            "day of month 65 is out of range: use 1..31, or -31..-1 from the end "
            "(YAML reads an unquoted 1:5 as the number 65: write '1:5' in quotes)",
        )
    ]
    assert interval_problems({"months": [63]}) == [
        (
            ("months", 0),
            "month 63 is out of range: use 1..12 or january..december "
            "(YAML reads an unquoted 1:3 as the number 63: write '1:3' in quotes)",
        )
    ]


# --------------------------------------------------------------------------- properties


instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2032, 12, 31), timezones=st.just(UTC))
zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"])


@st.composite
def ranges(draw: st.DrawFn, names: tuple[str, ...], first: int) -> tuple[str, int, int]:
    a = draw(st.integers(0, len(names) - 1))
    b = draw(st.integers(a, len(names) - 1))

    def word(i: int) -> str:
        text = names[i] if draw(st.booleans()) or first == 0 else str(i + first)
        return draw(st.sampled_from([text, text.upper(), text.capitalize()]))

    return (word(a) if a == b else f"{word(a)}:{word(b)}"), a + first, b + first


@st.composite
def day_ranges(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["pos", "neg", "mixed"]))
    if kind == "pos":
        a = draw(st.integers(1, 31))
        b = draw(st.integers(a, 31))
    elif kind == "neg":
        a = draw(st.integers(-31, -1))
        b = draw(st.integers(a, -1))
    else:
        a = draw(st.integers(1, 31))
        b = draw(st.integers(max(-31, a - 32), -1))
    return str(a) if a == b else f"{a}:{b}"


@st.composite
def time_ranges(draw: st.DrawFn) -> dict[str, str]:
    s = draw(st.integers(0, 1439))
    e = draw(st.integers(s + 1, 1440))
    return {"start_time": f"{s // 60:02d}:{s % 60:02d}", "end_time": f"{e // 60:02d}:{e % 60:02d}"}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["times"] = draw(st.lists(time_ranges(), min_size=1, max_size=3))
    if draw(st.booleans()):
        out["weekdays"] = [r[0] for r in draw(st.lists(ranges(WEEKDAYS, 0), min_size=1, max_size=3))]
    if draw(st.booleans()):
        out["days_of_month"] = draw(st.lists(day_ranges(), min_size=1, max_size=3))
    if draw(st.booleans()):
        out["months"] = [r[0] for r in draw(st.lists(ranges(MONTHS, 1), min_size=1, max_size=3))]
    if draw(st.booleans()):
        out["years"] = draw(st.lists(st.sampled_from(["2020:2025", "2026", "2027:2032", "2024"]), min_size=1))
    out["location"] = draw(zones)
    return out


def reference(fields: dict[str, Any], now: datetime) -> bool:
    """Alertmanager's ContainsTime, written from its documentation with sets of allowed values."""
    t = now.astimezone(ZoneInfo(fields["location"]))
    length = calendar.monthrange(t.year, t.month)[1]

    def members(text: str, names: tuple[str, ...], first: int) -> set[int]:
        ends = [names.index(p) + first if p in names else int(p) for p in text.lower().split(":")]
        return set(range(ends[0], ends[-1] + 1))

    def days(text: str) -> set[int]:
        ends = [int(p) for p in text.split(":")]
        b, e = (length + 1 + x if x < 0 else x for x in (ends[0], ends[-1]))
        return set(range(max(b, 1), min(e, length) + 1)) if b <= length else set()

    allowed = {
        "times": lambda: any(
            int(r["start_time"][:2]) * 60 + int(r["start_time"][3:])
            <= t.hour * 60 + t.minute
            < int(r["end_time"][:2]) * 60 + int(r["end_time"][3:])
            for r in fields["times"]
        ),
        "weekdays": lambda: t.strftime("%A").lower()
        in {WEEKDAYS[i] for w in fields["weekdays"] for i in members(w, WEEKDAYS, 0)},
        "days_of_month": lambda: t.day in set().union(*(days(d) for d in fields["days_of_month"])),
        "months": lambda: t.month in set().union(*(members(m, MONTHS, 1) for m in fields["months"])),
        "years": lambda: t.year in set().union(*(members(y, (), 0) for y in fields["years"])),
    }  # fmt: skip
    return all(check() for key, check in allowed.items() if key in fields)


@settings(max_examples=400, deadline=None)
@given(specs(), instants)
def test_contains_equals_the_reference(fields, now):
    s = spec(**fields)
    assert interval_problems(s) == []
    assert in_any([s], now) == reference(fields, now)


@settings(max_examples=300, deadline=None)
@given(specs(), instants)
def test_only_the_local_wall_time_counts(fields, now):
    # The same spec in UTC, asked at the wall time the zone shows, answers the same.
    local = now.astimezone(ZoneInfo(fields["location"]))
    in_utc = spec(**{**fields, "location": "UTC"})
    assert in_any([spec(**fields)], now) == in_any([in_utc], local.replace(tzinfo=UTC))


@settings(max_examples=200, deadline=None)
@given(specs(), specs(), instants)
def test_more_fields_match_less_and_any_is_an_or(a, b, now):
    narrowed = {**b, **a}  # a's fields and b's others
    if in_any([spec(**narrowed)], now):
        assert in_any([spec(**a)], now)
    assert in_any([spec(**a), spec(**b)], now) == (in_any([spec(**a)], now) or in_any([spec(**b)], now))


@settings(max_examples=200, deadline=None)
@given(ranges(WEEKDAYS, 0), instants)
def test_a_weekday_range_is_its_days(r, now):
    text, a, b = r
    whole = in_any([spec(weekdays=[text])], now)
    assert whole == in_any([spec(weekdays=[WEEKDAYS[i]]) for i in range(a, b + 1)], now)


@settings(max_examples=200, deadline=None)
@given(instants, zones)
def test_full_ranges_match_always(now, zone):
    full = spec(
        times=[{"start_time": "00:00", "end_time": "24:00"}],
        weekdays=["sunday:saturday"],
        days_of_month=["1:-1"],
        months=["january:december"],
        location=zone,
    )
    assert in_any([full], now)
    last = in_any([spec(days_of_month=["-1"], location=zone)], now)
    local = now.astimezone(ZoneInfo(zone))
    assert last == ((local + timedelta(days=1)).month != local.month)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.text(max_size=12), st.builds(lambda a, b: f"{a}:{b}", st.sampled_from(WEEKDAYS), st.text(max_size=8)))
)
def test_weekdays_are_valid_exactly_when_they_name_an_ordered_range(word):
    parts = word.strip().lower().split(":")
    valid = (
        len(parts) <= 2 and all(p in WEEKDAYS for p in parts) and WEEKDAYS.index(parts[0]) <= WEEKDAYS.index(parts[-1])
    )
    problems = interval_problems(spec(weekdays=[word]))
    assert (problems == []) == valid
    assert all(where == ("weekdays", 0) for where, _ in problems)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-100, 2000) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            k: json_values | st.lists(json_values, max_size=3)
            for k in ("times", "weekdays", "days_of_month", "months", "years", "location")
        },
    )
)
def test_problems_never_raise(raw):
    problems = interval_problems(raw)
    assert all(isinstance(where, tuple) and isinstance(msg, str) for where, msg in problems)
