"""Outbox retry backoff: exponential, capped, with bounded jitter."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.config.model import DeliveryOptions
from fsincident.notify.outbox import backoff

OPTS = DeliveryOptions(initial_backoff=timedelta(seconds=2), max_backoff=timedelta(minutes=10))


def no_jitter():
    return 1.0


@pytest.mark.parametrize(
    ("attempt", "seconds"),
    [(0, 2), (1, 2), (2, 4), (3, 8), (4, 16), (8, 256), (9, 512), (10, 600), (11, 600), (1000, 600)],
)
def test_grows_exponentially_then_caps(attempt, seconds):
    assert backoff(attempt, OPTS, rnd=no_jitter) == timedelta(seconds=seconds)


def test_jitter_bounds():
    assert backoff(3, OPTS, rnd=lambda: 0.0) == timedelta(seconds=4)
    assert backoff(3, OPTS, rnd=lambda: 0.5) == timedelta(seconds=6)
    assert backoff(50, OPTS, rnd=lambda: 0.0) == timedelta(minutes=5)


def test_default_jitter_is_random_within_bounds():
    delays = {backoff(4, OPTS) for _ in range(50)}
    assert len(delays) > 1
    assert all(timedelta(seconds=8) <= d <= timedelta(seconds=16) for d in delays)


durations = st.integers(1, 3600).map(lambda s: timedelta(seconds=s))


@settings(max_examples=400)
@given(st.integers(1, 1000), durations, durations, st.floats(0.0, 1.0, exclude_max=True))
def test_backoff_properties(attempt, initial, cap, r):
    opts = DeliveryOptions(initial_backoff=initial, max_backoff=cap)
    base = min(initial.total_seconds() * 2 ** (attempt - 1), cap.total_seconds())
    d = backoff(attempt, opts, rnd=lambda: r).total_seconds()
    assert 0.5 * base - 1e-6 <= d <= base + 1e-6
    assert d <= cap.total_seconds() + 1e-6
    # never shrinks from one attempt to the next (same jitter draw)
    assert backoff(attempt + 1, opts, rnd=lambda: r) >= backoff(attempt, opts, rnd=lambda: r)
