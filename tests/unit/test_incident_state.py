"""Named incident transitions: open, alert_fired, alert_resolved, ack, resolve."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.core import IncidentState, TransitionError
from fsincident.incidents.state import Decision, ack, alert_fired, alert_resolved, open_incident, resolve

T, A, R = IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED, IncidentState.RESOLVED

OPS = st.lists(st.sampled_from(["fire", "alert_resolved", "ack", "resolve"]), max_size=40)


class Model:
    """One alert group over time: its open (or last) incident's state and how many of its alerts fire."""

    def __init__(self, auto_resolve: bool):
        self.auto_resolve = auto_resolve
        self.state: IncidentState | None = None
        self.firing = 0
        self.incidents = 0

    def apply(self, op: str) -> tuple[IncidentState | None, Decision | None]:
        prev = self.state
        if op == "fire":
            if prev is None or prev == R:
                if prev == R:  # the next firing of a resolved group opens a new incident
                    with pytest.raises(TransitionError):
                        alert_fired(prev)
                    prev = None
                d = open_incident()
                self.incidents += 1
                self.firing = 1
            else:
                d = alert_fired(prev)
                self.firing += 1
        elif op == "alert_resolved":
            if prev is None or self.firing == 0:
                return prev, None
            self.firing -= 1
            d = alert_resolved(prev, self.firing, self.auto_resolve)
        elif op == "ack":
            if prev is None:
                return prev, None
            if prev == R:
                with pytest.raises(TransitionError):
                    ack(prev)
                return prev, None
            d = ack(prev)
        else:
            if prev is None:
                return prev, None
            d = resolve(prev)
        self.state = d.state
        return prev, d


@settings(max_examples=400)
@given(OPS, st.booleans())
def test_transition_invariants(ops, auto_resolve):
    m = Model(auto_resolve)
    for op in ops:
        firing_before = m.firing
        prev, d = m.apply(op)
        if d is None:
            continue
        # every state change is on the timeline, and anything that pages is a change
        if d.state != prev:
            assert d.events, (op, prev, d)
        if d.notify is not None:
            assert d.changed
        assert d.changed == bool(d.events)
        # what is notified follows from the states alone
        if d.state == T and prev in (None, A):
            assert d.notify == "trigger"
        elif d.state == A and prev != A:
            assert d.notify == "acknowledge"
        elif d.state == R and prev != R:
            assert d.notify == "resolve"
        else:
            assert d.notify is None, (op, prev, d)
        # resolved is terminal
        if prev == R:
            assert d.state == R
        # auto-resolve only when the last alert stops and auto_resolve is on
        if op == "alert_resolved" and prev != R:
            expect_resolved = firing_before == 1 and auto_resolve
            assert (d.state == R) == expect_resolved
            assert ("resolved" in d.events) == expect_resolved
        if op == "fire":
            assert d.state == T


@settings(max_examples=200)
@given(OPS)
def test_without_auto_resolve_only_a_person_resolves(ops):
    m = Model(auto_resolve=False)
    for op in ops:
        prev, d = m.apply(op)
        if d is not None and d.state == R and prev != R:
            assert op == "resolve"


def test_open_pages():
    assert open_incident() == Decision(T, ("triggered",), "trigger")


def test_alert_joining_triggered_incident_does_not_page_again():
    d = alert_fired(T)
    assert d.state == T and d.notify is None and d.events == ("alert_firing",)


def test_alert_joining_acknowledged_incident_retriggers():
    d = alert_fired(A)
    assert d.state == T and d.notify == "trigger"
    assert "retriggered" in d.events


def test_resolved_incident_takes_no_alerts():
    with pytest.raises(TransitionError, match="resolved"):
        alert_fired(R)


def test_ack_is_idempotent():
    first = ack(T)
    assert first == Decision(A, ("acknowledged",), "acknowledge")
    second = ack(first.state)
    assert second.state == A and not second.changed and second.notify is None


def test_ack_of_resolved_is_refused():
    with pytest.raises(TransitionError):
        ack(R)


@pytest.mark.parametrize("state", [T, A])
def test_manual_resolve(state):
    assert resolve(state) == Decision(R, ("resolved",), "resolve")


def test_resolving_resolved_changes_nothing():
    d = resolve(R)
    assert d.state == R and not d.changed and d.notify is None


@pytest.mark.parametrize(
    ("state", "left", "auto", "new_state", "notify"),
    [
        (T, 0, True, R, "resolve"),
        (A, 0, True, R, "resolve"),
        (T, 0, False, T, None),
        (A, 0, False, A, None),
        (T, 2, True, T, None),
        (A, 1, True, A, None),
        (R, 0, True, R, None),
    ],
)
def test_alert_resolved_table(state, left, auto, new_state, notify):
    d = alert_resolved(state, left, auto)
    assert d.state == new_state and d.notify == notify
    assert "alert_resolved" in d.events


def test_alert_resolved_rejects_negative_count():
    with pytest.raises(ValueError):
        alert_resolved(T, -1, True)
