"""Sources: one scrape of the real prometheus-node-exporter, and the daemon's memory per 10k scraped series.

- ``scrape_node_exporter_*``: ``ScrapeSource.collect()`` (HTTP fetch and parse) against a private
  node_exporter with its default collectors, median and p95 of ``RUNS`` collections, and the parse alone.
- ``scrape_rss_*``: resident memory of the real daemon scraping an exposition of 0, 10k and 50k series
  (one rule over them that never fires), and the difference per 10k series.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from datetime import UTC, datetime

from benchmarks.common import daemon, metrics_text, percentile, result, rss_mib, wait
from fsincident.sources.scrape import ScrapeOptions, ScrapeSource, parse_exposition
from tests.helpers import Exposition, free_port

RUNS = 20
SIZES = (0, 10_000, 50_000)
SETTLE_SECONDS = 8.0
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"


def node_exporter(runs: int = RUNS) -> list[dict[str, object]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fsi-bench-ne-") as textfiles:
        proc = subprocess.Popen(
            [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", f"--collector.textfile.directory={textfiles}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/metrics"
        try:

            def answers() -> bytes | None:
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        return r.read()
                except OSError:
                    return None

            body = wait(answers, 15, "node_exporter's /metrics", step=0.1)
            collect_ms, series = asyncio.run(_collect(url, runs))
            text = body.decode()
            parse_ms: list[float] = []
            for _ in range(runs):
                t0 = time.perf_counter()
                parse_exposition(text, {"instance": f"127.0.0.1:{port}", "job": "node"})
                parse_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            proc.terminate()
            proc.wait(10)
    detail = {"runs": runs, "series": series, "body_bytes": len(body)}
    return [
        result("scrape_node_exporter_collect_median", statistics.median(collect_ms), "ms", **detail),
        result("scrape_node_exporter_collect_p95", percentile(collect_ms, 95), "ms", **detail),
        result("scrape_node_exporter_parse_median", statistics.median(parse_ms), "ms", **detail),
        result("scrape_node_exporter_series", series, "series", **detail),
    ]


async def _collect(url: str, runs: int) -> tuple[list[float], int]:
    """Milliseconds of each ``collect()`` (fetch and parse) and the number of series of the last."""
    src = ScrapeSource(ScrapeOptions(name="node", type="scrape", url=url))
    times: list[float] = []
    series = 0
    try:
        await src.collect(datetime.now(UTC))  # warm: connection, first parse
        for _ in range(runs):
            t0 = time.perf_counter()
            samples = await src.collect(datetime.now(UTC))
            times.append((time.perf_counter() - t0) * 1000)
            series = len(samples)
    finally:
        await src.close()
    return times, series


def _rss_with(series: int) -> float:
    """RSS of the daemon after it has scraped ``series`` series for ``SETTLE_SECONDS``."""
    exp = Exposition().start()
    try:
        for n in range(series):
            exp.set("bench_load", n % 100, n=str(n), shard=str(n % 16))
        exp.set("bench_marker", 1)
        main = f"""
        listen: 127.0.0.1:{{port}}
        database: {{db}}
        sources:
          - {{name: app, type: scrape, url: "{exp.url}/metrics", interval: 2s, timeout: 10s}}
        """
        rules = {
            "app.yaml": """
            groups:
              - name: app
                interval: 2s
                source: app
                rules:
                  - alert: BenchLoad
                    expr: bench_load > 1000
            """
        }
        with daemon(main, rules) as d:
            wait(
                lambda: f'fsincident_source_samples{{source="app"}} {float(series + 1)}' in metrics_text(d),
                60,
                "the first full scrape",
                step=0.2,
            )
            time.sleep(SETTLE_SECONDS)
            assert d.proc is not None
            return rss_mib(d.proc.pid)
    finally:
        exp.stop()


def memory_per_series(sizes: tuple[int, ...] = SIZES) -> list[dict[str, object]]:
    rss = {n: _rss_with(n) for n in sizes}
    out = [result(f"scrape_rss_{n // 1000}k_series", v, "MiB", settle_s=SETTLE_SECONDS) for n, v in rss.items()]
    lo, hi = min(sizes), max(sizes)
    per_10k = (rss[hi] - rss[lo]) / ((hi - lo) / 10_000)
    out.append(result("scrape_rss_per_10k_series", per_10k, "MiB", from_series=lo, to_series=hi))
    return out


def run() -> list[dict[str, object]]:
    return node_exporter() + memory_per_series()


if __name__ == "__main__":
    for r in run():
        print(r)
