"""The rules pages of the web UI: every rule's state and health (``/ui/rules``), and one rule's details with a
preview of when it would have fired over the recorded history (``/ui/rules/{group}/{alert}``, replayed through the
backtest engine)."""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from fsincident.core import Labels
from fsincident.evaluation import backtest as bt
from fsincident.evaluation.replay import ReplayError
from fsincident.history import HistoryError
from fsincident.obs import get_logger
from fsincident.ui import UiError, ctx_of, display_tz, duration_text, page, render
from fsincident.ui.charts import Line, legend, line_chart
from fsincident.ui.incidents import simple_threshold

log = get_logger("fsincident.ui.rules")

RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
DEFAULT_RANGE = "6h"
MAX_SERIES = 20
"""Series drawn on a rule's preview chart."""
MAX_FRAMES = 800
"""Frames replayed for a preview (longer histories are thinned evenly: the replay costs ~0.5 ms a frame)."""
MAX_POINTS = 400
"""Points per drawn series."""
MAX_EPISODES = 200


def threshold_of(expr_text: str) -> float | None:
    """The constant of an expression that is a plain comparison (``queue_depth > 100`` → 100), else None."""
    found = simple_threshold(expr_text)
    return found[2] if found is not None else None


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


# ---------------------------------------------------------------------------------------------- list


@page("read")
async def rules_page(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    groups = ctx.evaluator.rules_view() if ctx.evaluator is not None else []
    slos = ctx.evaluator.slos_view() if ctx.evaluator is not None else []
    counts = {"firing": 0, "pending": 0, "inactive": 0, "error": 0}
    for g in groups:
        for r in g["rules"]:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
            if r["health"] == "error":
                counts["error"] += 1
    return render(
        request,
        "rules.html.j2",
        title="Rules",
        active="rules",
        live=True,
        groups=groups,
        slos=slos,
        counts=counts,
    )


# ---------------------------------------------------------------------------------------------- one rule


def _find(ctx: Any, group: str, alert: str) -> tuple[Any, Any, dict[str, Any]]:
    ev = ctx.evaluator
    g = ev.groups.get(group) if ev is not None else None
    rule = next((r for r in g.rules if r.alert == alert), None) if g is not None else None
    if g is None or rule is None:
        raise UiError(404, "No such rule", f"There is no rule {alert!r} in group {group!r}.")
    view = next(
        (r for gv in ev.rules_view() if gv["name"] == group for r in gv["rules"] if r["name"] == alert),
        {},
    )
    return g, rule, view


def _thin(frames: list[Any], cap: int) -> list[Any]:
    if len(frames) <= cap:
        return frames
    k = math.ceil(len(frames) / cap)
    return frames[::k]


def _step_of(frames: list[Any], fallback: float) -> float:
    if len(frames) < 2:
        return fallback
    diffs = [b[0] - a[0] for a, b in itertools.pairwise(frames[:201]) if b[0] > a[0]]
    return statistics.median(diffs) if diffs else fallback


def _lines_from_frames(
    frames: list[Any], metric: str, start: float, end: float, prefer: set[Labels]
) -> tuple[list[Line], int]:
    """Lines of ``metric`` in [start, end] from replay frames (a series missing from a frame breaks its line),
    averaged down to ``MAX_POINTS`` points; at most ``MAX_SERIES`` (those in ``prefer`` first), and the total."""
    shown = [f for f in frames if start <= f[0] <= end]
    found: dict[Labels, None] = {}
    for _t, metrics in shown:
        found.update(dict.fromkeys(metrics.get(metric, {})))
    order = sorted(found, key=lambda lab: (lab not in prefer, sorted(lab.items())))
    k = max(1, math.ceil(len(shown) / MAX_POINTS))
    lines = []
    for labels in order[:MAX_SERIES]:
        pts: list[tuple[float, float]] = []
        for i in range(0, len(shown), k):
            chunk = shown[i : i + k]
            vals = [v for _t, m in chunk if (v := m.get(metric, {}).get(labels)) is not None and math.isfinite(v)]
            pts.append((chunk[0][0], sum(vals) / len(vals) if vals else math.nan))
        inner = ", ".join(f'{key}="{val}"' for key, val in sorted(labels.items()))
        lines.append(Line(f"{metric}{{{inner}}}", pts))
    return lines, len(order)


_CACHE: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}
CACHE_SIZE = 64


async def preview(ctx: Any, group: Any, rule: Any, start: datetime, end: datetime) -> dict[str, Any]:
    """The rule replayed over the recorded history of [start, end]: series lines, episodes, errors and notes;
    never raises (failures become ``errors``). A result is reused for one history step (its data cannot change
    sooner), at most a minute."""
    key = (id(ctx), rule.key, rule.expr.text, rule.for_, rule.query, round((end - start).total_seconds()))
    hit = _CACHE.get(key)
    now = time.monotonic()
    if hit is not None and now < hit[0]:
        return hit[1]
    out = await _preview(ctx, group, rule, start, end)
    ttl = min(60.0, max(1.0, float(out.get("step") or 1.0)))
    if len(_CACHE) >= CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (now + ttl, out)
    return out


async def _preview(ctx: Any, group: Any, rule: Any, start: datetime, end: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {"lines": [], "episodes": [], "errors": [], "notes": [], "frames": 0, "evaluations": 0}
    history = ctx.history
    if history is None:
        out["notes"].append("The daemon keeps no series history (history is disabled), so there is nothing to replay.")
        return out
    metrics = bt.metrics_read([rule])
    primary = rule.expr.primary or (metrics[0] if metrics else None)
    interval = group.interval.total_seconds()
    if rule.query is not None or not metrics:
        out["notes"].append(
            "This rule reads a query: on its source; such rules cannot be replayed (their data comes from the query)."
            if rule.query is not None
            else "This rule reads no metric, so there is nothing to replay."
        )
        if primary is not None:  # still draw what the history holds
            try:
                series = await history.range(rule.source, primary, (), start=start, end=end, max_points=MAX_POINTS)
            except HistoryError as e:
                out["errors"].append(e.message)
                series = []
            for sd in series[:MAX_SERIES]:
                inner = ", ".join(f'{k}="{v}"' for k, v in sorted(sd.labels.items()))
                out["lines"].append(Line(f"{primary}{{{inner}}}", [(t, avg) for t, avg, _mn, _mx in sd.points]))
        return out
    # one read of every metric the rule needs, from the warm-up its windows need before start to end
    warm = bt.warmup_seconds([rule])
    try:
        frames = await history.frames(rule.source, metrics, start=start - timedelta(seconds=warm), end=end)
    except HistoryError as e:
        out["errors"].append(e.message)
        return out
    step = _step_of(frames, interval)
    n_frames = len(frames)
    frames = _thin(frames, MAX_FRAMES)
    if len(frames) < n_frames:
        step = _step_of(frames, interval)
        out["notes"].append(f"Long range: evaluated every {duration_text(step)} instead of every recorded step.")
    out["frames"] = len(frames)
    out["step"] = step
    if not frames:
        out["notes"].append("No recorded history of " + ", ".join(metrics) + " in this range yet.")
        return out
    try:
        result = await asyncio.to_thread(
            bt.run,
            [rule],
            frames,
            interval=max(step, 1e-3),
            # A frame holds what a snapshot held: a series absent from a frame is gone (daemon semantics for the
            # recorded history; a range query already applied Prometheus' own lookback).
            lookback=step / 2,
            evaluate_from=start.timestamp(),
        )
    except (ReplayError, bt.BacktestError) as e:
        out["errors"].append(str(e))
        result = None
    eps = result.episodes() if result is not None else []
    if result is not None:
        out["evaluations"] = result.evaluations
        out["errors"].extend(f"{msg} (first at {bt.iso_time(at)})" for msg, at in result.errors.items())
        out["notes"].extend(f"warning: {msg}" for msg, at in result.warnings.items())
    if len(eps) > MAX_EPISODES:
        out["notes"].append(f"Showing the last {MAX_EPISODES} of {len(eps)} episodes.")
        eps = eps[-MAX_EPISODES:]
    last = result.end if result is not None and result.end is not None else end.timestamp()
    out["episodes"] = [
        {
            "from": e.fired_at,
            "to": e.resolved_at,
            "duration": e.duration(last),
            "labels": e.labels.as_dict(),
            "value": e.value,
        }
        for e in eps
    ]
    if primary is not None:
        fired = {Labels({k: v for k, v in e.labels.items() if k in _series_keys(frames, primary)}) for e in eps}
        out["lines"], total = _lines_from_frames(frames, primary, start.timestamp(), end.timestamp(), fired)
        if total > MAX_SERIES:
            out["notes"].append(f"Showing {MAX_SERIES} of {total} series of {primary} (those that fired first).")
    return out


def _series_keys(frames: list[Any], metric: str) -> set[str]:
    for _t, metrics in reversed(frames):
        for labels in metrics.get(metric, {}):
            return set(labels)
    return set()


@page("read")
async def rule_page(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    group_name, alert = request.match_info["group"], request.match_info["alert"]
    group, rule, view = _find(ctx, group_name, alert)
    rng = request.query.get("range", DEFAULT_RANGE)
    if rng not in RANGES:
        rng = DEFAULT_RANGE
    tz = display_tz(request)
    end = ctx.incidents.clock.now()
    start = end - RANGES[rng]
    started = time.perf_counter()
    pv = await preview(ctx, group, rule, start, end)
    threshold = threshold_of(rule.expr.text)
    spans = [(e["from"], e["to"], "fired") for e in pv["episodes"]]
    chart = line_chart(
        pv["lines"],
        start.timestamp(),
        end.timestamp(),
        tz=tz,
        threshold=threshold,
        spans=spans,
        title=rule.expr.primary or rule.expr.text,
    )
    log.debug("ui_rule_preview", rule=rule.key, ms=round((time.perf_counter() - started) * 1000, 1))
    alerts = [dict(a, since=_ts(a.get("active_since")), fired=_ts(a.get("fired_at"))) for a in view.get("alerts", [])]
    return render(
        request,
        "rule.html.j2",
        title=f"{group_name}/{alert}",
        extra_js=["charts.js"],
        active="rules",
        group=group,
        rule=rule,
        view=view,
        alerts=alerts,
        annotations={
            k: getattr(v, "source", None) or getattr(v, "text", None) or str(v) for k, v in rule.annotations.items()
        },
        ranges=list(RANGES),
        range=rng,
        chart=chart,
        preview=pv,
        threshold=threshold,
        series_legend=legend(pv["lines"]),
    )


def add_routes(app: web.Application) -> None:
    """Register this module's pages."""
    app.router.add_get("/ui/rules", rules_page)
    app.router.add_get("/ui/rules/{group}/{alert}", rule_page)
