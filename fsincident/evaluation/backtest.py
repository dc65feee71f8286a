"""``fsincident backtest``: replay rules over history and report when each alert would have fired and resolved.

History comes from a CSV file (one series: ``timestamp,value``; the rules are evaluated at every row) or
from Prometheus (``/api/v1/query_range`` of every metric the rules read; the rules are evaluated at every
step from start to end, after the samples before ``start`` that their windows need have been fed).
"""

from __future__ import annotations

import base64
import csv
import itertools
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fsincident.config import Rule
from fsincident.core import FsIncidentError, Labels, format_duration, isoformat, parse_duration, valid_label_name
from fsincident.evaluation.replay import Replay, Transition

__all__ = [
    "BacktestError",
    "BacktestResult",
    "Episode",
    "csv_frames",
    "fetch_prometheus",
    "format_json",
    "format_table",
    "metrics_read",
    "parse_labels",
    "parse_time",
    "read_csv",
    "run",
]

MAX_POINTS = 10_000
"""Steps per range query (Prometheus refuses more than 11,000 points per series)."""
MAX_EVALUATIONS = 5_000_000
MAX_WARMUP = 35 * 86_400.0
"""Longest history fetched before ``--start`` for window functions (the longest SLO window and a bit)."""


class BacktestError(FsIncidentError):
    """Bad input (file, arguments) or a failed Prometheus query; the message says which and why."""


# ---------------------------------------------------------------------------- input


_NOW = re.compile(r"^now(?:\s*-\s*(?P<ago>\S+))?$")


MIN_TIME = 0.0  # 1970-01-01
MAX_TIME = 32503680000.0  # 3000-01-01: later (or earlier) times leave datetime's range in calculations


def parse_time(text: str, *, now: datetime | None = None) -> float:
    """Unix seconds, ISO 8601 (``2024-05-01T12:00:00Z``, ``2024-05-01 12:00:00`` read as UTC) or ``now[-7d]``
    as Unix seconds between 1970 and 3000; raises ValueError saying what is accepted."""
    v = _parse_time(text, now)
    if not MIN_TIME <= v < MAX_TIME:
        raise ValueError(f"time {text!r} is out of range (1970 to 3000)")
    return v


def _parse_time(text: str, now: datetime | None) -> float:
    s = str(text).strip()
    m = _NOW.match(s)
    if m:
        base = (now or datetime.now(UTC)).timestamp()
        try:
            return base - (parse_duration(m.group("ago")).total_seconds() if m.group("ago") else 0.0)
        except OverflowError:
            raise ValueError(f"invalid time {text!r}: too far back") from None
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(v):
            raise ValueError(f"invalid time {text!r}")
        return v
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: write Unix seconds or ISO 8601 (2024-05-01T12:00:00Z, 2024-05-01 12:00:00)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.timestamp()
    except (OverflowError, ValueError):
        raise ValueError(f"time {text!r} is out of range (1970 to 3000)") from None


def parse_labels(items: Iterable[str]) -> Labels:
    """``["k=v", ...]`` -> Labels; raises ValueError for an item without '=' or an invalid label name."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"invalid label {item!r}: write name=value")
        if not valid_label_name(name):
            raise ValueError(f"invalid label name {name!r}")
        if name in out:
            raise ValueError(f"label {name!r} is given twice")
        out[name] = value
    return Labels(out)


def read_csv(path: str) -> list[tuple[float, float | None]]:
    """Rows ``(timestamp, value or None)`` of a ``timestamp,value`` CSV, sorted by time; raises BacktestError
    naming the file and line of the first bad row."""
    try:
        f = open(path, encoding="utf-8-sig", newline="")
    except OSError as e:
        raise BacktestError(f"{path}: cannot read: {e.strerror or e}") from None
    rows: list[tuple[float, float | None, int]] = []
    with f:
        try:
            reader = csv.reader(f)
            header = None
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                line = reader.line_num
                if header is None:
                    header = [c.strip().lower() for c in row]
                    if header != ["timestamp", "value"]:
                        raise BacktestError(f"{path}:{line}: the first line must be the header timestamp,value")
                    continue
                if len(row) != 2:
                    raise BacktestError(f"{path}:{line}: expected 2 columns (timestamp,value), got {len(row)}")
                try:
                    at = parse_time(row[0])
                except ValueError as e:
                    raise BacktestError(f"{path}:{line}: {e}") from None
                cell = row[1].strip()
                try:
                    value = float(cell) if cell else None
                except ValueError:
                    raise BacktestError(f"{path}:{line}: invalid value {cell!r}: write a number") from None
                rows.append((at, value, line))
        except UnicodeDecodeError as e:
            raise BacktestError(f"{path}: not UTF-8 text (byte {e.start})") from None
        except csv.Error as e:
            raise BacktestError(f"{path}: invalid CSV: {e}") from None
    if header is None:
        raise BacktestError(f"{path}: empty file: write the header timestamp,value and one row per sample")
    if not rows:
        raise BacktestError(f"{path}: no samples after the header")
    rows.sort(key=lambda r: r[0])
    for (a, _, la), (b, _, lb) in itertools.pairwise(rows):
        if a == b:
            first, second = sorted((la, lb))
            raise BacktestError(f"{path}:{second}: timestamp {isoformat(_dt(a))} repeats line {first}")
    return [(at, v) for at, v, _ in rows]


def csv_frames(
    rows: list[tuple[float, float | None]], metric: str, labels: Labels
) -> Iterator[tuple[float, dict[str, dict[Labels, float]]]]:
    """One frame per CSV row: the metric's single series (empty when the row has no value)."""
    for at, value in rows:
        yield at, ({metric: {labels: value}} if value is not None else {})


def metrics_read(rules: Iterable[Rule]) -> list[str]:
    """Every metric name the rules' expressions (and resolve expressions) read, in first-use order."""
    out: dict[str, None] = {}
    for r in rules:
        for ce in (r.expr, getattr(r, "resolve_expr", None)):
            if ce is not None:
                out.update(dict.fromkeys(ce.metrics))
    return list(out)


def warmup_seconds(rules: Iterable[Rule]) -> float:
    """The longest history any rule reads before an evaluation (window + offset), capped at ``MAX_WARMUP``."""
    longest = 0.0
    for r in rules:
        for ce in (r.expr, getattr(r, "resolve_expr", None)):
            if ce is None:
                continue
            span = getattr(ce, "span_seconds", None)
            for m in ce.metrics:
                if span is not None:
                    longest = max(longest, float(span(m)))
    return min(longest, MAX_WARMUP)


# ---------------------------------------------------------------------------- Prometheus


def split_url(url: str) -> tuple[str, str | None]:
    """(base URL without credentials, Authorization header or None); raises BacktestError for a URL that is not
    http(s)://[USER:PASSWORD@]HOST[:PORT][/PATH] (without repeating the password)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = url.rsplit("@", 1)[-1]
        raise BacktestError(f"invalid Prometheus URL {shown!r}: write http(s)://[USER:PASSWORD@]HOST[:PORT][/PATH]")
    auth = None
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return base, auth


def _query_range(base: str, auth: str | None, query: str, start: float, end: float, step: float, timeout: float) -> Any:
    params = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    req = urllib.request.Request(f"{base}/api/v1/query_range?{params}")
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read())
            msg = f"{err.get('errorType', 'error')}: {err.get('error', e.reason)}"
        except ValueError:
            msg = str(e.reason)
        raise BacktestError(f"Prometheus at {base} answered HTTP {e.code} for {query}: {msg}") from None
    except (urllib.error.URLError, OSError) as e:
        raise BacktestError(f"cannot reach Prometheus at {base}: {getattr(e, 'reason', e)}") from None
    except ValueError:
        raise BacktestError(f"Prometheus at {base} did not answer JSON for {query}") from None
    if body.get("status") != "success" or body.get("data", {}).get("resultType") != "matrix":
        raise BacktestError(f"Prometheus at {base} did not return a range vector for {query}: {body.get('error')}")
    return body["data"]["result"]


def fetch_prometheus(
    url: str, metrics: Iterable[str], start: float, end: float, step: float, *, timeout: float = 60.0
) -> tuple[dict[int, dict[str, dict[Labels, float]]], list[str]]:
    """Range-query every metric from ``start`` to ``end`` at ``step``; returns frames keyed by time in ms and the
    metrics that had no series. Raises BacktestError when Prometheus cannot be reached or refuses a query."""
    base, auth = split_url(url)
    frames: dict[int, dict[str, dict[Labels, float]]] = {}
    empty: list[str] = []
    for metric in metrics:
        query = '{__name__="' + metric.replace("\\", "\\\\").replace('"', '\\"') + '"}'
        found = False
        chunk_start = start
        while chunk_start <= end:
            chunk_end = min(end, chunk_start + (MAX_POINTS - 1) * step)
            for series in _query_range(base, auth, query, chunk_start, chunk_end, step, timeout):
                labels = Labels({k: v for k, v in series.get("metric", {}).items() if k != "__name__"})
                for t, v in series.get("values", []):
                    found = True
                    frames.setdefault(round(float(t) * 1000), {}).setdefault(metric, {})[labels] = float(v)
            chunk_start = chunk_end + step
        if not found:
            empty.append(metric)
    return frames, empty


def step_times(start: float, end: float, step: float) -> list[float]:
    """``start, start+step, …`` up to ``end`` (as Prometheus computes them, in whole milliseconds)."""
    s, e, st = round(start * 1000), round(end * 1000), round(step * 1000)
    if st <= 0:
        raise BacktestError("step must be positive")
    n = (e - s) // st + 1 if e >= s else 0
    if n > MAX_EVALUATIONS:
        raise BacktestError(f"{n} evaluations between start and end: use a larger step (at most {MAX_EVALUATIONS})")
    return [(s + i * st) / 1000 for i in range(n)]


# ---------------------------------------------------------------------------- replay


@dataclass
class Episode:
    """One alert from firing to resolved (``resolved_at`` None: still firing at the end)."""

    rule: Rule
    labels: Labels
    fired_at: float
    resolved_at: float | None = None
    value: float | None = None

    def duration(self, end: float) -> float:
        return (self.resolved_at if self.resolved_at is not None else end) - self.fired_at


@dataclass
class BacktestResult:
    transitions: list[Transition] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)
    """Distinct evaluation errors, each with the first time it happened."""
    warnings: dict[str, float] = field(default_factory=dict)
    """Distinct annotation failures, each with the first time it happened."""
    evaluations: int = 0
    start: float | None = None
    end: float | None = None

    def episodes(self) -> list[Episode]:
        """Transitions paired into episodes, ordered by firing time."""
        open_: dict[tuple[str, Labels], Episode] = {}
        out: list[Episode] = []
        for t in self.transitions:
            key = (t.rule.key, t.labels)
            if t.state == "firing":
                ep = Episode(t.rule, t.labels, t.at, None, t.value)
                open_[key] = ep
                out.append(ep)
            elif key in open_:
                open_.pop(key).resolved_at = t.at
        return sorted(out, key=lambda e: (e.fired_at, e.rule.alert, e.labels.fingerprint))


def run(
    rules: Iterable[Rule],
    frames: Iterable[tuple[float, Mapping[str, Mapping[Labels, float]]]],
    *,
    interval: float,
    lookback: float = 300.0,
    evaluate_from: float | None = None,
) -> BacktestResult:
    """Feed each frame (time, metrics) in order and evaluate every rule after it (frames before
    ``evaluate_from`` only fill the history); raises ReplayError for rules that cannot be replayed."""
    replay = Replay(rules, interval=interval, lookback=lookback)
    res = BacktestResult()
    for at, metrics in frames:
        replay.feed(at, metrics)
        if evaluate_from is not None and at < evaluate_from:
            continue
        res.transitions.extend(replay.step(at))
        res.evaluations += 1
        if res.start is None:
            res.start = at
        res.end = at
        for e in replay.errors:
            res.errors.setdefault(e, at)
        for w in replay.warnings:
            res.warnings.setdefault(w, at)
    return res


# ---------------------------------------------------------------------------- output


def _dt(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def iso_time(at: float) -> str:
    """Unix seconds as ISO 8601 UTC with a Z suffix."""
    return isoformat(_dt(at)) or ""


def _labels_text(labels: Labels) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items() if k != "alertname") or "-"


def _duration_text(seconds: float) -> str:
    return format_duration(timedelta(seconds=round(seconds)))


def format_table(result: BacktestResult) -> str:
    """The human report: one row per alert episode, then a summary line."""
    episodes = result.episodes()
    if result.start is None or result.end is None:
        return "no evaluations: the input has no samples in the range"
    span = f"{iso_time(result.start)} to {iso_time(result.end)} ({result.evaluations} evaluations)"
    if not episodes:
        return f"no alert would have fired from {span}"
    rows = [("ALERT", "LABELS", "FIRED AT", "RESOLVED AT", "DURATION")]
    for e in episodes:
        resolved = iso_time(e.resolved_at) if e.resolved_at is not None else "(still firing)"
        dur = _duration_text(e.duration(result.end))
        rows.append(
            (
                e.rule.alert,
                _labels_text(e.labels),
                iso_time(e.fired_at),
                resolved,
                dur if e.resolved_at is not None else f">={dur}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    still = sum(1 for e in episodes if e.resolved_at is None)
    summary = f"{len(episodes)} alert{'s' if len(episodes) != 1 else ''} would have fired from {span}"
    if still:
        summary += f"; {still} still firing at the end"
    return "\n".join([*lines, "", summary])


def format_json(result: BacktestResult) -> Iterator[str]:
    """One JSON object per transition: ``{"alert", "labels", "state", "at"}``, in time order."""
    for t in result.transitions:
        yield json.dumps(
            {"alert": t.rule.alert, "labels": t.labels.as_dict(), "state": t.state, "at": iso_time(t.at)},
            sort_keys=False,
        )
