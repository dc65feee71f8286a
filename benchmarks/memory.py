"""Resident memory of the real daemon: idle on the example config, and with 10k scraped series and a rule."""

from __future__ import annotations

import time

from benchmarks.common import (
    ROOT,
    cpu_seconds,
    daemon,
    histogram_mean,
    metrics_text,
    result,
    rss_mib,
    scrape_setup,
    wait,
)
from tests.helpers import Exposition, Receiver

IDLE_SECONDS = 10.0
SERIES = 10_000


def _measure(d, seconds: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """RSS after ``seconds`` and the CPU share used meanwhile."""
    pid = d.proc.pid
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return rss_mib(pid), (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def idle() -> list[dict[str, object]]:
    """examples/ as shipped (host source, the daemon's own /metrics, the example rules), a local receiver."""
    rcv = Receiver().start()
    try:
        main = (ROOT / "examples" / "fsincident.yaml").read_text()
        main = main.replace("127.0.0.1:9095", "127.0.0.1:{port}")
        main = "\n".join("database: {db}" if ln.startswith("database:") else ln for ln in main.splitlines())
        rules = {p.name: p.read_text() for p in sorted((ROOT / "examples" / "rules.d").glob("*.yaml"))}
        with daemon(main, rules, env={"OPS_CHAT_URL": rcv.apprise_url("ops")}) as d:
            rss, cpu = _measure(d, IDLE_SECONDS)
    finally:
        rcv.stop()
    return [result("rss_idle_example", rss, "MiB", after_s=IDLE_SECONDS, cpu_share=round(cpu, 4))]


def many_series(series: int = SERIES) -> list[dict[str, object]]:
    exp = Exposition().start()
    rcv = Receiver().start()
    try:
        for n in range(series):
            exp.set("bench_load", n % 100, n=str(n), shard=str(n % 16))
        main, rules = scrape_setup(exp.url, rcv.apprise_url("ops"), "BenchLoad", "bench_load > 1000", "")
        with daemon(main, rules) as d:
            wait(
                lambda: f'fsincident_source_samples{{source="app"}} {float(series)}' in metrics_text(d),
                30,
                "the first full scrape",
                step=0.2,
            )
            rss, cpu = _measure(d, IDLE_SECONDS)
            text = metrics_text(d)
            total = "fsincident_rule_series_evaluations_total "
            evaluated = next(float(ln.split()[1]) for ln in text.splitlines() if ln.startswith(total))
            eval_mean = histogram_mean(text, "fsincident_rule_group_duration_seconds") or 0.0
    finally:
        exp.stop()
        rcv.stop()
    return [
        result(
            f"rss_{series // 1000}k_series",
            rss,
            "MiB",
            after_s=IDLE_SECONDS,
            cpu_share=round(cpu, 4),
            series_evaluated=int(evaluated),
        ),
        result(f"rule_eval_{series // 1000}k_series_mean", eval_mean, "s"),
    ]


def run() -> list[dict[str, object]]:
    return idle() + many_series()


if __name__ == "__main__":
    for r in run():
        print(r)
