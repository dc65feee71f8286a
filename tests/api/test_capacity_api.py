"""The capacity section through the real daemon: a scraped series that falls steadily is recorded by the series
history, and ``GET /api/v1/analytics/capacity`` ranks it first with its time to exhaustion and trend; a steady
series is listed last, not heading anywhere; the CSV export has the rows."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from fsincident.analytics.capacity import capacity_report
from tests.api.conftest import Api, running_api
from tests.helpers import Exposition, Receiver, write_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

RATE = 2.0  # disk_free{mount="/"} falls this much per second, from START
START = 1000.0


def _config(directory: Path, database: str, port: int, exposition: Exposition, receiver: Receiver) -> Path:
    return write_config(
        directory / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: {database}
        sources:
          - {{name: node, type: scrape, url: "{exposition.url}/metrics", interval: 1s}}
        history: {{step: 1s, keep: 1h, coarse_step: 60s}}
        channels:
          - {{name: ops, urls: ["{receiver.apprise_url("ops")}"]}}
        routes:
          - {{notify: ["channel:ops"]}}
        """,
        {
            "disk.yaml": """
            groups:
              - name: disk
                interval: 1s
                source: node
                rules:
                  - alert: DiskFull
                    expr: predict_linear(disk_free, "1m", "1h") < 0
                    severity: critical
                  - alert: QueueBacklog
                    expr: queue_depth > 100
            """
        },
    )


def _rows(body: Any) -> list[dict[str, Any]]:
    """The capacity rows of a section answer (a list, or an object holding one)."""
    if isinstance(body, dict):
        body = body.get("capacity", body.get("rows"))
    assert isinstance(body, list), body
    return body


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    async with running_api(tmp_path_factory.mktemp("capacity"), config=_config) as a:
        yield a


async def _feed(api: Api, t0: float) -> None:
    """Serve a steadily falling and a steady series until cancelled."""
    while True:
        api.exposition.set("disk_free", START - RATE * (time.time() - t0), mount="/")
        api.exposition.set("disk_free", 500.0, mount="/var")
        await asyncio.sleep(0.2)


async def test_capacity_ranks_the_falling_series_first(api: Api):
    t0 = time.time()
    feed = asyncio.create_task(_feed(api, t0))
    try:
        await asyncio.sleep(12)  # a minute's window needs a few recorded buckets to fit a line
        for _ in range(100):  # the history writes buckets as they complete (bounded wait)
            d = api.daemon
            direct = await capacity_report(d.config, d.sources.snapshot, d.history, d.clock.now())
            if len(direct) == 2 and direct[0]["trend_per_hour"] is not None:
                break
            await asyncio.sleep(0.2)
        status, body, _ = await api.call("GET", "/api/v1/analytics/capacity", scope="read")
        assert status == 200, body
        rows = _rows(body)
        left = START / RATE - (time.time() - t0)
    finally:
        feed.cancel()
    assert [r["labels"]["mount"] for r in direct] == ["/", "/var"]  # (with the scrape's job and instance)
    root, var = rows
    assert root["labels"]["mount"] == "/" and var["labels"]["mount"] == "/var"
    assert root["rule"] == "disk/DiskFull" and root["function"] == "predict_linear" and root["severity"] == "critical"
    assert root["threshold"] == 0.0 and root["source"] == "node" and root["metric"] == "disk_free"
    # The trend is about -2/s and the series hits 0 about START / RATE seconds after t0.
    assert root["trend_per_hour"] == pytest.approx(-RATE * 3600, rel=0.15)
    assert root["seconds_to_exhaustion"] == pytest.approx(left, abs=15)
    assert root["exhausted_at"].endswith("Z")
    assert var["seconds_to_exhaustion"] is None and var["trend_per_hour"] == pytest.approx(0, abs=1e-6)

    status, body, _ = await api.call("GET", "/api/v1/analytics/report?sections=capacity", scope="read")
    assert status == 200, body
    assert [r["labels"]["mount"] for r in body["capacity"]] == ["/", "/var"]

    status, text, headers = await api.call("GET", "/api/v1/analytics/capacity?format=csv", scope="read")
    assert status == 200 and headers["Content-Type"].startswith("text/csv"), text
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 2 and table[0]["rule"] == "disk/DiskFull"


async def test_capacity_needs_a_read_token(api: Api):
    status, body, _ = await api.call("GET", "/api/v1/analytics/capacity")
    assert status == 401, body
