"""``type: scrape`` against the real prometheus-node-exporter: its series, labels and metric types, and a page."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fsincident.core import SourceError
from fsincident.sources.scrape import ScrapeOptions, ScrapeSource
from tests.helpers import DaemonProcess, free_port, write_config

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"

# A histogram through node_exporter's textfile collector, so every exposition type passes the real exporter.
TEXTFILE = """\
# HELP app_request_seconds Request latency.
# TYPE app_request_seconds histogram
app_request_seconds_bucket{handler="/api",le="0.1"} 3
app_request_seconds_bucket{handler="/api",le="0.5"} 7
app_request_seconds_bucket{handler="/api",le="+Inf"} 9
app_request_seconds_sum{handler="/api"} 2.5
app_request_seconds_count{handler="/api"} 9
"""


class NodeExporter:
    """A private prometheus-node-exporter on a free loopback port; only quick, deterministic collectors."""

    def __init__(self, textfile_dir: Path):
        self.port = free_port()
        self.textfile_dir = textfile_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> NodeExporter:
        self.proc = subprocess.Popen(
            [
                NODE_EXPORTER,
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--collector.disable-defaults",
                "--collector.loadavg",
                "--collector.cpu",
                "--collector.meminfo",
                "--collector.textfile",
                f"--collector.textfile.directory={self.textfile_dir}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node_exporter exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200 and b"node_load1" in r.read():
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError("node_exporter did not answer on /metrics in 15 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def node_exporter(tmp_path) -> Iterator[NodeExporter]:
    if not Path(NODE_EXPORTER).exists():
        pytest.fail("prometheus-node-exporter is not installed (make test installs it: scripts/install-peers.sh)")
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    (textfiles / "app.prom").write_text(TEXTFILE)
    ne = NodeExporter(textfiles).start()
    yield ne
    ne.stop()


def _series(samples, name):  # type: ignore[no-untyped-def]
    return {s.labels: s.value for s in samples if s.name == name}


async def test_scrape_reads_node_exporter_series_and_types(node_exporter):
    src = ScrapeSource(ScrapeOptions(name="node", type="scrape", url=node_exporter.url, labels={"env": "test"}))
    try:
        samples = await src.collect(datetime.now(UTC))
    finally:
        await src.close()
    instance = f"127.0.0.1:{node_exporter.port}"

    # a gauge, with instance/job/extra labels on every series
    (load1,) = _series(samples, "node_load1").items()
    assert load1[0].as_dict() == {"instance": instance, "job": "node", "env": "test"}
    assert load1[1] >= 0
    assert all(s.labels["instance"] == instance and s.labels["job"] == "node" for s in samples)

    # a counter with its own labels
    cpu = _series(samples, "node_cpu_seconds_total")
    assert {lab["mode"] for lab in cpu} >= {"user", "system", "idle"}
    assert {lab["cpu"] for lab in cpu} >= {"0"}
    assert all(v >= 0 for v in cpu.values())

    # a summary (node_exporter's own Go runtime): quantiles plus _sum and _count
    gc = _series(samples, "go_gc_duration_seconds")
    assert {lab["quantile"] for lab in gc} >= {"0", "0.5", "1"}
    assert len(_series(samples, "go_gc_duration_seconds_sum")) == 1
    assert len(_series(samples, "go_gc_duration_seconds_count")) == 1

    # a histogram: buckets by le, _sum and _count, the exporter's labels kept
    buckets = {lab["le"]: v for lab, v in _series(samples, "app_request_seconds_bucket").items()}
    assert buckets == {"0.1": 3.0, "0.5": 7.0, "+Inf": 9.0}
    assert list(_series(samples, "app_request_seconds_sum").values()) == [2.5]
    (count,) = _series(samples, "app_request_seconds_count").items()
    assert count[1] == 9.0 and count[0]["handler"] == "/api"

    assert len(_series(samples, "node_memory_MemTotal_bytes")) == 1


async def test_scrape_of_stopped_node_exporter_is_a_source_error(node_exporter):
    src = ScrapeSource(ScrapeOptions(name="node", type="scrape", url=node_exporter.url, timeout="2s"))
    try:
        assert await src.collect(datetime.now(UTC))
        node_exporter.stop()
        with pytest.raises(SourceError, match=rf"scrape of {node_exporter.url} failed"):
            await src.collect(datetime.now(UTC))
    finally:
        await src.close()


@pytest.mark.slow
def test_rule_over_node_exporter_opens_an_incident(tmp_path, node_exporter):
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp_path}/state.db
        sources:
          - {{name: node, type: scrape, url: "{node_exporter.url}", interval: 1s}}
        routes:
          - {{notify: []}}
        """,
        {
            "node.yaml": """
            groups:
              - name: node
                interval: 1s
                source: node
                rules:
                  - alert: NodeLoadSeen
                    expr: node_load1 >= 0
                    severity: info
                    annotations:
                      summary: "load {{ value }} on {{ labels.instance }}"
            """
        },
    )
    d = DaemonProcess(cfg, port).start()
    try:
        d.token = d.create_token("read")
        (inc,) = d.wait_incidents(lambda i: len(i) == 1)
        assert inc["state"] == "triggered"
        assert inc["labels"]["alertname"] == "NodeLoadSeen"
        assert inc["labels"]["instance"] == f"127.0.0.1:{node_exporter.port}"
        assert inc["labels"]["job"] == "node"
        assert inc["title"].startswith("NodeLoadSeen: load ") and f"on 127.0.0.1:{node_exporter.port}" in inc["title"]
    finally:
        assert d.stop() == 0
