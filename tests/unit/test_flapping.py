"""Flap detection: a series whose condition keeps changing is held firing instead of re-paging."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.core import AlertState
from fsincident.evaluation.state import Emit, step

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
M = 60


def run(history, for_=0, keep=0, window=600, changes=2):
    """Feed (seconds since T0, condition) pairs through ``step`` with flap detection; returns emits and states."""
    state = None
    emits, states = [], []
    for t, active in history:
        state, emit = step(state, active, T0 + t * S, for_ * S, keep * S, flap_window=window * S, flap_changes=changes)
        emits.append(emit)
        states.append(state)
    return emits, states


def reference(history, for_, keep, window, changes):
    """An independent model: every condition change is remembered; flapping starts when ``changes`` of them lie
    within the last ``window`` and ends when none does; a firing series resolves on a false evaluation once
    ``keep`` has passed since the last true one and it is not flapping."""
    emits = []
    seen: list[int] = []
    cond = flapping = firing = False
    run_start = last_true = None
    for t, active in history:
        if active != cond:
            seen.append(t)
            cond = active
        recent = [c for c in seen if t - c < window]
        if not recent:
            flapping = False
        elif len(recent) >= changes:
            flapping = True
        if active:
            run_start = t if run_start is None else run_start
            last_true = t
        else:
            run_start = None
        if not firing:
            if active and t - run_start >= for_:
                firing = True
                emits.append(Emit.FIRING)
            else:
                emits.append(Emit.NONE)
        elif active or (keep > 0 and t - last_true < keep) or flapping:
            emits.append(Emit.NONE)
        else:
            firing = False
            emits.append(Emit.RESOLVED)
    return emits


@st.composite
def histories(draw, max_gap=90, max_size=60):
    steps = draw(st.lists(st.tuples(st.integers(0, max_gap), st.booleans()), min_size=1, max_size=max_size))
    t, out = 0, []
    for dt, active in steps:
        t += dt
        out.append((t, active))
    return out


durations = st.sampled_from([0, 0, 15, 30, 60, 120])
windows = st.sampled_from([1, 30, 60, 300, 600])
counts = st.integers(1, 6)

# ----------------------------------------------------------------------------------------------- properties


@settings(max_examples=500)
@given(histories(), durations, durations, windows, counts)
def test_matches_reference_model(history, for_, keep, window, changes):
    emits, _ = run(history, for_, keep, window, changes)
    assert emits == reference(history, for_, keep, window, changes)


@st.composite
def bursts(draw):
    """A series that changes faster than the window (all evaluations within one window), then stays false."""
    window = draw(st.sampled_from([60, 300, 600]))
    burst = draw(histories(max_gap=window // 20, max_size=20))
    start = burst[-1][0]
    tail_gaps = draw(st.lists(st.integers(1, window // 3), max_size=12))
    tail, t = [], start
    for dt in tail_gaps:
        t += dt
        tail.append((t, False))
    return window, burst + tail, len(burst)


@settings(max_examples=500)
@given(bursts(), durations, durations)
def test_flapping_series_pages_once_and_resolves_at_most_once(burst, for_, keep):
    window, history, _ = burst
    emits, _ = run(history, for_, keep, window, 2)
    firing = emits.count(Emit.FIRING)
    assert firing <= 1, emits
    assert emits.count(Emit.RESOLVED) <= 1, emits
    if for_ == 0 and any(active for _, active in history):
        assert firing == 1


@settings(max_examples=300)
@given(bursts(), durations, durations, counts)
def test_no_new_page_once_flapping_within_the_window(burst, for_, keep, changes):
    """Pages before flapping is detected need a resolve in between; once detected nothing resolves within the
    window, so nothing can page again."""
    window, history, n_burst = burst
    emits, states = run(history, for_, keep, window, changes)
    assert emits.count(Emit.FIRING) <= math.ceil(changes / 2), emits
    detected = next((i for i, s in enumerate(states) if s is not None and s.flapping), None)
    if detected is not None:
        assert Emit.RESOLVED not in emits[detected:n_burst], emits


@settings(max_examples=300)
@given(histories(), durations, durations, windows, counts)
def test_resolves_only_after_a_quiet_window(history, for_, keep, window, changes):
    emits, states = run(history, for_, keep, window, changes)
    last_change = None
    cond = False
    last_true = None
    for i, (t, active) in enumerate(history):
        if active != cond:
            last_change, cond = t, active
        if active:
            last_true = t
        if emits[i] == Emit.RESOLVED:
            assert not active
            assert t - last_true >= keep
            if i > 0 and states[i - 1] is not None and states[i - 1].flapping:
                assert t - last_change >= window, f"resolved {t - last_change}s after the last change"


@settings(max_examples=300)
@given(histories(), durations, durations, windows, counts)
def test_history_is_bounded_and_forgotten(history, for_, keep, window, changes):
    _, states = run(history, for_, keep, window, changes)
    for (t, _), s in zip(history, states, strict=True):
        if s is None:
            continue
        assert len(s.changes) <= changes
        assert all(timedelta(0) <= T0 + t * S - c < window * S for c in s.changes)
        if s.state == AlertState.INACTIVE:
            assert s.changes, "an inactive series without history is remembered"
            assert not s.condition


@settings(max_examples=300)
@given(histories(), durations, durations, windows, counts)
def test_emits_alternate_starting_with_firing(history, for_, keep, window, changes):
    emits, _ = run(history, for_, keep, window, changes)
    sent = [e for e in emits if e != Emit.NONE]
    for i, e in enumerate(sent):
        assert e == (Emit.FIRING if i % 2 == 0 else Emit.RESOLVED), sent


# ----------------------------------------------------------------------------------------------- table tests


def test_without_flap_detection_each_bounce_pages_again():
    history = [(0, True), (15, False), (30, True), (45, False), (60, True)]
    emits, _ = run(history, changes=0)
    assert emits.count(Emit.FIRING) == 3


def test_bouncing_series_is_held_firing():
    history = [(0, True), (15, False), (30, True), (45, False), (60, True), (75, False)]
    emits, states = run(history, window=300, changes=2)
    assert emits == [Emit.FIRING] + [Emit.NONE] * 5
    assert states[1].flapping and states[1].state == AlertState.FIRING and states[1].held
    assert states[2].flapping and not states[2].held


def test_held_until_the_condition_was_false_for_a_whole_window_after_the_last_change():
    # Changes at 0, 60, 120, 180 s (4 within 10 min: flapping); false since 180 s.
    history = [(0, True), (60, False), (120, True), (180, False), (630, False), (779, False), (780, False)]
    emits, states = run(history, window=600, changes=4)
    assert emits == [Emit.FIRING, Emit.RESOLVED, Emit.FIRING, Emit.NONE, Emit.NONE, Emit.NONE, Emit.RESOLVED]
    # At 630 s the change at 0 s has aged out (3 left), but the series changed 450 s ago: still held.
    assert states[4].flapping and states[4].held
    assert states[6] is None, "the history has aged out with the resolution: nothing left to remember"


def test_steady_for_a_window_ends_flapping():
    history = [(0, True), (15, False), (30, True), (400, True), (401, False)]
    emits, states = run(history, window=300, changes=2)
    assert states[2].flapping
    assert not states[3].flapping
    assert emits == [Emit.FIRING, Emit.NONE, Emit.NONE, Emit.NONE, Emit.RESOLVED]


def test_keep_firing_for_still_applies_after_flapping_ends():
    history = [(0, True), (10, False), (20, True), (30, False), (330, False), (900, False), (919, False), (920, False)]
    emits, _ = run(history, keep=900, window=300, changes=2)
    assert emits[-1] == Emit.RESOLVED and emits.count(Emit.RESOLVED) == 1
    assert emits[-2] == Emit.NONE  # 899 s after the last true evaluation (20 s): keep_firing_for not over


def test_pending_flapping_series_fires_after_for():
    history = [(0, True), (5, False), (10, True), (15, False), (20, True), (80, True)]
    emits, states = run(history, for_=60, window=300, changes=2)
    assert emits == [Emit.NONE] * 5 + [Emit.FIRING]
    assert states[3] is not None and states[3].state == AlertState.INACTIVE and states[3].flapping
    assert states[5].active_since == T0 + 20 * S
