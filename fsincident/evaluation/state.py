"""The pure per-series alert state machine: inactive -> pending -> firing -> (keep_firing_for) -> inactive.

Flap detection (optional) counts the changes of a series' condition (false -> true and true -> false
edges). A series whose condition changed at least ``flap_changes`` times within ``flap_window`` is
*flapping*; it stays flapping until its condition has not changed for a whole ``flap_window``. A
firing series that is flapping does not resolve: it is held firing (no new page, since it never
resolved) and resolves at the first evaluation where its condition is false and the last change is
at least ``flap_window`` old (and ``keep_firing_for`` has passed since it was last true).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from fsincident.core import AlertState

ZERO = timedelta(0)


class Emit(StrEnum):
    """What a step tells the incidents stage."""

    NONE = "none"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class SeriesState:
    """A series' state; ``active_since`` is when the expression became true, ``last_active`` its last true time.

    ``condition`` is the condition at the last evaluation (False while a firing series is held by
    ``keep_firing_for`` or flapping); ``changes`` the times of its recent condition changes (at most
    ``flap_changes``, none older than ``flap_window``); ``flapping`` whether it is flapping. An
    ``INACTIVE`` state only exists to remember the changes of a series that is neither pending nor firing.
    """

    state: AlertState
    active_since: datetime
    last_active: datetime
    fired_at: datetime | None = None
    condition: bool = True
    changes: tuple[datetime, ...] = ()
    flapping: bool = False

    @property
    def held(self) -> bool:
        """A firing series whose condition is false (kept by ``keep_firing_for`` or flapping)."""
        return self.state == AlertState.FIRING and not self.condition


def flap_update(
    prev: SeriesState | None, active: bool, now: datetime, flap_window: timedelta, flap_changes: int
) -> tuple[tuple[datetime, ...], bool]:
    """The series' recent changes and flapping flag after an evaluation with condition ``active``; never fails."""
    if flap_changes <= 0 or flap_window <= ZERO:
        return (), False
    was = prev is not None and prev.state != AlertState.INACTIVE and prev.condition
    changes = tuple(t for t in (prev.changes if prev else ()) if now - t < flap_window)
    if active != was:
        changes = (*changes, now)[-flap_changes:]
    if not changes:
        return (), False  # quiet for a whole window: no longer flapping
    flapping = (prev.flapping if prev else False) or len(changes) >= flap_changes
    return changes, flapping


def step(
    prev: SeriesState | None,
    active: bool,
    now: datetime,
    for_: timedelta,
    keep_firing_for: timedelta,
    *,
    flap_window: timedelta = ZERO,
    flap_changes: int = 0,
) -> tuple[SeriesState | None, Emit]:
    """Advance one evaluation; returns the new state (None = forgotten) and what to emit. Never fails.

    With flap detection off (``flap_changes`` 0 or ``flap_window`` 0) the result is never ``INACTIVE``.
    """
    changes, flapping = flap_update(prev, active, now, flap_window, flap_changes)

    def idle() -> SeriesState | None:
        # Not pending nor firing: remembered only while there is flap history to keep.
        if not changes or prev is None:
            return None
        return SeriesState(AlertState.INACTIVE, prev.active_since, prev.last_active, None, False, changes, flapping)

    if prev is None or prev.state == AlertState.INACTIVE:
        if not active:
            return idle(), Emit.NONE
        if for_ <= ZERO:
            return SeriesState(AlertState.FIRING, now, now, now, True, changes, flapping), Emit.FIRING
        return SeriesState(AlertState.PENDING, now, now, None, True, changes, flapping), Emit.NONE
    if prev.state == AlertState.PENDING:
        if not active:
            return idle(), Emit.NONE
        if now - prev.active_since >= for_:
            fired = replace(
                prev, state=AlertState.FIRING, last_active=now, fired_at=now, changes=changes, flapping=flapping
            )
            return fired, Emit.FIRING
        return replace(prev, last_active=now, condition=True, changes=changes, flapping=flapping), Emit.NONE
    # firing
    if active:
        return replace(prev, last_active=now, condition=True, changes=changes, flapping=flapping), Emit.NONE
    kept = keep_firing_for > ZERO and now - prev.last_active < keep_firing_for
    if kept or flapping:
        return replace(prev, condition=False, changes=changes, flapping=flapping), Emit.NONE
    return idle(), Emit.RESOLVED
