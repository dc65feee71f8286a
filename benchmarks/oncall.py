"""Who is on call: latency of ``oncall(at)`` and the time to list a year of final shifts (in process, one thread).

The schedule (Europe/Berlin, so that both DST changes are inside the year) has three layers: a weekly
rotation of five people, a daily business-hours layer (Mon-Fri 09:00-17:00) of three, and a 12-hour
weekend layer of two; 50 overrides of 1-48 hours are spread over the year, a third of them with
``replaces``. Reported: median and p99 of ``oncall`` over random instants of 2026 (each call looks
up its shift's bounds, as ``GET /api/v1/oncall`` does), and the time of ``final_shifts`` and
``handoffs`` over the whole year (median of a few runs).

Run alone with ``.venv/bin/python benchmarks/oncall.py``.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile, result  # noqa: E402
from fsincident.escalation.oncall import (  # noqa: E402
    Layer,
    Override,
    Restriction,
    Schedule,
    final_shifts,
    handoffs,
    oncall,
)

YEAR = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
INSTANTS = 3000
OVERRIDES = 50
RUNS = 5


def schedule() -> Schedule:
    return Schedule(
        "bench",
        "Europe/Berlin",
        (
            Layer(1, "weekly", None, 0, clock(9), date(2025, 12, 1), ("ann", "ben", "cat", "dan", "eve")),
            Layer(
                2,
                "daily",
                None,
                None,
                clock(9),
                date(2025, 12, 1),
                ("fay", "gus", "hal"),
                (Restriction(frozenset(range(5)), clock(9), clock(17)),),
            ),
            Layer(
                3,
                "every",
                timedelta(hours=12),
                None,
                clock(8),
                date(2025, 12, 1),
                ("ivy", "jon"),
                (Restriction(frozenset({5, 6}), clock(0), clock(0)),),
            ),
        ),
    )


def overrides(rnd: random.Random, n: int = OVERRIDES) -> list[Override]:
    people = ("ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal", "ivy", "jon")
    out = []
    for i in range(n):
        start = YEAR[0] + timedelta(minutes=rnd.randrange(0, 365 * 1440))
        length = timedelta(minutes=rnd.randrange(60, 48 * 60))
        replaces = rnd.choice(people) if i % 3 == 0 else None
        out.append(Override(i + 1, rnd.choice(("sub1", "sub2", *people)), start, start + length, replaces))
    return out


def _timed(fn, runs: int = RUNS) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, value = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def run() -> list[dict[str, object]]:
    rnd = random.Random(5)
    sch, ovs = schedule(), overrides(rnd)
    span = int((YEAR[1] - YEAR[0]).total_seconds())
    instants = [YEAR[0] + timedelta(seconds=rnd.randrange(span)) for _ in range(INSTANTS)]
    rows = []
    for label, overs in (("", ovs), ("_no_overrides", [])):
        lat = []
        for at in instants:
            t0 = time.perf_counter()
            oncall(sch, overs, at)
            lat.append((time.perf_counter() - t0) * 1e6)
        rows.append(result(f"oncall{label}_median", statistics.median(lat), "us", layers=3, overrides=len(overs)))
        rows.append(result(f"oncall{label}_p99", percentile(lat, 99), "us", samples=len(lat)))
    seconds, shifts = _timed(lambda: final_shifts(sch, ovs, *YEAR))
    rows.append(result("final_shifts_year", seconds * 1000, "ms", shifts=len(shifts)))  # type: ignore[arg-type]
    seconds, changes = _timed(lambda: handoffs(sch, ovs, *YEAR))
    rows.append(result("handoffs_year", seconds * 1000, "ms", handoffs=len(changes)))  # type: ignore[arg-type]
    return rows


if __name__ == "__main__":
    rows = run()
    width = max(len(str(r["name"])) for r in rows)
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in ("name", "value", "unit")}
        print(f"{r['name']!s:<{width}}  {r['value']:>10.1f}  {r['unit']}  {extra}")
