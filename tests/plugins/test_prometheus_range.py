"""History reads on a ``prometheus`` source: range queries and the metric catalog against the real Prometheus
(Debian's, the fixture of test_prometheus), through the daemon's SourceRunner; errors never show credentials."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from fsincident.config import HistoryOptions
from fsincident.core import SystemClock
from fsincident.history import HistoryError, HistoryService
from fsincident.matchers import Matcher
from fsincident.obs import Metrics
from fsincident.sources.prometheus import PrometheusOptions
from fsincident.sources.runner import SourceRunner
from fsincident.store import Store
from tests.helpers import free_port
from tests.plugins.test_prometheus import PASSWORD, USER, prom  # noqa: F401 (the module-scoped fixture)


@pytest.fixture
async def history(prom, tmp_path):  # noqa: F811
    runner = SourceRunner(SystemClock(), Metrics(), lambda name: None)
    opts = [
        PrometheusOptions(
            name="prom", type="prometheus", url=prom.url, basic_auth={"username": USER, "password": PASSWORD}
        ),
        PrometheusOptions(name="down", type="prometheus", url=f"http://{USER}:url-password-77@127.0.0.1:{free_port()}"),
    ]
    await runner.configure(tuple(opts))
    store = Store(f"sqlite:///{tmp_path}/h.db")
    await store.upgrade()
    svc = HistoryService(
        store,
        SystemClock(),
        Metrics(),
        runner.snapshot,
        query_range=runner.query_range,
        label_values=runner.label_values,
    )
    svc.configure(HistoryOptions(), {}, {"prom": "prometheus", "down": "prometheus"})
    try:
        yield svc
    finally:
        await runner.close()
        await store.close()


async def test_range_reads_run_a_range_query_within_max_points(history, prom):  # noqa: F811
    orders_only = [Matcher.make("queue", "=", "orders")]
    for _ in range(100):  # the fixture's Prometheus has just started: wait until a step point has data
        end = datetime.now(UTC)
        start = end - timedelta(seconds=60)
        found = await history.range("prom", "queue_depth", orders_only, start=start, end=end, max_points=10)
        if found:
            break
        await asyncio.sleep(0.2)
    (orders,) = found
    assert orders.labels == {"queue": "orders", "job": "app", "instance": f"127.0.0.1:{prom.exposition.port}"}
    assert 1 <= len(orders.points) <= 10
    assert all(p[1:] == (5.0, 5.0, 5.0) for p in orders.points)
    assert [p[0] for p in orders.points] == sorted(p[0] for p in orders.points)
    both = await history.range(
        "prom", "queue_depth", [Matcher.make("queue", "=~", "orders|mail")], start=start, end=end
    )
    assert [d.labels["queue"] for d in both] == ["mail", "orders"]
    frames = await history.frames("prom", ["queue_depth"], start=start, end=end)
    assert frames and {lab["queue"]: v for lab, v in frames[-1][1]["queue_depth"].items()} == {"orders": 5, "mail": 3}
    catalog = await history.catalog()
    assert {"queue_depth", "other_depth", "up"} <= set(catalog["prom"]) and catalog["down"] == []


async def test_range_errors_are_readable_and_hold_no_secret(history):
    end = datetime.now(UTC)
    with pytest.raises(HistoryError) as exc:
        await history.range("down", "queue_depth", start=end - timedelta(minutes=5), end=end)
    assert "source 'down'" in exc.value.message and "url-password-77" not in exc.value.message
    with pytest.raises(HistoryError, match="bad_data"):
        await history.range(
            "prom",
            "queue_depth",
            [Matcher.make("queue", "=", "x")],
            start=end - timedelta(days=400),
            end=end,
            max_points=20_000,
        )
