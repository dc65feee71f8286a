"""PNG charts for reports, postmortems and the capacity report (issue #9).

Matplotlib through the Agg canvas and ``matplotlib.figure.Figure`` only (never pyplot nor ``rc_context``: global state):
each call builds its own figure, so the functions are thread-safe and callers run them in ``asyncio.to_thread``.
The PNGs are deterministic (no timestamp or software metadata) and sized 800×300 pixels, readable in an e-mail.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import matplotlib.dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

WIDTH_PX = 800
HEIGHT_PX = 300
DPI = 100

SEVERITY_COLOURS = {
    "critical": "#d62728",  # red
    "error": "#e4572e",
    "warning": "#f0a202",  # amber
    "info": "#1f77b4",  # blue
}
# Other stacks / lines / bars cycle through these (distinct from the severity colours above where possible).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
SPAN_COLOUR = "#d62728"
MARK_COLOUR = "#2ca02c"
THRESHOLD_COLOUR = "#d62728"


def _tz(tz: str | Any) -> Any:
    """The tzinfo for a name (``UTC`` when empty); raises ``ZoneInfoNotFoundError`` on an unknown name."""
    if tz is None or tz == "" or tz == "UTC":
        return UTC
    if isinstance(tz, str):
        return ZoneInfo(tz)
    return tz


def _aware(t: datetime) -> datetime:
    """``t`` with a timezone (naive times are UTC, as the store returns them)."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _figure() -> tuple[Figure, Any]:
    """A new 800×300 figure with one axes (no pyplot)."""
    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _png(fig: Figure) -> bytes:
    """Render ``fig`` to deterministic PNG bytes (no metadata but the defaults that never change)."""
    buf = io.BytesIO()
    fig.tight_layout(pad=0.6)
    _fit_legends(fig)
    fig.tight_layout(pad=0.6)
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, pil_kwargs=None)
    return buf.getvalue()


def _empty(ax: Any, text: str = "no data") -> None:
    """Write ``text`` in the middle of an axes that has nothing to show."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#888888", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


LABEL_MAX = 48  # characters of a legend label or category before it is cut with "…"


def _t(text: Any) -> str:
    """Text shown as written: every ``$`` escaped, so "$5 and $6" is never parsed as mathtext."""
    return str(text).replace("$", r"\$")


def _lab(text: Any) -> str | None:
    """A legend label as given (matplotlib hides labels starting with ``_``: those get a leading space)."""
    if text is None or text == "":
        return None
    text = _t(text)
    return " " + text if text.startswith("_") else text


def _cut(text: str, n: int = LABEL_MAX) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _legend(ax: Any, n: int, title: str = "") -> None:
    """A legend above the axes on the right (the title is on the left), so it never hides data; ``_png`` moves it
    inside the axes (where it hides the least) when it would overlap the title."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    labels = [_cut(str(x)) for x in labels]
    if len(labels) > 5:
        _legend_inside(ax, handles, labels)
        return
    ax.legend(
        handles,
        labels,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
        ncols=max(1, min(5, n)),
        borderaxespad=0.2,
        fontsize=8,
    )


def _legend_inside(ax: Any, handles: Any, labels: Sequence[str]) -> None:
    ax.legend(handles, labels, loc="best", frameon=True, framealpha=0.85, fontsize=7, ncols=1 if len(labels) < 5 else 2)


def _fit_legends(fig: Figure) -> None:
    """Move a legend above the axes inside them when it overlaps the title or leaves the figure."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    width = fig.bbox.width
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None or leg.get_frame_on():
            continue
        box = leg.get_window_extent(renderer)
        left = getattr(ax, "_left_title", ax.title)  # set_title(loc="left") draws this one
        title = left.get_window_extent(renderer) if left.get_text() else None
        if box.x0 < 0 or box.x1 > width or (title is not None and box.x0 < title.x1 + 12):
            handles = leg.legend_handles
            labels = [t.get_text() for t in leg.get_texts()]
            leg.remove()
            _legend_inside(ax, handles, labels)


def _headroom(ax: Any, top: float) -> None:
    """Start the value axis at 0 and leave a little room above the highest bar."""
    ax.set_ylim(0, top * 1.08 if top > 0 else 1)


def _nice_floor(v: float) -> float:
    """``v`` rounded down to a round number of its magnitude's tenths (99.37 -> 99.3, 0.0123 -> 0.012)."""
    if v <= 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(v)) - 2)
    return math.floor(v / step) * step


def _num(v: float) -> str:
    """A bar's value label: up to 4 significant digits (99.95, 12.5, 1234)."""
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"


def _ylabel(ax: Any, unit: str) -> None:
    if unit:
        ax.set_ylabel(_t(unit), fontsize=9)


def _time_axis(ax: Any, tzinfo: Any) -> None:
    """Concise date ticks in ``tzinfo`` (the zone name appended to the last tick label's offset)."""
    locator = mdates.AutoDateLocator(tz=tzinfo, minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tzinfo, show_offset=True))
    ax.xaxis.get_offset_text().set_fontsize(8)
    ax.set_xlabel(getattr(tzinfo, "key", None) or str(tzinfo), color="#666666", fontsize=7, loc="left")


def _finite(v: float) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def series_chart(
    lines: Sequence[tuple[str, Sequence[tuple[datetime, float]]]],
    *,
    title: str,
    unit: str = "",
    spans: Sequence[tuple[datetime, datetime]] = (),
    marks: Sequence[tuple[datetime, str]] = (),
    threshold: float | None = None,
    tz: str = "UTC",
) -> bytes:
    """Lines of (time, value) points with shaded spans, labelled vertical marks and a threshold line, as PNG bytes.

    Non-finite values break a line; raises ``ZoneInfoNotFoundError`` for an unknown ``tz``.
    """
    tzinfo = _tz(tz)
    fig, ax = _figure()
    ax.set_title(_t(_cut(str(title), 90)), loc="left", fontsize=10)
    drawn = 0
    for i, (label, points) in enumerate(lines):
        xs = [_aware(t) for t, _ in points]
        ys = [float(v) if _finite(v) else math.nan for _, v in points]
        if not xs:
            continue
        style = {"marker": "o", "markersize": 3} if len(xs) == 1 else {}
        ax.plot(xs, ys, label=_lab(label), color=PALETTE[i % len(PALETTE)], linewidth=1.3, **style)
        drawn += 1
    for start, end in spans:
        ax.axvspan(_aware(start), _aware(end), color=SPAN_COLOUR, alpha=0.12, linewidth=0)
    for t, label in marks:
        ax.axvline(_aware(t), color=MARK_COLOUR, linestyle="--", linewidth=1)
        ax.annotate(
            _t(label),
            xy=(_aware(t), 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -10),
            textcoords="offset points",
            color=MARK_COLOUR,
            fontsize=8,
        )
    if threshold is not None and _finite(threshold):
        ax.axhline(float(threshold), color=THRESHOLD_COLOUR, linestyle=":", linewidth=1.2)
        ax.annotate(
            f"threshold {threshold:g}",
            xy=(0.0, float(threshold)),
            xycoords=("axes fraction", "data"),
            xytext=(3, 3),
            textcoords="offset points",
            color=THRESHOLD_COLOUR,
            fontsize=8,
        )
    if drawn == 0 and not spans and not marks:
        _empty(ax)
    else:
        _time_axis(ax, tzinfo)
        _ylabel(ax, unit)
        if any(label for label, pts in lines if pts):
            _legend(ax, drawn, title)
    return _png(fig)


def bar_chart(
    categories: Sequence[str],
    values: Mapping[str, Sequence[float]],
    *,
    title: str,
    unit: str = "",
) -> bytes:
    """Grouped bars: one group per category, one bar per ``values`` key (e.g. MTTA and MTTR), as PNG bytes.

    Missing or non-finite values draw no bar; raises ``ValueError`` when a value list is longer than ``categories``.
    """
    cats = [str(c) for c in categories]
    for name, vals in values.items():
        if len(vals) > len(cats):
            raise ValueError(f"bar_chart: {name!r} has {len(vals)} values for {len(cats)} categories")
    fig, ax = _figure()
    ax.set_title(_t(_cut(str(title), 90)), loc="left", fontsize=10)
    if not cats or not values:
        _empty(ax)
        return _png(fig)
    n = len(values)
    width = 0.8 / n
    xs = list(range(len(cats)))
    finite = [float(v) for vals in values.values() for v in vals if _finite(v)]
    lo, hi = min(finite, default=0.0), max(finite, default=0.0)
    # Values close together far from zero (uptime 99.5 % against 99.9 %): zoom in, or every bar looks the same.
    zoom = lo > 0 and hi - lo < 0.1 * hi
    base = _nice_floor(lo - max(hi - lo, hi * 0.001) * 0.5) if zoom else 0.0
    labelled = len(cats) * n <= 24
    for i, (name, vals) in enumerate(values.items()):
        hs = [float(v) if _finite(v) else math.nan for v in vals] + [math.nan] * (len(cats) - len(vals))
        offs = [x - 0.4 + width * (i + 0.5) for x in xs]
        bars = ax.bar(
            offs,
            [0.0 if math.isnan(h) else h - base for h in hs],
            bottom=base,
            width=width * 0.95,
            label=_lab(name),
            color=PALETTE[i % len(PALETTE)],
        )
        if labelled:
            ax.bar_label(bars, labels=["" if math.isnan(h) else _num(h) for h in hs], fontsize=7, padding=1)
    ax.set_xticks(xs)
    rotate = len(cats) > 6 or max(len(c) for c in cats) > 14
    labels = [_t(_cut(c, 24)) for c in cats]
    ax.set_xticklabels(labels, rotation=30 if rotate else 0, ha="right" if rotate else "center", rotation_mode="anchor")
    if zoom:
        ax.set_ylim(base, hi + (hi - base) * 0.12)
    elif lo >= 0:
        _headroom(ax, hi * 1.04)
    _ylabel(ax, unit)
    if n > 1 or next(iter(values)):
        _legend(ax, n, title)
    return _png(fig)


def daily_chart(days: Sequence[date], stacks: Mapping[str, Sequence[int]], *, title: str) -> bytes:
    """Stacked bars per day (severity colours: critical red, warning amber, info blue), as PNG bytes.

    Raises ``ValueError`` when a stack is longer than ``days``.
    """
    ds = list(days)
    for name, vals in stacks.items():
        if len(vals) > len(ds):
            raise ValueError(f"daily_chart: {name!r} has {len(vals)} values for {len(ds)} days")
    order = sorted(stacks, key=lambda s: (list(SEVERITY_COLOURS).index(s) if s in SEVERITY_COLOURS else 99, s))
    fig, ax = _figure()
    ax.set_title(_t(_cut(str(title), 90)), loc="left", fontsize=10)
    if not ds:
        _empty(ax)
        return _png(fig)
    xs = list(range(len(ds)))
    bottom = [0.0] * len(ds)
    other = 0
    for name in order:
        vals = [float(v) for v in stacks[name]] + [0.0] * (len(ds) - len(stacks[name]))
        colour = SEVERITY_COLOURS.get(name)
        if colour is None:
            colour = PALETTE[(3 + other) % len(PALETTE)]
            other += 1
        ax.bar(xs, vals, bottom=bottom, width=0.8, label=_lab(name), color=colour)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    step = max(1, math.ceil(len(ds) / 14))
    ax.set_xticks(xs[::step])
    ax.set_xticklabels([d.strftime("%b %d") for d in ds[::step]])
    ax.yaxis.get_major_locator().set_params(integer=True)
    _headroom(ax, max(bottom))
    ax.set_ylabel("incidents", fontsize=9)
    if order:
        _legend(ax, len(order), title)
    return _png(fig)


def trend_chart(
    points: Sequence[tuple[datetime, float]],
    *,
    projection: Sequence[tuple[datetime, float]] = (),
    threshold: float | None = None,
    exhausted_at: datetime | None = None,
    title: str,
    unit: str = "",
    tz: str = "UTC",
) -> bytes:
    """A recorded series with its dashed projection, the threshold and the exhaustion time (capacity), as PNG bytes.

    Raises ``ZoneInfoNotFoundError`` for an unknown ``tz``.
    """
    tzinfo = _tz(tz)
    fig, ax = _figure()
    ax.set_title(_t(_cut(str(title), 90)), loc="left", fontsize=10)
    if not points and not projection:
        _empty(ax)
        return _png(fig)
    if points:
        ax.plot(
            [_aware(t) for t, _ in points],
            [float(v) if _finite(v) else math.nan for _, v in points],
            color=PALETTE[0],
            linewidth=1.3,
            label="recorded",
        )
    if projection:
        ax.plot(
            [_aware(t) for t, _ in projection],
            [float(v) if _finite(v) else math.nan for _, v in projection],
            color=PALETTE[1],
            linewidth=1.3,
            linestyle="--",
            label="projection",
        )
    if threshold is not None and _finite(threshold):
        ax.axhline(float(threshold), color=THRESHOLD_COLOUR, linestyle=":", linewidth=1.2, label="threshold")
    if exhausted_at is not None:
        t = _aware(exhausted_at)
        ax.axvline(t, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1)
        ax.annotate(
            "exhausted " + t.astimezone(tzinfo).strftime("%Y-%m-%d %H:%M"),
            xy=(t, 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(-3, 4),
            textcoords="offset points",
            ha="right",
            color=THRESHOLD_COLOUR,
            fontsize=8,
        )
    _time_axis(ax, tzinfo)
    _ylabel(ax, unit)
    _legend(ax, 3, title)
    return _png(fig)
