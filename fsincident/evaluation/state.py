"""The pure per-series alert state machine: inactive -> pending -> firing -> (keep_firing_for) -> inactive."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from fsincident.core import AlertState


class Emit(StrEnum):
    """What a step tells the incidents stage."""

    NONE = "none"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class SeriesState:
    """A series' state; ``active_since`` is when the expression became true, ``last_active`` its last true time."""

    state: AlertState
    active_since: datetime
    last_active: datetime
    fired_at: datetime | None = None


def step(
    prev: SeriesState | None, active: bool, now: datetime, for_: timedelta, keep_firing_for: timedelta
) -> tuple[SeriesState | None, Emit]:
    """Advance one evaluation; returns the new state (None = inactive) and what to emit. Never fails."""
    if prev is None or prev.state == AlertState.INACTIVE:
        if not active:
            return None, Emit.NONE
        if for_ <= timedelta(0):
            return SeriesState(AlertState.FIRING, now, now, now), Emit.FIRING
        return SeriesState(AlertState.PENDING, now, now), Emit.NONE
    if prev.state == AlertState.PENDING:
        if not active:
            return None, Emit.NONE
        if now - prev.active_since >= for_:
            return replace(prev, state=AlertState.FIRING, last_active=now, fired_at=now), Emit.FIRING
        return replace(prev, last_active=now), Emit.NONE
    # firing
    if active:
        return replace(prev, last_active=now), Emit.NONE
    if keep_firing_for > timedelta(0) and now - prev.last_active < keep_firing_for:
        return prev, Emit.NONE
    return None, Emit.RESOLVED
