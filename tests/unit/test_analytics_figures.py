"""The pure analytics figures: hand-checked cases and hypothesis properties (MTTA <= MTTR when every incident is
resolved, counts add up across groupings, adjacent periods add up to their union)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.analytics import figures
from fsincident.analytics.records import IncidentRecord, PageRecord, ShiftRecord, section_rows, to_csv
from fsincident.config.model import WorkingHoursOptions

ADDITIVE = ("incidents", "acknowledged", "resolved", "open", "pages", "escalations", "retriggers", "reopens")
T0 = datetime(2026, 3, 2, tzinfo=UTC).timestamp()  # a Monday


def rec(i: int, created: float, acked: float | None = None, resolved: float | None = None, **kw) -> IncidentRecord:
    state = "resolved" if resolved is not None else "acknowledged" if acked is not None else "triggered"
    return IncidentRecord(i, created, acked, resolved, state, kw.pop("severity", "warning"), **kw)


# ---------------------------------------------------------------------- hand-checked


def test_quantiles_interpolate_like_numpy() -> None:
    assert figures.quantile([], 0.5) is None
    assert figures.quantile([7.0], 0.9) == 7.0
    assert figures.stats([1200, 300, 600, 1200]) == {"median": 900.0, "p90": 1200.0, "n": 4}
    assert figures.stats([600, 1200, 1800]) == {"median": 1200.0, "p90": 1680.0, "n": 3}
    assert figures.stats([]) == {"median": None, "p90": None, "n": 0}


@given(st.lists(st.floats(0, 1e7, allow_nan=False), min_size=1, max_size=60), st.floats(0, 1))
def test_quantile_matches_numpy(values: list[float], q: float) -> None:
    ours = figures.quantile(sorted(values), q)
    assert ours == pytest.approx(float(np.percentile(values, q * 100)), rel=1e-9, abs=1e-6)


def test_tta_counts_a_resolve_without_ack_as_the_response() -> None:
    assert rec(1, 100, acked=160, resolved=400).tta == 60 and rec(1, 100, acked=160, resolved=400).ttr == 300
    assert rec(1, 100, resolved=400).tta == 300
    assert rec(1, 100).tta is None and rec(1, 100).ttr is None
    assert not rec(1, 100, resolved=200, resolved_by="fsincident").acted
    assert rec(1, 100, resolved=200, resolved_by="alice").acted
    assert rec(1, 100, notes=1).acted and rec(1, 100, acked=150).acted


def test_counts() -> None:
    rs = [
        rec(1, 0, acked=300, resolved=1800, pages=3, escalations=1, reopen=True),
        rec(2, 0, resolved=600),
        rec(3, 0, resolved=1200, reopen=True),
        rec(4, 0, acked=1200, pages=1),
        rec(5, 0, retriggers=1, pages=1, ttd=120.0),
    ]
    c = figures.counts(rs, 900.0)
    assert {k: c[k] for k in ADDITIVE} == {
        "incidents": 5,
        "acknowledged": 2,
        "resolved": 3,
        "open": 2,
        "pages": 5,
        "escalations": 1,
        "retriggers": 1,
        "reopens": 2,
    }
    assert c["mtta_seconds"] == {"median": 900.0, "p90": 1200.0, "n": 4}
    assert c["ttd_seconds"] == {"median": 120.0, "p90": 120.0, "n": 1}
    assert c["acked_within"] == {"seconds": 900.0, "count": 2, "percent": 40.0}
    assert figures.counts([], 900.0)["acked_within"]["percent"] is None


def test_working_hours() -> None:
    h = figures.Hours.of(WorkingHoursOptions())
    assert h.classify(0, 10 * 60) == (False, False, False)  # Monday 10:00
    assert h.classify(0, 18 * 60) == (True, False, False)  # the end is out of hours
    assert h.classify(0, 9 * 60) == (False, False, False)
    assert h.classify(2, 23 * 60) == (True, True, False)  # night wraps midnight
    assert h.classify(2, 6 * 60 + 59) == (True, True, False)
    assert h.classify(2, 7 * 60) == (True, False, False)
    assert h.classify(5, 12 * 60) == (True, False, True)  # Saturday
    assert h.classify(6, 3 * 60) == (True, True, True)
    odd = figures.Hours.of(WorkingHoursOptions(days=["sat", "sun"], start="20:00", end="04:00"))
    assert odd.classify(5, 23 * 60) == (False, True, False) and odd.classify(0, 12 * 60) == (True, False, True)


def test_pages_in_each_persons_time_zone_across_dst() -> None:
    clock = figures.PageClock(figures.Hours.of(WorkingHoursOptions()), {"alice": "Europe/Berlin", "bob": "UTC"})

    def at(*a: int) -> float:
        return datetime(*a, tzinfo=UTC).timestamp()

    assert clock.classify("alice", at(2026, 3, 2, 1, 0)) == (True, True, False)  # Mon 02:00 CET
    assert clock.classify("bob", at(2026, 3, 2, 8, 30)) == (True, False, False)  # Mon 08:30 UTC
    assert clock.classify("alice", at(2026, 3, 2, 8, 30)) == (False, False, False)  # Mon 09:30 CET
    assert clock.classify("alice", at(2026, 3, 27, 7, 30)) == (True, False, False)  # Fri 08:30 CET
    assert clock.classify("alice", at(2026, 3, 30, 6, 30)) == (True, False, False)  # Mon 08:30 CEST
    assert clock.classify("alice", at(2026, 3, 30, 7, 30)) == (False, False, False)  # Mon 09:30 CEST (DST)
    assert clock.classify("alice", at(2026, 3, 29, 5, 30)) == (True, False, True)  # Sun 07:30 CEST
    assert clock.classify("alice", at(2026, 3, 28, 22, 59)) == (True, True, True)  # Sat 23:59 CET
    assert clock.classify("nobody", at(2026, 3, 2, 23, 0)) == (True, True, False)  # unknown: UTC
    load = figures.page_load(
        [PageRecord(1, "alice", at(2026, 3, 2, 1, 0)), PageRecord(2, "bob", T0 + 9.5 * 3600)], clock
    )
    assert load == {
        "alice": {"pages": 1, "night": 1, "weekend": 0, "out_of_hours": 1},
        "bob": {"pages": 1, "night": 0, "weekend": 0, "out_of_hours": 0},
    }


def test_daily_lists_every_local_day() -> None:
    start = datetime(2026, 3, 28, tzinfo=UTC).timestamp()
    end = datetime(2026, 3, 31, tzinfo=UTC).timestamp()
    rs = [
        rec(1, datetime(2026, 3, 28, 23, 30, tzinfo=UTC).timestamp(), severity="critical"),  # 29th in Berlin
        rec(2, datetime(2026, 3, 29, 22, 30, tzinfo=UTC).timestamp()),  # 30th 00:30 CEST
        rec(3, datetime(2026, 3, 28, 1, 0, tzinfo=UTC).timestamp(), severity="info"),
    ]
    utc = figures.daily(rs, start, end, "UTC")
    assert [(d["date"], d["incidents"]) for d in utc] == [("2026-03-28", 2), ("2026-03-29", 1), ("2026-03-30", 0)]
    berlin = figures.daily(rs, start, end, "Europe/Berlin")
    assert [(d["date"], d["by_severity"]) for d in berlin] == [
        ("2026-03-28", {"info": 1}),
        ("2026-03-29", {"critical": 1}),
        ("2026-03-30", {"warning": 1}),
        ("2026-03-31", {}),  # the period ends at 02:00 local time on the 31st
    ]


def test_fatigue_rules() -> None:
    rs = [rec(i, 0, resolved=10, resolved_by="fsincident", rule="Noisy", pages=2) for i in range(4)]
    rs += [rec(9, 0, acked=5, rule="Noisy", retriggers=2, reopen=True)]
    rs += [rec(10, 0, rule="Quiet"), rec(11, 0, rule="Quiet")]
    [noisy, quiet] = figures.fatigue_rules(rs, flap_count=3)
    assert noisy == {
        "rule": "Noisy",
        "incidents": 5,
        "pages": 8,
        "acted": 1,
        "acted_percent": 20.0,
        "rarely_acted": True,
        "reopens": 1,
        "retriggers": 2,
        "flapping": True,
    }
    assert quiet["rarely_acted"] is False and quiet["acted"] == 0  # fewer than 3 incidents: not judged


def test_union_and_oncall_hours() -> None:
    assert figures.union_seconds([(0, 10), (5, 20), (30, 40)], 0, 100) == 30
    assert figures.union_seconds([(0, 10), (5, 20), (30, 40)], 8, 35) == 17
    assert figures.union_seconds([], 0, 10) == 0
    shifts = [
        ShiftRecord("a", "alice", T0 - 86400, T0 + 2 * 86400),
        ShiftRecord("b", "alice", T0 + 86400, T0 + 3 * 86400),
        ShiftRecord("a", "bob", T0 + 3 * 86400, T0 + 4 * 86400),
    ]
    rows = figures.oncall(
        shifts, {"carol": {"pages": 2, "out_of_hours": 1, "night": 1, "weekend": 0}}, T0, T0 + 7 * 86400
    )
    assert [(r["user"], r["hours_on_call"], r["shifts"], r["pages"]) for r in rows] == [
        ("alice", 72.0, 2, 0),
        ("bob", 24.0, 1, 0),
        ("carol", 0.0, 0, 2),
    ]


def test_sla_rows() -> None:
    row = figures.sla_from_incidents("api", 99.9, [(0, 1800), (900, 2700), (5000, 5600)], 0, 1_000_000)
    assert row["downtime_seconds"] == 3300.0 and row["uptime_percent"] == 99.67 and row["incidents"] == 3
    assert row["budget_seconds"] == 1000.0 and row["budget_left_seconds"] == -2300.0
    assert row["budget_left_percent"] == -230.0
    series = [[(0.0, 1.0), (60.0, 0.0), (120.0, 1.0), (180.0, float("nan"))]]
    s = figures.sla_from_series("web", 99.0, series, 0, 240, incidents=1)
    assert s["uptime_percent"] == 66.6667 and s["coverage_percent"] == 75.0 and s["downtime_seconds"] == 60.0
    assert s["budget_seconds"] == 2.4 and s["source"] == "series"
    empty = figures.sla_from_series("web", 99.0, [], 0, 240, incidents=0)
    assert empty["uptime_percent"] is None and empty["coverage_percent"] == 0.0


def test_csv_rows_flatten_and_quote() -> None:
    rep = {
        "summary": figures.counts([rec(1, 0, acked=60, resolved=120)], 900.0),
        "daily": [{"date": "2026-03-02", "incidents": 1, "by_severity": {"critical": 1}}],
        "fatigue": {"rules": [{"rule": "=cmd()", "incidents": 1}], "people": [{"user": "alice", "pages": 2}]},
        "incidents": [{"id": 1, "title": "@SUM(A1)", "labels": {"a": "-1"}, "resolved_at": None, "x": True}],
    }
    [summary] = section_rows(rep, "summary")
    assert summary["mtta_median_seconds"] == 60.0 and summary["acked_within_percent"] == 100.0
    text = to_csv(section_rows(rep, "fatigue"))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["rule"] == "'=cmd()" and rows[1]["user"] == "alice" and rows[1]["kind"] == "person"
    inc = next(csv.DictReader(io.StringIO(to_csv(section_rows(rep, "incidents")))))
    assert inc == {"id": "1", "title": "'@SUM(A1)", "labels": '{"a": "-1"}', "resolved_at": "", "x": "true"}
    assert section_rows(rep, "daily") == [{"date": "2026-03-02", "incidents": 1, "critical": 1}]
    with pytest.raises(KeyError):
        section_rows(rep, "nope")


# ---------------------------------------------------------------------- properties

durations = st.floats(0, 7 * 86400, allow_nan=False)


@st.composite
def records(draw: st.DrawFn, resolved_all: bool = False) -> list[IncidentRecord]:
    out = []
    for i in range(draw(st.integers(0, 40))):
        created = T0 + draw(st.floats(0, 14 * 86400, allow_nan=False))
        ttr = draw(durations) if resolved_all or draw(st.booleans()) else None
        tta = draw(st.one_of(st.none(), durations))
        if tta is not None and ttr is not None:
            tta = min(tta, ttr)  # nobody acknowledges a resolved incident
        out.append(
            IncidentRecord(
                i,
                created,
                None if tta is None else created + tta,
                None if ttr is None else created + ttr,
                "x",
                draw(st.sampled_from(["critical", "warning", "info"])),
                group=draw(st.sampled_from(["api", "db", "(none)"])),
                rule=draw(st.sampled_from(["A", "B", "C", "D"])),
                retriggers=draw(st.integers(0, 3)),
                escalations=draw(st.integers(0, 3)),
                pages=draw(st.integers(0, 5)),
                reopen=draw(st.booleans()),
                ttd=draw(st.one_of(st.none(), durations)),
            )
        )
    return out


@settings(max_examples=150, deadline=None)
@given(records(resolved_all=True))
def test_mtta_is_at_most_mttr_when_every_incident_is_resolved(rs: list[IncidentRecord]) -> None:
    c = figures.counts(rs, 900.0)
    assert c["mtta_seconds"]["n"] == c["mttr_seconds"]["n"] == len(rs)
    if rs:
        assert c["mtta_seconds"]["median"] <= c["mttr_seconds"]["median"]
        assert c["mtta_seconds"]["p90"] <= c["mttr_seconds"]["p90"]
    for row in figures.response(rs, 900.0):
        assert row["mtta_seconds"]["median"] <= row["mttr_seconds"]["median"]


@settings(max_examples=150, deadline=None)
@given(records(), st.sampled_from(["group", "rule", "severity"]))
def test_counts_add_up_across_groupings(rs: list[IncidentRecord], by: str) -> None:
    for r in rs:
        r.group = getattr(r, by)
    whole = figures.counts(rs, 900.0)
    rows = figures.response(rs, 900.0)
    for key in ADDITIVE:
        assert sum(r[key] for r in rows) == whole[key], key
    assert sum(r["acked_within"]["count"] for r in rows) == whole["acked_within"]["count"]
    assert sum(r["mtta_seconds"]["n"] for r in rows) == whole["mtta_seconds"]["n"]
    rules = figures.fatigue_rules(rs, 3)
    assert sum(r["incidents"] for r in rules) == len(rs) and sum(r["pages"] for r in rules) == whole["pages"]
    assert sum(r["reopens"] for r in rules) == whole["reopens"]
    assert sum(d["incidents"] for d in figures.daily(rs, T0, T0 + 15 * 86400, "Europe/Berlin")) == len(rs)


@settings(max_examples=150, deadline=None)
@given(records(), st.floats(0, 14 * 86400, allow_nan=False), st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata"]))
def test_adjacent_periods_add_up_to_their_union(rs: list[IncidentRecord], cut: float, tz: str) -> None:
    a, b, c = T0, T0 + cut, T0 + 15 * 86400

    def opened(lo: float, hi: float) -> list[IncidentRecord]:
        return [r for r in rs if lo <= r.created < hi]

    left, right, whole = (figures.counts(opened(lo, hi), 900.0) for lo, hi in ((a, b), (b, c), (a, c)))
    for key in ADDITIVE:
        assert left[key] + right[key] == whole[key], key
    # per-day counts of the two halves add up to the whole's on every day
    days: dict[str, int] = {}
    for lo, hi in ((a, b), (b, c)):
        if hi > lo:
            for d in figures.daily(opened(lo, hi), lo, hi, tz):
                days[d["date"]] = days.get(d["date"], 0) + d["incidents"]
    assert {k: v for k, v in days.items() if v} == {
        d["date"]: d["incidents"] for d in figures.daily(opened(a, c), a, c, tz) if d["incidents"]
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(durations, durations), max_size=20), durations, durations)
def test_union_is_bounded(spans: list[tuple[float, float]], lo: float, width: float) -> None:
    iv = [(min(x, y), max(x, y)) for x, y in spans]
    u = figures.union_seconds(iv, lo, lo + width)
    assert 0 <= u <= width + 1e-6
    assert u <= sum(max(0.0, min(b, lo + width) - max(a, lo)) for a, b in iv) + 1e-6
    assert u >= max([max(0.0, min(b, lo + width) - max(a, lo)) for a, b in iv] or [0.0]) - 1e-6


def test_a_period_of_one_hour_has_one_day_row() -> None:
    start = datetime(2026, 3, 2, 5, tzinfo=UTC)
    rows = figures.daily([], start.timestamp(), (start + timedelta(hours=1)).timestamp(), "UTC")
    assert rows == [{"date": "2026-03-02", "incidents": 0, "by_severity": {}}]
