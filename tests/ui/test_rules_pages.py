"""The rules pages: every rule's state as the API reports it, and a rule's preview replayed over the history."""

from __future__ import annotations

import asyncio

import pytest

from tests.ui.conftest import sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _until(predicate, timeout: float = 20.0):
    for _ in range(int(timeout / 0.25)):
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.25)
    raise AssertionError("condition not met in time")


async def test_rules_table_states_match_the_api(ui, browser):
    async def firing():
        _, body, _ = await ui.call("GET", "/api/v1/rules", scope="read")
        states = {f"{g['name']}/{r['name']}": r["state"] for g in body["groups"] for r in g["rules"]}
        return states if states.get("app/QueueBacklog") == "firing" else None

    api_states = await _until(firing)
    page = await browser.get("/ui/rules")
    assert page.status == 200
    rows = page.soup.select("table#rules tr.rule")
    ui_states = {tr["data-rule"]: tr["data-state"] for tr in rows}
    assert ui_states == api_states
    backlog = page.soup.select_one('tr.rule[data-rule="app/QueueBacklog"]')
    assert backlog.select_one(".badge.firing")
    assert backlog.select_one(".series-count")["data-alerts"] == "1"  # orders > 100, mail is not
    assert int(backlog.select_one(".series-count")["data-evaluated"]) == 2
    assert "ago" in backlog.get_text()
    assert backlog.select_one("a")["href"] == "/ui/rules/app/QueueBacklog"
    assert page.soup.body["data-page"] == "rules"


async def test_rule_page_previews_when_it_would_have_fired(ui, browser):
    async def fired():
        page = await browser.get("/ui/rules/app/QueueBacklog?range=1h")
        assert page.status == 200
        soup = page.soup
        return soup if soup.select("#preview svg.line-chart rect.span.fired") else None

    soup = await _until(fired, 30)
    chart = soup.select_one("#preview svg.line-chart")
    assert int(chart["data-points"]) > 0
    assert len(chart.select("path.series")) == 2  # queue_depth{queue=orders} and {queue=mail}
    assert float(chart.select_one("line.threshold")["data-value"]) == 100
    episodes = soup.select("#episodes li.episode")
    assert episodes and 'queue="orders"' in episodes[0].get_text()
    assert 'queue="mail"' not in " ".join(e.get_text() for e in episodes)
    assert soup.select_one("#rule-expr").get_text() == "queue_depth > 100"
    assert soup.select_one('#ranges a[data-range="1h"]')["class"] == ["active"]
    assert not soup.select(".replay-error")
    # the rule that needs 5 minutes never fires in a few seconds of history
    page = await browser.get("/ui/rules/app/QueueSlow?range=1h")
    assert page.status == 200
    assert not page.soup.select("#preview rect.span.fired") and not page.soup.select("#episodes li.episode")


async def test_unknown_rule_is_a_readable_404_and_a_read_token_can_view(ui):
    b = await sign_in(ui, "read")
    try:
        page = await b.get("/ui/rules/app/NoSuchRule")
        assert page.status == 404 and "No such rule" in page.html and "Traceback" not in page.html
        page = await b.get("/ui/rules/nogroup/QueueBacklog")
        assert page.status == 404
        page = await b.get("/ui/rules/app/QueueBacklog?range=bogus")
        assert page.status == 200
        assert page.soup.select_one('#ranges a[data-range="6h"]')["class"] == ["active"]
        page = await b.get("/ui/rules")
        assert page.status == 200 and page.soup.select("table#rules tr.rule")
    finally:
        await b.http.close()
