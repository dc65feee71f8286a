"""Write cost of the series history: N series scraped every second, default tiers (1m/15m), simulated clock.

Run: ``.venv/bin/python -m benchmarks.history [--series 1000] [--minutes 20] [--database URL]``. Prints the time of
a sampling-only tick, of a tick that completes and writes a fine bucket per series (and of those that also write
coarse buckets), the rows upserted per minute and the table's size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fsincident.config import HistoryOptions  # noqa: E402
from fsincident.core import FakeClock, Labels  # noqa: E402
from fsincident.history import HistoryService  # noqa: E402
from fsincident.obs import Metrics  # noqa: E402
from fsincident.plugins import Snapshot  # noqa: E402
from fsincident.store import Store  # noqa: E402

T0 = datetime(2026, 3, 2, tzinfo=UTC)


async def run(series: int, minutes: int, url: str) -> dict[str, object]:
    store = Store(url)
    await store.upgrade()
    clock = FakeClock(T0)
    metrics = Metrics()
    snaps: dict[str, Snapshot] = {}
    svc = HistoryService(store, clock, metrics, snaps.get)
    svc.configure(HistoryOptions(max_series=max(2000, series)), {"app": {"m"}}, {"app": "scrape"})
    labels = [Labels({"instance": f"host{i:05d}", "job": "app"}) for i in range(series)]
    sample_only: list[float] = []
    fine_ticks: list[float] = []
    coarse_ticks: list[float] = []
    written = metrics.series_history_buckets
    try:
        for sec in range(minutes * 60 + 1):
            clock._now = T0 + timedelta(seconds=sec, milliseconds=500)
            snaps["app"] = Snapshot(
                "app", at=clock.now(), metrics={"m": {lab: float(sec + i) for i, lab in enumerate(labels)}}
            )
            before = written.labels("coarse")._value.get()
            t = time.perf_counter()
            await svc.tick(clock.now())
            took = time.perf_counter() - t
            if sec and sec % 60 == 0:
                (coarse_ticks if written.labels("coarse")._value.get() > before else fine_ticks).append(took)
            elif sec > 1:
                sample_only.append(took)
        await svc.close()
        async with store.read() as s:
            from sqlalchemy import text

            rows, size = (await s.execute(text("SELECT count(*), sum(length(points)) FROM series_history"))).one()
    finally:
        await store.close()
    fine = written.labels("fine")._value.get()
    coarse = written.labels("coarse")._value.get()
    return {
        "database": url.split(":", 1)[0],
        "series": series,
        "minutes": minutes,
        "sampling_tick_ms_median": round(statistics.median(sample_only) * 1000, 2),
        "sampling_tick_ms_p99": round(sorted(sample_only)[int(len(sample_only) * 0.99)] * 1000, 2),
        "fine_write_tick_ms_median": round(statistics.median(fine_ticks) * 1000, 1) if fine_ticks else None,
        "fine_and_coarse_write_tick_ms_median": round(statistics.median(coarse_ticks) * 1000, 1)
        if coarse_ticks
        else None,
        "upserts_per_minute": round((fine + coarse) / minutes),
        "rows": rows,
        "bytes": size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--minutes", type=int, default=20)
    ap.add_argument("--database", default=None, help="a database URL (default: a new SQLite file)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        url = args.database or f"sqlite:///{d}/bench.db"
        print(json.dumps(asyncio.run(run(args.series, args.minutes, url)), indent=2))


if __name__ == "__main__":
    main()
