"""The real ``amtool`` (Debian's prometheus-alertmanager 0.25) adds and queries alerts and reads the routing config
of the daemon, with the same results as against the real Alertmanager 0.25 run side by side — configured with
the very YAML our ``/api/v2/status`` shows (so that file is also proven to be a valid Alertmanager config)."""

from __future__ import annotations

import asyncio
import json
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
from fsincident.api.alertmanager import config_yaml
from fsincident.app import Daemon, routes_of
from tests.helpers import free_port, write_config

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"

CONFIG = """
listen: 127.0.0.1:{port}
database: sqlite:///{dir}/state.db
alertmanager: {{resolve_timeout: 5m}}
time_intervals:
  - name: offhours
    time_intervals:
      - times: [{{start_time: "20:00", end_time: "24:00"}}]
        weekdays: ["monday:friday"]
        days_of_month: ["1:10", "-1"]
        months: ["january:march", "december"]
        location: Europe/Berlin
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [instance]
routes:
  - matchers: ['team="db"']
    receiver: database
    group_by: [alertname]
    group_wait: 30s
    notify: []
    routes:
      - matchers: ['severity=~"critical|page"']
        receiver: db-pager
        continue: true
        mute_time_intervals: [offhours]
      - match: {{severity: critical}}
        receiver: db-chat
        repeat_interval: 2h
  - receiver: catchall
    group_by: [alertname, instance]
    notify: []
"""


@dataclass
class Peer:
    name: str
    url: str
    http_config: Path | None

    async def amtool(self, *args: str) -> tuple[int, str, str]:
        cmd = [AMTOOL, f"--alertmanager.url={self.url}"]
        if self.http_config is not None:
            cmd.append(f"--http.config.file={self.http_config}")
        proc = await asyncio.create_subprocess_exec(
            *cmd, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )  # not subprocess.run: our daemon answers on this very event loop
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        return proc.returncode or 0, out.decode(), err.decode()

    async def ok(self, *args: str) -> str:
        rc, out, err = await self.amtool(*args)
        assert rc == 0 and not err.strip(), (self.name, args, out, err)
        return out


@dataclass
class Peers:
    ours: Peer
    theirs: Peer
    daemon: Daemon

    def both(self) -> tuple[Peer, Peer]:
        return self.ours, self.theirs


@dataclass
class Setup:
    cfg: Path
    port: int
    tmp: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    if not Path(AMTOOL).exists() or not Path(ALERTMANAGER).exists():
        pytest.skip("amtool / prometheus-alertmanager are not installed")
    tmp = tmp_path_factory.mktemp("amtool-alerts")
    port = free_port()
    return Setup(write_config(tmp / "cfg", CONFIG.format(port=port, dir=tmp)), port, tmp)


@pytest.fixture(scope="module")
def alertmanager(setup: Setup) -> Iterator[str]:
    """The real Alertmanager, configured with the YAML our ``/api/v2/status`` shows for the same config."""
    cfg = config_mod.load(setup.cfg)
    (setup.tmp / "am.yml").write_text(config_yaml(cfg, routes_of(cfg)))
    port = free_port()
    log = setup.tmp / "am.log"
    with open(log, "wb") as out:
        am = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={setup.tmp / 'am.yml'}",
                f"--storage.path={setup.tmp / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if am.poll() is not None:
                raise AssertionError(f"alertmanager exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("alertmanager did not get ready")
            time.sleep(0.05)
        yield url
    finally:
        am.terminate()
        try:
            am.wait(10)
        except subprocess.TimeoutExpired:
            am.kill()
            am.wait(10)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def peers(setup: Setup, alertmanager: str) -> AsyncIterator[Peers]:
    daemon = Daemon(config_mod.load(setup.cfg))
    await daemon.start()
    try:
        token = await daemon.store.create_token("amtool", ["admin"], daemon.clock.now())
        http = setup.tmp / "http.yml"
        http.write_text(f"authorization:\n  credentials: {token}\n")
        ours = Peer("fsincident", f"http://127.0.0.1:{setup.port}", http)
        yield Peers(ours, Peer("alertmanager", alertmanager, None), daemon)
    finally:
        await daemon.stop()


async def query_json(peer: Peer, *args: str) -> list[dict[str, Any]]:
    return json.loads(await peer.ok("alert", "query", "-o", "json", *args))  # type: ignore[no-any-return]


def by_labels(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {json.dumps(a["labels"], sort_keys=True): a for a in alerts}


async def settled(peer: Peer, want: int, *args: str) -> list[dict[str, Any]]:
    """The alerts once ``want`` of them are listed and none is unprocessed any more (ours: in an incident)."""
    got: list[dict[str, Any]] = []
    for _ in range(200):
        got = await query_json(peer, "-a", "-s", "-i", "-u", *args)
        if len(got) >= want and all(a["status"]["state"] != "unprocessed" for a in got):
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"{peer.name}: {got}")


async def test_alert_add_and_query_like_alertmanager(peers: Peers) -> None:
    adds = [
        ["alertname=DiskFull", "team=db", "severity=critical", "instance=db1", "--annotation=summary=disk full"],
        ["alertname=SlowQueries", "team=db", "severity=warning", "instance=db1"],  # inhibited by DiskFull
        ["alertname=HighLoad", "severity=warning", "instance=web1", "--annotation=runbook=http://wiki/load"],
    ]
    for peer in peers.both():
        for args in adds:
            await peer.ok("alert", "add", *args)
    ours = by_labels(await settled(peers.ours, 3, "alertname=~DiskFull|SlowQueries|HighLoad"))
    theirs = by_labels(await settled(peers.theirs, 3, "alertname=~DiskFull|SlowQueries|HighLoad"))
    assert set(ours) == set(theirs) and len(ours) == 3
    for key, t in theirs.items():
        o = ours[key]
        assert set(o) == set(t), key
        assert {k: type(v) for k, v in o.items()} == {k: type(v) for k, v in t.items()}
        for field in ("labels", "annotations", "receivers"):
            assert o[field] == t[field], (field, o, t)
        assert o["status"]["state"] == t["status"]["state"], (o["status"], t["status"])
        assert bool(o["status"]["inhibitedBy"]) == bool(t["status"]["inhibitedBy"])
        assert o["status"]["silencedBy"] == t["status"]["silencedBy"] == []
        assert len(o["fingerprint"]) == len(t["fingerprint"]) == 16
    # The simple and extended outputs list the same alerts (active only, by default).
    for fmt in ("simple", "extended"):
        outs = [await p.ok("alert", "query", "-o", fmt) for p in peers.both()]
        for name in ("DiskFull", "HighLoad"):
            assert all(name in out for out in outs), (fmt, outs)
        assert all("SlowQueries" not in out for out in outs)  # inhibited: not shown without -i
    # The flags and filters select the same alerts.
    for args in (
        ["-i"],
        ["-a"],
        ["-u"],
        ["-a", "-i", "severity=warning"],
        ["-a", "-i", "-r", "db-.*"],
        ["-a", "-i", "-r", "catchall"],
        ["-a", "-i", "alertname!=DiskFull", 'instance=~"db.*"'],
        ["-a", "-i", "team="],
    ):
        got = [sorted(a["labels"]["alertname"] for a in await query_json(p, *args)) for p in peers.both()]
        assert got[0] == got[1], (args, got)


async def test_alert_add_refusals_and_resolution(peers: Peers) -> None:
    for peer in peers.both():
        rc, out, err = await peer.amtool(
            "alert", "add", "alertname=X", "--start=2030-01-02T00:00:00Z", "--end=2030-01-01T00:00:00Z"
        )
        assert rc != 0 and "start time must be before end time" in err, (peer.name, out, err)
        # An end in the past resolves (and a resolved alert is not listed).
        await peer.ok("alert", "add", "alertname=Gone", "--end=2020-01-01T00:00:00Z")
        await peer.ok("alert", "add", "alertname=Short", "--start=2026-01-01T00:00:00Z", "--end=2099-01-01T00:00:00Z")
    for peer in peers.both():
        names = {a["labels"]["alertname"] for a in await query_json(peer, "-a", "-u", "-i", "-s")}
        assert "Gone" not in names and "Short" in names, (peer.name, names)
        [short] = await query_json(peer, "-a", "-u", "alertname=Short")
        assert short["startsAt"] == "2026-01-01T00:00:00.000Z" and short["endsAt"] == "2099-01-01T00:00:00.000Z"


async def test_config_show_and_routes(peers: Peers) -> None:
    show = await peers.ours.ok("config", "show")
    assert "route:" in show and "receiver: database" in show and "inhibit_rules:" in show
    # The same tree, printed by amtool from each side's config.
    routes = [await p.ok("config", "routes") for p in peers.both()]
    assert routes[0] == routes[1], routes
    assert "receiver: db-pager" in routes[0] and "continue: true" in routes[0]
    for labels in (["team=db", "severity=critical"], ["team=db", "severity=info"], ["alertname=x"]):
        got = [await p.ok("config", "routes", "test", *labels) for p in peers.both()]
        assert got[0] == got[1], (labels, got)
    rc, out, err = await peers.ours.amtool(
        "config", "routes", "test", "--verify.receivers=db-pager,db-chat", "team=db", "severity=critical"
    )
    assert rc == 0, (out, err)
    # No version warning: the status speaks Alertmanager 0.25's API.
    rc, out, err = await peers.ours.amtool("alert", "query")
    assert rc == 0 and "Warning" not in err, err


async def test_without_a_token_amtool_gets_401(peers: Peers) -> None:
    anonymous = Peer("fsincident", peers.ours.url, None)
    rc, out, err = await anonymous.amtool("alert", "query")
    assert (rc != 0 and "401" in (out + err)) or "Unauthorized" in (out + err), (out, err)
