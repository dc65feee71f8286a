"""The explore page's incidents heatmap counts in SQL per UTC hour (or quarter hour) and places each bucket in the
display time zone's weekday × hour, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from fsincident.store.tables import Incident
from fsincident.ui.explore import incident_heatmap

NOW = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)  # a Monday, after Berlin's switch to summer time
TIMES = [
    datetime(2026, 3, 30, 11, 59, tzinfo=UTC),  # Mon 11:59Z
    datetime(2026, 3, 28, 23, 30, tzinfo=UTC),  # Sat 23:30Z = Sun 00:30 Berlin (CET) = Sun 05:00 Kolkata
    datetime(2026, 3, 29, 1, 10, tzinfo=UTC),  # Sun 01:10Z = Sun 03:10 Berlin (CEST) = Sun 06:40 Kolkata
    datetime(2026, 3, 29, 1, 50, tzinfo=UTC),  # Sun 01:50Z = Sun 03:50 Berlin = Sun 07:20 Kolkata
    datetime(2026, 2, 1, 0, 0, tzinfo=UTC),  # before the range
]


async def _seed(store) -> None:
    async with store.session() as s:
        for i, t in enumerate(TIMES):
            s.add(
                Incident(
                    group_key=f"g{i}",
                    title="t",
                    state="resolved",
                    severity="info",
                    labels={},
                    created_at=t,
                    updated_at=t,
                )
            )


def _nonzero(cells):
    return {(r, c): n for r, row in enumerate(cells) for c, n in enumerate(row) if n}


async def test_heatmap_buckets_in_the_display_zone(store):
    await _seed(store)
    ctx = SimpleNamespace(store=store)
    start = NOW - timedelta(weeks=2)
    assert _nonzero(await incident_heatmap(ctx, ZoneInfo("UTC"), start, NOW)) == {(0, 11): 1, (5, 23): 1, (6, 1): 2}
    assert _nonzero(await incident_heatmap(ctx, ZoneInfo("Europe/Berlin"), start, NOW)) == {
        (0, 13): 1,
        (6, 0): 1,
        (6, 3): 2,
    }
    # a half-hour zone: counted per quarter hour, so 01:10Z and 01:50Z land in different local hours
    assert _nonzero(await incident_heatmap(ctx, ZoneInfo("Asia/Kolkata"), start, NOW)) == {
        (0, 17): 1,
        (6, 5): 1,
        (6, 6): 1,
        (6, 7): 1,
    }
