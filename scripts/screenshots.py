"""Refresh docs/screenshots/*.png: every page of the web UI, from a realistic demo state, in headless Chromium.

The demo state: a SQLite database seeded like the UI benchmark (``benchmarks/ui.py``: ``--incidents`` incidents
over 30 days in every state and severity, their alerts, timelines and pages, silences, a schedule override and a
week of series history), then the real daemon on it with a scrape source whose ``orders`` queue is over its
threshold, so one incident fires live and the charts go on from the seeded history. One live incident is
acknowledged with a note. Pages are shot full-page at 1440x900 (``--width``/``--height``) into
``docs/screenshots/`` (``--out``). Needs ``/usr/bin/chromium`` (``bash scripts/install-peers.sh``); Playwright
never downloads a browser. Run with ``make screenshots``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.ui import CONFIG, QUEUES, RULES, seed  # noqa: E402
from tests.helpers import DaemonProcess, Exposition, Receiver, free_port  # noqa: E402

LIVE = {"orders": 480.0}
"""Queues over the QueueBacklog threshold (100) now: the live incident."""

DISK = """
      - alert: DiskFull
        expr: disk_used_percent > 90
        severity: warning
        labels: {team: storage}
        annotations: {summary: "{{ labels.mount }} is {{ value }}% full"}
"""


def wait(pred: Any, timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def start(cfg: Path, incidents: int, exposition: Exposition, receiver: Receiver) -> DaemonProcess:
    """Seed the demo database and start the daemon on it (config, database and log in ``cfg``)."""
    (cfg / "rules.d").mkdir(parents=True)
    port = free_port()
    db = f"sqlite:///{cfg}/state.db"
    text = textwrap.dedent(CONFIG).replace("interval: 5s", "interval: 2s")
    for key, value in {
        "{port}": str(port),
        "{db}": db,
        "{exposition}": exposition.url,
        "{hook}": f"json://127.0.0.1:{receiver.port}",
    }.items():
        text = text.replace(key, value)
    (cfg / "fsincident.yaml").write_text(text)
    (cfg / "rules.d" / "app.yaml").write_text(textwrap.dedent(RULES).replace("interval: 5s", "interval: 2s") + DISK)
    counts = asyncio.run(seed(db, incidents, datetime.now(UTC), instance=f"127.0.0.1:{exposition.port}", recent=LIVE))
    print(f"screenshots: seeded {counts}", file=sys.stderr)
    d = DaemonProcess(cfg, port)
    d.start()
    return d


def live_incident(d: DaemonProcess) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        status, body = d.api("GET", "/api/v1/incidents?limit=20")
        if status != 200:
            return None
        return next((i for i in body["incidents"] if i["title"].startswith("QueueBacklog: orders")), None)

    return wait(find, 30, "the live QueueBacklog incident")


def shoot(out: Path, width: int, height: int, d: DaemonProcess, token: str, iid: int) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: bash scripts/install-peers.sh")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    shots: list[Path] = []
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=args)
        try:
            ctx = browser.new_context(viewport={"width": width, "height": height}, base_url=d.url)
            ctx.set_default_timeout(15_000)
            page = ctx.new_page()

            def snap(name: str, path: str | None = None, ready: str | None = None) -> None:
                if path is not None:
                    page.goto(path)
                if ready is not None:
                    expect(page.locator(ready).first).to_be_attached()
                target = out / f"{name}.png"
                page.screenshot(path=str(target), full_page=True)
                shots.append(target)

            snap("login", "/ui/login", "form#login-form")
            page.locator("input#token").fill(token)
            page.locator("form#login-form [type=submit]").click()
            page.wait_for_url("**/ui/")
            snap("overview", None, "#cards svg.sparkline")
            snap("incidents", "/ui/incidents", "table#incidents tr.incident")
            snap("incident", f"/ui/incidents/{iid}", "#chart svg.line-chart")
            snap("rules", "/ui/rules", "table#rules tr.rule")
            snap("rule-preview", "/ui/rules/bench/QueueBacklog?range=24h", "#preview svg.line-chart")
            snap("silences", "/ui/silences", "table#silences tr.silence")
            page.goto("/ui/silences/new")
            page.locator("form#silence-form textarea[name=matchers]").fill('alertname="QueueBacklog"')
            page.locator("form#silence-form [name=duration]").fill("2h")
            page.locator("form#silence-form [name=comment]").fill("deploying the queue consumer fix")
            expect(page.locator("#silence-preview li.alert").first).to_be_attached()
            snap("silence-new")
            snap("oncall", "/ui/oncall", ".schedule svg.oncall-timeline")
            snap("schedule", "/ui/oncall/primary", "form#override-form")
            snap("user", "/ui/users/alice", "#user-shifts")
            snap("explore", "/ui/explore?source=app&metric=queue_depth&range=24h", "#line svg.line-chart")
            snap("error", "/ui/incidents/999999", ".error-page")
        finally:
            browser.close()
    return shots


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="folder (docs/screenshots)")
    ap.add_argument("--incidents", type=int, default=1500, help="incidents seeded (1500)")
    ap.add_argument("--width", type=int, default=1440)
    ap.add_argument("--height", type=int, default=900)
    args = ap.parse_args()
    exposition = Exposition().start()
    receiver = Receiver().start()
    for k, q in enumerate(QUEUES):
        exposition.set("queue_depth", LIVE.get(q, 12 + 9 * k), queue=q)
    exposition.set("disk_used_percent", 71, mount="/data")
    try:
        with tempfile.TemporaryDirectory(prefix="fsi-screenshots-") as tmp:
            demo = Path(tmp) / "fsincident-demo"
            d = start(demo, args.incidents, exposition, receiver)
            try:
                d.token = d.create_token("ack", name="alice")
                iid = live_incident(d)["id"]
                status, body = d.api("POST", f"/api/v1/incidents/{iid}/ack", {"note": "looking at the consumer"})
                if status != 200:
                    raise RuntimeError(f"ack failed: {status} {body}")
                time.sleep(4)  # a couple more scrapes into the live history (1 min buckets: the open one shows)
                shots = shoot(args.out, args.width, args.height, d, d.token, iid)
            except Exception:
                print(d.logs()[-3000:], file=sys.stderr)
                raise
            finally:
                d.stop()
    finally:
        exposition.stop()
        receiver.stop()
    for s in shots:
        print(s.relative_to(ROOT) if s.is_relative_to(ROOT) else s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
