"""Run every benchmark against the real daemon, print a table, write benchmarks/results/latest.json."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import delivery, ingest, latency, memory, oncall, push, sources, ui  # noqa: E402
from benchmarks import eval as eval_suite  # noqa: E402

SUITES = [
    ("latency", latency.run),
    ("memory", memory.run),
    ("sources", sources.run),
    ("push", push.run),
    ("eval", eval_suite.run),
    ("oncall", oncall.run),
    ("ingest", ingest.run),
    ("delivery", delivery.run),
    ("ui", ui.run),
]


def _git_rev() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def main() -> int:
    started = time.monotonic()
    results: list[dict[str, object]] = []
    for suite, fn in SUITES:
        t0 = time.monotonic()
        print(f"running {suite} ...", file=sys.stderr, flush=True)
        for r in fn():
            results.append({"suite": suite, **r})
        print(f"  {suite} took {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _git_rev(),
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "seconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    width = max(len(str(r["name"])) for r in results)
    print(f"{'benchmark':<{width}}  {'value':>10}  unit")
    for r in results:
        print(f"{r['name']!s:<{width}}  {r['value']:>10.3f}  {r['unit']}")
    out = ROOT / "benchmarks" / "results" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)} ({report['seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
