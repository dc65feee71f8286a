"""Rule evaluation at scale: 100k series x 100 rules over 1 h of 15 s history, and API latency during cycles.

Part 1 (in process, one thread): ten metrics of 10 000 series each (labels ``instance``, ``job``,
``cpu``) and 100 rules loaded through the real config loader (50 thresholds, 30 windows, 20 joins
and aggregations; the data is generated so that about 1 % of the series of most rules fire). 240
snapshots (1 h at 15 s) go into a ``RuleSet``; then each cycle ingests one more snapshot and
evaluates all 100 rules. Reported: ingest time per snapshot, cycle time (median), series
evaluations per second per core, peak RSS, and the RSS the history adds.

Part 2 (the real daemon): a push source holding 48k series (collected every 5 s) and 12 rules with
windows evaluated every second; ``GET /healthz`` and ``GET /api/v1/incidents`` are sampled every 20 ms while
the cycles run, and again on the same data without rules (the baseline).

Targets (issue #4, reported, not asserted): cycle <= 1 s, >= 10M series-evals/s, RSS <= 300 MB.
A second in-process set ("wide": two metrics of 100 000 series, the same mix of 100 rules, so that a
cycle is over 10M series evaluations, as the issue's target assumes) runs too; each set runs in a fresh
interpreter so that its peak RSS is its own. Time spent in Python's cyclic garbage collector during the
cycles is reported separately (it stops the interpreter, and so the daemon's event loop).

Run alone with ``.venv/bin/python benchmarks/eval.py [-v] [--profile] [--no-wide] [--no-daemon]``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import http.client
import io
import multiprocessing
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.common import daemon, metrics_text, percentile, result, rss_mib, wait
from fsincident.core import Labels

SERIES_PER_METRIC = 10_000
STEP = 15.0  # seconds between snapshots
HISTORY = 240  # 1 h of 15 s snapshots
CYCLES = 5
T0 = 1_700_000_000.0  # the first snapshot, unix seconds
SOURCE = "bench"

# name -> what it models (the generator below gives each its shape)
METRICS = {
    "cpu_busy": "gauge, uniform 0..100 per series, small noise",
    "http_requests_total": "counter, rate uniform 0..100/s, 0.5 % reset once",
    "mem_used_pct": "gauge, uniform 0..100, noise",
    "disk_busy": "gauge, uniform 0..100, small noise",
    "queue_depth": "gauge 0..90; 1 % spike to 150 for 1 min mid-hour; 1 % triple over the last 10 min",
    "latency_ms": "50 +- 1 noise; from the end of the history on, a different 1 % spikes to 70 in each snapshot",
    "disk_used_pct": "0..50 flat; 1 % grow 20 %/h and reach 70 at the end of the history",
    "http_errors": "http_rps x a ratio uniform 0..0.1",
    "http_rps": "100..200, noise",
    "temp_c": "gauge, uniform 0..100, small noise",
}


# ---------------------------------------------------------------- rules


def threshold_rules(gauges: tuple[str, ...] = ("cpu_busy", "mem_used_pct", "disk_busy", "temp_c")) -> list[str]:
    """50 instant rules: comparisons, arithmetic, label filters and selectors on the uniform ``gauges``."""
    out = []
    for i in range(50):
        m = gauges[i % len(gauges)]
        t = round(98.6 + 0.8 * i / 49, 2)  # each fires for about (100 - t) % of the series
        lo = round(100 - t, 2)
        shape = i % 10
        if shape == 0:
            out.append(f"{m} > {t}")
        elif shape == 1:
            out.append(f"{m} >= {t}")
        elif shape == 2:
            out.append(f"{m} < {lo}")
        elif shape == 3:
            out.append(f"({m} - 50) * 2 > {round(2 * (t - 50), 2)}")
        elif shape == 4:
            out.append(f"abs({m} - 50) > {round(50 - lo / 2, 2)}")
        elif shape == 5:
            out.append(f"select('{m}{{job!=\"job3\"}}') > {t}")
        elif shape == 6:
            out.append(f'{m} > {t} and labels.job != "job7"')
        elif shape == 7:
            out.append(f"clamp({m}, 0, 100) > {t}")
        elif shape == 8:
            out.append(f"{m} / 100 > {round(t / 100, 4)}")
        else:
            out.append(f"select('{m}{{instance=~\"host0[01].*\"}}') > {t}")
    return out


WINDOW_RULES = [
    'rate(http_requests_total, "5m") > 99',
    'rate(http_requests_total, "1m") > 99',
    'rate(http_requests_total, "5m", offset="15m") > 99',
    'increase(http_requests_total, "5m") > 29700',
    'resets(http_requests_total, "1h") > 0',
    'delta(mem_used_pct, "15m") > 1',
    'avg_over_time(mem_used_pct, "15m") > 99',
    'avg_over_time(cpu_busy, "5m") > 99',
    'avg_over_time(cpu_busy, "5m", offset="30m") > 99',
    'min_over_time(mem_used_pct, "5m") > 98.5',
    'max_over_time(queue_depth, "1h") > 100',
    'sum_over_time(cpu_busy, "5m") > 1980',
    'count_over_time(cpu_busy, "5m") < 10',
    'last_over_time(temp_c, "5m") > 99',
    'stddev_over_time(queue_depth, "1h") > 5',
    'quantile_over_time(0.9, mem_used_pct, "15m") > 99.2',
    'changes(disk_busy, "15m") > 100',
    'offset(cpu_busy, "30m") > 99',
    'cpu_busy > offset(cpu_busy, "30m") + 0.4',
    'zscore(latency_ms, "1h") > 4',
    'ewma_zscore(latency_ms, "1h") > 4',
    'spike(queue_depth, "10m") > 2',
    'flatline(cpu_busy, "30m") > 0',
    'predict_linear(disk_used_pct, "1h", "4h") > 100',
    'time_to(disk_used_pct, 100, "1h") < 14400',
    'deriv(disk_used_pct, "30m") > 0.001',
    'nodata(cpu_busy, "5m")',
    "absent(select('cpu_busy{job=\"job1\"}'))",
    'max_over_time(select(\'latency_ms{job=~"job1.*"}\'), "1h") > 65',
    'avg_over_time(temp_c, "15m") > 99',
]

JOIN_RULES = [
    "http_errors / http_rps > 0.099",
    'on("instance,cpu", http_errors / http_rps) > 0.099',
    'ignoring("job", http_errors / http_rps) > 0.099',
    'sum(http_errors, by="job") / sum(http_rps, by="job") > 0.0505',
    'sum(cpu_busy, by="job") > 26300',
    'avg(cpu_busy, by="instance") > 85',
    'max(temp_c, by="instance") > 99.6',
    'min(temp_c, without="cpu") < 0.4',
    'count(cpu_busy > 99, by="job") > 8',
    'quantile(0.99, mem_used_pct, by="job") > 99.3',
    'stddev(latency_ms, by="job") > 1.6',
    'on("instance", cpu_busy / sum(cpu_busy, by="instance")) > 0.7',
    'ignoring("cpu", cpu_busy > avg(cpu_busy, by="instance,job") * 2.4)',
    "cpu_busy > 99 and disk_busy > 50",
    "unless(cpu_busy > 99, disk_busy > 50)",
    "cpu_busy > 99.5 or temp_c > 99.5",
    "cpu_busy + disk_busy > 190",
    "max(cpu_busy, disk_busy) > 99.5",
    'rate(http_requests_total, "5m") / http_rps > 0.88',
    'avg(rate(http_requests_total, "5m"), by="job") > 51',
]


WIDE_WINDOW_RULES = [
    'avg_over_time(cpu_busy, "5m") > 99',
    'avg_over_time(cpu_busy, "15m") > 99',
    'avg_over_time(cpu_busy, "1h") > 99',
    'avg_over_time(cpu_busy, "5m", offset="30m") > 99',
    'min_over_time(cpu_busy, "5m") > 98.8',
    'min_over_time(cpu_busy, "1h") > 98.5',
    'max_over_time(cpu_busy, "5m") > 99.2',
    'max_over_time(cpu_busy, "1h") > 99.5',
    'sum_over_time(cpu_busy, "5m") > 1980',
    'count_over_time(cpu_busy, "5m") < 10',
    'last_over_time(cpu_busy, "5m") > 99',
    'stddev_over_time(cpu_busy, "1h") > 0.13',
    'quantile_over_time(0.9, cpu_busy, "15m") > 99.1',
    'delta(cpu_busy, "15m") > 0.35',
    'delta(cpu_busy, "1h") > 0.35',
    'deriv(cpu_busy, "30m") > 0.0002',
    'changes(cpu_busy, "15m") < 10',
    'offset(cpu_busy, "30m") > 99',
    'cpu_busy > offset(cpu_busy, "30m") + 0.4',
    'zscore(cpu_busy, "1h") > 3',
    'ewma_zscore(cpu_busy, "1h") > 3',
    'spike(cpu_busy, "10m") > 1.01',
    'flatline(cpu_busy, "30m") > 0',
    'predict_linear(cpu_busy, "1h", "4h") > 100',
    'time_to(cpu_busy, 100, "1h") < 14400',
    'nodata(cpu_busy, "5m")',
    'rate(cpu_busy, "5m") > 3.2',
    'resets(cpu_busy, "1h") > 200',
    "absent(select('cpu_busy{job=\"job1\"}'))",
    'max_over_time(select(\'cpu_busy{job=~"job1.*"}\'), "1h") > 99.5',
]

WIDE_JOIN_RULES = [
    "cpu_busy / disk_busy > 50",
    'on("instance,cpu", cpu_busy / disk_busy) > 50',
    'ignoring("job", cpu_busy - disk_busy) > 97',
    'sum(cpu_busy, by="job") / sum(disk_busy, by="job") > 1.01',
    'sum(cpu_busy, by="job") > 252000',
    'avg(cpu_busy, by="instance") > 85',
    'max(cpu_busy, by="instance") > 99.6',
    'min(cpu_busy, without="cpu") > 70',
    'count(cpu_busy > 99, by="job") > 60',
    'quantile(0.99, cpu_busy, by="job") > 99.1',
    'stddev(cpu_busy, by="job") > 29.2',
    'on("instance", cpu_busy / sum(cpu_busy, by="instance")) > 0.7',
    'ignoring("cpu", cpu_busy > avg(cpu_busy, by="instance,job") * 2.4)',
    "cpu_busy > 99 and disk_busy > 50",
    "unless(cpu_busy > 99, disk_busy > 50)",
    "cpu_busy > 99.5 or disk_busy > 99.5",
    "cpu_busy + disk_busy > 190",
    "max(cpu_busy, disk_busy) > 99.5",
    'avg_over_time(cpu_busy, "5m") - disk_busy > 97',
    'avg(avg_over_time(cpu_busy, "5m"), by="job") > 51',
]


def all_rules(wide: bool = False) -> list[tuple[str, str, str]]:
    """(kind, alert name, expr) for the 100 rules (``wide``: the variant over one 100k-series metric)."""
    thresholds = threshold_rules(("cpu_busy",)) if wide else threshold_rules()
    rules = [("threshold", f"T{i:02d}", e) for i, e in enumerate(thresholds)]
    rules += [("window", f"W{i:02d}", e) for i, e in enumerate(WIDE_WINDOW_RULES if wide else WINDOW_RULES)]
    rules += [("join", f"J{i:02d}", e) for i, e in enumerate(WIDE_JOIN_RULES if wide else JOIN_RULES)]
    assert len(rules) == 100, len(rules)
    return rules


def _yaml_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def write_config(directory: Path, rules: list[tuple[str, str, str]], interval: str = "15s") -> None:
    """fsincident.yaml with a push source ``bench`` and rules.d/bench.yaml with one group of ``rules``."""
    (directory / "rules.d").mkdir(parents=True, exist_ok=True)
    (directory / "fsincident.yaml").write_text(
        f"sources:\n  - {{name: {SOURCE}, type: push, max_series: 1000000}}\n", encoding="utf-8"
    )
    lines = ["groups:", "  - name: bench", f"    interval: {interval}", f"    source: {SOURCE}", "    rules:"]
    for _, alert, expr in rules:
        lines += [f"      - alert: {alert}", f"        expr: {_yaml_str(expr)}"]
    (directory / "rules.d" / "bench.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- data


def series_labels(n: int) -> list[Labels]:
    """``n`` label sets: 4 cpus per instance, 20 jobs (the same sets for every metric)."""
    return [
        Labels({"instance": f"host{i // 4:05d}", "job": f"job{(i // 4) % 20}", "cpu": str(i % 4)}) for i in range(n)
    ]


class Data:
    """Deterministic per-series parameters; ``at(k)`` gives the values of snapshot ``k`` (``k = HISTORY`` is 'now')."""

    def __init__(self, n: int = SERIES_PER_METRIC, seed: int = 1, metrics: tuple[str, ...] = tuple(METRICS)):
        self.n = n
        self.metrics = metrics
        self.rng = np.random.default_rng(seed)
        self.u = {m: self.rng.uniform(0, 100, n) for m in METRICS}
        idx = np.arange(n)
        self.reset = idx % 200 == 7
        self.spiky = idx % 100 == 42
        self.tripled = idx % 100 == 17
        self.idx = idx
        self.filling = idx % 100 == 3
        self.labels = series_labels(n)

    def values(self, k: int) -> dict[str, np.ndarray]:
        """Each metric's values at snapshot ``k`` (noise drawn from the shared generator)."""
        n, u, rng = self.n, self.u, self.rng
        t = k * STEP
        out: dict[str, np.ndarray] = {}
        for m in self.metrics:
            if m == "cpu_busy":
                v = u[m] + rng.normal(0, 0.1, n)
            elif m == "http_requests_total":
                v = u[m] * (t + 1000.0)
                v = np.where(self.reset & (k >= 200), u[m] * (k - 200) * STEP, v)
            elif m == "mem_used_pct":
                v = u[m] + rng.normal(0, 0.3, n)
            elif m in ("disk_busy", "temp_c"):
                v = u[m] + rng.normal(0, 0.1, n)
            elif m == "queue_depth":
                v = u[m] * 0.9 + rng.normal(0, 0.5, n)
                if 100 <= k < 104:
                    v = np.where(self.spiky, 150.0, v)
                if k >= 200:
                    v = np.where(self.tripled, v * 3, v)
            elif m == "latency_ms":
                v = 50 + rng.normal(0, 1, n)
                if k >= HISTORY - 1:  # a different 1 % of the series spikes in each newest snapshot
                    v = np.where(self.idx % 100 == 5 + k % 5, 70.0, v)
            elif m == "disk_used_pct":
                v = u[m] * 0.5 + rng.normal(0, 0.05, n)
                v = np.where(self.filling, 70 + (t - HISTORY * STEP) * 20 / 3600, v)
            elif m == "http_rps":
                v = 100 + u[m] + rng.normal(0, 0.5, n)
            elif m == "http_errors":
                v = (100 + u["http_rps"]) * u[m] / 1000
            else:
                raise KeyError(m)
            out[m] = v
        return out

    def snapshot(self, k: int) -> dict[str, dict[Labels, float]]:
        return {m: dict(zip(self.labels, v.tolist(), strict=True)) for m, v in self.values(k).items()}


class WideData(Data):
    """Two metrics of 100 000 series: ``cpu_busy`` (read by windows, so with history) and ``disk_busy``.

    ``disk_busy`` is read only at the instant, so it is left out of the snapshots before the last one of the
    history (its older values are never read; leaving them out only shortens the set-up).
    """

    def __init__(self, n: int = 100_000, seed: int = 2):
        super().__init__(n, seed, metrics=("cpu_busy", "disk_busy"))

    def snapshot(self, k: int) -> dict[str, dict[Labels, float]]:
        values = self.values(k)
        if k < HISTORY - 1:
            values.pop("disk_busy")
        return {m: dict(zip(self.labels, v.tolist(), strict=True)) for m, v in values.items()}


# ---------------------------------------------------------------- part 1: in process


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _load_rules(rules: list[tuple[str, str, str]]):  # type: ignore[no-untyped-def]
    from fsincident.config import load
    from fsincident.core import ConfigError

    with tempfile.TemporaryDirectory(prefix="fsi-bench-eval-") as tmp:
        write_config(Path(tmp), rules)
        try:
            cfg = load(tmp, environ={})
        except ConfigError as e:
            raise SystemExit(f"the benchmark rules do not load:\n{e}") from None
    return list(cfg.rules)


class GcPauses:
    """Times the cyclic garbage collector's runs while ``active`` (it stops the whole interpreter)."""

    def __init__(self) -> None:
        self.active = False
        self.pauses: list[tuple[int, float]] = []
        self._t0 = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if not self.active:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._t0))


def _cycle(rs, rules, now: float) -> tuple[float, float, list]:  # type: ignore[no-untyped-def]
    """Evaluate every rule once: (wall s, cpu s, per rule (seconds, result))."""
    per_rule = []
    w0, c0 = time.perf_counter(), time.process_time()
    for rule in rules:
        r0 = time.perf_counter()
        res = rs.evaluate(rule, now)
        per_rule.append((time.perf_counter() - r0, res))
    return time.perf_counter() - w0, time.process_time() - c0, per_rule


def in_process(
    cycles: int = CYCLES, profile: bool = False, verbose: bool = False, wide: bool = False
) -> list[dict[str, object]]:
    """Part 1 on the 10 x 10k set (or, ``wide``, on 2 x 100k series where every rule reads 100k series or more)."""
    from fsincident.evaluation.rules import RuleSet

    spec = all_rules(wide)
    rules = _load_rules(spec)
    kinds = {alert: kind for kind, alert, _ in spec}
    tag = "eval_wide" if wide else "eval"
    rss_start = rss_mib(os.getpid())  # the interpreter, numpy and fsincident imported, rules loaded
    data = WideData() if wide else Data()
    from fsincident.obs import tune_gc

    tune_gc()  # what the daemon does at start
    rss0 = rss_mib(os.getpid())
    rs = RuleSet(rules)
    ingest_s: list[float] = []
    for k in range(HISTORY):
        snap = data.snapshot(k)
        t0 = time.perf_counter()
        rs.ingest(SOURCE, T0 + k * STEP, snap)
        ingest_s.append(time.perf_counter() - t0)
    del snap
    gc.collect()
    rss_history = rss_mib(os.getpid()) - rss0
    peak_history = _peak_rss_mib()

    gcp = GcPauses().__enter__()
    walls: list[float] = []
    cpus: list[float] = []
    kind_s: dict[str, list[float]] = {"threshold": [], "window": [], "join": []}
    per_rule: list = []
    for c in range(cycles):
        k = HISTORY + c
        snap = data.snapshot(k)
        t0 = time.perf_counter()
        rs.ingest(SOURCE, T0 + k * STEP, snap)
        ingest_s.append(time.perf_counter() - t0)
        del snap
        prof = cProfile.Profile() if profile and c == cycles - 1 else None
        if prof is not None:
            prof.enable()
        gcp.active = True
        wall, cpu, per_rule = _cycle(rs, rules, T0 + k * STEP)
        gcp.active = False
        if prof is not None:
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
            print(buf.getvalue(), file=sys.stderr)
        walls.append(wall)
        cpus.append(cpu)
        for kind in kind_s:
            kind_s[kind].append(
                sum(s for rule, (s, _) in zip(rules, per_rule, strict=True) if kinds[rule.alert] == kind)
            )
    gcp.__exit__()
    peak = _peak_rss_mib()
    evaluated = sum(res.evaluated for _, res in per_rule)
    active = sum(len(res.active) for _, res in per_rule)
    errors = [e for _, res in per_rule for e in res.errors]
    if errors:
        print(f"eval: {len(errors)} rule errors, e.g.:", *errors[:5], sep="\n  ", file=sys.stderr)
    if verbose:
        print(f"eval: per rule (last cycle) {'ms':>7} {'evaluated':>9} {'active':>6}", file=sys.stderr)
        for rule, (s, res) in zip(rules, per_rule, strict=True):
            print(
                f"  {rule.alert}  {s * 1000:7.2f} {res.evaluated:9d} {len(res.active):6d}  {rule.expr.text}",
                file=sys.stderr,
            )
    else:
        print("eval: slowest rules (last cycle):", file=sys.stderr)
        for rule, (s, _) in sorted(zip(rules, per_rule, strict=True), key=lambda x: -x[1][0])[:8]:
            print(f"  {s * 1000:8.1f} ms  {rule.alert}: {rule.expr.text}", file=sys.stderr)

    cycle = statistics.median(walls)
    cpu = statistics.median(cpus)
    series = data.n * len(data.metrics)
    detail = {"series": series, "rules": len(rules), "history_snapshots": HISTORY, "cycles": cycles}
    ingest_ms = statistics.mean(ingest_s) * 1000
    return [
        result(f"{tag}_ingest_per_snapshot", ingest_ms, "ms", max_ms=round(max(ingest_s) * 1000, 1)),
        result(f"{tag}_cycle", cycle, "s", target="<= 1", min_s=round(min(walls), 3), cpu_s=round(cpu, 3), **detail),
        result(f"{tag}_cycle_threshold_rules", statistics.median(kind_s["threshold"]), "s", rules=50),
        result(f"{tag}_cycle_window_rules", statistics.median(kind_s["window"]), "s", rules=30),
        result(f"{tag}_cycle_join_rules", statistics.median(kind_s["join"]), "s", rules=20),
        result(
            f"{tag}_gc_per_cycle",
            sum(p for _, p in gcp.pauses) / cycles,
            "s",
            longest_s=round(max((p for _, p in gcp.pauses), default=0.0), 3),
            full_collections=sum(1 for g, _ in gcp.pauses if g == 2),
        ),
        result(f"{tag}_series_evaluated_per_cycle", evaluated, "series"),
        result(
            f"{tag}_series_evals_per_s_per_core",
            evaluated / cpu if cpu else 0.0,
            "evals/s",
            target=">= 10M",
            per_wall_s=round(evaluated / cycle) if cycle else 0,
        ),
        result(f"{tag}_alerts_active", active, "alerts", share_of_evaluated=round(active / max(evaluated, 1), 4)),
        result(f"{tag}_rule_errors", len(errors), "errors"),
        result(f"{tag}_rss_history", rss_history, "MiB"),
        result(
            f"{tag}_rss_peak",
            peak,
            "MiB",
            target="<= 300",
            at_start=round(rss_start, 1),
            after_data_set_up=round(rss0, 1),
            peak_after_history=round(peak_history, 1),
        ),
    ]


# ---------------------------------------------------------------- part 2: the daemon's API during cycles

# The rules run every second; the source is collected every 5 s, because a collection of ~50k pushed series
# itself stalls the loop for 0.1-0.4 s (with a 1 s source interval that, not evaluation, sets the p99).
DAEMON_SERIES = 8_000  # per metric, 6 metrics
DAEMON_METRICS = ("cpu_busy", "mem_used_pct", "http_requests_total", "latency_ms", "disk_used_pct", "http_rps")
DAEMON_RULES = [
    "cpu_busy > 99.99",
    'mem_used_pct > 99.99 and labels.job != "job3"',
    'rate(http_requests_total, "1m") > 99.99',
    'avg_over_time(mem_used_pct, "5m") > 99.99',
    'max_over_time(cpu_busy, "5m") > 99.99',
    'zscore(latency_ms, "5m") > 1000',
    'predict_linear(disk_used_pct, "5m", "1h") > 1000',
    'sum(http_rps, by="job") > 10000000',
    'on("instance", cpu_busy / sum(cpu_busy, by="instance")) > 0.9999',
    'quantile_over_time(0.9, latency_ms, "5m") > 1000',
    'ewma_zscore(latency_ms, "5m") > 1000',
    'ignoring("cpu", cpu_busy > avg(cpu_busy, by="instance,job") * 10)',
]
MAIN = """
listen: 127.0.0.1:{port}
database: {db}
sources:
  - {name: bench, type: push, interval: 5s, expire: 1h}
"""


DAEMON_COPIES = 3  # groups of DAEMON_RULES, each evaluated every second


def _daemon_rules() -> dict[str, str]:
    lines = ["groups:"]
    for g in range(DAEMON_COPIES):
        lines += [f"  - name: bench{g}", "    interval: 1s", f"    source: {SOURCE}", "    rules:"]
        for i, expr in enumerate(DAEMON_RULES):
            lines += [f"      - alert: D{i:02d}", f"        expr: {_yaml_str(expr)}"]
    return {"bench.yaml": "\n".join(lines) + "\n"}


def _push_all(port: int, token: str) -> int:
    """Push DAEMON_METRICS x DAEMON_SERIES once, in batches under the request limits; returns samples accepted."""
    import json

    data = Data(DAEMON_SERIES, metrics=DAEMON_METRICS)
    values = data.values(HISTORY)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    accepted = 0
    try:
        for m, v in values.items():
            lines = [f"# TYPE {m} gauge"]
            lines += [
                m + "{" + ",".join(f'{k}="{x}"' for k, x in lab.items()) + "} " + repr(x)
                for lab, x in zip(data.labels, v.tolist(), strict=True)
            ]
            body = ("\n".join(lines) + "\n").encode()
            conn.request(
                "POST",
                "/api/v1/metrics",
                body=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain; version=0.0.4"},
            )
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"push returned {resp.status}: {raw[:300]!r}")
            accepted += json.loads(raw)["accepted"]
    finally:
        conn.close()
    return accepted


def _sample(port: int, token: str, seconds: float, period: float = 0.02) -> dict[str, list[float]]:
    """Latencies (s) of GET /healthz and GET /api/v1/incidents, one of each every ``period`` for ``seconds``."""
    conns = {p: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for p in ("/healthz", "/api/v1/incidents")}
    out: dict[str, list[float]] = {p: [] for p in conns}
    headers = {"Authorization": f"Bearer {token}"}
    end = time.perf_counter() + seconds
    nxt = time.perf_counter()
    try:
        while time.perf_counter() < end:
            for path, conn in conns.items():
                t0 = time.perf_counter()
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {path} returned {resp.status}")
                out[path].append(time.perf_counter() - t0)
            nxt += period
            time.sleep(max(0.0, nxt - time.perf_counter()))
    finally:
        for conn in conns.values():
            conn.close()
    return out


def _counter(text: str, name: str) -> float:
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name + " "))


def _group_seconds(text: str) -> tuple[float, float]:
    """(sum, count) of the rule group duration histogram."""
    total = count = 0.0
    for ln in text.splitlines():
        if ln.startswith("fsincident_rule_group_duration_seconds_sum"):
            total += float(ln.rsplit(" ", 1)[1])
        elif ln.startswith("fsincident_rule_group_duration_seconds_count"):
            count += float(ln.rsplit(" ", 1)[1])
    return total, count


def _latency_rows(tag: str, lat: dict[str, list[float]], **detail: object) -> Iterator[dict[str, object]]:
    for path, name in (("/healthz", "healthz"), ("/api/v1/incidents", "incidents")):
        xs = lat[path]
        d = {"samples": len(xs), **detail}
        yield result(f"api_{name}_{tag}_p50", percentile(xs, 50) * 1000, "ms", **d)
        yield result(f"api_{name}_{tag}_p99", percentile(xs, 99) * 1000, "ms", **d)
        yield result(f"api_{name}_{tag}_max", max(xs) * 1000, "ms", **d)


def api_latency(seconds: float = 20.0, baseline_seconds: float = 8.0) -> list[dict[str, object]]:
    """API latency with no rules (baseline), then with DAEMON_RULES evaluated every second."""
    series = DAEMON_SERIES * len(DAEMON_METRICS)
    rows: list[dict[str, object]] = []
    for tag, rules, secs in (("no_rules", {}, baseline_seconds), ("during_cycles", _daemon_rules(), seconds)):
        with daemon(MAIN, rules) as d:
            assert d.proc is not None
            ingest = d.create_token("ingest")
            read = d.create_token("read")
            _push_all(d.port, ingest)
            if rules:
                wait(
                    lambda: _counter(metrics_text(d), "fsincident_rule_series_evaluations_total") >= series * 3,
                    60,
                    "a first cycle over the pushed series",
                    step=0.2,
                )
            else:
                time.sleep(2.0)  # a collection of the pushed series
            m0 = metrics_text(d)
            lat = _sample(d.port, read, secs)
            m1 = metrics_text(d)
            s0, n0 = _group_seconds(m0)
            s1, n1 = _group_seconds(m1)
            evals = _counter(m1, "fsincident_rule_series_evaluations_total") - _counter(
                m0, "fsincident_rule_series_evaluations_total"
            )
            detail: dict[str, object] = {
                "series": series,
                "rules": len(DAEMON_RULES) * DAEMON_COPIES if rules else 0,
                "load_avg_1m": round(os.getloadavg()[0], 2),  # other work on the machine shows in the latencies
            }
            if rules:
                detail |= {"cycles": int(n1 - n0), "series_evaluated": int(evals)}
                rows.append(result("daemon_group_cycle_mean", (s1 - s0) / max(n1 - n0, 1), "s", **detail, interval_s=1))
                rows.append(result("daemon_eval_busy_share", (s1 - s0) / secs, "share", **detail))
            rows.extend(_latency_rows(tag, lat, **detail))
            rows.append(result(f"daemon_rss_{tag}", rss_mib(d.proc.pid), "MiB", series=series))
    return rows


# ---------------------------------------------------------------- entry points


def _isolated(fn: Callable[..., list[dict[str, object]]], **kwargs: object) -> list[dict[str, object]]:
    """``fn(**kwargs)`` in a fresh interpreter, so that its peak RSS is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, **kwargs).result()


def run(
    profile: bool = False, with_daemon: bool = True, verbose: bool = False, wide: bool = True
) -> list[dict[str, object]]:
    rows = _isolated(in_process, profile=profile, verbose=verbose)
    if wide:
        rows += _isolated(in_process, profile=profile, verbose=verbose, wide=True)
    if with_daemon:
        rows += api_latency()
    return rows


def _table(rows: list[dict[str, object]], out: Callable[[str], None] = print) -> None:
    width = max(len(str(r["name"])) for r in rows)
    out(f"{'benchmark':<{width}}  {'value':>12}  unit")
    for r in rows:
        extra = f"  (target {r['target']})" if "target" in r else ""
        out(f"{r['name']!s:<{width}}  {r['value']:>12.3f}  {r['unit']}{extra}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", action="store_true", help="cProfile the last cycle (top 25 by own time, to stderr)")
    ap.add_argument("-v", "--verbose", action="store_true", help="time, series and alerts of every rule (stderr)")
    ap.add_argument("--no-wide", action="store_true", help="skip the 2 x 100k-series variant of part 1")
    ap.add_argument("--no-daemon", action="store_true", help="skip part 2 (the daemon's API latency)")
    args = ap.parse_args()
    t0 = time.monotonic()
    _table(run(args.profile, not args.no_daemon, args.verbose, not args.no_wide))
    print(f"({time.monotonic() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
