"""Delivery end to end: alerts posted to ``POST /api/v2/alerts`` of the real daemon -> incidents -> outbox ->
pages at a local aiohttp receiver (apprise ``json://`` on 127.0.0.1), on SQLite and on PostgreSQL.

1. **Throughput** (``sqlite``, ``postgresql``): ``ALERTS`` distinct critical alerts (each its own incident,
   ``group_wait: 0s``) posted in batches of ``BATCH`` on one keep-alive connection; pages/s is ``ALERTS``
   over the time from the first POST to the arrival of the last distinct page. Every alert must page
   exactly once (lost and duplicates are reported; any lost one fails the run).
2. **Two replicas** (``replicas``): two ``fsincident run`` on the same PostgreSQL database (different ports,
   one leader by advisory lock, both delivering), the batches posted to them in turn as a load balancer
   would; pages/s, duplicates (must be 0), and how many pages each replica sent.
3. **Latency** (each backend, on an idle daemon): ``LATENCY_SAMPLES`` single alerts, one at a time at a
   random phase, from just before the POST to the page's arrival; p50/p95/max. The throughput part also
   reports the latency of every page in the burst (queueing included).
4. **Rate limit** (``ratelimit``, SQLite): a channel with ``rate_limit: {max: 10, per: 10s}`` and
   ``RATE_ALERTS`` low-urgency (warning) alerts at once: how many messages arrived, how many of them were
   pages and how many digests, and that every alert was announced (as a page or inside a digest).

PostgreSQL is ``FSINCIDENT_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``, as the tests);
each mode creates a uniquely named database there and drops it afterwards. Loopback only; every wait has a
deadline. Run alone with ``.venv/bin/python benchmarks/delivery.py [--only MODE ...] [--alerts N]``; it
prints a table and writes ``benchmarks/results/delivery.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile, result, running, wait  # noqa: E402
from tests.helpers import DaemonProcess, Receiver, free_port  # noqa: E402

ALERTS = 2_000  # throughput part, per backend and for the two replicas
BATCH = 100  # alerts per POST
LATENCY_SAMPLES = 40
RATE_ALERTS = 200
RATE_LIMIT = "{max: 10, per: 10s}"
PG_ADMIN = os.environ.get("FSINCIDENT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MODES = ("sqlite", "postgresql", "replicas", "ratelimit")
DEADLINE = 240.0  # seconds for all pages of one burst to arrive

PAGE_ID = re.compile(r"\bbench ([a-z0-9]+-\d+)\b")
DIGEST_COUNT = re.compile(r"\b(\d+) notifications? (?:about \d+ incidents? )?held back by the rate limit")

CONFIG = """
listen: 127.0.0.1:{port}
database: {db}
channels:
  - {name: ops, urls: ["{hook}"]{rate_limit}}
routes:
  - {notify: ["channel:ops"], group_wait: 0s, repeat_interval: 24h}
"""


# ---------------------------------------------------------------- peers


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database with a unique name (dropped afterwards, also on failure); its URL."""
    name = f"fsi_bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="fsi-bench-db-") as tmp:
        yield f"sqlite:///{tmp}/state.db"


@contextmanager
def replica(db: str, hook: str, rate_limit: str | None = None) -> Iterator[DaemonProcess]:
    """The real ``fsincident run`` on ``db`` paging ``hook``; stopped with SIGTERM afterwards (logs shown on error)."""
    with tempfile.TemporaryDirectory(prefix="fsi-bench-delivery-") as tmp:
        cfg = Path(tmp) / "cfg"
        cfg.mkdir()
        port = free_port()
        text = textwrap.dedent(CONFIG)
        for key, value in {
            "{port}": str(port),
            "{db}": db,
            "{hook}": hook,
            "{rate_limit}": f", rate_limit: {rate_limit}" if rate_limit else "",
        }.items():
            text = text.replace(key, value)
        (cfg / "fsincident.yaml").write_text(text)
        with running(DaemonProcess(cfg, port)) as d:
            yield d


# ---------------------------------------------------------------- the client


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alerts(tag: str, first: int, n: int, severity: str = "critical") -> list[dict[str, Any]]:
    """``n`` distinct alerts ``bench {tag}-{i}`` firing for an hour."""
    now = datetime.now(UTC)
    return [
        {
            "labels": {"alertname": "BenchDelivery", "bench": tag, "n": str(i), "severity": severity},
            "annotations": {"summary": f"bench {tag}-{i}"},
            "startsAt": _iso(now - timedelta(seconds=1)),
            "endsAt": _iso(now + timedelta(hours=1)),
        }
        for i in range(first, first + n)
    ]


class Client:
    """One keep-alive HTTP/1.1 connection to one daemon, with an ``ingest`` token."""

    def __init__(self, d: DaemonProcess, token: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, batch: list[dict[str, Any]]) -> None:
        """POST the batch; RuntimeError unless the answer is 200."""
        self.conn.request("POST", "/api/v2/alerts", body=json.dumps(batch).encode(), headers=self.headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"POST /api/v2/alerts returned {resp.status}: {raw[:300]!r}")

    def close(self) -> None:
        self.conn.close()


def page_ids(messages: list[dict[str, Any]], tag: str) -> Counter[str]:
    """How many pages arrived per alert ``{tag}-{i}`` (digests are not pages)."""
    out: Counter[str] = Counter()
    for m in messages:
        text = f"{m.get('title', '')}\n{m.get('message', '')}"
        if DIGEST_COUNT.search(text):
            continue
        for i in set(PAGE_ID.findall(text)):
            if i.startswith(f"{tag}-"):
                out[i] += 1
    return out


def first_arrivals(messages: list[dict[str, Any]], tag: str) -> dict[str, float]:
    """The arrival time of the first page of each alert ``{tag}-{i}``."""
    out: dict[str, float] = {}
    for m in messages:
        text = f"{m.get('title', '')}\n{m.get('message', '')}"
        if DIGEST_COUNT.search(text):
            continue
        for i in set(PAGE_ID.findall(text)):
            if i.startswith(f"{tag}-") and i not in out:
                out[i] = m["_at"]
    return out


# ---------------------------------------------------------------- measurements


def burst(daemons: list[DaemonProcess], token: str, rcv: Receiver, path: str, n: int) -> dict[str, Any]:
    """Post ``n`` critical alerts in batches (to the daemons in turn) and wait for every page; figures."""
    tag = uuid.uuid4().hex[:6]
    clients = [Client(d, token) for d in daemons]
    posted_at: dict[str, float] = {}
    seen = len(rcv.received)
    try:
        t0 = time.time()
        for b, first in enumerate(range(0, n, BATCH)):
            batch = alerts(tag, first, min(BATCH, n - first))
            sent = time.time()
            clients[b % len(clients)].post(batch)
            for a in batch:
                posted_at[a["annotations"]["summary"][len("bench ") :]] = sent
        posting = time.time() - t0

        def all_paged() -> bool:
            return len(page_ids(rcv.received[seen:], tag)) >= n

        try:
            wait(all_paged, DEADLINE, f"{n} pages", step=0.05)
        except TimeoutError:
            pass  # reported below as lost pages
        msgs = [m for m in rcv.received[seen:] if m.get("_path") == f"/{path}"]
        got = page_ids(msgs, tag)
        arrivals = first_arrivals(msgs, tag)
        last = max(arrivals.values()) if arrivals else time.time()
        time.sleep(2.0)  # late duplicates, if any, arrive now
        got = page_ids([m for m in rcv.received[seen:] if m.get("_path") == f"/{path}"], tag)
    finally:
        for c in clients:
            c.close()
    lat = [arrivals[i] - posted_at[i] for i in arrivals]
    return {
        "pages_per_s": len(arrivals) / (last - t0) if last > t0 else 0.0,
        "posting_s": posting,
        "seconds": last - t0,
        "paged": len(got),
        "lost": n - len(got),
        "duplicates": sum(c - 1 for c in got.values()),
        "burst_latency_p50": percentile(lat, 50) if lat else float("nan"),
        "burst_latency_p95": percentile(lat, 95) if lat else float("nan"),
    }


def latency(d: DaemonProcess, token: str, rcv: Receiver, path: str, samples: int, seed: int = 7) -> list[float]:
    """Seconds from just before each single-alert POST to its page's arrival, one alert at a time."""
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:6]
    client = Client(d, token)
    out: list[float] = []
    try:
        for i in range(-1, samples):  # -1 warms the connection and the pipeline up
            time.sleep(rng.uniform(0.0, 0.25))  # a random phase against any periodic work of the daemon
            seen = len(rcv.received)
            batch = alerts(tag, i + 1, 1)
            t0 = time.time()
            client.post(batch)
            key = f"{tag}-{i + 1}"

            def arrived(seen: int = seen, key: str = key) -> float | None:
                for m in rcv.received[seen:]:
                    if m.get("_path") == f"/{path}" and key in PAGE_ID.findall(m.get("message", "")):
                        return m["_at"]
                return None

            at = wait(arrived, 20, f"the page of latency sample {i}", step=0.0005)
            if i >= 0:
                out.append(at - t0)
    finally:
        client.close()
    return out


def single(backend: str, rcv: Receiver, n: int, samples: int) -> dict[str, Any]:
    """Latency on an idle daemon, then one burst of ``n``, on ``backend`` (sqlite | postgresql)."""
    path = backend
    db_cm = pg_database() if backend == "postgresql" else sqlite_database()
    with db_cm as db, replica(db, f"json://127.0.0.1:{rcv.port}/{path}") as d:
        token = d.create_token("ingest")
        lat = latency(d, token, rcv, path, samples)
        out = burst([d], token, rcv, path, n)
    out["latency"] = lat
    return out


def two_replicas(rcv: Receiver, n: int) -> dict[str, Any]:
    """Two replicas on one PostgreSQL database, posted to in turn: pages/s, duplicates, pages sent by each."""
    import asyncpg

    path = "replicas"
    hook = f"json://127.0.0.1:{rcv.port}/{path}"
    with pg_database() as db, ExitStack() as stack:
        a = stack.enter_context(replica(db, hook))
        b = stack.enter_context(replica(db, hook))
        token = a.create_token("ingest")
        roles = {}
        for name, d in (("a", a), ("b", b)):
            with urllib.request.urlopen(d.url + "/readyz", timeout=5) as r:
                roles[name] = json.loads(r.read() or b"{}").get("role")
        out = burst([a, b], token, rcv, path, n)

        async def by_replica() -> dict[str, int]:
            conn = await asyncpg.connect(db, timeout=10)
            try:
                rows = await conn.fetch(
                    "SELECT claimed_by, count(*) AS n FROM outbox WHERE state = 'sent' GROUP BY claimed_by"
                )
            finally:
                await conn.close()
            return {str(r["claimed_by"]): int(r["n"]) for r in rows}

        sent = asyncio.run(by_replica())
    pids = {str(a.proc.pid if a.proc else ""): "a", str(b.proc.pid if b.proc else ""): "b"}
    out["sent_by"] = {pids.get(k.rsplit(":", 1)[-1], k): v for k, v in sent.items()}
    out["roles"] = roles
    return out


def rate_limited(rcv: Receiver, n: int) -> dict[str, Any]:
    """``n`` warning alerts at once through a channel limited to 10 sends per 10 s: messages, pages, digests."""
    path = "ratelimit"
    tag = uuid.uuid4().hex[:6]
    seen = len(rcv.received)
    with sqlite_database() as db, replica(db, f"json://127.0.0.1:{rcv.port}/{path}", RATE_LIMIT) as d:
        token = d.create_token("ingest")
        client = Client(d, token)
        t0 = time.time()
        try:
            for first in range(0, n, BATCH):
                client.post(alerts(tag, first, min(BATCH, n - first), severity="warning"))
        finally:
            client.close()

        def announced() -> int:
            msgs = [m for m in rcv.received[seen:] if m.get("_path") == f"/{path}"]
            digests = [DIGEST_COUNT.search(f"{m.get('title', '')}\n{m.get('message', '')}") for m in msgs]
            return len(page_ids(msgs, tag)) + sum(int(x.group(1)) for x in digests if x)

        try:
            wait(lambda: announced() >= n, 90, f"all {n} alerts announced", step=0.2)
        except TimeoutError:
            pass  # reported as unannounced
        took = time.time() - t0
        time.sleep(2.0)
    msgs = [m for m in rcv.received[seen:] if m.get("_path") == f"/{path}"]
    digests = [x for m in msgs if (x := DIGEST_COUNT.search(f"{m.get('title', '')}\n{m.get('message', '')}"))]
    pages = page_ids(msgs, tag)
    return {
        "messages": len(msgs),
        "pages": sum(pages.values()),
        "digests": len(digests),
        "in_digests": sum(int(x.group(1)) for x in digests),
        "unannounced": n - len(pages) - sum(int(x.group(1)) for x in digests),
        "seconds": took,
    }


# ---------------------------------------------------------------- rows, table


def run(
    alerts_n: int = ALERTS,
    samples: int = LATENCY_SAMPLES,
    rate_alerts: int = RATE_ALERTS,
    only: list[str] | None = None,
) -> list[dict[str, object]]:
    """Every mode (or ``only`` those) against the real daemon; result rows for benchmarks/run.py."""
    modes = [m for m in MODES if not only or m in only]
    rows: list[dict[str, object]] = []
    rcv = Receiver().start()
    try:
        for mode in modes:
            t0 = time.monotonic()
            load = round(os.getloadavg()[0], 2)
            if mode in ("sqlite", "postgresql"):
                m = single(mode, rcv, alerts_n, samples)
                detail = {"backend": mode, "alerts": alerts_n, "batch": BATCH, "load_avg_1m": load}
                rows += [
                    result(f"{mode}_pages_per_s", m["pages_per_s"], "pages/s", **detail),
                    result(f"{mode}_lost", m["lost"], "pages", **detail),
                    result(f"{mode}_duplicates", m["duplicates"], "pages", **detail),
                    result(f"{mode}_burst_latency_p50", m["burst_latency_p50"] * 1000, "ms", **detail),
                    result(f"{mode}_burst_latency_p95", m["burst_latency_p95"] * 1000, "ms", **detail),
                ]
                lat, ldetail = m["latency"], {"backend": mode, "samples": samples, "load_avg_1m": load}
                rows += [
                    result(f"{mode}_page_latency_p50", percentile(lat, 50) * 1000, "ms", **ldetail),
                    result(f"{mode}_page_latency_p95", percentile(lat, 95) * 1000, "ms", **ldetail),
                    result(f"{mode}_page_latency_max", max(lat) * 1000, "ms", **ldetail),
                ]
            elif mode == "replicas":
                m = two_replicas(rcv, alerts_n)
                detail = {
                    "backend": "postgresql",
                    "replicas": 2,
                    "alerts": alerts_n,
                    "sent_by": m["sent_by"],
                    "roles": m["roles"],
                    "load_avg_1m": load,
                }
                rows += [
                    result("replicas_pages_per_s", m["pages_per_s"], "pages/s", **detail),
                    result("replicas_lost", m["lost"], "pages", **detail),
                    result("replicas_duplicates", m["duplicates"], "pages", **detail),
                    result("replicas_burst_latency_p95", m["burst_latency_p95"] * 1000, "ms", **detail),
                ]
            else:
                m = rate_limited(rcv, rate_alerts)
                detail = {"rate_limit": RATE_LIMIT, "alerts": rate_alerts, "severity": "warning", "load_avg_1m": load}
                rows += [
                    result("ratelimit_messages", m["messages"], "messages", **detail),
                    result("ratelimit_pages", m["pages"], "messages", **detail),
                    result("ratelimit_digests", m["digests"], "messages", **detail),
                    result("ratelimit_alerts_in_digests", m["in_digests"], "alerts", **detail),
                    result("ratelimit_unannounced", m["unannounced"], "alerts", **detail),
                    result("ratelimit_seconds_until_all_announced", m["seconds"], "s", **detail),
                ]
            print(f"  delivery: {mode} took {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    finally:
        rcv.stop()
    bad = [r for r in rows if str(r["name"]).endswith(("_lost", "_unannounced")) and r["value"]]
    bad += [r for r in rows if r["name"] == "replicas_duplicates" and r["value"]]
    if bad:
        raise RuntimeError(f"delivery benchmark: pages lost or duplicated: {bad}")
    return rows


def table(rows: list[dict[str, object]]) -> None:
    width = max(len(str(r["name"])) for r in rows)
    print(f"{'figure':<{width}}  {'value':>10}  unit")
    for r in rows:
        print(f"{r['name']!s:<{width}}  {r['value']:>10.2f}  {r['unit']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=MODES, help="run these modes only")
    ap.add_argument("--alerts", type=int, default=ALERTS, help=f"alerts of a throughput burst ({ALERTS})")
    ap.add_argument("--samples", type=int, default=LATENCY_SAMPLES, help=f"latency samples ({LATENCY_SAMPLES})")
    ap.add_argument("--rate-alerts", type=int, default=RATE_ALERTS, help=f"alerts, rate-limit part ({RATE_ALERTS})")
    args = ap.parse_args()
    t0 = time.monotonic()
    rows = run(args.alerts, args.samples, args.rate_alerts, args.only)
    table(rows)
    out = ROOT / "benchmarks" / "results" / "delivery.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 1),
        "machine": {"cpus": os.cpu_count()},
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)} ({report['seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
