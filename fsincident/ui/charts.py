"""Server-side SVG charts for the web UI: line charts, sparklines, heatmaps and histograms.

Charts are built as strings (every text through :func:`markupsafe.escape`) and returned as :class:`Markup`; they
scale with their container (``viewBox`` + ``width="100%"``), carry ``<title>`` tooltips (no JavaScript needed) and
``data-*`` attributes the browser tests read. Colours come from ``static/charts.css`` (series classes ``s0``..``s7``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

__all__ = ["Line", "heatmap", "histogram", "line_chart", "nice_ticks", "sparkline", "time_ticks"]

PALETTE = 8  # series colour classes s0..s7
LIMIT = 1e300
"""Values beyond ±LIMIT are drawn as gaps, like ±inf: the span between two of them would overflow a float."""


@dataclass
class Line:
    """One series of a line chart: ``points`` are (unix seconds, value); a NaN/None value breaks the line."""

    label: str
    points: list[tuple[float, float]]
    css: str = ""


# ---------------------------------------------------------------------------------------------- helpers


def _f(v: float) -> str:
    """A coordinate rounded to one decimal, without a trailing ``.0``."""
    r = round(v, 1)
    if r == int(r):
        return str(int(r))
    return f"{r:.1f}"


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _plottable(v: object) -> bool:
    """A finite value small enough that differences of two of them stay finite (1e308 - -1e308 is inf)."""
    return _finite(v) and abs(v) <= LIMIT  # type: ignore[arg-type]


def fmt_value(v: float, unit: str = "") -> str:
    """A compact number for axes and tooltips (``1.5k``, ``0.25``, ``3M``) followed by ``unit``."""
    if not math.isfinite(v):
        return "NaN"
    a = abs(v)
    if a >= 1e9:
        s = f"{v / 1e9:.3g}G"
    elif a >= 1e6:
        s = f"{v / 1e6:.3g}M"
    elif a >= 1e4:
        s = f"{v / 1e3:.3g}k"
    elif a == 0 or a >= 1e-3:
        s = f"{v:.4g}"
    else:
        s = f"{v:.2e}"
    return f"{s}{unit}" if not unit or unit in ("%",) else f"{s} {unit}"


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Ticks at 1/2/5 × 10^n covering [lo, hi] (at least two; never raises for finite inputs)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    if not math.isfinite(hi - lo):  # e.g. -1e308 .. 1e308: no step fits, the ends are the ticks
        return [lo, hi]
    scale = max(abs(lo), abs(hi))
    if hi - lo < 1e-9 * max(1.0, scale) or hi - lo < 1e-9:
        pad = scale * 0.1 if scale > 1e-6 else 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, target)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = mag * 10
    for m in (1, 2, 5, 10):
        if raw <= m * mag * (1 + 1e-9):
            step = m * mag
            break
    k0, k1 = math.floor(lo / step), math.ceil(hi / step)
    digits = max(0, -math.floor(math.log10(step)) + 1)
    ticks = [round((k0 + i) * step, digits) for i in range(int(k1 - k0) + 1)]
    if len(ticks) < 2:
        ticks = [k0 * step, (k0 + 1) * step]
    return ticks


_TIME_STEPS = [
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    2 * 3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
]


def time_ticks(start: float, end: float, tz: ZoneInfo, target: int = 6) -> tuple[list[float], str]:
    """Ticks at round wall-clock intervals in ``tz`` within [start, end] and the strftime format to label them."""
    span = max(end - start, 1.0)
    step = next((s for s in _TIME_STEPS if span / s <= target), _TIME_STEPS[-1])
    if step >= 86400:
        fmt = "%b %d"
    elif span > 86400:
        fmt = "%a %H:%M"
    elif step < 60:
        fmt = "%H:%M:%S"
    else:
        fmt = "%H:%M"
    ticks: list[float] = []
    t0 = datetime.fromtimestamp(start, UTC).astimezone(tz)
    if step < 86400:
        # align to the step in local wall-clock time (offset-aware: works across DST changes in whole hours)
        local_secs = t0.hour * 3600 + t0.minute * 60 + t0.second + t0.microsecond / 1e6
        midnight = t0.replace(hour=0, minute=0, second=0, microsecond=0)
        k = math.ceil(local_secs / step)
        cur = midnight + timedelta(seconds=k * step)
        guard = 0
        while guard < 200:
            guard += 1
            ts = cur.timestamp()
            if ts > end:
                break
            if ts >= start:
                ticks.append(ts)
            cur = (cur.replace(tzinfo=None) + timedelta(seconds=step)).replace(tzinfo=tz)
    else:
        days = step // 86400
        cur = t0.replace(hour=0, minute=0, second=0, microsecond=0)
        if cur.timestamp() < start:
            cur = (cur.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=tz)
        if days == 7:
            cur = (cur.replace(tzinfo=None) + timedelta(days=(7 - cur.weekday()) % 7)).replace(tzinfo=tz)
        guard = 0
        while cur.timestamp() <= end and guard < 200:
            guard += 1
            ticks.append(cur.timestamp())
            cur = (cur.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=tz)
    return ticks, fmt


def _local(t: float, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    try:
        return datetime.fromtimestamp(t, UTC).astimezone(tz).strftime(fmt)
    except (OverflowError, OSError, ValueError):  # a time outside the years 1..9999
        return "?"


def _attrs(**kw: object) -> str:
    parts = []
    for k, v in kw.items():
        if v is None:
            continue
        parts.append(f'{k.rstrip("_").replace("_", "-")}="{escape(str(v))}"')
    return " ".join(parts)


def _svg_open(cls: str, width: int, height: int, label: str, **data: object) -> str:
    extra = _attrs(**data)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{escape(cls)}" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMidYMid meet" role="img" aria-label="{escape(label)}"'
        + (f" {extra}" if extra else "")
        + ">"
    )


# ---------------------------------------------------------------------------------------------- line chart


def line_chart(
    lines: Sequence[Line],
    start: float,
    end: float,
    *,
    tz: ZoneInfo,
    threshold: float | None = None,
    spans: Sequence[tuple[float, float | None, str]] = (),
    markers: Sequence[tuple[float, str]] = (),
    unit: str = "",
    width: int = 900,
    height: int = 220,
    title: str = "",
) -> Markup:
    """A time-series chart of ``lines`` over [start, end] with axes, an optional threshold, spans and markers.

    Points outside [start, end] are dropped; NaN/None values break a line; never raises for odd input (an empty
    or all-NaN chart says "no data").
    """
    if not (_finite(start) and _finite(end)) or end <= start:
        end = (start if _finite(start) else 0.0) + 1.0
        start = end - 1.0
    left, right, top, bottom = 58.0, 12.0, 22.0 if title else 10.0, 26.0
    pw, ph = max(width - left - right, 10.0), max(height - top - bottom, 10.0)

    # clean the series: keep points in range, None for gaps
    cleaned: list[tuple[Line, list[tuple[float, float | None]]]] = []
    values: list[float] = []
    for ln in lines:
        pts: list[tuple[float, float | None]] = []
        for t, v in ln.points:
            # a NaN time fails both comparisons; None values, NaN (v != v) and ±inf break the line
            if t is None or not (start <= t <= end):
                continue
            if v is None or not _plottable(v):
                pts.append((t, None))
            else:
                pts.append((t, v))
                values.append(v)
        if any(pts[i][0] > pts[i + 1][0] for i in range(len(pts) - 1)):
            pts.sort(key=lambda p: p[0])
        cleaned.append((ln, pts))
    total = len(values)
    thr = float(threshold) if threshold is not None and _plottable(threshold) else None
    out: list[str] = [
        _svg_open(
            "chart line-chart",
            width,
            height,
            title or "line chart",
            data_series=len(lines),
            data_points=total,
            data_start=_f(start),
            data_end=_f(end),
        )
    ]
    if title:
        out.append(f'<text class="title" x="{_f(left)}" y="14">{escape(title)}</text>')

    lo_v = min(values) if values else 0.0
    hi_v = max(values) if values else 1.0
    if thr is not None:
        lo_v, hi_v = min(lo_v, thr), max(hi_v, thr)
    if values and lo_v >= 0 and lo_v < hi_v * 0.5:
        lo_v = 0.0  # anchor mostly-positive data at zero
    yt = nice_ticks(lo_v, hi_v)
    y0, y1 = yt[0], yt[-1]
    # the value axis, for charts.js' hover readout (inserted into the opening tag)
    out[0] = (
        out[0][:-1]
        + f' data-y0="{escape(repr(y0))}" data-y1="{escape(repr(y1))}" data-tz="{escape(str(tz))}"'
        + (f' data-unit="{escape(unit)}">' if unit else ">")
    )

    def x_of(t: float) -> float:
        return left + (t - start) / (end - start) * pw

    def y_of(v: float) -> float:
        y = top + ph - (v - y0) / ((y1 - y0) or 1.0) * ph
        return min(max(y, top), top + ph)

    xs, ys = pw / (end - start), ph / ((y1 - y0) or 1.0)

    # frame, grid and axes
    out.append(f'<rect class="plot" x="{_f(left)}" y="{_f(top)}" width="{_f(pw)}" height="{_f(ph)}"/>')
    out.append('<g class="axis y">')
    for v in yt:
        y = _f(y_of(v))
        out.append(f'<line class="grid" x1="{_f(left)}" x2="{_f(left + pw)}" y1="{y}" y2="{y}"/>')
        out.append(
            f'<text x="{_f(left - 4)}" y="{y}" text-anchor="end" dominant-baseline="middle">'
            f"{escape(fmt_value(v, unit))}</text>"
        )
    out.append("</g>")
    xt, xfmt = time_ticks(start, end, tz)
    out.append('<g class="axis x">')
    for t in xt:
        x = _f(x_of(t))
        out.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{_f(top)}" y2="{_f(top + ph)}"/>')
        out.append(f'<text x="{x}" y="{_f(top + ph + 16)}" text-anchor="middle">{escape(_local(t, tz, xfmt))}</text>')
    out.append("</g>")

    # spans (behind the lines)
    for s_from, s_to, css in spans:
        if not _finite(s_from):
            continue
        to = end if s_to is None or not _finite(s_to) else float(s_to)
        a, b = max(float(s_from), start), min(to, end)
        if b < a:
            continue
        xa, xb = x_of(a), x_of(b)
        tip = f"{_local(float(s_from), tz)} → " + (_local(to, tz) if s_to is not None else "now")
        out.append(
            f'<rect class="span {escape(css)}" x="{_f(xa)}" y="{_f(top)}" width="{_f(max(xb - xa, 1.0))}" '
            f'height="{_f(ph)}" data-from="{_f(float(s_from))}" data-to="{_f(to)}">'
            f"<title>{escape(css)}: {escape(tip)}</title></rect>"
        )

    # series
    for i, (ln, pts) in enumerate(cleaned):
        segments: list[list[str]] = []
        pen_down = False
        n = 0
        last: tuple[float, float] | None = None
        for t, v in pts:
            if v is None:
                pen_down = False
                continue
            if not pen_down:
                segments.append([])
            # hot loop: inline the scaling; values lie within [y0, y1] by construction
            segments[-1].append(
                f"{'L' if pen_down else 'M'}{left + (t - start) * xs:.1f} {top + ph - (v - y0) * ys:.1f}"
            )
            pen_down = True
            n += 1
            last = (t, v)
        # a lone point between gaps is drawn as a zero-length stroke (visible with round caps)
        d = [" ".join(seg) + (" h0" if len(seg) == 1 else "") for seg in segments]
        cls = f"series s{i % PALETTE}" + (f" {ln.css}" if ln.css else "")
        tip = ln.label
        if last is not None:
            tip += f" — last {fmt_value(last[1], unit)} at {_local(last[0], tz)}"
        out.append(
            f'<path class="{escape(cls)}" d="{" ".join(d)}" data-points="{n}" data-label="{escape(ln.label)}">'
            f"<title>{escape(tip)}</title></path>"
        )

    if thr is not None:
        y = _f(y_of(thr))
        out.append(
            f'<line class="threshold" x1="{_f(left)}" x2="{_f(left + pw)}" y1="{y}" y2="{y}" '
            f'data-value="{escape(repr(thr))}"><title>threshold {escape(fmt_value(thr, unit))}</title></line>'
        )
    for t, label in markers:
        if not _finite(t) or t < start or t > end:
            continue
        x = _f(x_of(float(t)))
        out.append(
            f'<line class="marker" x1="{x}" x2="{x}" y1="{_f(top)}" y2="{_f(top + ph)}" data-t="{_f(float(t))}">'
            f"<title>{escape(label)} at {escape(_local(float(t), tz))}</title></line>"
        )
    if total == 0:
        out.append(
            f'<text class="nodata" x="{_f(left + pw / 2)}" y="{_f(top + ph / 2)}" text-anchor="middle">no data</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


# ---------------------------------------------------------------------------------------------- sparkline


def sparkline(
    points: Sequence[tuple[float, float]],
    *,
    width: int = 160,
    height: int = 36,
    warn: float | None = None,
    crit: float | None = None,
) -> Markup:
    """A tiny axis-less line of ``points`` (NaN/None break it) with optional warn/crit lines; never raises."""
    pts = sorted(((float(t), v) for t, v in points if _plottable(t)), key=lambda p: p[0])
    vals = [float(v) for _, v in pts if _plottable(v)]
    levels = [float(x) for x in (warn, crit) if x is not None and _plottable(x)]
    out = [_svg_open("sparkline", width, height, "sparkline", data_points=len(vals))]
    if vals:
        lo, hi = min(vals + levels), max(vals + levels)
        if hi - lo < 1e-12:
            lo, hi = lo - 1, hi + 1
        t0, t1 = pts[0][0], pts[-1][0]
        span = (t1 - t0) or 1.0
        pad = 2.0

        def x_of(t: float) -> float:
            return pad + (t - t0) / span * (width - 2 * pad) if t1 > t0 else width / 2

        def y_of(v: float) -> float:
            return pad + (hi - v) / (hi - lo) * (height - 2 * pad)

        for cls, lv in (("warn", warn), ("crit", crit)):
            if lv is not None and _plottable(lv):
                y = _f(y_of(float(lv)))
                out.append(f'<line class="level {cls}" x1="0" x2="{width}" y1="{y}" y2="{y}"/>')
        d: list[str] = []
        down = False
        for t, v in pts:
            if not _plottable(v):
                down = False
                continue
            d.append(f"{'L' if down else 'M'}{_f(x_of(t))} {_f(y_of(float(v)))}")
            down = True
        last_v = vals[-1]
        out.append(
            f'<path class="series s0" d="{" ".join(d)}"><title>last {escape(fmt_value(last_v))}, '
            f"min {escape(fmt_value(min(vals)))}, max {escape(fmt_value(max(vals)))}</title></path>"
        )
        lt, lvv = next((t, float(v)) for t, v in reversed(pts) if _plottable(v))
        out.append(f'<circle class="dot s0" cx="{_f(x_of(lt))}" cy="{_f(y_of(lvv))}" r="2"/>')
    else:
        out.append(
            f'<text class="nodata" x="{_f(width / 2)}" y="{_f(height / 2)}" text-anchor="middle" '
            f'dominant-baseline="middle">no data</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


# ---------------------------------------------------------------------------------------------- heatmap


def heatmap(cells: Sequence[Sequence[int]], *, rows: Sequence[str], cols: Sequence[str], title: str = "") -> Markup:
    """A grid of counts (``cells[row][col]``) shaded by intensity, labelled by ``rows`` and ``cols``; never raises."""
    cw, ch = 28.0, 22.0
    left, top = 44.0, 20.0 + (18.0 if title else 0.0)
    n_cols = max(len(cols), max((len(r) for r in cells), default=0))
    n_rows = max(len(rows), len(cells))
    width = int(left + n_cols * cw + 8)
    height = int(top + n_rows * ch + 8)
    peak = max((int(c) for r in cells for c in r), default=0)
    total = sum(int(c) for r in cells for c in r)
    out = [_svg_open("chart heatmap", width, height, title or "heatmap", data_total=total)]
    if title:
        out.append(f'<text class="title" x="{_f(left)}" y="14">{escape(title)}</text>')
    for j in range(n_cols):
        label = cols[j] if j < len(cols) else str(j)
        out.append(
            f'<text class="col" x="{_f(left + j * cw + cw / 2)}" y="{_f(top - 6)}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    for i in range(n_rows):
        label = rows[i] if i < len(rows) else str(i)
        y = top + i * ch
        out.append(
            f'<text class="row" x="{_f(left - 6)}" y="{_f(y + ch / 2)}" text-anchor="end" '
            f'dominant-baseline="middle">{escape(label)}</text>'
        )
        row = cells[i] if i < len(cells) else []
        for j in range(n_cols):
            count = int(row[j]) if j < len(row) else 0
            level = 0 if count <= 0 or peak <= 0 else 1 + min(4, int(4 * count / peak))
            col_label = cols[j] if j < len(cols) else str(j)
            out.append(
                f'<rect class="cell l{level}" x="{_f(left + j * cw + 1)}" y="{_f(y + 1)}" width="{_f(cw - 2)}" '
                f'height="{_f(ch - 2)}" rx="2" data-row="{i}" data-col="{j}" data-count="{count}">'
                f"<title>{escape(label)} {escape(col_label)}: {count}</title></rect>"
            )
    out.append("</svg>")
    return Markup("".join(out))


# ---------------------------------------------------------------------------------------------- histogram


def _bin_edges(lo: float, hi: float, bins: int) -> list[float]:
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        pad = abs(hi) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    step = (hi - lo) / bins
    return [lo + i * step for i in range(bins)] + [hi]


def bucket(values: Iterable[float], bins: int) -> tuple[list[float], list[int]]:
    """Equal-width bins over the finite ``values``: (edges, counts); counts sum to the number of finite values."""
    vals = [v for v in values if v is not None and _plottable(v)]
    bins = max(1, int(bins))
    if not vals:
        return [], []
    edges = _bin_edges(min(vals), max(vals), bins)
    lo, hi = edges[0], edges[-1]
    counts = [0] * bins
    scale = bins / (hi - lo)
    last = bins - 1
    for v in vals:
        k = int((v - lo) * scale)
        counts[k if 0 <= k < last else (last if k > 0 else 0)] += 1
    return edges, counts


def histogram(values: Sequence[float], *, bins: int = 20, unit: str = "", title: str = "") -> Markup:
    """The distribution of the finite ``values`` as ``bins`` equal-width bars; never raises (empty → "no data")."""
    width, height = 900, 200
    left, right, top, bottom = 48.0, 12.0, 22.0 if title else 10.0, 26.0
    pw, ph = width - left - right, height - top - bottom
    edges, counts = bucket(values, bins)
    n = sum(counts)
    out = [_svg_open("chart histogram", width, height, title or "histogram", data_values=n)]
    if title:
        out.append(f'<text class="title" x="{_f(left)}" y="14">{escape(title)}</text>')
    out.append(f'<rect class="plot" x="{_f(left)}" y="{_f(top)}" width="{_f(pw)}" height="{_f(ph)}"/>')
    if not counts:
        out.append(
            f'<text class="nodata" x="{_f(left + pw / 2)}" y="{_f(top + ph / 2)}" text-anchor="middle">no data</text>'
        )
        out.append("</svg>")
        return Markup("".join(out))
    yt = [v for v in nice_ticks(0, max(max(counts), 4)) if v == int(v)]
    ymax = yt[-1] or 1
    for v in yt:
        y = _f(top + ph - v / ymax * ph)
        out.append(f'<line class="grid" x1="{_f(left)}" x2="{_f(left + pw)}" y1="{y}" y2="{y}"/>')
        out.append(
            f'<text x="{_f(left - 4)}" y="{y}" text-anchor="end" dominant-baseline="middle">{escape(_f(v))}</text>'
        )
    bw = pw / len(counts)
    for k, c in enumerate(counts):
        h = c / ymax * ph
        x = left + k * bw
        tip = f"{fmt_value(edges[k], unit)} – {fmt_value(edges[k + 1], unit)}: {c}"
        out.append(
            f'<rect class="bar" x="{_f(x + 0.5)}" y="{_f(top + ph - h)}" width="{_f(max(bw - 1, 0.5))}" '
            f'height="{_f(h)}" data-count="{c}" data-from="{escape(repr(edges[k]))}" '
            f'data-to="{escape(repr(edges[k + 1]))}"><title>{escape(tip)}</title></rect>'
        )
    step = max(1, len(counts) // 5)
    for k in range(0, len(edges), step):
        x = _f(left + k * bw)
        out.append(
            f'<text x="{x}" y="{_f(top + ph + 16)}" text-anchor="middle">{escape(fmt_value(edges[k], unit))}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


def legend(lines: Sequence[Line]) -> list[tuple[int, str, str]]:
    """(colour index, short label, full label) per line: the ``{...}`` labels every line shares are left out of
    the short label (``queue="orders"`` instead of ``queue_depth{instance=…, job="app", queue="orders"}``)."""

    def parts(label: str) -> tuple[str, list[str]]:
        name, brace, rest = label.partition("{")
        if not brace or not rest.endswith("}"):
            return label, []
        return name, [p.strip() for p in rest[:-1].split(", ") if p.strip()]

    parsed = [parts(ln.label) for ln in lines]
    common = set.intersection(*(set(p) for _n, p in parsed)) if len(parsed) > 1 else set()
    out = []
    for i, (ln, (name, ps)) in enumerate(zip(lines, parsed, strict=True)):
        own = [p for p in ps if p not in common]
        short = ", ".join(own) if own else (name or ln.label)
        out.append((i % PALETTE, short, ln.label))
    return out
