"""``type: prometheus`` against the real Prometheus server (Debian's) scraping a local exposition."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from fsincident.core import Labels, SourceError
from fsincident.sources.prometheus import PrometheusOptions, PrometheusSource
from tests.helpers import DaemonProcess, Exposition, free_port, run_cli, write_config

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
USER = "fsi"
PASSWORD = "s3cret-pass"
# bcrypt of PASSWORD (cost 4): Prometheus' --web.config.file only takes hashes.
PASSWORD_HASH = "$2b$04$1iV6IhqtiSFwEB0G84/dqOe88plOg5AWOytt7.DSW.YaOpW4t9Wva"


@dataclass
class Prom:
    url: str
    exposition: Exposition
    log: Path

    def query(self, q: str) -> dict:
        """The raw API answer for ``q`` (with credentials), for the fixture's readiness checks."""
        req = urllib.request.Request(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
        with urllib.request.urlopen(req, timeout=2) as r:
            return json.loads(r.read())


@pytest.fixture(scope="module")
def prom(tmp_path_factory) -> Iterator[Prom]:
    """A private Prometheus (basic auth on) scraping an Exposition every second; killed at the end."""
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed")
    exp = Exposition().start()
    exp.set("queue_depth", 5, queue="orders")
    exp.set("queue_depth", 3, queue="mail")
    exp.set("other_depth", 5, queue="orders")
    d = tmp_path_factory.mktemp("prometheus")
    (d / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: app, static_configs: [{{targets: ['127.0.0.1:{exp.port}']}}]}}\n"
    )
    (d / "web.yml").write_text(f"basic_auth_users:\n  {USER}: '{PASSWORD_HASH}'\n")
    port = free_port()
    log = d / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={d / 'prometheus.yml'}",
                f"--web.config.file={d / 'web.yml'}",
                f"--storage.tsdb.path={d / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    p = Prom(f"http://127.0.0.1:{port}", exp, log)
    try:
        deadline = time.time() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if len(p.query("queue_depth")["data"]["result"]) == 2:
                    break
            except (urllib.error.URLError, OSError, KeyError, ValueError):
                pass
            if time.time() > deadline:
                raise AssertionError(f"prometheus had no data in 30s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield p
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        exp.stop()


def source(url: str, **kw) -> PrometheusSource:
    kw.setdefault("basic_auth", {"username": USER, "password": PASSWORD})
    return PrometheusSource(PrometheusOptions(name="prom", type="prometheus", url=url, **kw))


def now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_vector_query_gives_one_value_sample_per_series(prom, method):
    src = source(prom.url, method=method)
    try:
        samples = await src.query("sum by (queue) (queue_depth)", now())
        assert sorted((s.name, sorted(s.labels.items()), s.value) for s in samples) == [
            ("value", [("queue", "mail")], 3.0),
            ("value", [("queue", "orders")], 5.0),
        ]
        # A selector keeps the series' labels (job, instance from the scrape) but not __name__.
        (raw,) = await src.query('queue_depth{queue="orders"}', now())
        assert raw.labels == Labels({"queue": "orders", "job": "app", "instance": f"127.0.0.1:{prom.exposition.port}"})
        assert await src.query("queue_depth > 1000", now()) == []
    finally:
        await src.close()


async def test_scalar_query_gives_one_unlabelled_sample(prom):
    src = source(prom.url)
    try:
        (s,) = await src.query("scalar(sum(queue_depth)) * 2", now())
        assert (s.name, dict(s.labels), s.value) == ("value", {}, 16.0)
        assert await src.collect(now()) == []  # the health check: the API answers
    finally:
        await src.close()


async def test_errors_name_the_problem(prom):
    src = source(prom.url)
    try:
        with pytest.raises(SourceError, match=r"bad_data: .*parse error"):
            await src.query("sum(queue_depth", now())
        with pytest.raises(SourceError, match="matrix"):
            await src.query("queue_depth[1m]", now())
        with pytest.raises(SourceError, match="string"):
            await src.query('"hello"', now())
        # Two series that differ only in their metric name would silently overwrite each other.
        with pytest.raises(SourceError, match="once __name__ is dropped"):
            await src.query('{__name__=~"queue_depth|other_depth", queue="orders"}', now())
    finally:
        await src.close()


async def test_credentials_are_sent_and_never_shown(prom):
    wrong = source(prom.url, basic_auth={"username": USER, "password": "not-the-password-42"})
    anonymous = source(prom.url, basic_auth=None)
    try:
        for src in (wrong, anonymous):
            with pytest.raises(SourceError) as exc:
                await src.collect(now())
            assert "401" in str(exc.value)
            assert "not-the-password-42" not in str(exc.value) and PASSWORD not in str(exc.value)
    finally:
        await wrong.close()
        await anonymous.close()
    down = source(f"http://{USER}:url-password-77@127.0.0.1:{free_port()}", basic_auth=None)
    try:
        with pytest.raises(SourceError, match="failed") as exc:
            await down.collect(now())
        assert "url-password-77" not in str(exc.value)
    finally:
        await down.close()


@pytest.fixture
async def fake_api():
    """A Prometheus-compatible peer that checks a bearer token and can stall, for what a stock server cannot do."""
    seen: list[dict[str, str]] = []
    state = {"delay": 0.0}

    async def handle(request: web.Request) -> web.Response:
        seen.append(
            {"auth": request.headers.get("Authorization", ""), "tenant": request.headers.get("X-Scope-OrgID", "")}
        )
        await asyncio.sleep(state["delay"])
        if request.headers.get("Authorization") != "Bearer tok-123456":
            return web.Response(status=401, text="Unauthorized")
        body = {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "up", "job": "x"}, "value": [time.time(), "1"]},
            {"metric": {"job": "nan"}, "value": [time.time(), "NaN"]},
        ]}}  # fmt: skip
        return web.json_response(body)

    app = web.Application()
    app.router.add_route("*", "/api/v1/query", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)  # do not wait out the stalled request
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen, state
    await runner.cleanup()


async def test_bearer_token_headers_and_timeout(fake_api):
    url, seen, state = fake_api
    src = source(url, basic_auth=None, bearer_token="tok-123456", headers={"X-Scope-OrgID": "team-a"}, timeout="1s")
    try:
        samples = await src.query("up", now())
        assert [(s.name, dict(s.labels), s.value) for s in samples] == [("value", {"job": "x"}, 1.0)]  # NaN dropped
        assert seen[-1] == {"auth": "Bearer tok-123456", "tenant": "team-a"}
        state["delay"] = 5
        with pytest.raises(SourceError, match="timed out after 1s"):
            await asyncio.wait_for(src.query("up", now()), 4)
    finally:
        await src.close()


def test_bad_options_are_located(tmp_path):
    from fsincident.config import load
    from fsincident.core import ConfigError

    main = (
        write_config(
            tmp_path,
            """\
        sources:
          - name: p1
            type: prometheus
            url: http://127.0.0.1:9090
            basic_auth: {username: u, password: p}
            bearer_token: t
          - name: p2
            type: prometheus
            url: http://127.0.0.1:9090
            basic_auth: {username: u, pasword: p}
        """,
        )
        / "fsincident.yaml"
    )
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, environ={})
    problems = [str(p) for p in exc.value.problems]
    assert f"{main}:6: sources[0].bearer_token: use either basic_auth or bearer_token, not both" in problems
    assert any(p.startswith(f"{main}:10: sources[1].basic_auth") and "pasword" in p for p in problems), problems


@pytest.mark.slow
def test_query_rule_opens_and_resolves_an_incident(tmp_path, prom):
    exp = prom.exposition
    exp.set("queue_depth", 5, queue="orders")
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp_path}/state.db
        sources:
          - name: prom
            type: prometheus
            url: "{prom.url}"
            basic_auth: {{username: {USER}, password: "${{PROM_PASSWORD}}"}}
            interval: 1s
            timeout: 5s
        """,
        {
            "prom.yaml": """
            groups:
              - name: queues
                interval: 1s
                source: prom
                rules:
                  - alert: QueueBacklog
                    query: 'sum by (queue) (queue_depth)'
                    expr: value > 100
                    annotations:
                      summary: "{{ labels.queue }} has {{ value }} jobs"
            """
        },
    )
    env = {"PROM_PASSWORD": PASSWORD}
    d = DaemonProcess(cfg, port, env=env)
    try:
        d.start()
        res = run_cli("token", "create", "--name", "t", "--scopes", "read", "--config", str(cfg), env=env, cwd=cfg)
        assert res.returncode == 0, res.stderr
        d.token = res.stdout.strip()
        exp.set("queue_depth", 500, queue="orders")
        incs = d.wait_incidents(lambda i: len(i) == 1)
        assert incs[0]["labels"]["queue"] == "orders"
        assert incs[0]["labels"]["alertname"] == "QueueBacklog"
        exp.set("queue_depth", 1, queue="orders")
        d.wait_incidents(lambda i: len(i) == 1 and i[0]["state"] == "resolved")
        status, body = d.api("GET", "/api/v1/rules")
        assert status == 200
        (rule,) = body["groups"][0]["rules"]
        assert rule["health"] == "ok", rule
        assert PASSWORD not in d.logs()
    finally:
        exp.set("queue_depth", 5, queue="orders")
        d.stop()
