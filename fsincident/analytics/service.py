"""AnalyticsService: the figures of a period (issue #9). Filled in by its owner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fsincident.config import Config
from fsincident.core import Clock
from fsincident.store import Store


class AnalyticsService:
    """Reads the incident history and answers analytics questions (see the module's owner for the methods)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: Callable[[], Config],
        *,
        history: Any = None,
        snapshot: Callable[[str], Any] | None = None,
        shifts: Callable[..., Awaitable[Any]] | None = None,
    ):
        self.store = store
        self.clock = clock
        self.config = config
        self.history = history  # history.HistoryService (range queries over recorded series) or None
        self.snapshot = snapshot  # SourceRunner.snapshot(source name) -> the source's current window, or None
        self.shifts = shifts  # async (start, end) -> [(schedule, user, start, end)] final on-call shifts
