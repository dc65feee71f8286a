"""ReportScheduler: the engine module that queues scheduled reports (issue #9). Filled in by its owner."""

from __future__ import annotations

from datetime import datetime
from typing import Any


class ReportScheduler:
    """Queues each ``reports:`` entry's report at its cron fire times (leader only)."""

    name = "reports"

    def __init__(self, analytics: Any, **_: Any):
        self.analytics = analytics

    async def tick(self, now: datetime) -> bool:
        return False
