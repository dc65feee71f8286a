"""Helpers for the end-to-end tests: config text, metrics, timelines, logs, and a receiver that counts attempts."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import DaemonProcess, Receiver

TRIGGER_TITLE = re.compile(r"^\[TRIGGERED\] #(\d+) ")


class CountingReceiver(Receiver):
    """A Receiver that also counts every request as it arrives (before ``delay`` and whatever ``status``)."""

    def __init__(self, port: int | None = None):
        self.hits: list[tuple[float, int]] = []
        super().__init__(port)

    async def _handle(self, request: web.Request) -> web.Response:
        self.hits.append((time.time(), self.status))
        return await super()._handle(request)


def rules_yaml(rules: str, *, group: str = "app", source: str = "app", interval: str = "1s") -> str:
    """One rule group; ``rules`` is the YAML list of rules, indented by 6 spaces."""
    return f"""
groups:
  - name: {group}
    interval: {interval}
    source: {source}
    rules:
{rules}"""


def make_config(
    directory: Path,
    *,
    port: int,
    database: str,
    sources: str,
    channel_urls: list[str],
    rules: str,
    delivery: str | None = None,
    extra: str = "",
) -> Path:
    """fsincident.yaml with one channel ``ops`` routed for everything, plus ``rules.d/app.yaml``."""
    urls = ", ".join(json.dumps(u) for u in channel_urls)
    main = (
        f"listen: 127.0.0.1:{port}\n"
        f"database: {database}\n"
        f"sources:\n{sources}\n"
        f"channels:\n  - {{name: ops, urls: [{urls}]}}\n"
        "routes:\n  - {notify: ['channel:ops']}\n"
    )
    if delivery:
        main += f"delivery: {delivery}\n"
    main += extra
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fsincident.yaml").write_text(main)
    (directory / "rules.d").mkdir(exist_ok=True)
    (directory / "rules.d" / "app.yaml").write_text(rules)
    return directory


def scrape_source(url: str, interval: str = "1s") -> str:
    return f'  - {{name: app, type: scrape, url: "{url}/metrics", interval: {interval}}}'


def wait_until(pred: Any, timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``pred()`` until it returns something truthy; AssertionError naming ``what`` on timeout."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def metrics_text(d: DaemonProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(d.url + "/metrics", timeout=5) as r:
        return r.read().decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels``; None when absent."""
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def incident(d: DaemonProcess, iid: int) -> dict[str, Any]:
    status, body = d.api("GET", f"/api/v1/incidents/{iid}")
    assert status == 200, body
    return body


def kinds(inc: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in inc["timeline"]]


def trigger_ids(messages: list[dict[str, Any]]) -> Counter[int]:
    """How many trigger pages arrived per incident id."""
    out: Counter[int] = Counter()
    for m in messages:
        match = TRIGGER_TITLE.match(m.get("title", ""))
        if match:
            out[int(match.group(1))] += 1
    return out


def log_events(d: DaemonProcess) -> list[dict[str, Any]]:
    """The daemon's JSON log lines (non-JSON lines are returned as ``{"raw": line}``)."""
    out = []
    for line in d.logs().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"raw": line})
    return out


def parse_ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def outbox_rows(db_path: Path) -> list[dict[str, Any]]:
    """Read the outbox of a SQLite state database (read-only; safe while the daemon runs in WAL mode)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM outbox ORDER BY id")]
    finally:
        con.close()


def wait_timeline(d: DaemonProcess, iid: int, kind: str, count: int = 1, timeout: float = 20) -> dict[str, Any]:
    """Wait until incident ``iid``'s timeline has ``count`` events of ``kind``; returns the incident."""

    def check() -> dict[str, Any] | None:
        inc = incident(d, iid)
        return inc if kinds(inc).count(kind) >= count else None

    return wait_until(check, timeout, f"{count} {kind} event(s) on incident {iid}", step=0.1)


def wait_metric(d: DaemonProcess, name: str, value: float, timeout: float = 10, **labels: str) -> str:
    """Wait until ``/metrics`` shows ``name{labels} == value``; returns the exposition text."""

    def check() -> str | None:
        text = metrics_text(d)
        return text if metric(text, name, **labels) == value else None

    return wait_until(check, timeout, f"{name}{labels} == {value}", step=0.1)
