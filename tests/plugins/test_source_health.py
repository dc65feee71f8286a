"""Source health with the real daemon: the ``up`` series, per-rule ``on_error``/``nodata`` policies, the built-in
``SourceDown`` alert, and a slow source that must not hold up another group's evaluation."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fsincident import config as config_mod
from fsincident import plugins
from fsincident.app import Daemon
from fsincident.core import Labels, Sample, SourceError
from tests.helpers import DaemonProcess, Exposition, Receiver, ThreadedServer, free_port, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def exp():
    e = Exposition().start()
    yield e
    e.stop()


@pytest.fixture
def rcv():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def daemons():
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.kill9()


def _start(
    daemons: list[DaemonProcess], tmp_path: Path, sources: str, rules: str, rcv: Receiver | None = None
) -> DaemonProcess:
    port = free_port()
    channel = f'channels:\n  - {{name: ops, urls: ["{rcv.apprise_url("ops")}"]}}\n' if rcv else ""
    routes = "routes:\n  - {notify: ['channel:ops']}\n" if rcv else "routes:\n  - {notify: []}\n"
    cfg = write_config(
        tmp_path / "cfg",
        f"listen: 127.0.0.1:{port}\ndatabase: sqlite:///{tmp_path}/state.db\nsources:\n{sources}\n{channel}{routes}",
        {"rules.yaml": rules},
    )
    d = DaemonProcess(cfg, port)
    daemons.append(d)
    d.start()
    d.token = d.create_token("read")
    return d


def _rule(d: DaemonProcess, name: str) -> dict[str, Any]:
    status, body = d.api("GET", "/api/v1/rules")
    assert status == 200, body
    return next(r for g in body["groups"] for r in g["rules"] if r["name"] == name)


def _until(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def _by_name(incidents: list[dict[str, Any]], alertname: str) -> list[dict[str, Any]]:
    return [i for i in incidents if i["labels"].get("alertname") == alertname]


def _evaluations(d: DaemonProcess, name: str, n: int) -> dict[str, Any]:
    """Wait until rule ``name`` has been evaluated ``n`` more times; returns its last view."""
    seen: set[str] = set()

    def advanced() -> dict[str, Any] | None:
        r = _rule(d, name)
        seen.add(r["last_evaluation"])
        return r if len(seen) > n else None

    return _until(advanced, 15, f"{n} evaluations of {name}")


def test_keep_state_keeps_firing_through_an_outage_and_on_error_ok_resolves(tmp_path, exp, rcv, daemons):
    exp.set("queue_depth", 500, queue="orders")
    d = _start(
        daemons,
        tmp_path,
        f'  - {{name: app, type: scrape, url: "{exp.url}/metrics", interval: 1s}}',
        """
        groups:
          - name: app
            interval: 1s
            source: app
            rules:
              - alert: KeptThroughOutage
                expr: queue_depth > 100
              - alert: ResolvedOnError
                expr: queue_depth > 100
                on_error: ok
        """,
        rcv,
    )
    incs = d.wait_incidents(lambda i: len(i) == 2)
    kept_id = _by_name(incs, "KeptThroughOutage")[0]["id"]
    rcv.wait_for(lambda m: len(m) == 2)

    exp.status = 500  # the scrape fails from now on
    incs = d.wait_incidents(lambda i: _by_name(i, "ResolvedOnError")[0]["state"] == "resolved")
    rule = _evaluations(d, "KeptThroughOutage", 3)  # several cycles into the outage
    assert rule["state"] == "firing" and rule["health"] == "error"
    assert "HTTP 500" in rule["last_error"], rule["last_error"]
    assert _by_name(incs, "KeptThroughOutage")[0]["state"] == "triggered"

    exp.status = 200
    _until(lambda: _rule(d, "KeptThroughOutage")["health"] == "ok", 15, "the source to recover")
    # ResolvedOnError fires again: a resolved incident never reopens, so that is a new incident and page.
    incs = d.wait_incidents(lambda i: len(_by_name(i, "ResolvedOnError")) == 2)
    status, kept = d.api("GET", f"/api/v1/incidents/{kept_id}")
    assert status == 200 and kept["state"] == "triggered"
    assert [e["kind"] for e in kept["timeline"]].count("alert_resolved") == 0  # never resolved, not even briefly
    # Pages: KeptThroughOutage once (no resolve for the outage); ResolvedOnError trigger, resolve, trigger.
    # (SourceDown pages too, after 3 failed scrapes by default; it is tested below.)
    msgs = rcv.wait_for(lambda m: sum("ResolvedOnError" in x["title"] for x in m) == 3)
    titles = [m["title"] for m in msgs]
    assert [t.split()[0] for t in titles if "KeptThroughOutage" in t] == ["[TRIGGERED]"]
    assert [t.split()[0] for t in titles if "ResolvedOnError" in t] == ["[TRIGGERED]", "[RESOLVED]", "[TRIGGERED]"]


def test_on_error_alerting_and_nodata_alerting_open_incidents(tmp_path, exp, daemons):
    exp.set("queue_depth", 5, queue="orders")
    d = _start(
        daemons,
        tmp_path,
        f'  - {{name: app, type: scrape, url: "{exp.url}/metrics", interval: 1s}}',
        """
        groups:
          - name: app
            interval: 1s
            source: app
            rules:
              - alert: QueueCheck
                expr: queue_depth > 100
                on_error: alerting
              - alert: LatencyCheck
                expr: latency_seconds > 1
                nodata: alerting
              - alert: LatencyQuiet
                expr: latency_seconds > 1
        """,
    )
    # latency_seconds has no series at all: LatencyCheck says so, LatencyQuiet (nodata: ok) stays silent.
    incs = d.wait_incidents(lambda i: len(i) >= 1)
    (nodata,) = incs
    assert nodata["labels"]["alertname"] == "LatencyCheck"
    assert nodata["labels"]["reason"] == "nodata"
    assert nodata["title"] == "LatencyCheck: no series of latency_seconds", nodata["title"]
    assert _rule(d, "LatencyQuiet")["state"] == "inactive"
    exp.set("latency_seconds", 0.2, path="/api")  # data arrives: the nodata alert resolves
    d.wait_incidents(lambda i: i[0]["state"] == "resolved")

    exp.status = 500
    incs = d.wait_incidents(lambda i: len(_by_name(i, "QueueCheck")) == 1)
    (err,) = _by_name(incs, "QueueCheck")
    assert err["labels"]["reason"] == "error"
    assert "detail" not in err["labels"]  # the message is an annotation, so a changing message is still one alert
    assert "returned HTTP 500" in err["title"], err["title"]  # ... and the summary, since the rule has none
    assert err["state"] == "triggered"
    assert len(_by_name(incs, "LatencyCheck")) == 1  # on_error keep_state (default): nothing new from the outage
    # The outage changes its face (500 -> 503): still the same one alert and incident, not a new page per message.
    exp.status = 503
    _until(lambda: "HTTP 503" in (_rule(d, "QueueCheck")["last_error"] or ""), 10, "the new error")
    _evaluations(d, "QueueCheck", 2)
    _, body = d.api("GET", "/api/v1/incidents")
    assert [i["state"] for i in _by_name(body["incidents"], "QueueCheck")] == ["triggered"], body

    exp.status = 200
    incs = d.wait_incidents(lambda i: _by_name(i, "QueueCheck")[0]["state"] == "resolved")
    assert len(_by_name(incs, "QueueCheck")) == 1


def test_up_series_and_source_down_follow_the_scrape(tmp_path, exp, rcv, daemons):
    exp.set("queue_depth", 5, queue="orders")
    # a 3 s source interval against the 2 s health check: SourceDown must fire after exactly 2 failures
    d = _start(
        daemons,
        tmp_path,
        f'  - {{name: app, type: scrape, url: "{exp.url}/metrics", interval: 3s, down_after: 2}}',
        """
        groups:
          - name: app
            interval: 1s
            source: app
            rules:
              - alert: ScrapeFailing
                expr: up == 0
              - alert: ScrapeWorking
                expr: up == 1
                severity: info
        """,
        rcv,
    )
    incs = d.wait_incidents(lambda i: len(i) == 1)
    assert incs[0]["labels"] == {"alertname": "ScrapeWorking", "job": "app", "severity": "info"}

    exp.status = 500
    incs = d.wait_incidents(lambda i: len(_by_name(i, "ScrapeFailing")) == 1)
    (failing,) = _by_name(incs, "ScrapeFailing")
    assert failing["labels"]["job"] == "app"
    assert not _by_name(incs, "SourceDown")  # one failure is not enough for down_after: 2
    rule = _rule(d, "ScrapeFailing")
    assert rule["health"] == "ok"  # a rule that reads only `up` is evaluated even while the source fails
    incs = d.wait_incidents(lambda i: len(_by_name(i, "SourceDown")) == 1, timeout=20)
    (down,) = _by_name(incs, "SourceDown")
    assert down["labels"] == {"alertname": "SourceDown", "source": "app", "severity": "warning"}
    assert "source app failed 2 times in a row" in down["title"], down["title"]
    assert _by_name(incs, "ScrapeWorking")[0]["state"] == "resolved"

    exp.status = 200
    incs = d.wait_incidents(
        lambda i: all(x["state"] == "resolved" for x in _by_name(i, "SourceDown") + _by_name(i, "ScrapeFailing")),
        timeout=20,
    )
    msgs = rcv.wait_for(lambda m: sum("RESOLVED" in x["title"] and "SourceDown" in x["title"] for x in m) == 1)
    assert sum("TRIGGERED" in x["title"] and "SourceDown" in x["title"] for x in msgs) == 1


class SlowServer(ThreadedServer):
    """Answers /metrics and /query only after ``delay`` seconds (or at ``stop``); counts requests in flight."""

    def __init__(self, delay: float):
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.released = False
        self._mu = threading.Lock()
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        app.router.add_get("/query", self._handle)
        super().__init__(app)

    async def _handle(self, request: web.Request) -> web.Response:
        with self._mu:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            deadline = time.monotonic() + self.delay
            while not self.released and time.monotonic() < deadline:  # noqa: ASYNC110 (set from the test thread)
                await asyncio.sleep(0.05)
            return web.Response(text="slow_metric 1\n", content_type="text/plain")
        finally:
            with self._mu:
                self.in_flight -= 1

    def stop(self) -> None:
        self.released = True  # let hanging requests end, so the server stops at once
        super().stop()


def test_slow_source_does_not_delay_another_group(tmp_path, exp, daemons):
    slow = SlowServer(delay=30).start()
    try:
        exp.set("queue_depth", 5, queue="orders")
        d = _start(
            daemons,
            tmp_path,
            f'  - {{name: slow, type: scrape, url: "{slow.url}/metrics", interval: 1s, timeout: 8s}}\n'
            f'  - {{name: fast, type: scrape, url: "{exp.url}/metrics", interval: 1s}}',
            """
            groups:
              - name: slow
                interval: 1s
                source: slow
                rules:
                  - alert: SlowMetric
                    expr: slow_metric > 0
              - name: fast
                interval: 1s
                source: fast
                rules:
                  - alert: QueueBacklog
                    expr: queue_depth > 100
            """,
        )
        _until(lambda: slow.in_flight > 0, 10, "the slow scrape to hang")
        # While every scrape of `slow` hangs until its 8 s timeout, `fast` keeps its 1 s rhythm ...
        t0 = time.monotonic()
        seen: set[str] = set()
        while time.monotonic() - t0 < 6:
            seen.add(_rule(d, "QueueBacklog")["last_evaluation"])
            time.sleep(0.1)
        assert len(seen) >= 4, f"the fast group was evaluated only {len(seen)} times in 6 s"
        # ... and fires on time: well inside one slow timeout (a loose bound; speed is for the benchmarks).
        exp.set("queue_depth", 500, queue="orders")
        t_flip = time.monotonic()
        incs = d.wait_incidents(lambda i: len(_by_name(i, "QueueBacklog")) == 1, timeout=10)
        assert time.monotonic() - t_flip < 5, "the fast rule waited for the slow source"
        assert slow.in_flight > 0  # the slow source was still hanging meanwhile
        rule = _until(
            lambda: "timed out" in ((r := _rule(d, "SlowMetric"))["last_error"] or "") and r,
            15,
            "the slow source to time out",
        )
        assert re.search(r"timed out", rule["last_error"]), rule["last_error"]
        assert rule["health"] == "error"
        assert not _by_name(incs, "SlowMetric")
    finally:
        slow.stop()


def test_no_policy_applies_before_the_first_collection(tmp_path, daemons):
    """A source slow to answer its first scrape is not an error: start-up pages nothing, and a restart
    neither resolves nor re-pages an alert that was firing."""
    slow = SlowServer(delay=2).start()
    try:
        d = _start(
            daemons,
            tmp_path,
            f'  - {{name: slow, type: scrape, url: "{slow.url}/metrics", interval: 1s, timeout: 5s}}',
            """
            groups:
              - name: slow
                interval: 1s
                source: slow
                rules:
                  - alert: AlertOnError
                    expr: slow_metric > 0
                    on_error: alerting
                  - alert: ResolveOnError
                    expr: slow_metric > 0
                    on_error: ok
            """,
        )
        incs = d.wait_incidents(lambda i: len(i) == 2)
        assert sorted(i["labels"]["alertname"] for i in incs) == ["AlertOnError", "ResolveOnError"]
        assert not any("reason" in i["labels"] for i in incs), incs
        assert d.stop() == 0
        d.start()
        _evaluations(d, "AlertOnError", 4)  # past the first (slow) collection after the restart
        _, body = d.api("GET", "/api/v1/incidents")
        assert [(i["id"], i["state"]) for i in body["incidents"]] == [(i["id"], "triggered") for i in incs]
    finally:
        slow.stop()


class SlowQueryOptions(plugins.SourceOptions):
    url: str


class SlowQuerySource:
    """A query-capable kind whose queries go to a (slow) local HTTP server, registered in-process by the test."""

    Options = SlowQueryOptions
    supports_query = True

    def __init__(self, options: SlowQueryOptions, context: plugins.SourceContext, **_: Any):
        self.options = options
        self._session: aiohttp.ClientSession | None = None

    async def collect(self, now: Any) -> list[Sample]:
        return []

    async def query(self, text: str, now: Any) -> list[Sample]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.options.timeout.seconds))
        try:
            async with self._session.get(self.options.url) as r:
                await r.read()
        except TimeoutError:
            raise SourceError("query timed out") from None
        return [Sample("value", Labels({"job": self.options.name}), 1.0)]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@pytest.fixture
def slow_query_kind():
    plugins.sources.register("slow_query_test", SlowQuerySource)
    yield
    plugins.sources._extra.pop("slow_query_test", None)  # keep the registry as the docs test expects it


async def test_slow_query_group_does_not_delay_another_group(tmp_path, exp, slow_query_kind):
    slow = SlowServer(delay=30).start()
    exp.set("queue_depth", 5, queue="orders")
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp_path}/state.db
        sources:
          - {{name: slowq, type: slow_query_test, url: "{slow.url}/query", interval: 1s, timeout: 8s}}
          - {{name: fast, type: scrape, url: "{exp.url}/metrics", interval: 1s}}
        """,
        {
            "rules.yaml": """
            groups:
              - name: slow
                interval: 1s
                source: slowq
                rules:
                  - alert: SlowQuery
                    query: anything
                    expr: value > 0
              - name: fast
                interval: 1s
                source: fast
                rules:
                  - alert: QueueBacklog
                    expr: queue_depth > 100
            """
        },
    )
    d = Daemon(config_mod.load(cfg))
    await d.start()
    try:

        def view(name: str) -> dict[str, Any]:
            return next(r for g in d.evaluator.rules_view() for r in g["rules"] if r["name"] == name)

        deadline = time.monotonic() + 10
        while slow.in_flight == 0 and time.monotonic() < deadline:  # noqa: ASYNC110 (another thread's counter)
            await asyncio.sleep(0.05)
        assert slow.in_flight == 1, "the slow group's query never started"
        seen: set[str] = set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6:  # inside the slow query's 8 s timeout
            seen.add(view("QueueBacklog")["last_evaluation"])
            await asyncio.sleep(0.1)
        assert len(seen) >= 4, f"the fast group was evaluated only {len(seen)} times in 6 s"
        assert view("SlowQuery")["last_evaluation"] is None  # still stuck in its first query
        # the slow group skips its ticks instead of piling up queries
        assert slow.max_in_flight == 1
        deadline = time.monotonic() + 15
        while "timed out" not in (view("SlowQuery")["last_error"] or "") and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        assert "query on source 'slowq' failed" in view("SlowQuery")["last_error"]
        assert "timed out" in view("SlowQuery")["last_error"]
    finally:
        await d.stop(drain_seconds=1)
        slow.stop()
