"""The overview page against the real daemon: source and rule health, outbox, incident counts that match the
API, who is on call now, and metric cards drawn from the series history."""

from __future__ import annotations

import asyncio
import math

import pytest

from fsincident.ui.overview import combine, level_of

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_combine_and_levels():
    a = [(1.0, 1.0), (2.0, 3.0), (3.0, math.nan)]
    b = [(1.0, 5.0), (2.0, 1.0)]
    assert combine([a, b], "sum") == [(1.0, 6.0), (2.0, 4.0), (3.0, pytest.approx(math.nan, nan_ok=True))]
    assert combine([a, b], "max")[:2] == [(1.0, 5.0), (2.0, 3.0)]
    assert combine([a, b], "min")[:2] == [(1.0, 1.0), (2.0, 1.0)]
    assert combine([a, b], "avg")[:2] == [(1.0, 3.0), (2.0, 2.0)]
    assert level_of(500, 50, 100) == "critical"
    assert level_of(60, 50, 100) == "warning"
    assert level_of(3, 50, 100) == "ok"
    assert level_of(5, 20, 10) == "critical"  # lower is worse when crit < warn
    assert level_of(None, 1, 2) == "none"


async def test_the_app_source_is_up(ui, browser):
    for _ in range(50):
        page = await browser.get("/ui/")
        row = page.soup.select_one("#sources tr.source[data-source=app]")
        if row is not None and row.select_one(".badge.up") is not None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(page.soup.select_one("#sources"))
    assert page.status == 200
    assert row.select_one(".last-success time") is not None
    assert row.select_one("td.error").text.strip() == ""
    assert page.soup.select_one("body")["data-page"] == "overview"


async def test_incident_counts_match_the_api(ui, browser):
    await ui.incidents(2, severity="critical", team="ov")
    await ui.incidents(1, severity="info", team="ov")
    iid = await ui.incident(severity="warning", team="ov")
    await ui.call("POST", f"/api/v1/incidents/{iid}/ack", scope="ack", json={})
    for _ in range(20):  # the rules may open an incident meanwhile: compare a stable pair of reads
        _, body, _ = await ui.call("GET", "/api/v1/incidents?limit=10000", scope="read")
        page = await browser.get("/ui/")
        _, body2, _ = await ui.call("GET", "/api/v1/incidents?limit=10000", scope="read")
        if body == body2:
            break
    expected: dict[tuple[str, str], int] = {}
    for inc in body["incidents"]:
        key = (inc["state"], inc["severity"])
        expected[key] = expected.get(key, 0) + 1
    cells = page.soup.select("#incident-counts td[data-state][data-severity]")
    assert len(cells) == 9
    got = {(td["data-state"], td["data-severity"]): int(td.text) for td in cells}
    assert {k: v for k, v in got.items() if v} == expected
    assert got[("acknowledged", "warning")] >= 1
    link = page.soup.select_one("#incident-counts td[data-state=triggered][data-severity=critical] a")["href"]
    assert link == "/ui/incidents?state=triggered&severity=critical"


async def test_oncall_now_matches_the_api(ui, browser):
    status, body, _ = await ui.call("GET", "/api/v1/oncall?schedule=primary", scope="read")
    assert status == 200
    page = await browser.get("/ui/")
    users = [a.text for a in page.soup.select("#oncall-now tr[data-schedule=primary] .user")]
    assert users == [s["user"] for s in body["oncall"]]
    assert users and users[0] in ("alice", "bob")


async def test_rule_health_and_outbox(ui, browser):
    for _ in range(50):
        page = await browser.get("/ui/")
        rules = page.soup.select_one("#rules-health")
        if rules["data-firing"] == "1":
            break
        await asyncio.sleep(0.1)
    assert rules["data-ok"] == "2" and rules["data-error"] == "0"
    assert rules["data-firing"] == "1"  # QueueBacklog: queue=orders has 500 jobs
    assert rules.select_one("[data-count=series_firing]").text == "1"
    outbox = page.soup.select_one("#outbox")
    for state in ("pending", "sent", "failed"):
        assert outbox.select_one(f"[data-outbox={state}]").text.strip().isdigit()
    assert outbox.select_one("[data-outbox=dead-24h]").text.strip() == "0"


async def test_cards_show_the_latest_value_and_a_sparkline(ui, browser):
    for _ in range(50):  # the history records a point a second
        page = await browser.get("/ui/")
        orders = page.soup.select_one('#cards .metric-card[data-card="Orders queue"]')
        total = page.soup.select_one('#cards .metric-card[data-card="All queues"]')
        spark = orders.select_one("svg.sparkline")
        if spark is not None and int(spark["data-points"]) > 0 and total.select_one(".value").text != "–":
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(page.soup.select_one("#cards"))
    assert float(orders.select_one(".value").text) == 500
    assert orders["data-level"] == "critical"  # crit: 100
    assert orders.select_one(".unit").text == "jobs"
    assert float(total.select_one(".value").text) == 503  # reduce: sum of orders (500) and mail (3)
    assert int(total.select_one("svg.sparkline")["data-points"]) > 0
