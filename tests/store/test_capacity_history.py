"""The capacity report over the real series history (SQLite and PostgreSQL): the recorded buckets of a falling and a
rising series, read back through ``HistoryService.range``, give the hand-computed time to exhaustion, and the chart
draws the recorded series."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from fsincident import config as config_mod
from fsincident.analytics.capacity import capacity_chart, capacity_report
from fsincident.config import HistoryOptions
from fsincident.core import FakeClock, Labels
from fsincident.history import HistoryService
from fsincident.obs import Metrics
from fsincident.plugins import Snapshot
from tests.helpers import write_config

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
OPTS = HistoryOptions(
    step=timedelta(seconds=10),
    keep=timedelta(hours=1),
    coarse_step=timedelta(minutes=1),
    coarse_keep=timedelta(days=1),
)
ROOT, VAR = Labels({"mount": "/"}), Labels({"mount": "/var"})


def free(labels: Labels, t: float) -> float:
    """/ falls 60 per hour from 100 at T0 (empty at T0 + 100 min), /var rises 6 per hour from 50."""
    h = (t - T0.timestamp()) / 3600
    return 100 - 60 * h if labels == ROOT else 50 + 6 * h


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


async def test_capacity_over_recorded_history(store, clock, tmp_path):
    rule = {"alert": "DiskFull", "expr": 'predict_linear(disk_free, "30m", "1h") < 0', "severity": "critical"}
    cfg = config_mod.load(
        write_config(
            tmp_path / "cfg",
            "listen: 127.0.0.1:9999\nsources:\n  - {name: node, type: host, interval: 10s}\n",
            {"r.yaml": f"groups:\n  - name: disk\n    source: node\n    rules:\n      - {json.dumps(rule)}\n"},
        )
    )
    snaps: dict[str, Snapshot] = {}
    svc = HistoryService(store, clock, Metrics(), snaps.get)
    svc.configure(OPTS, {"node": {"disk_free"}}, {"node": "host"})
    # one sample in the middle of every 10 s bucket for 40 minutes
    for i in range(240):
        clock._now = T0 + timedelta(seconds=10 * i + 5)
        t = clock.now().timestamp()
        snaps["node"] = Snapshot(
            "node", at=clock.now(), metrics={"disk_free": {ROOT: free(ROOT, t), VAR: free(VAR, t)}}
        )
        await svc.tick(clock.now())
    now = T0 + timedelta(minutes=40, seconds=2)
    clock._now = now
    await svc.tick(now)

    rows = await capacity_report(cfg, snaps.get, svc, now)
    assert [r["labels"] for r in rows] == [{"mount": "/"}, {"mount": "/var"}]
    root, var = rows
    # 100 - 60 * (40m2s) / 60m = 59.97 left at 1/s: empty at T0 + 100 min
    assert root["seconds_to_exhaustion"] == pytest.approx((T0 + timedelta(minutes=100) - now).total_seconds(), abs=1)
    assert root["exhausted_at"].startswith("2026-03-02T01:40:0")
    assert root["trend_per_hour"] == pytest.approx(-60, rel=1e-4)
    assert root["current"] == pytest.approx(free(ROOT, now.timestamp() - 7), abs=1e-3)  # the last snapshot
    assert var["seconds_to_exhaustion"] is None and var["trend_per_hour"] == pytest.approx(6, rel=1e-3)

    png = await capacity_chart(root, svc, now, lookback=timedelta(hours=1))
    assert png is not None
    with Image.open(io.BytesIO(png)) as img:
        assert img.size == (800, 300)
