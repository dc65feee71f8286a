"""The per-series alert machine: inactive -> pending -> firing -> (keep_firing_for) -> resolved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.core import AlertState
from fsincident.evaluation.state import Emit, SeriesState, step

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def run(history, for_, keep):
    """Feed (seconds since T0, active) pairs through ``step``; returns the emits and the states after each step."""
    state = None
    emits, states = [], []
    for t, active in history:
        state, emit = step(state, active, T0 + t * S, for_ * S, keep * S)
        emits.append(emit)
        states.append(state)
    return emits, states


def reference(history, for_, keep):
    """An independent model: fire once the current run of consecutive true evaluations is ``for_`` old;
    resolve on the first false evaluation at least ``keep`` after the last true one."""
    emits = []
    firing = False
    run_start = last_true = None
    for t, active in history:
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
        elif active or (keep > 0 and t - last_true < keep):
            emits.append(Emit.NONE)
        else:
            firing = False
            emits.append(Emit.RESOLVED)
    return emits


@st.composite
def histories(draw):
    """Evaluations at non-decreasing whole seconds (increments of 0 allowed) with random activity."""
    steps = draw(st.lists(st.tuples(st.integers(0, 90), st.booleans()), min_size=1, max_size=60))
    t, out = 0, []
    for dt, active in steps:
        t += dt
        out.append((t, active))
    return out


durations = st.sampled_from([0, 0, 1, 15, 30, 60, 90, 120, 300])

# ----------------------------------------------------------------------------------------------- properties


@settings(max_examples=400)
@given(histories(), durations, durations)
def test_matches_reference_model(history, for_, keep):
    emits, _ = run(history, for_, keep)
    assert emits == reference(history, for_, keep)


@settings(max_examples=300)
@given(histories(), durations, durations)
def test_firing_only_after_continuously_true_for(history, for_, keep):
    emits, _ = run(history, for_, keep)
    for i, emit in enumerate(emits):
        if emit != Emit.FIRING:
            continue
        t, active = history[i]
        assert active, "fired on a false evaluation"
        start = i
        while start > 0 and history[start - 1][1]:
            start -= 1
        assert t - history[start][0] >= for_, f"fired after {t - history[start][0]}s of {for_}s"


@settings(max_examples=300)
@given(histories(), durations, durations)
def test_emits_alternate_starting_with_firing(history, for_, keep):
    emits, _ = run(history, for_, keep)
    sent = [e for e in emits if e != Emit.NONE]
    for i, e in enumerate(sent):
        assert e == (Emit.FIRING if i % 2 == 0 else Emit.RESOLVED), sent


@settings(max_examples=300)
@given(histories(), durations, durations)
def test_resolution_waits_keep_firing_for_since_last_true(history, for_, keep):
    emits, _ = run(history, for_, keep)
    last_true = None
    for i, (t, active) in enumerate(history):
        if emits[i] == Emit.RESOLVED:
            assert not active
            assert last_true is not None
            assert t - last_true >= keep, f"resolved {t - last_true}s after the last true evaluation, keep={keep}s"
        if active:
            last_true = t


@settings(max_examples=300)
@given(histories(), durations, durations)
def test_state_agrees_with_emits(history, for_, keep):
    emits, states = run(history, for_, keep)
    firing = False
    for (t, active), emit, state in zip(history, emits, states, strict=True):
        if emit == Emit.FIRING:
            firing = True
            assert state.fired_at == T0 + t * S
        elif emit == Emit.RESOLVED:
            firing = False
        if firing:
            assert state is not None and state.state == AlertState.FIRING
        else:
            assert state is None or state.state == AlertState.PENDING
            if state is not None:
                assert active and state.fired_at is None
        if state is not None:
            assert state.active_since <= state.last_active <= T0 + t * S
            if active:
                assert state.last_active == T0 + t * S


@settings(max_examples=200)
@given(histories(), durations)
def test_for_zero_fires_on_first_true_evaluation(history, keep):
    emits, _ = run(history, 0, keep)
    firing = False
    for (_, active), emit in zip(history, emits, strict=True):
        if not firing and active:
            assert emit == Emit.FIRING
        if emit == Emit.FIRING:
            firing = True
        elif emit == Emit.RESOLVED:
            firing = False


# ----------------------------------------------------------------------------------------------- table tests


def test_inactive_false_stays_inactive():
    assert step(None, False, T0, 60 * S, 0 * S) == (None, Emit.NONE)


def test_pending_boundary_is_inclusive():
    emits, states = run([(0, True), (59, True), (60, True)], 60, 0)
    assert emits == [Emit.NONE, Emit.NONE, Emit.FIRING]
    assert [s.state for s in states] == [AlertState.PENDING, AlertState.PENDING, AlertState.FIRING]
    assert states[-1].active_since == T0 and states[-1].fired_at == T0 + 60 * S


def test_false_evaluation_resets_pending():
    emits, states = run([(0, True), (50, False), (55, True), (100, True), (115, True)], 60, 0)
    assert emits == [Emit.NONE, Emit.NONE, Emit.NONE, Emit.NONE, Emit.FIRING]
    assert states[1] is None
    assert states[-1].active_since == T0 + 55 * S


def test_without_keep_firing_for_resolves_on_first_false():
    emits, states = run([(0, True), (15, False)], 0, 0)
    assert emits == [Emit.FIRING, Emit.RESOLVED]
    assert states[-1] is None


def test_keep_firing_for_boundary():
    emits, _ = run([(0, True), (100, True), (130, False), (159, False), (160, False)], 0, 60)
    assert emits == [Emit.FIRING, Emit.NONE, Emit.NONE, Emit.NONE, Emit.RESOLVED]


def test_true_again_during_keep_firing_for_extends_it():
    emits, _ = run([(0, True), (30, False), (50, True), (100, False), (109, False), (110, False)], 0, 60)
    assert emits == [Emit.FIRING, Emit.NONE, Emit.NONE, Emit.NONE, Emit.NONE, Emit.RESOLVED]


def test_firing_keeps_its_fired_at_and_active_since():
    _, states = run([(0, True), (30, True), (60, True), (90, True)], 30, 0)
    assert states[-1].state == AlertState.FIRING
    assert states[-1].active_since == T0
    assert states[-1].fired_at == T0 + 30 * S
    assert states[-1].last_active == T0 + 90 * S


@pytest.mark.parametrize("active", [True, False])
def test_explicit_inactive_state_is_like_none(active):
    inactive = SeriesState(AlertState.INACTIVE, T0, T0)
    now = T0 + 10 * S
    assert step(inactive, active, now, 0 * S, 0 * S) == step(None, active, now, 0 * S, 0 * S)
    assert step(inactive, active, now, 60 * S, 0 * S) == step(None, active, now, 60 * S, 0 * S)


def test_refiring_after_resolution_needs_for_again():
    emits, _ = run([(0, True), (60, True), (70, False), (80, True), (100, True), (140, True)], 60, 0)
    assert emits == [Emit.NONE, Emit.FIRING, Emit.RESOLVED, Emit.NONE, Emit.NONE, Emit.FIRING]


# ----------------------------------------------------------------------------------------------- flap detection off


def legacy_step(prev, active, now, for_, keep_firing_for):
    """The state machine as it was before flap detection existed (the behaviour flap-off must keep)."""
    if prev is None:
        if not active:
            return None, Emit.NONE
        if for_ <= timedelta(0):
            return (AlertState.FIRING, now, now, now), Emit.FIRING
        return (AlertState.PENDING, now, now, None), Emit.NONE
    state, since, last, fired = prev
    if state == AlertState.PENDING:
        if not active:
            return None, Emit.NONE
        if now - since >= for_:
            return (AlertState.FIRING, since, now, now), Emit.FIRING
        return (state, since, now, fired), Emit.NONE
    if active:
        return (state, since, now, fired), Emit.NONE
    if keep_firing_for > timedelta(0) and now - last < keep_firing_for:
        return prev, Emit.NONE
    return None, Emit.RESOLVED


@settings(max_examples=400)
@given(
    histories(),
    durations,
    durations,
    st.sampled_from([(0, 0), (0, 4), (300, 0), (-5, 3)]),
)
def test_flap_detection_off_equals_the_plain_machine(history, for_, keep, flap):
    """With ``flap_changes`` 0 or ``flap_window`` 0 the machine behaves exactly as without flap detection."""
    window, changes = flap
    new = old = None
    for t, active in history:
        now = T0 + t * S
        new, emit = step(new, active, now, for_ * S, keep * S, flap_window=window * S, flap_changes=changes)
        old, old_emit = legacy_step(old, active, now, for_ * S, keep * S)
        assert emit == old_emit
        if old is None:
            assert new is None
        else:
            assert (new.state, new.active_since, new.last_active, new.fired_at) == old
            assert new.changes == () and not new.flapping
            assert new.held == (new.state == AlertState.FIRING and not active)
