"""The explore page: a metric's series over a range, their distribution, and incidents by weekday × hour."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from tests.ui.conftest import sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _chart(browser, path: str, min_points: int = 2):
    for _ in range(120):
        page = await browser.get(path)
        assert page.status == 200, page.html[:300]
        chart = page.soup.select_one("#line svg.line-chart")
        if chart is not None and int(chart["data-points"]) >= min_points:
            return page
        await asyncio.sleep(0.25)
    raise AssertionError(f"no data points on {path}")


async def test_line_chart_and_distribution_of_a_metric(ui, browser):
    page = await _chart(browser, "/ui/explore?source=app&metric=queue_depth&range=15m", 4)
    soup = page.soup
    form = soup.select_one("form#explore-form")
    assert form is not None and form["method"] == "get"
    assert soup.select_one('select[name=source] option[value="app"]').has_attr("selected")
    assert "queue_depth" in [o["value"] for o in soup.select("datalist#metrics option")]
    chart = soup.select_one("#line svg.line-chart")
    paths = chart.select("path.series")
    assert len(paths) == 2 and all(int(p["data-points"]) >= 1 for p in paths)
    assert sum(int(p["data-points"]) for p in paths) == int(chart["data-points"])
    labels = sorted(p["data-label"] for p in paths)
    assert labels[0].startswith("queue_depth{") and 'queue="mail"' in labels[0] and 'queue="orders"' in labels[1]
    bars = soup.select("#distribution svg.histogram rect.bar")
    assert sum(int(b["data-count"]) for b in bars) == int(soup.select_one("#distribution")["data-values"]) > 0
    # values are 3 and 500: the lowest and the highest bins hold them all
    counts = [int(b["data-count"]) for b in bars]
    assert counts[0] > 0 and counts[-1] > 0 and sum(counts[1:-1]) == 0
    assert soup.select_one('#ranges a[data-range="15m"]')["class"] == ["active"]
    assert "metric=queue_depth" in soup.select_one('#ranges a[data-range="6h"]')["href"]

    page = await _chart(browser, "/ui/explore?source=app&metric=queue_depth&match=queue%3D%22orders%22&range=1h", 1)
    paths = page.soup.select("#line svg.line-chart path.series")
    assert len(paths) == 1 and 'queue="orders"' in paths[0]["data-label"]


async def test_heatmap_counts_the_incidents_created(ui, browser):
    await ui.incidents(5, team="explore")
    now = datetime.now(UTC)
    total = len(await ui.daemon.incidents.list(limit=100_000))
    page = await browser.get("/ui/explore?source=app&metric=queue_depth&weeks=2")
    assert page.status == 200
    svg = page.soup.select_one("#heatmap svg.heatmap")
    cells = svg.select("rect.cell")
    assert len(cells) == 7 * 24
    assert sum(int(c["data-count"]) for c in cells) == total >= 5
    here = svg.select_one(f'rect.cell[data-row="{now.weekday()}"][data-col="{now.hour}"]')
    assert int(here["data-count"]) >= 5  # the display time zone is UTC in this config
    assert here.find("title") is not None


async def test_bad_matchers_are_a_readable_error_and_a_read_token_can_view(ui):
    b = await sign_in(ui, "read")
    try:
        page = await b.get("/ui/explore?source=app&metric=queue_depth&match=queue%3D%3D%3D%22x")
        assert page.status == 200
        err = page.soup.select_one(".matcher-error")
        assert err is not None and "cannot be read" in err.get_text()
        assert "Traceback" not in page.html
        assert page.soup.select_one("#line svg.line-chart")["data-points"] == "0"
        page = await b.get("/ui/explore?source=nosuch&metric=queue_depth")
        assert page.status == 200 and page.soup.select_one(".explore-error")
        page = await b.get("/ui/explore?range=bogus&weeks=x")
        assert page.status == 200
        assert page.soup.select_one("#heatmap svg.heatmap") is not None
    finally:
        await b.http.close()
