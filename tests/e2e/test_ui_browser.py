"""The web UI in a real browser: Debian's Chromium, driven headless by Playwright, against the real daemon process
with real incidents (a scrape source over a local exposition server, rules that fire, an escalation policy paging a
local webhook receiver, 1 s history for the charts).

Signing in through the form; the overview (sources, counts, on call now, a card's sparkline with points); the
incidents list; acknowledging from the detail page (the JSON API then reports it, with the token's name as the
actor and ``via: ui``); the detail chart; a silence created from the UI that mutes the next matching alert; the
on-call page naming whom ``/api/v1/oncall`` names; Explore's line chart, histogram and heatmap; the rules page and
a rule preview; every page once more with JavaScript off. A full-page screenshot of every page goes to
``artifacts/screenshots/`` (``FSINCIDENT_ARTIFACTS`` moves ``artifacts/``). Needs ``/usr/bin/chromium``
(``scripts/install-peers.sh`` installs it); Playwright never downloads a browser here.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import CountingReceiver, incident, wait_until
from tests.helpers import ROOT, DaemonProcess, Exposition, free_port
from tests.ui.conftest import DISK_RULE, ui_config

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("FSINCIDENT_ARTIFACTS", ROOT / "artifacts")) / "screenshots"
TOKEN_NAME = "ui-browser"
WAIT = 10_000  # ms: the longest any expectation waits (a 1 s scrape + 1 s rule interval + a 2 s live refresh fit)
# Every expectation waits up to WAIT, not Playwright's 5 s: on a busy 2-core machine the overview's card waited
# longer than 5 s for its first history bucket (a 1 s step, written by the leader's history module).
expect.set_options(timeout=WAIT)
POSITIVE = re.compile(r"^[1-9]\d*$")
SECRET = "hunter2-contact-secret"  # in alice's contact URL: the user page must not show it


def _config(directory: Path, port: int, exposition: Exposition, receiver: CountingReceiver) -> Path:
    database = f"sqlite:///{directory}/state.db"
    return ui_config(
        directory, database, port, exposition, receiver, refresh="2s", alice_secret=SECRET, extra_rules=DISK_RULE
    )


class Stack:
    """The daemon process with its peers and an ``ack`` token named ``TOKEN_NAME``."""

    def __init__(self, d: DaemonProcess, exposition: Exposition, receiver: CountingReceiver, token: str):
        self.d, self.exposition, self.receiver, self.token = d, exposition, receiver, token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.d.api(method, path, body)
        assert status == 200, (path, status, data)
        return data

    def backlog_incident(self) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next(
                (i for i in self.api("GET", "/api/v1/incidents")["incidents"] if i["title"].startswith("QueueBacklog")),
                None,
            )

        return wait_until(find, 15, "the QueueBacklog incident", step=0.1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("ui-browser")
    exposition = Exposition().start()
    receiver = CountingReceiver().start()
    exposition.set("queue_depth", 500, queue="orders")
    exposition.set("queue_depth", 3, queue="mail")
    exposition.set("disk_used_percent", 40, mount="/data")
    port = free_port()
    d = DaemonProcess(_config(tmp, port, exposition, receiver), port)
    try:
        d.start()
        d.token = d.create_token("ack", name=TOKEN_NAME)
        s = Stack(d, exposition, receiver, d.token)
        s.backlog_incident()
        yield s
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
        exposition.stop()
        receiver.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (bash scripts/install-peers.sh installs it)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Any, stack: Stack) -> None:
    page.goto(stack.d.url + "/ui/login")
    page.locator("form#login-form input#token").fill(stack.token)
    page.locator("form#login-form [type=submit]").click()
    page.wait_for_url(re.compile(r"/ui/$"), timeout=WAIT)


@pytest.fixture(scope="module")
def page(chromium: Any, stack: Stack) -> Iterator[Any]:
    """One signed-in tab (JavaScript on) shared by the module's tests, in order."""
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900}, base_url=stack.d.url)
    ctx.set_default_timeout(WAIT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    p = ctx.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Failed to load" not in m.text else None)
    p.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}") if r.status >= 400 and r.request.resource_type != "document" else None
        ),
    )
    try:
        sign_in(p, stack)
        yield p
    finally:
        ctx.close()
    assert not errors, f"JavaScript errors in the pages: {errors}"


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_until(page: Any, path: str, selector: str, attr: str = "data-points", timeout: float = 10) -> Any:
    """Open ``path`` again until ``selector``'s ``attr`` is a positive number (history fills at 1 s steps)."""

    def ready() -> Any:
        page.goto(path)
        loc = page.locator(selector).first
        value = loc.get_attribute(attr, timeout=WAIT) if loc.count() else None
        return loc if value and POSITIVE.match(value) else None

    return wait_until(ready, timeout, f"{selector}[{attr}] > 0 on {path}", step=0.5)


def _positive(loc: Any, attr: str = "data-points") -> None:
    expect(loc).to_have_attribute(attr, POSITIVE, timeout=WAIT)


# ------------------------------------------------------------------------------------------------ the pages


def test_login_page_refuses_a_bad_token_and_signs_in(chromium: Any, stack: Stack) -> None:
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900}, base_url=stack.d.url)
    try:
        p = ctx.new_page()
        p.goto("/ui/oncall")
        expect(p).to_have_url(re.compile(r"/ui/login\?next="), timeout=WAIT)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot(p, "login")
        p.locator("input#token").fill("not-a-token")
        p.locator("form#login-form [type=submit]").click()
        expect(p.locator(".error")).to_contain_text("not valid", timeout=WAIT)
        p.locator("input#token").fill(stack.token)
        p.locator("form#login-form [type=submit]").click()
        expect(p).to_have_url(re.compile(r"/ui/oncall$"), timeout=WAIT)  # back where the user wanted to go
        expect(p.locator("header .who .user")).to_have_text(TOKEN_NAME)
    finally:
        ctx.close()


def test_overview(page: Any, stack: Stack) -> None:
    page.goto("/ui/")
    src = page.locator('#sources tr.source[data-source="app"]')
    expect(src.locator(".badge.up")).to_be_visible()
    triggered = page.locator('#incident-counts td[data-state="triggered"][data-severity="critical"]')
    expect(triggered).to_have_text(POSITIVE)
    now = stack.api("GET", "/api/v1/oncall")
    on_call = _oncall_user(now, "primary")
    expect(page.locator('#oncall-now tr[data-schedule="primary"] .user')).to_have_text(on_call)
    card = page.locator('#cards .metric-card[data-card="Orders queue"]')
    expect(card).to_contain_text("500")
    _positive(card.locator("svg.sparkline"))  # live refresh (2 s) brings the points in as history fills
    expect(page.locator("#rules-health")).to_be_visible()
    expect(page.locator("#outbox")).to_be_visible()
    shot(page, "overview")


def test_incidents_list(page: Any, stack: Stack) -> None:
    inc = stack.backlog_incident()
    page.goto("/ui/incidents")
    row = page.locator(f'table#incidents tr.incident[data-id="{inc["id"]}"]')
    expect(row).to_have_attribute("data-state", "triggered")
    expect(row).to_have_attribute("data-severity", "critical")
    expect(row).to_contain_text("QueueBacklog")
    expect(page.locator("form#filters")).to_be_visible()
    expect(page.locator("a#export-csv")).to_be_visible()
    shot(page, "incidents")
    # A filter that excludes it (the form is a plain GET form: the URL carries the filters).
    page.goto("/ui/incidents?state=resolved")
    expect(page.locator(f'tr.incident[data-id="{inc["id"]}"]')).to_have_count(0)


def test_ack_from_the_detail_page(page: Any, stack: Stack) -> None:
    iid = stack.backlog_incident()["id"]
    page.goto(f"/ui/incidents/{iid}")
    expect(page.locator("#incident")).to_have_attribute("data-state", "triggered")
    expect(page.locator("#alerts")).to_contain_text("orders")
    expect(page.locator('#timeline li.event[data-kind="triggered"]')).not_to_have_count(0)
    page.locator("#ack-form [type=submit]").click()
    expect(page.locator(".flash")).to_be_visible()
    expect(page.locator("#incident")).to_have_attribute("data-state", "acknowledged")

    body = incident(stack.d, iid)
    assert body["state"] == "acknowledged", body
    acks = [e for e in body["timeline"] if e["kind"] == "acknowledged"]
    assert acks and acks[-1]["actor"] == TOKEN_NAME, acks
    assert acks[-1]["data"].get("via") == "ui", acks

    chart = open_until(page, f"/ui/incidents/{iid}", "#chart svg.line-chart")
    _positive(chart.locator("path.series").first)
    expect(chart.locator("rect.span.firing")).not_to_have_count(0)
    expect(chart.locator("line.threshold")).to_have_attribute("data-value", re.compile(r"^100(\.0)?$"))
    shot(page, "incident")


def test_silence_from_the_ui_mutes_the_next_alert(page: Any, stack: Stack) -> None:
    page.goto("/ui/silences/new")
    form = page.locator("form#silence-form")
    # The live preview lists the firing alerts a matcher would mute.
    form.locator("textarea[name=matchers]").fill('alertname="QueueBacklog"')
    expect(page.locator("#silence-preview li.alert")).not_to_have_count(0)
    expect(page.locator("#silence-preview")).to_contain_text("orders")
    shot(page, "silence-new")

    form.locator("textarea[name=matchers]").fill('alertname="DiskFull"\nmount="/data"')
    expect(page.locator("#silence-preview li.alert")).to_have_count(0)
    form.locator("[name=duration]").fill("1h")
    form.locator("[name=comment]").fill("disk swap, browser test")
    form.locator("#create-silence").click()
    expect(page).to_have_url(re.compile(r"/ui/silences"))
    row = page.locator("table#silences tr.silence", has_text="DiskFull")
    expect(row).to_have_attribute("data-state", "active")
    expect(row.locator("form.expire")).to_have_count(1)
    shot(page, "silences")

    silences = stack.api("GET", "/api/v1/silences")["silences"]
    [sil] = [s for s in silences if "disk swap" in s["comment"]]
    assert sil["created_by"] == TOKEN_NAME, sil

    seen = len(stack.receiver.received)
    stack.exposition.set("disk_used_percent", 97, mount="/data")

    def disk_incident() -> dict[str, Any] | None:
        return next(
            (i for i in stack.api("GET", "/api/v1/incidents")["incidents"] if i["title"].startswith("DiskFull")),
            None,
        )

    iid = wait_until(disk_incident, 15, "the DiskFull incident", step=0.1)["id"]

    def muted() -> list[dict[str, Any]]:
        rows = stack.api("GET", f"/api/v1/incidents/{iid}/notifications")["notifications"]
        return [r for r in rows if r["state"] == "muted"]

    rows = wait_until(muted, 15, f"a muted notification of incident {iid}", step=0.2)
    assert any(sil["id"] in (a.get("error") or "") for r in rows for a in r["log"]), rows
    pages = [m for m in stack.receiver.received[seen:] if "DiskFull" in f"{m.get('title')} {m.get('message')}"]
    assert pages == [], pages


def test_oncall_pages(page: Any, stack: Stack) -> None:
    on_call = _oncall_user(stack.api("GET", "/api/v1/oncall"), "primary")
    page.goto("/ui/oncall")
    sched = page.locator('.schedule[data-schedule="primary"]')
    expect(sched.locator(".now .user")).to_have_text(on_call)
    expect(sched.locator("svg.oncall-timeline rect.shift").first).to_be_attached()
    expect(sched.locator(f'svg.oncall-timeline rect.shift[data-user="{on_call}"]').first).to_be_attached()
    shot(page, "oncall")

    page.goto("/ui/oncall/primary")
    expect(page.locator("form#override-form")).to_be_visible()
    expect(page.locator("svg.oncall-timeline rect.shift").first).to_be_attached()
    shot(page, "schedule")

    page.goto("/ui/users/alice")
    expect(page.locator("#user-shifts li.shift").first).to_be_attached()
    expect(page.locator("#contacts li.contact")).to_have_count(1)
    assert SECRET not in page.content()  # contacts without their URLs' secrets
    shot(page, "user")


def test_explore(page: Any, stack: Stack) -> None:
    path = "/ui/explore?source=app&metric=queue_depth&range=15m"
    line = open_until(page, path, "#line svg.line-chart")
    expect(line.locator("path.series")).to_have_count(2)  # orders and mail
    _positive(line.locator("path.series").first)
    bars = page.locator("#distribution svg.histogram rect.bar")
    expect(bars.first).to_be_attached()
    counts = [int(c or 0) for c in bars.evaluate_all("els => els.map(e => e.getAttribute('data-count'))")]
    assert sum(counts) > 0, counts
    cells = page.locator("#heatmap svg.heatmap rect.cell")
    expect(cells.first).to_be_attached()
    counts = [int(c or 0) for c in cells.evaluate_all("els => els.map(e => e.getAttribute('data-count'))")]
    assert sum(counts) >= 1, counts  # this test's incidents, in this weekday × hour
    expect(page.locator("form#explore-form")).to_be_visible()
    shot(page, "explore")


def test_rules_and_preview(page: Any, stack: Stack) -> None:
    page.goto("/ui/rules")
    rule = page.locator('table#rules tr.rule[data-rule="app/QueueBacklog"]')
    expect(rule).to_have_attribute("data-state", "firing")
    expect(page.locator('table#rules tr.rule[data-rule="app/DiskFull"]')).to_be_attached()
    shot(page, "rules")

    chart = open_until(page, "/ui/rules/app/QueueBacklog?range=1h", "#preview svg.line-chart")
    _positive(chart.locator("path.series").first)
    expect(chart.locator("rect.span.fired")).not_to_have_count(0)
    expect(page.locator("#episodes li.episode")).not_to_have_count(0)
    shot(page, "rule-preview")


def test_error_page(page: Any, stack: Stack) -> None:
    resp = page.goto("/ui/no/such/page")
    assert resp is not None and resp.status == 404
    expect(page.locator(".error-page[data-status='404']")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("Traceback")
    shot(page, "error")
    resp = page.goto("/ui/incidents/999999")
    assert resp is not None and resp.status == 404


NO_JS = {
    "/ui/": "#incident-counts td[data-state]",
    "/ui/incidents": "table#incidents tr.incident",
    "/ui/rules": "table#rules tr.rule",
    "/ui/silences": "table#silences tr.silence",
    "/ui/silences/new": "form#silence-form",
    "/ui/oncall": ".schedule[data-schedule=primary] .now .user",
    "/ui/oncall/primary": "form#override-form",
    "/ui/users/alice": "#user-shifts li.shift",
    "/ui/explore?source=app&metric=queue_depth&range=15m": "#line svg.line-chart path.series",
    "/ui/rules/app/QueueBacklog?range=1h": "#preview svg.line-chart",
}


def test_pages_work_without_javascript(chromium: Any, stack: Stack) -> None:
    ctx = chromium.new_context(java_script_enabled=False, base_url=stack.d.url)
    ctx.set_default_timeout(WAIT)
    try:
        p = ctx.new_page()
        sign_in(p, stack)  # a plain form POST and a 303
        iid = stack.backlog_incident()["id"]
        missing = []
        for path, selector in {**NO_JS, f"/ui/incidents/{iid}": "#timeline li.event"}.items():
            resp = p.goto(path)
            if resp is None or resp.status != 200 or p.locator(selector).count() == 0:
                missing.append((path, resp.status if resp else None, selector))
        assert not missing, f"pages without their main content when JavaScript is off: {missing}"
        # The silence preview without JavaScript: the form's "Preview" button re-renders it with the alerts.
        p.goto("/ui/silences/new")
        p.locator("form#silence-form textarea[name=matchers]").fill('alertname="QueueBacklog"')
        p.locator("form#silence-form button[value=preview]").click()
        expect(p.locator("#silence-preview li.alert")).not_to_have_count(0)
    finally:
        ctx.close()


def _oncall_user(body: dict[str, Any], schedule: str) -> str:
    """The user ``/api/v1/oncall`` names for ``schedule`` (the first, should several be on call)."""
    for row in body["schedules"]:
        if row["schedule"] == schedule and row["oncall"]:
            return row["oncall"][0]["user"]
    raise AssertionError(f"nobody on call for {schedule!r} in /api/v1/oncall: {body}")
