"""Ingest endpoints: ``POST /api/v1/metrics`` (push sources) and ``/api/v1/heartbeats/{check}`` (heartbeat sources).

Pushed input is validated whole before any source stores a sample of it: a bad line or field is a
400 naming it and nothing of the request is kept.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from fsincident.api import CTX, ApiError, Handler, auth_middleware, scope
from fsincident.core import Labels, Sample, SourceError, isoformat, valid_label_name
from fsincident.obs import get_logger
from fsincident.sources.push import LimitExceeded
from fsincident.sources.runner import NoSuchSource, SourceRunner
from fsincident.sources.scrape import parse_exposition

log = get_logger("fsincident.api")

MAX_SAMPLES = 100_000
"""The most samples one push may carry (the body is also bounded: 4 MiB)."""
MAX_LABELS = 64
MAX_LABEL_VALUE = 4096
MAX_NAME = 512
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST = datetime(9999, 12, 30, tzinfo=UTC)
_THREAD_ABOVE = 64 * 1024  # bodies larger than this are parsed in a worker thread, off the event loop
_FIELDS = {"metric", "labels", "value", "timestamp"}
# Content types that say nothing about the body (none at all, or curl's -d default): the body decides.
_SNIFFED = {"application/octet-stream", "application/x-www-form-urlencoded"}


class BadInput(ValueError):
    """A pushed body that cannot be accepted; ``status`` is 400 or 413, ``detail`` locates the problem."""

    def __init__(self, message: str, detail: Any = None, status: int = 400):
        super().__init__(message)
        self.message, self.detail, self.status = message, detail, status


def _runner(request: web.Request) -> SourceRunner:
    runner = request.app[CTX].sources
    if runner is None:
        raise ApiError(404, "no sources are running")
    return runner


# ---------------------------------------------------------------------- push


def _bad_text(text: str) -> str:
    """Why ``text`` is not a valid label value or metric name part, or ''."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate"
    return ""


def _timestamp(v: Any) -> datetime:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError("must be unix seconds or an ISO 8601 string")
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{v[:64]!r} is not ISO 8601") from None
        if dt.tzinfo is None:
            raise ValueError("an ISO 8601 timestamp needs a UTC offset (e.g. 2026-01-01T00:00:00Z)")
        try:
            dt = dt.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range") from None
    else:
        try:
            dt = datetime.fromtimestamp(float(v), UTC)
        except (ValueError, OverflowError, OSError):
            raise ValueError("is out of range") from None
    if not _EPOCH <= dt <= _LAST:
        raise ValueError("is out of range (1970 to 9999)")
    return dt


def parse_json_samples(raw: bytes) -> list[Sample]:
    """Samples from a JSON array of ``{metric, labels, value, timestamp}``; raises BadInput naming index and field."""
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput("malformed JSON body", str(e)) from None
    except RecursionError:
        raise BadInput("malformed JSON body", "nested too deeply") from None
    if not isinstance(data, list):
        raise BadInput("the body must be a JSON array of samples", 'e.g. [{"metric": "x", "value": 1}]')
    if len(data) > MAX_SAMPLES:
        raise BadInput(f"too many samples: {len(data)} > {MAX_SAMPLES} in one request; split it", status=413)
    out: list[Sample] = []
    append = out.append
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise BadInput(f"[{i}]: must be an object", {"index": i})
        if not _FIELDS.issuperset(item):
            unknown = sorted(set(item) - _FIELDS)[0]
            raise BadInput(
                f"[{i}].{unknown}: unknown field", {"index": i, "field": unknown, "allowed": sorted(_FIELDS)}
            )
        name = item.get("metric")
        if not isinstance(name, str):
            raise BadInput(f"[{i}].metric: must be a string", {"index": i, "field": "metric"})
        if len(name) > MAX_NAME or not _METRIC_NAME.match(name):
            raise BadInput(
                f"[{i}].metric: {name[:64]!r} is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
                {"index": i, "field": "metric"},
            )
        value = item.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadInput(f"[{i}].value: must be a number", {"index": i, "field": "value"})
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise BadInput(f"[{i}].value: must be a finite number", {"index": i, "field": "value"})
        labels = item.get("labels")
        if labels is None:
            labels = {}
        elif not isinstance(labels, dict):
            raise BadInput(f"[{i}].labels: must be an object of strings", {"index": i, "field": "labels"})
        else:
            _check_labels(labels, f"[{i}].labels", {"index": i, "field": "labels"})
        ts = item.get("timestamp")
        if ts is not None:
            try:
                ts = _timestamp(ts)
            except ValueError as e:
                raise BadInput(f"[{i}].timestamp: {e}", {"index": i, "field": "timestamp"}) from None
        append(Sample(name, Labels(labels), value, ts))
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; values must be finite numbers")


def _check_labels(labels: dict[str, Any], where: str, detail: dict[str, Any]) -> None:
    if len(labels) > MAX_LABELS:
        raise BadInput(f"{where}: more than {MAX_LABELS} labels", detail)
    for k, v in labels.items():
        if not valid_label_name(k):
            raise BadInput(f"{where}: {k[:64]!r} is not a valid label name", detail)
        if not isinstance(v, str):
            raise BadInput(f"{where}.{k}: must be a string", detail)
        if len(v) > MAX_LABEL_VALUE:
            raise BadInput(f"{where}.{k}: longer than {MAX_LABEL_VALUE} characters", detail)
        problem = _bad_text(v)
        if problem:
            raise BadInput(f"{where}.{k}: {problem}", detail)


def parse_text_samples(raw: bytes) -> list[Sample]:
    """Samples from Prometheus text format; raises BadInput naming the first bad line. NaN samples are dropped."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput("the body is not UTF-8", f"byte {e.start}") from None
    try:
        samples = parse_exposition(text)
    except SourceError as e:
        line, message = _first_bad_line(text)
        if line is None:
            raise BadInput(_short(str(e))) from None
        raise BadInput(f"line {line}: {_short(message)}", {"line": line}) from None
    if len(samples) > MAX_SAMPLES:
        raise BadInput(f"too many samples: {len(samples)} > {MAX_SAMPLES} in one request; split it", status=413)
    for s in samples:
        if len(s.name) > MAX_NAME:
            raise BadInput(f"series {s.name[:64]}…: metric name longer than {MAX_NAME} characters")
        _check_labels(s.labels.as_dict(), f"series {s.name} labels", {"metric": s.name})
    return [s for s in samples if not math.isnan(s.value)]


def _short(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters: an error never echoes a whole pushed line back."""
    return text if len(text) <= limit else text[:limit] + "…"


def _first_bad_line(text: str) -> tuple[int | None, str]:
    """The 1-based number and parser message of the first line that fails on its own, or (None, '')."""
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not stripped.startswith("# TYPE")):
            continue
        try:
            parse_exposition(line)
        except SourceError as e:
            return n, str(e).removeprefix("invalid exposition format: ") or "invalid line"
    return None, ""


def _parse(raw: bytes, content_type: str) -> list[Sample]:
    if content_type in _SNIFFED:
        # No real type given (curl's -d default): a JSON array starts with "[", which no text-format line can.
        content_type = "application/json" if raw.lstrip()[:1] == b"[" else "text/plain"
    if content_type == "application/json" or content_type.endswith("+json"):
        return parse_json_samples(raw)
    return parse_text_samples(raw)


def _supported(content_type: str) -> bool:
    return (
        content_type in ("text/plain", "application/json") or content_type in _SNIFFED or content_type.endswith("+json")
    )


@scope("ingest")
async def push_metrics(request: web.Request) -> web.Response:
    """Store pushed samples in every push source (or the one named by ``?source=``); 400/404/413/415 on bad input."""
    content_type = request.content_type
    if not _supported(content_type):
        raise ApiError(
            415,
            f"unsupported Content-Type {content_type!r}",
            {"allowed": ["application/json", "text/plain (Prometheus text format)"]},
        )
    name = request.query.get("source")
    try:
        targets = _runner(request).with_capability("ingest", name or None)
    except NoSuchSource as e:
        raise ApiError(404, str(e)) from None
    raw = await request.read()  # bounded by client_max_size (413 beyond)
    try:
        if len(raw) > _THREAD_ABOVE:
            samples = await asyncio.to_thread(_parse, raw, content_type)
        else:
            samples = _parse(raw, content_type)
    except BadInput as e:
        raise ApiError(e.status, e.message, e.detail) from None
    now = _runner(request).clock.now()
    try:
        if len(targets) > 1:  # all-or-nothing: every source must take the whole push before any stores it
            for src in targets:
                admit = getattr(src, "admit", None)
                if admit is not None:
                    await admit(samples, now)
        for src in targets:
            await src.ingest(samples, now)
    except LimitExceeded as e:
        raise ApiError(400, str(e), {"source": src.options.name, "max_series": src.options.max_series}) from None
    except SourceError as e:
        log.warning("push_failed", source=src.options.name, error=str(e))
        raise ApiError(503, f"source {src.options.name!r} cannot take pushes right now", str(e)) from None
    return web.json_response({"accepted": len(samples), "sources": [s.options.name for s in targets]})


# ---------------------------------------------------------------------- heartbeats


def _heartbeat(kind: str) -> Handler:
    async def with_token(request: web.Request) -> web.Response:
        return await _ping(request, kind, key=None)

    with_token = scope("ingest")(with_token)

    async def handler(request: web.Request) -> web.Response:
        key = request.query.get("key")
        if key is not None:
            return await _ping(request, kind, key=key)
        # No key: the same bearer-token check every scoped endpoint gets.
        return await auth_middleware(request, with_token)  # type: ignore[no-any-return]

    handler.__name__ = f"heartbeat_{kind}"
    return handler


async def _ping(request: web.Request, kind: str, key: str | None) -> web.Response:
    name = request.match_info["name"]
    try:
        pingable = _runner(request).with_capability("ping")
    except NoSuchSource:
        pingable = []
    # A kind with ``ping`` names its checks with ``has_check`` and may let keys in with ``accepts_key``.
    owners = [s for s in pingable if getattr(s, "has_check", lambda _: False)(name)]
    if key is not None:
        # One answer for an unknown check, a check without a key and a wrong key: check names do not leak.
        owners = [s for s in owners if getattr(s, "accepts_key", lambda *_: False)(name, key)]
        if not owners:
            raise ApiError(401, "invalid heartbeat key", "the key does not belong to this check")
    if not owners:
        raise ApiError(404, f"no heartbeat check named {_short(name, 100)!r}")
    now = _runner(request).clock.now()
    try:
        for src in owners:
            await src.ping(name, kind, now)
    except SourceError as e:
        log.warning("heartbeat_not_saved", check=name, signal=kind, error=str(e))
        raise ApiError(503, "the ping could not be saved; retry", str(e)) from None
    if kind != "success":
        log.info("heartbeat_signal", check=name, signal=kind)
    return web.json_response(
        {"check": name, "signal": kind, "at": isoformat(now), "sources": [s.options.name for s in owners]}
    )


def add_routes(app: web.Application) -> None:
    """Register the push and heartbeat endpoints on ``app``."""
    r = app.router
    r.add_post("/api/v1/metrics", push_metrics)
    for suffix, kind in (("", "success"), ("/start", "start"), ("/fail", "fail")):
        handler = _heartbeat(kind)
        r.add_post("/api/v1/heartbeats/{name}" + suffix, handler)
        r.add_get("/api/v1/heartbeats/{name}" + suffix, handler, allow_head=False)
