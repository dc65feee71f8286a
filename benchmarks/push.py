"""Push ingestion throughput of the real daemon: samples/s for JSON and for Prometheus text format.

One client on a keep-alive connection posts batches of 1000 samples (10 000 distinct series in
rotation) to ``POST /api/v1/metrics`` for about 10 s per format; every response must be a 200
accepting the whole batch.
"""

from __future__ import annotations

import http.client
import json
import time

from benchmarks.common import cpu_seconds, daemon, result

BATCH = 1000
SERIES = 10_000
SECONDS = 10.0

MAIN = """
listen: 127.0.0.1:{port}
database: {db}
sources:
  - {name: pushed, type: push, interval: 1s}
"""


def _bodies(fmt: str) -> list[bytes]:
    """One body per batch of the rotation (``SERIES / BATCH`` of them)."""
    out = []
    for b in range(SERIES // BATCH):
        if fmt == "json":
            rows = [
                {"metric": "bench_value", "labels": {"shard": str(b), "n": str(i)}, "value": i * 0.5}
                for i in range(BATCH)
            ]
            out.append(json.dumps(rows).encode())
        else:
            lines = [f'bench_value{{shard="{b}",n="{i}"}} {i * 0.5}' for i in range(BATCH)]
            out.append(("# TYPE bench_value gauge\n" + "\n".join(lines) + "\n").encode())
    return out


def _push(port: int, token: str, fmt: str, seconds: float) -> tuple[int, float, float]:
    """Post batches for ``seconds``; returns (samples accepted, elapsed seconds, mean request seconds)."""
    bodies = _bodies(fmt)
    ctype = "application/json" if fmt == "json" else "text/plain; version=0.0.4"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": ctype}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    accepted = requests = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            conn.request("POST", "/api/v1/metrics", body=bodies[requests % len(bodies)], headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"push returned {resp.status}: {data[:300]!r}")
            accepted += json.loads(data)["accepted"]
            requests += 1
    finally:
        conn.close()
    elapsed = time.perf_counter() - t0
    return accepted, elapsed, elapsed / max(requests, 1)


def run(seconds: float = SECONDS) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with daemon(MAIN, {}) as d:
        token = d.create_token("ingest")
        assert d.proc is not None
        for fmt in ("json", "text"):
            cpu0 = cpu_seconds(d.proc.pid)
            accepted, elapsed, per_request = _push(d.port, token, fmt, seconds)
            cpu = cpu_seconds(d.proc.pid) - cpu0
            detail = {"batch": BATCH, "series": SERIES, "seconds": round(elapsed, 1), "samples": accepted}
            rows.append(result(f"push_{fmt}_samples_per_s", accepted / elapsed, "samples/s", **detail))
            rows.append(result(f"push_{fmt}_request_ms", per_request * 1000, "ms", **detail))
            rows.append(result(f"push_{fmt}_daemon_cpu_per_1k_samples", cpu / accepted * 1000 * 1000, "ms", **detail))
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
