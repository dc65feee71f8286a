"""analytics.charts: PNG bytes, 800×300, deterministic (no timestamp metadata), thread-safe (no pyplot)."""

from __future__ import annotations

import io
import math
import struct
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfoNotFoundError

import pytest
from PIL import Image

from fsincident.analytics import charts

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _points(n: int = 120, scale: float = 1.0) -> list[tuple[datetime, float]]:
    return [(T0 + timedelta(minutes=i), scale * (i % 17)) for i in range(n)]


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """The PNG's chunks as (type, data)."""
    assert png.startswith(PNG_MAGIC)
    out, i = [], len(PNG_MAGIC)
    while i < len(png):
        (n,) = struct.unpack(">I", png[i : i + 4])
        kind, data = png[i + 4 : i + 8], png[i + 8 : i + 8 + n]
        (crc,) = struct.unpack(">I", png[i + 8 + n : i + 12 + n])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF
        out.append((kind, data))
        i += 12 + n
    return out


def _series() -> bytes:
    return charts.series_chart(
        [("cpu", _points()), ("mem", _points(scale=2))],
        title="CPU",
        unit="%",
        spans=[(T0 + timedelta(minutes=30), T0 + timedelta(minutes=60))],
        marks=[(T0 + timedelta(minutes=40), "ack by alice")],
        threshold=10,
    )


def _bar() -> bytes:
    return charts.bar_chart(["api", "db", "web"], {"MTTA": [1, 2, 3], "MTTR": [10, 20, 30]}, title="MTTA/MTTR")


def _daily() -> bytes:
    days = [date(2026, 11, d) for d in range(1, 31)]
    stacks = {"warning": [d % 4 for d in range(30)], "critical": [d % 2 for d in range(30)], "info": [1] * 30}
    return charts.daily_chart(days, stacks, title="Incidents per day")


def _trend() -> bytes:
    last = _points()[-1][0]
    return charts.trend_chart(
        _points(),
        projection=[(last, 16.0), (last + timedelta(hours=1), 30.0)],
        threshold=30,
        exhausted_at=last + timedelta(hours=1),
        title="disk",
        unit="GB",
    )


ALL = {"series": _series, "bar": _bar, "daily": _daily, "trend": _trend}


@pytest.mark.parametrize("name", list(ALL))
def test_each_chart_is_an_800_by_300_png(name):
    png = ALL[name]()
    assert isinstance(png, bytes)
    img = Image.open(io.BytesIO(png))
    img.load()
    assert img.format == "PNG"
    assert img.size == (charts.WIDTH_PX, charts.HEIGHT_PX)
    # Not blank: a chart draws something in several colours.
    assert len(img.convert("RGB").getcolors(1_000_000) or []) > 10


@pytest.mark.parametrize("name", list(ALL))
def test_same_input_same_bytes_and_no_timestamp_metadata(name):
    a, b = ALL[name](), ALL[name]()
    assert a == b
    kinds = [k for k, _ in _chunks(a)]
    assert b"tIME" not in kinds
    text = b"".join(d for k, d in _chunks(a) if k in (b"tEXt", b"iTXt", b"zTXt"))
    assert b"Software" not in text and b"Creation Time" not in text and b"matplotlib" not in text.lower()


def test_charts_are_thread_safe_and_never_touch_pyplot():
    expected = {name: fn() for name, fn in ALL.items()}
    jobs = [name for name in ALL for _ in range(4)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda n: (n, ALL[n]()), jobs))
    for name, png in got:
        assert png == expected[name], name
    assert "matplotlib.pyplot" not in sys.modules


def test_empty_inputs_still_draw_a_readable_png():
    for png in (
        charts.series_chart([], title="nothing"),
        charts.series_chart([("a", [])], title="no points"),
        charts.bar_chart([], {}, title="no groups"),
        charts.daily_chart([], {}, title="no days"),
        charts.trend_chart([], title="no trend"),
    ):
        assert Image.open(io.BytesIO(png)).size == (800, 300)


def test_series_gaps_single_points_and_naive_times():
    pts = _points(10)
    gappy = [*pts[:4], (pts[4][0], math.nan), *pts[5:], (pts[-1][0] + timedelta(minutes=1), math.inf)]
    assert Image.open(io.BytesIO(charts.series_chart([("x", gappy)], title="gaps"))).size == (800, 300)
    assert Image.open(io.BytesIO(charts.series_chart([("x", pts[:1])], title="one"))).size == (800, 300)
    naive = [(t.replace(tzinfo=None), v) for t, v in pts]
    assert charts.series_chart([("x", naive)], title="n") == charts.series_chart([("x", pts)], title="n")


def test_the_time_zone_moves_the_tick_labels_and_an_unknown_one_fails():
    utc = charts.series_chart([("x", _points())], title="tz")
    tokyo = charts.series_chart([("x", _points())], title="tz", tz="Asia/Tokyo")
    assert utc != tokyo
    with pytest.raises(ZoneInfoNotFoundError):
        charts.series_chart([("x", _points())], title="tz", tz="Mars/Olympus")
    with pytest.raises(ZoneInfoNotFoundError):
        charts.trend_chart(_points(), title="tz", tz="Mars/Olympus")


def test_more_values_than_categories_is_a_value_error():
    with pytest.raises(ValueError, match="MTTA"):
        charts.bar_chart(["a"], {"MTTA": [1, 2]}, title="x")
    with pytest.raises(ValueError, match="critical"):
        charts.daily_chart([date(2026, 1, 1)], {"critical": [1, 2]}, title="x")


def test_short_value_lists_and_non_finite_bars_draw_as_zero():
    png = charts.bar_chart(["a", "b", "c"], {"uptime": [99.9, math.nan]}, title="uptime", unit="%")
    assert Image.open(io.BytesIO(png)).size == (800, 300)
    neg = charts.bar_chart(["a", "b"], {"budget left": [-50.0, 20.0]}, title="budget", unit="%")
    assert Image.open(io.BytesIO(neg)).size == (800, 300)


def _colour_near(img: Image.Image, rgb: tuple[int, int, int], tol: int = 12) -> int:
    """How many pixels are within ``tol`` of ``rgb``."""
    return sum(
        n
        for n, c in img.convert("RGB").getcolors(1_000_000) or []
        if all(abs(a - b) <= tol for a, b in zip(c, rgb, strict=True))
    )


def test_daily_uses_the_severity_colours():
    img = Image.open(io.BytesIO(_daily()))
    red, amber, blue = (0xD6, 0x27, 0x28), (0xF0, 0xA2, 0x02), (0x1F, 0x77, 0xB4)
    for colour in (red, amber, blue):
        assert _colour_near(img, colour) > 200, colour
    only_warning = charts.daily_chart([date(2026, 11, 1)], {"warning": [3]}, title="w")
    assert _colour_near(Image.open(io.BytesIO(only_warning)), red) < 50


def test_series_shade_threshold_and_marks_are_drawn():
    plain = Image.open(io.BytesIO(charts.series_chart([("cpu", _points())], title="CPU")))
    full = Image.open(io.BytesIO(_series()))
    shade = (0xFA, 0xE0, 0xE0)  # the firing span: red at 12 % over white
    assert _colour_near(full, shade, 8) > 1000
    assert _colour_near(plain, shade, 8) == 0


def test_user_text_is_never_mathtext_and_underscore_labels_still_show():
    pts = _points(5)
    odd = ["cost $5 and $6", "$\\frac{a}{$", "_private", "x" * 300]
    png = charts.series_chart([(x, pts) for x in odd], title="$a$ " + "t" * 200, marks=[(T0, "$m$")], unit="$")
    assert Image.open(io.BytesIO(png)).size == (800, 300)
    png = charts.bar_chart(odd, {"$a": [1, 2, 3, 4], "_b": [4, 3, 2, 1]}, title="$", unit="$")
    assert Image.open(io.BytesIO(png)).size == (800, 300)
    png = charts.daily_chart([date(2026, 1, 1)], {"$x$": [1], "_y": [2]}, title="$")
    assert Image.open(io.BytesIO(png)).size == (800, 300)
    assert charts._lab("_private") == " _private" and charts._lab("") is None


def test_close_values_far_from_zero_zoom_in():
    assert charts._nice_floor(99.37) == pytest.approx(99.3)
    assert charts._nice_floor(0.01234) == pytest.approx(0.0123)
    assert charts._nice_floor(-1) == 0.0
    assert [charts._num(v) for v in (99.95, 12.5, 1234.0, 123456.0)] == ["99.95", "12.5", "1234", "123,456"]
    # Uptime 99.2 % against 99.9 %: the bars differ in height by far more than 0.7 % of the plot.
    img = Image.open(io.BytesIO(charts.bar_chart(["db"], {"uptime": [99.2], "target": [99.9]}, title="u", unit="%")))
    blue, orange = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)
    rgb = img.convert("RGB")

    def height(colour):  # the tallest run of the colour in any column (the legend's patch is a few pixels)
        return max(sum(rgb.getpixel((x, y)) == colour for y in range(img.height)) for x in range(0, img.width, 4))

    assert height(orange) > 1.5 * height(blue)
