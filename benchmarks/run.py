"""Run every benchmark against the real daemon, print a table, write benchmarks/results/latest.json.

``--only SUITE ...`` runs those suites only (e.g. ``--only analytics``) and writes ``latest-SUITE.json``.
"""

from __future__ import annotations

import argparse
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

from benchmarks import analytics, delivery, ingest, latency, memory, oncall, push, sources, ui  # noqa: E402
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
    ("analytics", analytics.run),
]


def _git_rev() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only", nargs="+", choices=[name for name, _ in SUITES], metavar="SUITE", help="these suites only"
    )
    args = ap.parse_args()
    started = time.monotonic()
    results: list[dict[str, object]] = []
    for suite, fn in SUITES:
        if args.only and suite not in args.only:
            continue
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
    # A partial run (--only) leaves the full run's latest.json alone.
    name = "latest.json" if not args.only else f"latest-{'+'.join(args.only)}.json"
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)} ({report['seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
