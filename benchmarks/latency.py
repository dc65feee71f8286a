"""Threshold -> notification latency of the real daemon at a 1 s source and group interval.

Series are flipped over the threshold one at a time, at a random phase of the 1 s schedules; the
latency is the time from the flip to the page's arrival at a local webhook receiver.
"""

from __future__ import annotations

import random
import time

from benchmarks.common import daemon, percentile, result, scrape_setup, wait
from tests.helpers import Exposition, Receiver

FLIPS = 20


def run(flips: int = FLIPS, seed: int = 1) -> list[dict[str, object]]:
    rng = random.Random(seed)
    exp = Exposition().start()
    rcv = Receiver().start()
    try:
        for n in range(flips):
            exp.set("bench_depth", 0, n=str(n))
        main, rules = scrape_setup(
            exp.url,
            rcv.apprise_url("ops"),
            "BenchDepth",
            "bench_depth > 10",
            '            annotations:\n              summary: "series {{ labels.n }}"\n',
        )
        latencies: list[float] = []
        with daemon(main, rules):
            time.sleep(2.0)  # past the first scrape and evaluation
            for n in range(flips):
                time.sleep(rng.uniform(0.0, 1.0))  # a random phase against the 1 s schedules
                seen = len(rcv.received)
                t0 = time.time()
                exp.set("bench_depth", 50, n=str(n))
                msgs = wait(lambda s=seen: rcv.received[s:] or None, 15, f"the page for series {n}")
                msg = msgs[0]
                assert f"series {n}" in msg["title"], msg["title"]
                latencies.append(msg["_at"] - t0)
    finally:
        exp.stop()
        rcv.stop()
    detail = {"samples": len(latencies), "interval_s": 1}
    return [
        result("latency_p50", percentile(latencies, 50), "s", **detail),
        result("latency_p95", percentile(latencies, 95), "s", **detail),
        result("latency_max", max(latencies), "s", **detail),
        result("latency_min", min(latencies), "s", **detail),
    ]


if __name__ == "__main__":
    for r in run():
        print(r)
