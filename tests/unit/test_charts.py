"""Server-side SVG charts: geometry stays inside the viewBox, counts are right, text is escaped."""

from __future__ import annotations

import math
import re
from zoneinfo import ZoneInfo

from bs4 import BeautifulSoup
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.ui.charts import Line, heatmap, histogram, line_chart, nice_ticks, sparkline, time_ticks

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
PAIR = re.compile(r"[ML](-?\d+(?:\.\d+)?) (-?\d+(?:\.\d+)?)")


def svg(markup: str):
    return BeautifulSoup(str(markup), "html.parser").find("svg")


def viewbox(el) -> tuple[float, float]:
    _, _, w, h = (float(x) for x in el["viewbox"].split())
    return w, h


def coords(el):
    """Every coordinate of every drawn element as (x or None, y or None) pairs."""
    for node in el.find_all(["path", "line", "rect", "circle", "text"]):
        if node.name == "path":
            for x, y in PAIR.findall(node.get("d", "")):
                yield float(x), float(y)
        elif node.name == "line":
            yield float(node["x1"]), float(node["y1"])
            yield float(node["x2"]), float(node["y2"])
        elif node.name == "rect":
            x, y, w, h = (float(node[k]) for k in ("x", "y", "width", "height"))
            assert w >= 0 and h >= 0
            yield x, y
            yield x + w, y + h
        elif node.name == "circle":
            yield float(node["cx"]), float(node["cy"])
        else:
            yield float(node["x"]), float(node["y"])


values = st.one_of(
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
    st.just(math.nan),
    st.just(math.inf),
    st.none(),
)
series = st.lists(st.tuples(st.floats(min_value=-100, max_value=4000), values), max_size=40)
labels = st.text(min_size=0, max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.tuples(labels, series), max_size=5),
    threshold=st.one_of(st.none(), st.floats(min_value=-1e9, max_value=1e9)),
    span=st.tuples(st.floats(min_value=-500, max_value=5000), st.floats(min_value=-500, max_value=5000)),
    tz=st.sampled_from([UTC, BERLIN]),
)
def test_line_chart_geometry_and_counts(lines, threshold, span, tz):
    start, end = 0.0, 3600.0
    out = line_chart(
        [Line(lbl, pts) for lbl, pts in lines],
        start,
        end,
        tz=tz,
        threshold=threshold,
        spans=[(span[0], span[1], "fired"), (span[0], None, "firing")],
        markers=[(span[0], "<m>")],
        unit="ms",
        title="<t>",
    )
    el = svg(out)
    w, h = viewbox(el)
    for x, y in coords(el):
        assert -0.05 <= x <= w + 0.05 and -0.05 <= y <= h + 0.05, (x, y)
    finite = [
        sum(1 for t, v in pts if start <= t <= end and isinstance(v, float) and math.isfinite(v)) for _, pts in lines
    ]
    assert int(el["data-points"]) == sum(finite)
    paths = el.select("path.series")
    assert [int(p["data-points"]) for p in paths] == finite
    for p in paths:
        assert not re.search(r"nan|inf", p["d"], re.I)
        assert len(PAIR.findall(p["d"])) == int(p["data-points"])
        assert p["d"] == "" or p["d"].startswith("M")
    assert "<t>" not in str(out) and "<m>" not in str(out)
    for lbl, _ in lines:
        if "<" in lbl:
            assert f'data-label="{lbl}"' not in str(out)
    if sum(finite) == 0:
        assert "no data" in el.get_text()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.none()), max_size=60))
def test_histogram_counts_sum_to_finite_values(vals):
    finite = [v for v in vals if v is not None and math.isfinite(v)]
    el = svg(histogram([v for v in vals if v is not None], bins=7))
    counts = [int(b["data-count"]) for b in el.select("rect.bar")]
    assert sum(counts) == len(finite)
    w, h = viewbox(el)
    for x, y in coords(el):
        assert -0.05 <= x <= w + 0.05 and -0.05 <= y <= h + 0.05


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0, max_value=1e6), values), max_size=30))
def test_sparkline_inside_and_counted(pts):
    el = svg(sparkline(pts, warn=5, crit=10))
    assert int(el["data-points"]) == sum(1 for _, v in pts if isinstance(v, float) and math.isfinite(v))
    w, h = viewbox(el)
    for x, y in coords(el):
        assert -0.05 <= x <= w + 0.05 and -0.05 <= y <= h + 0.05


@given(st.floats(min_value=-1e12, max_value=1e12), st.floats(min_value=-1e12, max_value=1e12))
def test_nice_ticks_cover_and_are_round(a, b):
    ticks = nice_ticks(a, b)
    assert len(ticks) >= 2
    assert ticks[0] <= min(a, b) + 1e-6 * max(1, abs(a), abs(b))
    assert ticks[-1] >= max(a, b) - 1e-6 * max(1, abs(a), abs(b))
    step = ticks[1] - ticks[0]
    mant = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mant, m, rel_tol=1e-6) for m in (1, 2, 5, 10))


# ---------------------------------------------------------------------------------------------- hand cases


def test_threshold_line_position():
    el = svg(line_chart([Line("a", [(0, 0), (100, 100)])], 0, 100, tz=UTC, threshold=50, height=220))
    thr = el.select_one("line.threshold")
    assert float(thr["data-value"]) == 50
    plot = el.select_one("rect.plot")
    top, ph = float(plot["y"]), float(plot["height"])
    # axis 0..100 → 50 is halfway down the plot area
    assert float(thr["y1"]) == float(thr["y2"]) == round(top + ph / 2, 1)
    assert thr.find("title") is not None


def test_span_x_positions():
    el = svg(line_chart([Line("a", [(0, 1)])], 0, 1000, tz=UTC, spans=[(250, 500, "fired"), (900, None, "firing")]))
    plot = el.select_one("rect.plot")
    left, pw = float(plot["x"]), float(plot["width"])
    fired = el.select_one("rect.span.fired")
    assert float(fired["x"]) == round(left + pw / 4, 1)
    assert float(fired["width"]) == round(pw / 4, 1)
    assert (fired["data-from"], fired["data-to"]) == ("250", "500")
    firing = el.select_one("rect.span.firing")
    assert float(firing["x"]) + float(firing["width"]) == round(left + pw, 1)
    assert fired.find("title") is not None


def test_gap_breaks_the_line():
    el = svg(
        line_chart([Line("a", [(0, 1), (10, 2), (20, None), (30, 3), (40, math.nan), (50, 4), (60, 5)])], 0, 60, tz=UTC)
    )
    d = el.select_one("path.series")["d"]
    assert d.count("M") == 3
    assert el.select_one("path.series")["data-points"] == "5"


def test_empty_chart_says_no_data():
    el = svg(line_chart([], 0, 3600, tz=UTC))
    assert el["data-points"] == "0"
    assert "line-chart" in el["class"]
    assert "no data" in el.get_text()
    el = svg(line_chart([Line("a", [(0, math.nan)])], 0, 3600, tz=UTC))
    assert el["data-points"] == "0" and "no data" in el.get_text()


def test_series_get_distinct_colours_and_escaped_labels():
    out = line_chart([Line(f"<s{i}>&", [(0, i), (1, i + 1)]) for i in range(3)], 0, 1, tz=UTC)
    el = svg(out)
    classes = [p["class"] for p in el.select("path.series")]
    assert [c[1] for c in classes] == ["s0", "s1", "s2"]
    assert "<s0>" not in str(out)
    assert el.select_one("path.series title").get_text().startswith("<s0>&")
    assert el["data-series"] == "3"
    assert el["width"] == "100%" and el["viewbox"]


def test_heatmap_counts():
    cells = [[0, 1, 2], [3, 0, 7]]
    el = svg(heatmap(cells, rows=["Mon", "<Tue>"], cols=["00", "01", "02"], title="by hour"))
    rects = el.select("rect.cell")
    assert len(rects) == 6
    got = {(int(r["data-row"]), int(r["data-col"])): int(r["data-count"]) for r in rects}
    assert got[(1, 2)] == 7 and got[(0, 0)] == 0 and sum(got.values()) == 13
    assert all(r.find("title") for r in rects)
    assert "<Tue>" not in str(heatmap(cells, rows=["Mon", "<Tue>"], cols=["00", "01", "02"]))


def test_histogram_hand_case():
    el = svg(histogram([1, 2, 2, 3, math.nan, math.inf], bins=3, unit="s"))
    assert [int(b["data-count"]) for b in el.select("rect.bar")] == [1, 2, 1]
    assert all(b.find("title") for b in el.select("rect.bar"))
    assert "no data" in svg(histogram([], bins=5)).get_text()
    # all-equal values still make a bar
    assert sum(int(b["data-count"]) for b in svg(histogram([4, 4, 4])).select("rect.bar")) == 3


def test_time_ticks_are_round_in_the_display_zone():
    # 2026-03-29 (DST change in Berlin), 6 hours
    start = 1774740000.0  # 2026-03-28T23:20:00Z
    ticks, _ = time_ticks(start, start + 6 * 3600, BERLIN)
    assert ticks and all(start <= t <= start + 6 * 3600 for t in ticks)
    from datetime import datetime

    for t in ticks:
        local = datetime.fromtimestamp(t, BERLIN)
        assert local.minute == 0 and local.second == 0
    ticks, _ = time_ticks(0, 7 * 86400, BERLIN)
    for t in ticks:
        local = datetime.fromtimestamp(t, BERLIN)
        assert (local.hour, local.minute) == (0, 0)


def test_legend_leaves_out_the_labels_every_series_shares():
    from fsincident.ui.charts import legend

    lines = [Line('m{job="app", queue="orders"}', []), Line('m{job="app", queue="mail"}', [])]
    assert legend(lines) == [(0, 'queue="orders"', lines[0].label), (1, 'queue="mail"', lines[1].label)]
    assert legend([Line('m{job="app"}', [])]) == [(0, 'job="app"', 'm{job="app"}')]
    assert legend([Line("plain", [])]) == [(0, "plain", "plain")]
