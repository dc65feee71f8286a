"""Shared parts of the benchmarks: a daemon on a temporary config, /proc readings, percentiles."""

from __future__ import annotations

import math
import os
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers import DaemonProcess, free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def result(name: str, value: float, unit: str, **detail: object) -> dict[str, object]:
    return {"name": name, "value": round(value, 4), "unit": unit, **detail}


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB, from /proc/PID/status VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def metrics_text(d: DaemonProcess) -> str:
    with urllib.request.urlopen(d.url + "/metrics", timeout=10) as r:
        return r.read().decode()


def histogram_mean(text: str, name: str) -> float | None:
    """Mean of a histogram over all its label sets (``_sum / _count``)."""
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total / count if count else None


@contextmanager
def daemon(main: str, rules: dict[str, str], env: dict[str, str] | None = None) -> Iterator[DaemonProcess]:
    """The real ``fsincident run`` on a temporary config dir (``{port}`` and ``{db}`` filled in); always stopped."""
    with tempfile.TemporaryDirectory(prefix="fsi-bench-") as tmp:
        cfg = Path(tmp) / "cfg"
        (cfg / "rules.d").mkdir(parents=True)
        port = free_port()
        (cfg / "fsincident.yaml").write_text(
            textwrap.dedent(main).replace("{port}", str(port)).replace("{db}", f"sqlite:///{tmp}/state.db")
        )
        for name, text in rules.items():
            (cfg / "rules.d" / name).write_text(textwrap.dedent(text).replace("{port}", str(port)))
        with running(DaemonProcess(cfg, port, env=env)) as d:
            yield d


def stop(d: DaemonProcess, timeout: float = 60) -> None:
    """Stop ``d`` if it still runs; an exit status other than 0 is printed as a warning with the log's tail."""
    if d.proc is not None and d.proc.poll() is None:
        rc = d.stop(timeout=timeout)
        if rc != 0:
            print(f"warning: fsincident exited with {rc}: {d.logs()[-1500:]}", file=sys.stderr)


@contextmanager
def running(d: DaemonProcess) -> Iterator[DaemonProcess]:
    """Start ``d``; print its log's tail when the body fails; always stop it."""
    d.start()
    try:
        yield d
    except Exception:
        print(d.logs()[-3000:], file=sys.stderr)
        raise
    finally:
        stop(d)


def wait(pred, timeout: float, what: str, step: float = 0.01):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def scrape_setup(
    exp_url: str, receiver_url: str, alert: str, expr: str, annotations: str = ""
) -> tuple[str, dict[str, str]]:
    """fsincident.yaml (``{port}``/``{db}`` left for ``daemon``) and one 1 s rule group over a scrape source."""
    main = f"""
    listen: 127.0.0.1:{{port}}
    database: {{db}}
    sources:
      - {{name: app, type: scrape, url: "{exp_url}/metrics", interval: 1s}}
    channels:
      - {{name: ops, urls: ["{receiver_url}"]}}
    routes:
      - {{notify: ["channel:ops"]}}
    """
    rules = f"""
    groups:
      - name: app
        interval: 1s
        source: app
        rules:
          - alert: {alert}
            expr: {expr}
{annotations}    """
    return main, {"app.yaml": rules}
