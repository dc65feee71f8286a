"""The capacity report: hand-computed exhaustion times on linear series, thresholds and directions read from the rule,
selectors, offsets and query rules, ranking and limits, missing or failing history, the trend chart, and hypothesis
properties: a predict_linear rule fires exactly when its row's time to exhaustion is within the horizon, and time_to
and predict_linear agree on the same line."""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from fsincident import config as config_mod
from fsincident.analytics.capacity import (
    capacity_chart,
    capacity_report,
    chart_title,
    duration_words,
    projection,
    watched,
)
from fsincident.config import Config
from fsincident.core import FsIncidentError, Labels
from fsincident.expr import Caches, MetricHistory, Vector
from fsincident.plugins import Snapshot
from tests.helpers import write_config

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
T_NOW = NOW.timestamp()
ROOT = Labels({"mount": "/"})
VAR = Labels({"mount": "/var"})
HOME = Labels({"mount": "/home"})

Fn = Callable[[float], float]


def line(at_now: float, per_hour: float) -> Fn:
    """A linear series: ``at_now`` at NOW, changing ``per_hour`` per hour."""
    return lambda t: at_now + per_hour * (t - T_NOW) / 3600.0


@dataclass
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float, float, float]]


@dataclass
class FakeHistory:
    """HistoryService's read surface: 1-minute buckets (named by their start, holding the average of a linear
    function, i.e. its value in the middle) of ``series[(source, metric)][labels] = fn``."""

    series: dict[tuple[str, str], dict[Labels, Fn]] = field(default_factory=dict)
    kind: str = "host"
    step: float = 60.0
    fail: bool = False
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    queries: dict[str, dict[Labels, Fn]] = field(default_factory=dict)

    async def range(self, source, metric, matchers=(), *, start, end, max_points=400):
        self.calls.append((source, metric, tuple(matchers), start, end, max_points))
        if self.fail:
            raise FsIncidentError("the history could not be read: OperationalError")
        out = []
        for labels, fn in self.series.get((source, metric), {}).items():
            if not all(m.matches(labels.get(m.name, "")) for m in matchers):
                continue
            t = math.ceil(start.timestamp() / self.step) * self.step
            pts = []
            while t + self.step <= end.timestamp():  # the open bucket is not written yet
                v = fn(t + self.step / 2)
                pts.append((t, v, v, v))
                t += self.step
            out.append(Series(dict(labels), pts))
        return out

    def source_kind(self, source: str) -> str | None:
        return self.kind

    async def query_range(self, source, promql, start, end, step):
        self.calls.append((source, promql, start, end, step))
        out = []
        for labels, fn in self.queries.get(promql, {}).items():
            ts = np.arange(start.timestamp(), end.timestamp() + 1e-9, step)
            out.append((labels, [(float(t), fn(float(t))) for t in ts]))
        return out


def load(tmp_path: Path, rules: str, sources: str = "  - {name: node, type: host, interval: 10s}\n") -> Config:
    main = "listen: 127.0.0.1:9999\nsources:\n" + sources
    return config_mod.load(write_config(tmp_path / "cfg", main, {"r.yaml": rules}))


def mk(alert: str, expr: str, **fields: str) -> dict[str, str]:
    return {"alert": alert, "expr": expr, **fields}


def rules_yaml(*rules: dict[str, str], source: str = "node") -> str:
    body = "".join(f"      - {json.dumps(x)}\n" for x in rules)  # JSON is YAML
    return f"groups:\n  - name: cap\n    source: {source}\n    rules:\n{body}"


def snapshots(metrics: dict[str, dict[Labels, Fn]], source: str = "node", at: datetime = NOW):
    values = {m: {lab: fn(at.timestamp()) for lab, fn in s.items()} for m, s in metrics.items()}
    snap = Snapshot(source, at=at, metrics=values)
    return {source: snap}.get


async def report(cfg: Config, metrics: dict[str, dict[Labels, Fn]], history: Any = "fake", **kw) -> list[dict]:
    if history == "fake":
        history = FakeHistory({("node", m): s for m, s in metrics.items()})
    return await capacity_report(cfg, snapshots(metrics), history, NOW, **kw)


def by(rows: list[dict], **labels: str) -> dict:
    [row] = [r for r in rows if r["labels"] == labels]
    return row


# ------------------------------------------------------------------------------------------------ watched calls


def test_watched_finds_every_capacity_call_with_its_comparison(tmp_path):
    cfg = load(
        tmp_path,
        rules_yaml(
            mk("Full", 'predict_linear(disk_free, "6h", "4h") < 0'),
            mk("Soon", 'time_to(select(\'disk_free{mount="/"}\'), 0, "1h") < 3600 and up > 0'),
            mk("Flipped", '0 > predict_linear(disk_free, "1h", "1h")'),
            mk("Nested", 'min(predict_linear(disk_free, "1h", "1h"), by="mount") < 0'),
            mk("Plain", "disk_free < 10"),
        ),
    )
    ws = watched(cfg)
    assert [(w.rule.key, w.call.name, w.text) for w in ws] == [
        ("cap/Full", "predict_linear", 'predict_linear(disk_free, "6h", "4h")'),
        ("cap/Soon", "time_to", 'time_to(select(\'disk_free{mount="/"}\'), 0, "1h")'),
        ("cap/Flipped", "predict_linear", 'predict_linear(disk_free, "1h", "1h")'),
        ("cap/Nested", "predict_linear", 'predict_linear(disk_free, "1h", "1h")'),
    ]
    assert [w.compare is not None for w in ws] == [True, True, True, False]
    assert [w.call_left for w in ws] == [True, True, False, False]


async def test_no_capacity_rules_no_rows_and_no_reads(tmp_path):
    cfg = load(tmp_path, rules_yaml(mk("Plain", "disk_free < 10")))
    hist = FakeHistory()
    assert await capacity_report(cfg, snapshots({}), hist, NOW) == []
    assert hist.calls == []


# ------------------------------------------------------------------------------------------------ hand-computed rows


async def test_predict_linear_rows_hand_computed(tmp_path):
    cfg = load(tmp_path, rules_yaml(mk("DiskFull", 'predict_linear(disk_free, "6h", "4h") < 0', severity="critical")))
    rows = await report(cfg, {"disk_free": {ROOT: line(100, -10), VAR: line(50, 1), HOME: line(7, 0)}})
    assert [r["labels"] for r in rows] == [{"mount": "/"}, {"mount": "/home"}, {"mount": "/var"}]
    r = by(rows, mount="/")
    # 100 now, falling 10/h: reaches 0 in exactly 10 h; the rule's prediction 4 h ahead is 60
    assert r["seconds_to_exhaustion"] == pytest.approx(36000, abs=1e-6)
    assert r["exhausted_at"] == "2026-12-01T22:00:00Z"
    assert r["trend_per_hour"] == pytest.approx(-10)
    assert r["current"] == pytest.approx(100)
    assert r["value"] == pytest.approx(60)
    assert r["threshold"] == 0.0
    assert r["horizon_seconds"] == 4 * 3600 and r["window_seconds"] == 6 * 3600
    assert {k: r[k] for k in ("rule", "source", "metric", "function", "severity", "call", "query")} == {
        "rule": "cap/DiskFull",
        "source": "node",
        "metric": "disk_free",
        "function": "predict_linear",
        "severity": "critical",
        "call": 'predict_linear(disk_free, "6h", "4h")',
        "query": None,
    }
    assert r["expr"] == 'predict_linear(disk_free, "6h", "4h") < 0'
    rising, flat = by(rows, mount="/var"), by(rows, mount="/home")
    assert rising["seconds_to_exhaustion"] is None and rising["exhausted_at"] is None
    assert rising["trend_per_hour"] == pytest.approx(1)
    assert flat["seconds_to_exhaustion"] is None and flat["trend_per_hour"] == 0.0 and flat["current"] == 7.0


async def test_time_to_rows_use_the_call_value_and_the_horizon_it_is_compared_with(tmp_path):
    cfg = load(tmp_path, rules_yaml(mk("Soon", 'time_to(used_percent, 90, "1h") < 7200')))
    rows = await report(
        cfg,
        {"used_percent": {ROOT: line(80, 2), VAR: line(90.5, 1), HOME: line(60, -1), Labels({"m": "/x"}): line(95, 1)}},
    )
    r = by(rows, mount="/")
    assert r["seconds_to_exhaustion"] == pytest.approx(5 * 3600, abs=1e-6)  # 80 → 90 at 2/h
    assert r["value"] == pytest.approx(5 * 3600, abs=1e-6)
    assert r["threshold"] == 90.0 and r["horizon_seconds"] == 7200.0 and r["function"] == "time_to"
    assert by(rows, mount="/var")["seconds_to_exhaustion"] == 0.0  # crossed 90 inside the window
    assert by(rows, mount="/home")["seconds_to_exhaustion"] is None  # moving away
    assert by(rows, m="/x")["seconds_to_exhaustion"] is None  # beyond it for the whole window: the call is NaN
    assert [r["labels"] for r in rows[:2]] == [{"mount": "/var"}, {"mount": "/"}]


@pytest.mark.parametrize(
    ("expr", "at_now", "per_hour", "seconds"),
    [
        ('predict_linear(used, "1h", "1h") > 100', 90, 5, 7200),  # rising to a ceiling
        ('predict_linear(used, "1h", "1h") > 100', 90, -5, None),  # falling away from it
        ('predict_linear(used, "1h", "1h") >= 100', 120, 1, 0.0),  # already past: exhausted now
        ('100 < predict_linear(used, "1h", "1h")', 90, 5, 7200),  # written the other way round
        ('0 > predict_linear(used, "1h", "1h")', 10, -5, 7200),
        ('0 > predict_linear(used, "1h", "1h")', 10, 5, None),
        ('predict_linear(used, "1h", "1h") != 0', 10, -5, None),  # no direction: no exhaustion
        ('predict_linear(used, "1h", "1h") / 2 < 0', 10, -5, None),  # not compared directly: no threshold
    ],
)
async def test_predict_linear_direction_comes_from_the_comparison(tmp_path, expr, at_now, per_hour, seconds):
    cfg = load(tmp_path, rules_yaml(mk("A", expr)))
    [r] = await report(cfg, {"used": {ROOT: line(at_now, per_hour)}})
    if seconds is None:
        assert r["seconds_to_exhaustion"] is None
    else:
        assert r["seconds_to_exhaustion"] == pytest.approx(seconds, abs=1e-6)


async def test_threshold_from_another_series_matched_by_labels(tmp_path):
    cfg = load(tmp_path, rules_yaml(mk("A", 'predict_linear(disk_free, "6h", "1d") < disk_size * 0.1')))
    free = {ROOT: line(300, -10), VAR: line(300, -10)}
    size = {ROOT: line(1000, 0), VAR: line(2000, 0)}
    rows = await report(cfg, {"disk_free": free, "disk_size": size})
    root, var = by(rows, mount="/"), by(rows, mount="/var")
    assert root["threshold"] == pytest.approx(100) and root["seconds_to_exhaustion"] == pytest.approx(20 * 3600)
    assert var["threshold"] == pytest.approx(200) and var["seconds_to_exhaustion"] == pytest.approx(10 * 3600)
    assert rows[0] is var


@pytest.mark.parametrize(
    ("expr", "threshold"),
    [
        ('predict_linear(disk_free, "6h", "1d") < disk_size * 0.1', None),  # labels differ: nothing pairs
        ('on("mount", predict_linear(disk_free, "6h", "1d") < disk_size * 0.1)', 100.0),
        ('ignoring("device", predict_linear(disk_free, "6h", "1d") < disk_size * 0.1)', 100.0),
    ],
)
async def test_threshold_series_pair_as_the_engine_pairs_them(tmp_path, expr, threshold):
    cfg = load(tmp_path, rules_yaml(mk("A", expr)))
    size = {Labels({"mount": "/", "device": "sda"}): line(1000, 0)}
    [r] = await report(cfg, {"disk_free": {ROOT: line(300, -10)}, "disk_size": size})
    assert r["threshold"] == threshold
    assert (r["seconds_to_exhaustion"] is None) == (threshold is None)


async def test_selector_filters_series_and_is_passed_to_the_history(tmp_path):
    cfg = load(
        tmp_path,
        rules_yaml(mk("A", 'predict_linear(select(\'disk_free{mount="/"}\'), "6h", "4h") < 0')),
    )
    hist = FakeHistory({("node", "disk_free"): {ROOT: line(100, -10), VAR: line(100, -20)}})
    rows = await report(cfg, {"disk_free": {ROOT: line(100, -10), VAR: line(100, -20)}}, history=hist)
    assert [r["labels"] for r in rows] == [{"mount": "/"}]
    [(source, metric, matchers, start, end, _)] = hist.calls
    assert (source, metric, [str(m) for m in matchers]) == ("node", "disk_free", ['mount="/"'])
    assert (start, end) == (NOW - timedelta(hours=6), NOW)


async def test_offset_moves_the_window_and_counts_from_now(tmp_path):
    cfg = load(tmp_path, rules_yaml(mk("A", 'predict_linear(disk_free, "1h", "4h", offset="1h") < 0')))
    hist = FakeHistory({("node", "disk_free"): {ROOT: line(100, -10)}})
    [r] = await report(cfg, {"disk_free": {ROOT: line(100, -10)}}, history=hist)
    assert hist.calls[0][3] == NOW - timedelta(hours=2)  # window + offset
    assert r["seconds_to_exhaustion"] == pytest.approx(36000, abs=1e-6)  # the same line, still 10 h from now
    assert r["value"] == pytest.approx(70)  # the line 4 h after the window's end (an hour ago)
    assert r["current"] == 100.0  # the newest sample, not the window's


async def test_calls_on_one_metric_share_one_read_of_the_longest_window(tmp_path):
    cfg = load(
        tmp_path,
        rules_yaml(
            mk("A", 'predict_linear(disk_free, "6h", "4h") < 0'),
            mk("B", 'time_to(disk_free, 0, "1d") < 3600'),
        ),
    )
    hist = FakeHistory({("node", "disk_free"): {ROOT: line(100, -10)}})
    rows = await report(cfg, {"disk_free": {ROOT: line(100, -10)}}, history=hist)
    assert len(hist.calls) == 1 and hist.calls[0][3] == NOW - timedelta(days=1)
    assert sorted(r["rule"] for r in rows) == ["cap/A", "cap/B"]
    assert all(r["seconds_to_exhaustion"] == pytest.approx(36000, abs=1e-6) for r in rows)


async def test_ranking_none_last_and_limit(tmp_path):
    cfg = load(tmp_path, rules_yaml(mk("A", 'predict_linear(disk_free, "6h", "4h") < 0')))
    metrics = {"disk_free": {Labels({"mount": f"/m{i}"}): line(100, -(i % 5)) for i in range(20)}}
    rows = await report(cfg, metrics)
    secs = [r["seconds_to_exhaustion"] for r in rows]
    assert secs[:16] == sorted(secs[:16]) and all(s is not None for s in secs[:16])
    assert secs[16:] == [None] * 4
    top = await report(cfg, metrics, limit=3)
    assert top == rows[:3]
    assert await report(cfg, metrics, limit=0) == []


async def test_snapshot_only_without_history(tmp_path):
    cfg = load(tmp_path, rules_yaml(mk("A", 'predict_linear(disk_free, "6h", "4h") < 0')))
    [r] = await report(cfg, {"disk_free": {ROOT: line(100, -10)}}, history=None)
    assert r["current"] == 100.0
    assert r["trend_per_hour"] is None and r["seconds_to_exhaustion"] is None and r["value"] is None


async def test_failing_history_read_is_not_an_error(tmp_path):
    cfg = load(tmp_path, rules_yaml(mk("A", 'predict_linear(disk_free, "6h", "4h") < 0')))
    hist = FakeHistory(fail=True)
    [r] = await report(cfg, {"disk_free": {ROOT: line(100, -10)}}, history=hist)
    assert r["current"] == 100.0 and r["seconds_to_exhaustion"] is None


async def test_history_without_a_fresh_snapshot(tmp_path):
    """A failed or missing snapshot: the recorded buckets alone (the newest a minute old) still give the trend."""
    cfg = load(tmp_path, rules_yaml(mk("A", 'predict_linear(disk_free, "6h", "4h") < 0')))
    hist = FakeHistory({("node", "disk_free"): {ROOT: line(100, -10)}})
    [r] = await capacity_report(cfg, lambda _s: None, hist, NOW)
    assert r["seconds_to_exhaustion"] == pytest.approx(36000, abs=1e-6)
    assert r["current"] == pytest.approx(100 + 10 * 30 / 3600)  # the last complete bucket's middle, 30 s ago


async def test_prometheus_points_are_instants(tmp_path):
    """A range query's points are instants (not buckets): they are not moved to a bucket's middle."""
    cfg = load(
        tmp_path,
        rules_yaml(mk("A", 'predict_linear(disk_free, "6h", "4h") < 0'), source="prom"),
        sources="  - {name: prom, type: prometheus, url: 'http://127.0.0.1:9'}\n",
    )

    class Instants(FakeHistory):
        async def range(self, source, metric, matchers=(), *, start, end, max_points=400):
            fn = line(100, -10)
            ts = np.arange(start.timestamp(), end.timestamp() + 1, 60.0)
            return [Series({"mount": "/"}, [(float(t), fn(float(t)), 0.0, 0.0) for t in ts])]

    [r] = await capacity_report(cfg, lambda _s: None, Instants(kind="prometheus"), NOW)
    assert r["source"] == "prom" and r["current"] == pytest.approx(100)
    assert r["seconds_to_exhaustion"] == pytest.approx(36000, abs=1e-6)


async def test_query_rules_read_a_range_query_of_their_query(tmp_path):
    cfg = load(
        tmp_path,
        rules_yaml(
            mk("Q", 'predict_linear(value, "6h", "4h") < 0', query="node_filesystem_avail_bytes"),
            source="prom",
        ),
        sources="  - {name: prom, type: prometheus, url: 'http://127.0.0.1:9'}\n",
    )
    hist = FakeHistory(queries={"node_filesystem_avail_bytes": {ROOT: line(100, -10)}})
    [r] = await capacity_report(cfg, lambda _s: None, hist, NOW)
    assert r["metric"] == "value" and r["query"] == "node_filesystem_avail_bytes"
    assert r["seconds_to_exhaustion"] == pytest.approx(36000, abs=1e-6)
    no_range = FakeHistory()
    no_range.query_range = None  # type: ignore[assignment]
    assert await capacity_report(cfg, lambda _s: None, no_range, NOW) == []


# ------------------------------------------------------------------------------------------------ properties


class _Ctx:
    def __init__(self, hist: MetricHistory):
        self.now, self.lookback, self.cache, self.seen, self._h = T_NOW, None, Caches(), 0, hist

    def metric(self, name: str) -> MetricHistory | None:
        return self._h if name == "x" else None


def _engine_fires(cfg: Config, fn: Fn) -> bool:
    """Whether the rule's whole expression (the daemon's engine) fires for the series on the same data."""
    rule = cfg.rules[0]
    hist = MetricHistory(6 * 3600 + 120, exact=True)
    t = math.ceil((T_NOW - 6 * 3600) / 60) * 60
    while t + 60 <= T_NOW:
        hist.ingest(t + 30, {ROOT: fn(t + 30)})
        t += 60
    hist.ingest(T_NOW, {ROOT: fn(T_NOW)})
    out = rule.expr.evaluate(_Ctx(hist))
    assert isinstance(out, Vector)
    return bool(np.any(~np.isnan(out.values)))


_CONFIGS: dict[tuple[str, str], Config] = {}


def _config(tmp_path_factory, expr: str) -> Config:
    key = (str(tmp_path_factory.getbasetemp()), expr)
    if key not in _CONFIGS:
        _CONFIGS[key] = load(tmp_path_factory.mktemp("cfg"), rules_yaml(mk("A", expr)))
    return _CONFIGS[key]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    at_now=st.floats(-500, 500),
    per_hour=st.floats(-100, 100).filter(lambda x: abs(x) > 1e-3),
    threshold=st.floats(-500, 500),
    op=st.sampled_from(["<", ">", "<=", ">="]),
    horizon=st.sampled_from(["30m", "4h", "1d"]),
)
def test_predict_linear_rule_fires_iff_exhaustion_within_horizon(
    tmp_path_factory, at_now, per_hour, threshold, op, horizon
):
    cfg = _config(tmp_path_factory, f'predict_linear(x, "6h", "{horizon}") {op} {threshold!r}')
    fn = line(at_now, per_hour)
    [r] = asyncio.run(capacity_report(cfg, snapshots({"x": {ROOT: fn}}), FakeHistory({("node", "x"): {ROOT: fn}}), NOW))
    horizon_s = r["horizon_seconds"]
    s = r["seconds_to_exhaustion"]
    assume(s is None or abs(s - horizon_s) > 1.0)  # not on the boundary (float rounding)
    assume(abs(at_now - threshold) > 1e-6)
    up = op.startswith(">")
    past = at_now > threshold if up else at_now < threshold
    # Beyond the threshold and recovering: exhausted now (0), but the rule may predict a recovery in time.
    assume(not past or (per_hour > 0) == up)
    assert _engine_fires(cfg, fn) == (s is not None and s <= horizon_s)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    at_now=st.floats(-500, 500),
    per_hour=st.floats(-100, 100).filter(lambda x: abs(x) > 1e-2),
    distance=st.floats(1, 1000),
)
def test_time_to_and_predict_linear_agree_on_the_same_line(tmp_path_factory, at_now, per_hour, distance):
    threshold = at_now + math.copysign(distance, per_hour)  # ahead of the series in its direction of travel
    op = ">" if per_hour > 0 else "<"
    cfg_p = _config(tmp_path_factory, f'predict_linear(x, "6h", "1h") {op} {threshold!r}')
    cfg_t = _config(tmp_path_factory, f'time_to(x, {threshold!r}, "6h") < 3600')
    fn = line(at_now, per_hour)
    rows = [
        asyncio.run(capacity_report(c, snapshots({"x": {ROOT: fn}}), FakeHistory({("node", "x"): {ROOT: fn}}), NOW))[0]
        for c in (cfg_p, cfg_t)
    ]
    p, t = (r["seconds_to_exhaustion"] for r in rows)
    expected = distance / abs(per_hour) * 3600
    assert p == pytest.approx(expected, rel=1e-6, abs=1e-3)
    assert t == pytest.approx(expected, rel=1e-6, abs=1e-3)


# ------------------------------------------------------------------------------------------------ charts


def test_duration_words():
    assert duration_words(0) == "0s"
    assert duration_words(45.9) == "45s"
    assert duration_words(3600) == "1h"
    assert duration_words(3660) == "1h 1m"
    assert duration_words(2 * 86400 + 5 * 3600 + 59) == "2d 5h"
    assert duration_words(math.inf) == "0s"


def _row(**kw: Any) -> dict[str, Any]:
    base = {
        "rule": "cap/DiskFull",
        "source": "node",
        "metric": "disk_free",
        "labels": {"mount": "/"},
        "query": None,
        "threshold": 0.0,
        "current": 100.0,
        "trend_per_hour": -10.0,
        "seconds_to_exhaustion": 36000.0,
    }
    return {**base, **kw}


def test_projection_reaches_the_threshold_at_exhaustion():
    pts, mark = projection(_row(), NOW, timedelta(days=2))
    assert pts == [(NOW, pytest.approx(100.0)), (NOW + timedelta(hours=10), pytest.approx(0.0))]
    assert mark == NOW + timedelta(hours=10)
    far, mark = projection(_row(trend_per_hour=-0.01, seconds_to_exhaustion=36e6), NOW, timedelta(days=2))
    assert far[-1][0] == NOW + timedelta(days=4) and mark is None  # not stretched past two lookbacks
    away, mark = projection(_row(trend_per_hour=5.0, seconds_to_exhaustion=None), NOW, timedelta(days=2))
    assert away == [(NOW, 100.0), (NOW + timedelta(days=1), pytest.approx(220.0))] and mark is None
    assert projection(_row(trend_per_hour=None), NOW, timedelta(days=2)) == ([], None)


def test_chart_title():
    assert chart_title(_row()) == 'cap/DiskFull: disk_free{mount="/"} — threshold in 10h'
    assert chart_title(_row(seconds_to_exhaustion=None, labels={})).endswith("disk_free — not heading to the threshold")
    assert chart_title(_row(seconds_to_exhaustion=0.0)).endswith("threshold reached")
    assert len(chart_title(_row(labels={"x": "y" * 300}))) == 110


async def test_capacity_chart_is_a_readable_png(tmp_path):
    cfg = load(tmp_path, rules_yaml(mk("DiskFull", 'predict_linear(disk_free, "6h", "4h") < 0')))
    hist = FakeHistory({("node", "disk_free"): {ROOT: line(100, -10), VAR: line(100, 0)}})
    rows = await capacity_report(cfg, snapshots({"disk_free": {ROOT: line(100, -10)}}), hist, NOW)
    png = await capacity_chart(by(rows, mount="/"), hist, NOW)
    assert png is not None and png.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(png)) as img:
        assert img.size == (800, 300)
    _, _, matchers, start, end, _ = hist.calls[-1]
    assert [str(m) for m in matchers] == ['mount="/"'] and end - start == timedelta(days=2)
    assert await capacity_chart(by(rows, mount="/"), hist, NOW) == png  # deterministic


async def test_capacity_chart_none_without_data():
    assert await capacity_chart(_row(), None, NOW) is None
    assert await capacity_chart(_row(), FakeHistory(), NOW) is None
    assert await capacity_chart(_row(), FakeHistory(fail=True), NOW) is None


async def test_capacity_chart_of_a_query_row():
    hist = FakeHistory(queries={"avail": {ROOT: line(100, -10)}})
    png = await capacity_chart(_row(query="avail", metric="value"), hist, NOW, lookback=timedelta(hours=6))
    assert png is not None and png.startswith(b"\x89PNG")
