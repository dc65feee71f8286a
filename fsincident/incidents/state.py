"""Named incident transitions (pure): open, alert_fired, alert_resolved, ack, resolve."""

from __future__ import annotations

from dataclasses import dataclass

from fsincident.core import IncidentState, TransitionError

T, A, R = IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED, IncidentState.RESOLVED


@dataclass(frozen=True)
class Decision:
    """The outcome of a transition: new state, timeline event kinds, and what to notify (if anything)."""

    state: IncidentState
    events: tuple[str, ...] = ()
    notify: str | None = None  # trigger | acknowledge | resolve

    @property
    def changed(self) -> bool:
        return bool(self.events)


def open_incident() -> Decision:
    """A firing alert with no open incident for its group opens one, and pages."""
    return Decision(T, ("triggered",), "trigger")


def alert_fired(state: IncidentState) -> Decision:
    """An alert (new, or firing again) joins an open incident: an acknowledged incident re-triggers and pages."""
    if state == R:
        raise TransitionError("a resolved incident takes no new alerts; open a new one")
    if state == A:
        return Decision(T, ("alert_firing", "retriggered"), "trigger")
    return Decision(T, ("alert_firing",))


def alert_resolved(state: IncidentState, firing_left: int, auto_resolve: bool) -> Decision:
    """An alert stopped firing; the incident resolves by itself when none is left and auto-resolve is on."""
    if firing_left < 0:
        raise ValueError("firing_left must not be negative")
    if state == R:
        return Decision(R, ("alert_resolved",))
    if firing_left == 0 and auto_resolve:
        return Decision(R, ("alert_resolved", "resolved"), "resolve")
    return Decision(state, ("alert_resolved",))


def ack(state: IncidentState) -> Decision:
    """A responder acknowledges: paging stops. Acking twice changes nothing; a resolved incident refuses."""
    if state == R:
        raise TransitionError("incident is resolved")
    if state == A:
        return Decision(A)
    return Decision(A, ("acknowledged",), "acknowledge")


def resolve(state: IncidentState) -> Decision:
    """A responder resolves by hand; resolving a resolved incident changes nothing."""
    if state == R:
        return Decision(R)
    return Decision(R, ("resolved",), "resolve")
