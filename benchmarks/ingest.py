"""Alertmanager drop-in: alerts/s on ``POST /api/v2/alerts`` and alert -> webhook latency, side by side with
the real Alertmanager 0.25 (``/usr/bin/prometheus-alertmanager``) on the same machine, in the same run.

Both peers get the same route tree and the same client (one keep-alive HTTP/1.1 connection, one request at a
time, as Prometheus' notifier sends to one Alertmanager):

1. Latency, both peers up, taking turns sample by sample (so that other load on the machine hits both
   alike): ``LATENCY_SAMPLES`` alerts, each alone in its group (``group_by: [alertname, n]``,
   ``group_wait: 0s`` — Alertmanager's minimum — on both), posted one at a time at a random phase; the
   latency is from just before the POST to the payload's arrival at a local aiohttp webhook receiver
   (Alertmanager's ``webhook_configs``; ours a ``type: webhook`` channel with ``format: alertmanager``).
2. Throughput, each peer alone on a fresh instance: ``ALERTS`` distinct label sets (ten alertnames, grouped
   by alertname, ``group_wait: 1m`` so that nothing is delivered meanwhile) posted once in batches of
   ``BATCH`` (new alerts), then ``REPOSTS`` rounds of the same alerts with a later ``endsAt``, as
   Prometheus re-sends firing alerts (re-posts). Every response must be a 200. Reported: alerts/s, request
   p50/p99, the peer's CPU per 1000 alerts including the work it still does after the last response (until
   it idles; how long that tail lasts is ``busy_after_new_alerts``), and one ``GET /api/v2/alerts`` that
   must list every posted alert.

Ratios are ours / Alertmanager's (goal, issue #6: ingest >= 1.0, p95 latency <= 1.0, i.e. at most
Alertmanager's). Alertmanager keeps alerts in memory only; fsincident has committed them to its database
(SQLite, WAL, synchronous=FULL) before it answers 200.

Run alone with ``.venv/bin/python benchmarks/ingest.py [--only am|ours] [--profile] [--alerts N]``;
it prints a side-by-side table and writes ``benchmarks/results/ingest.json``. ``--profile`` runs our
daemon of the throughput part under cProfile (its main thread) and prints where its time went.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import pstats
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_seconds, percentile, result, rss_mib, wait  # noqa: E402
from tests.helpers import FSINCIDENT, DaemonProcess, Receiver, free_port  # noqa: E402

ALERTS = 5_000  # distinct label sets of the throughput part
BATCH = 100  # alerts per POST (Prometheus sends up to 64 per request by default)
REPOSTS = 3  # rounds of re-posts of all ALERTS
GROUPS = 10  # alertnames of the throughput part (grouped by alertname)
LATENCY_SAMPLES = 30
AM_BIN = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
SIDES = ("am", "ours")
LABELS = {"am": "alertmanager", "ours": "fsincident"}

AM_CONFIG = """
global:
  resolve_timeout: 5m
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1m
  group_interval: 1m
  repeat_interval: 1h
  routes:
    - matchers: ['bench="latency"']
      group_by: [alertname, n]
      group_wait: 0s
receivers:
  - name: hook
    webhook_configs:
      - url: "{url}"
        send_resolved: false
"""

OURS_CONFIG = """
listen: 127.0.0.1:{port}
database: {db}
alertmanager: {resolve_timeout: 5m}
channels:
  - {name: hook, type: webhook, url: "{url}", format: alertmanager, send_resolved: false}
routes:
  - matchers: ['bench="latency"']
    group_by: [alertname, n]
    group_wait: 0s
    group_interval: 1m
    repeat_interval: 1h
    notify: ["channel:hook"]
  - group_by: [alertname]
    group_wait: 1m
    group_interval: 1m
    repeat_interval: 1h
    notify: ["channel:hook"]
"""


@dataclass
class Peer:
    """One side of the comparison: where to post, what to send along, and its process (for CPU and RSS)."""

    side: str
    url: str
    pid: int
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


# ---------------------------------------------------------------- the peers


@contextmanager
def alertmanager(hook_url: str) -> Iterator[Peer]:
    """The real Alertmanager on a free loopback port, clustering off, fresh storage; always stopped."""
    with tempfile.TemporaryDirectory(prefix="fsi-bench-am-") as tmp:
        cfg = Path(tmp) / "alertmanager.yml"
        cfg.write_text(textwrap.dedent(AM_CONFIG).replace("{url}", hook_url))
        port = free_port()
        log = open(Path(tmp) / "am.log", "wb")
        proc = subprocess.Popen(
            [
                AM_BIN,
                f"--config.file={cfg}",
                f"--storage.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        peer = Peer("am", f"http://127.0.0.1:{port}", proc.pid)
        try:

            def ready() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"alertmanager exited with {proc.returncode}: {_tail(Path(tmp) / 'am.log')}")
                try:
                    with urllib.request.urlopen(peer.url + "/-/ready", timeout=1) as r:
                        return r.status == 200
                except (urllib.error.URLError, OSError):
                    return False

            wait(ready, 20, "alertmanager ready", step=0.05)
            yield peer
        except Exception:
            print(_tail(Path(tmp) / "am.log"), file=sys.stderr)
            raise
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            log.close()


class _ProfiledDaemon(DaemonProcess):
    """``fsincident run`` under cProfile (stats written to ``profile_path`` when it stops)."""

    profile_path: Path

    def start(self, wait: bool = True) -> DaemonProcess:
        self._log = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "cProfile", "-o", str(self.profile_path), *FSINCIDENT[1:]]
        self.proc = subprocess.Popen(
            [*cmd, "run", "--config", str(self.config_dir)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.config_dir,
        )
        if wait:
            self.wait_ready(60)
        return self


@contextmanager
def fsincident(hook_url: str, profile: Path | None = None) -> Iterator[Peer]:
    """The real ``fsincident run`` with OURS_CONFIG on a fresh SQLite file and an ``ingest`` token; always
    stopped (cleanly, so that a profile gets written)."""
    with tempfile.TemporaryDirectory(prefix="fsi-bench-ingest-") as tmp:
        cfg = Path(tmp) / "cfg"
        cfg.mkdir()
        port = free_port()
        main = textwrap.dedent(OURS_CONFIG).replace("{port}", str(port)).replace("{url}", hook_url)
        (cfg / "fsincident.yaml").write_text(main.replace("{db}", f"sqlite:///{tmp}/state.db"))
        d: DaemonProcess
        if profile is not None:
            d = _ProfiledDaemon(cfg, port)
            d.profile_path = profile
        else:
            d = DaemonProcess(cfg, port)
        d.start()
        assert d.proc is not None
        try:
            token = d.create_token("ingest,read")
            yield Peer("ours", d.url, d.proc.pid, {"Authorization": f"Bearer {token}"})
        except Exception:
            print(d.logs()[-3000:], file=sys.stderr)
            raise
        finally:
            if d.proc.poll() is None:
                rc = d.stop(timeout=60)
                if rc != 0:
                    print(f"warning: fsincident exited with {rc}", file=sys.stderr)


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


# ---------------------------------------------------------------- the client


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _alert(i: int, starts: datetime, ends: datetime) -> dict[str, object]:
    """One alert as Prometheus posts it (labels incl. external ones, annotations, times, generatorURL)."""
    return {
        "labels": {
            "alertname": f"BenchIngest{i % GROUPS}",
            "bench": "ingest",
            "instance": f"host-{i:05d}.example.net:9100",
            "job": "node",
            "severity": "warning" if i % 3 else "critical",
            "cluster": "bench",
        },
        "annotations": {
            "summary": f"disk almost full on host-{i:05d}",
            "description": "free space below 5 % for 10 minutes",
        },
        "startsAt": _iso(starts),
        "endsAt": _iso(ends),
        "generatorURL": f"http://prometheus.example.net:9090/graph?g0.expr=disk_free+%3C+5&alert={i}",
    }


def _batches(n: int, starts: datetime, ends: datetime) -> list[bytes]:
    """The ``n`` alerts as JSON bodies of BATCH alerts each."""
    out = []
    for b in range(0, n, BATCH):
        out.append(json.dumps([_alert(i, starts, ends) for i in range(b, min(n, b + BATCH))]).encode())
    return out


class Client:
    """One keep-alive HTTP/1.1 connection, the same for both peers."""

    def __init__(self, peer: Peer):
        self.peer = peer
        self.conn = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = dict(self.peer.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def post_alerts(self, body: bytes) -> None:
        status, raw = self.request("POST", "/api/v2/alerts", body)
        if status != 200:
            raise RuntimeError(f"{self.peer.side}: POST /api/v2/alerts returned {status}: {raw[:300]!r}")

    def get_alerts(self, query: str = "") -> list[dict[str, object]]:
        status, raw = self.request("GET", "/api/v2/alerts" + query)
        if status != 200:
            raise RuntimeError(f"{self.peer.side}: GET /api/v2/alerts returned {status}: {raw[:300]!r}")
        return json.loads(raw)

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------- measurements


def latency(peers: dict[str, Peer], rcv: Receiver, samples: int, seed: int = 6) -> dict[str, list[float]]:
    """Seconds from just before each POST to its webhook payload's arrival (one alert per group); the peers take
    turns sample by sample, so that other load on the machine hits both alike."""
    rng = random.Random(seed)
    clients = {side: Client(peer) for side, peer in peers.items()}
    out: dict[str, list[float]] = {side: [] for side in peers}
    try:
        for n in range(-1, samples):  # n = -1 warms up the connections and both pipelines
            for side, client in clients.items():
                time.sleep(rng.uniform(0.0, 0.25))  # a random phase against any periodic work of the peer
                now = datetime.now(UTC)
                body = {
                    "labels": {"alertname": "BenchLatency", "bench": "latency", "n": str(n), "severity": "critical"},
                    "annotations": {"summary": f"latency sample {n}"},
                    "startsAt": _iso(now),
                    "endsAt": _iso(now + timedelta(minutes=4)),
                    "generatorURL": "http://prometheus.example.net:9090/graph",
                }
                raw = json.dumps([body]).encode()
                seen = len(rcv.received)
                t0 = time.time()
                client.post_alerts(raw)

                def arrived(n: int = n, side: str = side, seen: int = seen) -> float | None:
                    for m in rcv.received[seen:]:
                        alerts = m.get("alerts", [])
                        if m.get("_path") == f"/{side}" and any(a["labels"].get("n") == str(n) for a in alerts):
                            return m["_at"]
                    return None

                at = wait(arrived, 20, f"{side}: the webhook payload of latency sample {n}", step=0.0005)
                if n >= 0:
                    out[side].append(at - t0)
    finally:
        for client in clients.values():
            client.close()
    return out


def _until_idle(pid: int, timeout: float = 90.0, window: float = 0.5, share: float = 0.1) -> float:
    """Seconds until ``pid`` uses less than ``share`` of a core over ``window`` (its queued work done); raises
    TimeoutError after ``timeout``."""
    t0 = time.perf_counter()
    last = cpu_seconds(pid)
    while time.perf_counter() - t0 < timeout:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - last < share * window:
            return max(0.0, time.perf_counter() - t0 - window)
        last = now
    raise TimeoutError(f"process {pid} still busy after {timeout}s")


def throughput(peer: Peer, alerts: int, reposts: int) -> dict[str, object]:
    """New alerts then re-posts of them: alerts/s, request times, the peer's CPU per alert (including what it does
    after the last response until it is idle), that tail's length, and one GET listing all of them."""
    client = Client(peer)
    starts = datetime.now(UTC).replace(microsecond=0)
    rounds = [_batches(alerts, starts, starts + timedelta(minutes=4, seconds=r)) for r in range(reposts + 1)]
    out: dict[str, object] = {"load_avg_1m": round(os.getloadavg()[0], 2)}
    try:
        _until_idle(peer.pid)
        for phase, bodies_list in (("new", rounds[:1]), ("repost", rounds[1:])):
            req: list[float] = []
            cpu0 = cpu_seconds(peer.pid)
            t0 = time.perf_counter()
            for bodies in bodies_list:
                for body in bodies:
                    r0 = time.perf_counter()
                    client.post_alerts(body)
                    req.append(time.perf_counter() - r0)
            elapsed = time.perf_counter() - t0
            tail = _until_idle(peer.pid)
            cpu = cpu_seconds(peer.pid) - cpu0
            posted = alerts * len(bodies_list)
            out[phase] = {
                "alerts_per_s": posted / elapsed,
                "request_p50_ms": percentile(req, 50) * 1000,
                "request_p99_ms": percentile(req, 99) * 1000,
                "cpu_ms_per_1k": cpu / posted * 1e6,
                "busy_after_s": tail,
                "alerts": posted,
                "requests": len(req),
                "seconds": round(elapsed, 2),
            }
            if phase == "new":
                g0 = time.perf_counter()
                got = client.get_alerts('?filter=bench="ingest"')
                out["get_alerts_ms"] = (time.perf_counter() - g0) * 1000
                if len(got) != alerts:
                    raise RuntimeError(f"{peer.side}: GET /api/v2/alerts lists {len(got)} of the {alerts} alerts")
        out["rss_mib"] = rss_mib(peer.pid)
    finally:
        client.close()
    return out


# figure -> (unit, goal of the ratio ours/am when the issue sets one; "-": no ratio, as for a value near 0)
FIGURES: dict[str, tuple[str, str | None]] = {
    "post_new_alerts_per_s": ("alerts/s", ">= 1.0"),
    "post_repost_alerts_per_s": ("alerts/s", ">= 1.0"),
    "post_new_request_p50": ("ms", None),
    "post_new_request_p99": ("ms", None),
    "post_repost_request_p50": ("ms", None),
    "post_repost_request_p99": ("ms", None),
    "cpu_per_1k_new_alerts": ("ms", None),
    "cpu_per_1k_reposted_alerts": ("ms", None),
    "busy_after_new_alerts": ("s", "-"),
    "get_alerts": ("ms", None),
    "webhook_latency_p50": ("ms", None),
    "webhook_latency_p95": ("ms", "<= 1.0"),
    "webhook_latency_max": ("ms", None),
    "rss": ("MiB", None),
}


def rows_from(got: dict[str, dict[str, object]], alerts: int, reposts: int) -> list[dict[str, object]]:
    """Result rows: each figure per peer (``am_*``, ``ours_*``), then the ratios ours / Alertmanager's."""
    rows: list[dict[str, object]] = []
    figures: dict[str, dict[str, float]] = {}
    for side, m in got.items():
        lat: list[float] = m["latency"]  # type: ignore[assignment]
        new: dict[str, float] = m["new"]  # type: ignore[assignment]
        rep: dict[str, float] = m["repost"]  # type: ignore[assignment]
        figures[side] = {
            "post_new_alerts_per_s": new["alerts_per_s"],
            "post_repost_alerts_per_s": rep["alerts_per_s"],
            "post_new_request_p50": new["request_p50_ms"],
            "post_new_request_p99": new["request_p99_ms"],
            "post_repost_request_p50": rep["request_p50_ms"],
            "post_repost_request_p99": rep["request_p99_ms"],
            "cpu_per_1k_new_alerts": new["cpu_ms_per_1k"],
            "cpu_per_1k_reposted_alerts": rep["cpu_ms_per_1k"],
            "busy_after_new_alerts": new["busy_after_s"],
            "get_alerts": float(m["get_alerts_ms"]),  # type: ignore[arg-type]
            "webhook_latency_p50": percentile(lat, 50) * 1000,
            "webhook_latency_p95": percentile(lat, 95) * 1000,
            "webhook_latency_max": max(lat) * 1000,
            "rss": float(m["rss_mib"]),  # type: ignore[arg-type]
        }
        detail: dict[str, object] = {
            "peer": LABELS[side],
            "batch": BATCH,
            "alerts": alerts,
            "reposts": reposts,
            "latency_samples": len(lat),
            "group_wait": "0s",
            "load_avg_1m": m["load_avg_1m"],
        }
        for key, value in figures[side].items():
            rows.append(result(f"{side}_{key}", value, FIGURES[key][0], **detail))
    if set(figures) == set(SIDES):
        ours, am = figures["ours"], figures["am"]
        for key, (_, goal) in FIGURES.items():
            if am[key] > 0 and goal != "-":
                rows.append(
                    result(f"ratio_{key}", ours[key] / am[key], "ours/am", **({"target": goal} if goal else {}))
                )
    return rows


def run(
    alerts: int = ALERTS,
    reposts: int = REPOSTS,
    samples: int = LATENCY_SAMPLES,
    only: str | None = None,
    profile: Path | None = None,
) -> list[dict[str, object]]:
    """Latency with both peers up, taking turns; then each peer's throughput alone, on a fresh instance."""
    sides = [s for s in SIDES if only in (None, s)]
    rcv = Receiver().start()

    def peer(side: str, prof: Path | None = None) -> Any:
        hook = f"http://127.0.0.1:{rcv.port}/{side}"
        return alertmanager(hook) if side == "am" else fsincident(hook, prof)

    got: dict[str, dict[str, object]] = {side: {} for side in sides}
    try:
        t0 = time.monotonic()
        with ExitStack() as stack:
            peers = {side: stack.enter_context(peer(side)) for side in sides}
            for side, lat in latency(peers, rcv, samples).items():
                got[side]["latency"] = lat
        print(f"  ingest: latency took {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
        for side in sides:
            t0 = time.monotonic()
            with peer(side, profile if side == "ours" else None) as p:
                got[side].update(throughput(p, alerts, reposts))
            print(f"  ingest: {LABELS[side]} throughput took {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    finally:
        rcv.stop()
    return rows_from(got, alerts, reposts)


# ---------------------------------------------------------------- reporting


def table(rows: list[dict[str, object]], out: Callable[[str], None] = print) -> None:
    """Side by side: figure, fsincident, Alertmanager, ratio ours/AM (with the goal where the issue sets one)."""
    by = {str(r["name"]): r for r in rows}
    keys = []
    for r in rows:
        name = str(r["name"])
        for side in SIDES:
            if name.startswith(side + "_"):
                k = name[len(side) + 1 :]
                if k not in keys:
                    keys.append(k)
    width = max(len(k) for k in keys)
    out(f"{'figure':<{width}}  {'fsincident':>11}  {'alertmanager':>12}  {'ours/am':>8}  unit")
    for k in keys:
        ours, am, ratio = by.get(f"ours_{k}"), by.get(f"am_{k}"), by.get(f"ratio_{k}")
        unit = (ours or am or {}).get("unit", "")
        o = f"{ours['value']:>11.2f}" if ours else f"{'-':>11}"
        a = f"{am['value']:>12.2f}" if am else f"{'-':>12}"
        q = f"{ratio['value']:>8.3f}" if ratio else f"{'-':>8}"
        goal = f"  (goal {ratio['target']})" if ratio and "target" in ratio else ""
        out(f"{k:<{width}}  {o}  {a}  {q}  {unit}{goal}")


def print_profile(path: Path, top: int = 30) -> None:
    """The daemon's cProfile stats (main thread only: the SQLite worker threads are not in it) to stderr: the top
    functions by own time, then fsincident's own functions by cumulative time (for a coroutine that includes the
    time it waited, e.g. for a database lock)."""
    for key, restrict in (("tottime", ()), ("cumulative", ("fsincident/",))):
        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).sort_stats(key).print_stats(*restrict, top)
        print(buf.getvalue(), file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=SIDES, help="measure one peer only")
    ap.add_argument("--alerts", type=int, default=ALERTS, help=f"distinct alerts of the throughput part ({ALERTS})")
    ap.add_argument("--reposts", type=int, default=REPOSTS, help=f"rounds of re-posts ({REPOSTS})")
    ap.add_argument("--samples", type=int, default=LATENCY_SAMPLES, help=f"latency samples ({LATENCY_SAMPLES})")
    ap.add_argument(
        "--profile", action="store_true", help="profile our daemon's throughput part (cProfile; top to stderr)"
    )
    args = ap.parse_args()
    t0 = time.monotonic()
    prof: Path | None = None
    if args.profile:
        fd, name = tempfile.mkstemp(prefix="fsi-ingest-", suffix=".prof")
        os.close(fd)
        prof = Path(name)
    rows = run(args.alerts, args.reposts, args.samples, args.only, prof)
    table(rows)
    out = ROOT / "benchmarks" / "results" / "ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 1),
        "machine": {"cpus": os.cpu_count()},
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)} ({report['seconds']}s)")
    if prof is not None:
        print_profile(prof)
        print(f"profile: {prof} (python -m pstats {prof})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
