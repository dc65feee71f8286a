"""Durations, label sets and UTC normalisation."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.core import Labels, ensure_utc, format_duration, isoformat, parse_duration

# ----------------------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("90s", timedelta(seconds=90)),
        ("2m", timedelta(minutes=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
        ("1m30s500ms", timedelta(seconds=90.5)),
        (" 5m ", timedelta(minutes=5)),
        (15, timedelta(seconds=15)),
        (0.5, timedelta(milliseconds=500)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " ", "5", "abc", "5x", "-5s", "5 s", "1h 30m", "s", "1e5s", "h1", "5m!", "99999999999d",
     -1, True, float("inf"), float("nan"), 10**20],
)  # fmt: skip
def test_invalid_duration_raises_value_error_naming_input(text):
    with pytest.raises(ValueError) as ei:
        parse_duration(text)
    assert repr(text) in str(ei.value)


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=15), "15s"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(milliseconds=1500), "1.5s"),
        (timedelta(weeks=1), "7d"),
    ],
)
def test_format_duration(td, text):
    assert format_duration(td) == text


@settings(max_examples=500)
@given(st.integers(0, 10**11))
def test_duration_round_trip_whole_seconds(seconds):
    td = timedelta(seconds=seconds)
    assert parse_duration(format_duration(td)) == td


@settings(max_examples=500)
@given(st.integers(0, 10**10))
def test_duration_round_trip_milliseconds(ms):
    td = timedelta(milliseconds=ms)
    assert parse_duration(format_duration(td)) == td


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["ms", "s", "m", "h", "d", "w"])), min_size=1, max_size=5
    )
)
def test_parse_sums_its_parts(parts):
    text = "".join(f"{n}{unit}" for n, unit in parts)
    size = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    expected = sum((timedelta(seconds=n * size[u]) for n, u in parts), timedelta(0))
    # Every part is exact, so the sum is exact and survives a round trip through format_duration.
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(parse_duration(text))) == expected


# ----------------------------------------------------------------------------------------------- labels

label_dicts = st.dictionaries(
    st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True), st.text(max_size=12), max_size=8
)


@settings(max_examples=300)
@given(label_dicts, st.randoms(use_true_random=False))
def test_labels_are_order_independent(d, rnd):
    items = list(d.items())
    rnd.shuffle(items)
    a, b = Labels(d), Labels(items)
    assert a == b
    assert hash(a) == hash(b)
    assert a.fingerprint == b.fingerprint
    assert a == dict(items)
    assert list(a) == sorted(d)
    assert a.as_dict() == d
    assert len({a, b}) == 1


@settings(max_examples=300)
@given(label_dicts, label_dicts)
def test_different_label_sets_have_different_fingerprints(d1, d2):
    a, b = Labels(d1), Labels(d2)
    if d1 == d2:
        assert a.fingerprint == b.fingerprint
    else:
        assert a != b
        assert a.fingerprint != b.fingerprint


@pytest.mark.parametrize(
    ("d1", "d2"),
    [
        ({"a": "bc"}, {"ab": "c"}),
        ({"a": "b", "c": ""}, {"a": "b"}),
        ({"a": "", "b": ""}, {"a": "b"}),
        ({"a": "1"}, {"a": "1 "}),
        ({"job": "x\xffy"}, {"job": "x", "y": ""}),
    ],
)
def test_fingerprint_has_no_concatenation_collisions(d1, d2):
    assert Labels(d1).fingerprint != Labels(d2).fingerprint


def test_fingerprint_is_stable_across_processes():
    # A stored fingerprint must match after a restart: it is a digest, not Python's salted hash().
    fp = Labels({"instance": "h1", "job": "node"}).fingerprint
    assert fp == Labels({"job": "node", "instance": "h1"}).fingerprint
    digest = hashlib.sha256("instance\xffh1\xffjob\xffnode\xff".encode("latin-1")).hexdigest()[:16]
    assert fp == digest == "1e9bc32211f05c48"


def test_labels_values_are_strings():
    assert Labels({"a": 1}) == Labels({"a": "1"})
    assert Labels({"a": 1})["a"] == "1"


def test_labels_merged_and_without():
    base = Labels({"a": "1", "b": "2"})
    assert base.merged({"b": "3", "c": "4"}) == {"a": "1", "b": "3", "c": "4"}
    assert base.without("a") == {"b": "2"}
    assert base == {"a": "1", "b": "2"}  # unchanged


def test_labels_not_equal_to_other_types():
    assert Labels({"a": "1"}) != [("a", "1")]
    with pytest.raises(KeyError):
        Labels({"a": "1"})["b"]


# ----------------------------------------------------------------------------------------------- time


def test_ensure_utc_of_naive_is_taken_as_utc():
    naive = datetime(2026, 3, 29, 1, 30)
    out = ensure_utc(naive)
    assert out.tzinfo is UTC and out == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_ensure_utc_converts_other_zones():
    plus2 = datetime(2026, 3, 29, 3, 30, tzinfo=timezone(timedelta(hours=2)))
    out = ensure_utc(plus2)
    assert out.utcoffset() == timedelta(0)
    assert (out.hour, out.minute) == (1, 30)
    assert out == plus2


def test_ensure_utc_none():
    assert ensure_utc(None) is None
    assert isoformat(None) is None


def test_isoformat_uses_z():
    assert isoformat(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"


@given(st.datetimes(timezones=st.timezones()))
def test_ensure_utc_preserves_the_instant(dt):
    out = ensure_utc(dt)
    assert out.utcoffset() == timedelta(0)
    # (compare instants; == between zones is False for wall times in a DST gap)
    assert out.timestamp() == dt.timestamp()
    assert out.replace(tzinfo=None) == dt.replace(tzinfo=None) - dt.utcoffset()
