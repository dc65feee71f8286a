"""The real Prometheus (Debian's 2.42) sends its alerts to the daemon as to an Alertmanager (``api_version: v2``,
a bearer token in ``authorization:``): a firing rule opens an incident; once the rule no longer fires (rule file
changed, Prometheus reloaded) Prometheus sends the alert resolved and the incident resolves."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from fsincident import config as config_mod
from fsincident.app import Daemon
from tests.helpers import free_port, write_config

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

FIRING = """
groups:
  - name: fsincident-e2e
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        labels: {severity: critical, team: e2e}
        annotations: {summary: "always firing ({{ $value }})"}
"""
QUIET = FIRING.replace("expr: vector(1)", "expr: vector(1) == 2")


@dataclass
class Setup:
    tmp: Path
    port: int
    token: str
    cfg: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    if not Path(PROMETHEUS).exists():
        pytest.skip("prometheus is not installed")
    tmp = tmp_path_factory.mktemp("prometheus-alerting")
    port = free_port()
    cfg = write_config(
        tmp / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp}/state.db
        routes:
          - {{match: {{team: e2e}}, receiver: e2e, group_by: [alertname]}}
        """,
    )
    return Setup(tmp, port, "", cfg)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(setup: Setup) -> AsyncIterator[Daemon]:
    d = Daemon(config_mod.load(setup.cfg))
    await d.start()
    try:
        setup.token = await d.store.create_token("prometheus", ["ingest"], d.clock.now())
        yield d
    finally:
        await d.stop()


@pytest.fixture(scope="module")
def prometheus(setup: Setup, daemon: Daemon) -> Iterator[str]:
    """Prometheus evaluating FIRING every second and sending to the daemon; stopped after the module."""
    rules = setup.tmp / "rules.yml"
    rules.write_text(FIRING)
    (setup.tmp / "prometheus.yml").write_text(
        f"""
global:
  evaluation_interval: 1s
rule_files: ["{rules}"]
alerting:
  alertmanagers:
    - api_version: v2
      static_configs: [{{targets: ["127.0.0.1:{setup.port}"]}}]
      authorization: {{credentials: "{setup.token}"}}
"""
    )
    port = free_port()
    log = setup.tmp / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={setup.tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={setup.tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--rules.alert.resend-delay=1s",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.returncode not in (0, -15):
            print(log.read_text()[-3000:])


async def eventually(fn: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()  # type: ignore[no-any-return]


async def test_prometheus_alerts_open_and_resolve_an_incident(setup: Setup, daemon: Daemon, prometheus: str) -> None:
    async def incident() -> dict[str, Any] | None:
        for inc in await daemon.incidents.list(limit=50):
            if inc["labels"].get("alertname") == "AlwaysFiring":
                return await daemon.incidents.get(inc["id"])
        return None

    inc = await eventually(incident, 30, "an incident for AlwaysFiring")
    assert inc["state"] == "triggered" and inc["severity"] == "critical"
    [alert] = inc["alerts"]
    assert alert["origin"] == "alertmanager" and alert["state"] == "firing"
    assert alert["labels"]["alertname"] == "AlwaysFiring" and alert["labels"]["team"] == "e2e"
    assert alert["annotations"] == {"summary": "always firing (1)"}
    # As Alertmanager shows it, with Prometheus' generatorURL and an endsAt Prometheus keeps moving.
    [view] = [a for a in daemon.ingest.firing() if a.labels.get("alertname") == "AlwaysFiring"]
    assert view.generator_url.startswith("http://") and "/graph?g0.expr=vector" in view.generator_url
    assert view.ends_at > daemon.clock.now()
    # Prometheus counts no failed notifications.
    metrics = await asyncio.to_thread(_get, prometheus + "/metrics")
    errors = [line for line in metrics.splitlines() if line.startswith("prometheus_notifications_errors_total")]
    assert errors and all(line.endswith(" 0") for line in errors), errors

    # The rule stops firing: Prometheus sends the alert resolved and the incident resolves.
    (setup.tmp / "rules.yml").write_text(QUIET)
    req = urllib.request.Request(prometheus + "/-/reload", method="POST")
    await asyncio.to_thread(urllib.request.urlopen, req, None, 10)

    async def resolved() -> dict[str, Any] | None:
        got = await daemon.incidents.get(inc["id"])
        return got if got["state"] == "resolved" else None

    done = await eventually(resolved, 30, "the incident resolved")
    assert done["alerts"][0]["state"] == "resolved"
    assert not [a for a in daemon.ingest.firing() if a.labels.get("alertname") == "AlwaysFiring"]
