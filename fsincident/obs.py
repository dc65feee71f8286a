"""structlog JSON logging with secret redaction, and the daemon's own prometheus-client metrics."""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections.abc import Iterable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric

REDACTED = "***"


class Redactor:
    """Replaces every registered secret in log events with ``***``; thread-safe to update."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def set(self, secrets: Iterable[str]) -> None:
        """Hide exactly ``secrets`` (strings shorter than 4 characters are ignored); never fails."""
        self._update(secrets, keep=False)

    def add(self, secrets: Iterable[str]) -> None:
        """Hide ``secrets`` too, keeping the ones already registered; never fails."""
        self._update(secrets, keep=True)

    def _update(self, secrets: Iterable[str], keep: bool) -> None:
        cleaned = {s for s in secrets if s and len(s) >= 4}
        with self._lock:
            if keep:
                cleaned |= set(self._secrets)
            self._secrets = tuple(sorted(cleaned, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, REDACTED)
        return text

    def _value(self, v: Any) -> Any:
        if isinstance(v, str):
            return self.scrub(v)
        if isinstance(v, dict):
            return {k: self._value(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return type(v)(self._value(x) for x in v)
        return v

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if not self._secrets:
            return event
        return {k: self._value(v) for k, v in event.items()}


class _FinalScrub(logging.Formatter):
    """Wraps the JSON formatter and scrubs the final line (catches secrets inside rendered tracebacks)."""

    def __init__(self, inner: logging.Formatter, redactor: Redactor):
        super().__init__()
        self.inner = inner
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.scrub(self.inner.format(record))


def configure_logging(level: str = "info", redactor: Redactor | None = None, stream: Any = None) -> None:
    """One JSON line per event on stderr (stdlib records included), ISO UTC timestamps, secrets redacted."""
    redactor = redactor or Redactor()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
            redactor,
            structlog.processors.JSONRenderer(default=str),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_FinalScrub(formatter, redactor))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiosqlite and urllib3 debug lines carry SQL parameters and request paths (keys, tokens): never wanted.
    for noisy in ("aiohttp.access", "apscheduler", "alembic", "sqlalchemy", "asyncio", "aiosqlite", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


class SloBudgets:
    """``fsincident_slo_error_budget_remaining_ratio``: one series per SLO (and per label set of its budget
    expression's result, when it has several), labelled ``slo``; set from the event loop."""

    NAME = "fsincident_slo_error_budget_remaining_ratio"

    def __init__(self) -> None:
        self._values: dict[str, dict[Any, float]] = {}

    def set(self, slo: str, series: dict[Any, float]) -> None:
        """Replace the SLO's series (label mappings to values); never fails."""
        self._values = {**self._values, slo: {k: float(v) for k, v in series.items()}}

    def keep(self, slos: Iterable[str]) -> None:
        """Drop the series of SLOs not in ``slos`` (after a reload removed them)."""
        names = set(slos)
        self._values = {k: v for k, v in self._values.items() if k in names}

    def collect(self) -> Iterable[Metric]:
        m = Metric(
            self.NAME,
            "Share of the SLO's error budget left over its window (1 = untouched, below 0 = overspent).",
            "gauge",
        )
        for slo, series in sorted(self._values.items()):
            for labels, value in series.items():
                m.add_sample(self.NAME, {**dict(labels), "slo": slo}, value)
        yield m


class Metrics:
    """The daemon's own metrics, in a registry of its own (no process-global state)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.rule_evaluations = Counter(
            "fsincident_rule_evaluations_total", "Rule evaluations (one per rule and cycle).", ["group"], registry=r
        )
        self.rule_errors = Counter(
            "fsincident_rule_errors_total", "Rule evaluations or renders that failed.", ["group", "rule"], registry=r
        )
        self.rule_eval_seconds = Histogram(
            "fsincident_rule_group_duration_seconds",
            "Time to evaluate one rule group.",
            ["group"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
        )
        self.series_evaluations = Counter(
            "fsincident_rule_series_evaluations_total", "Series evaluated across all rules.", registry=r
        )
        self.alerts = Gauge("fsincident_rule_alerts", "Series per alert state.", ["state"], registry=r)
        self.history_bytes = Gauge(
            "fsincident_rule_history_bytes", "Bytes held by the rules' in-memory series history.", registry=r
        )
        self.flapping = Gauge(
            "fsincident_rule_flapping_alerts",
            "Pending or firing series that are flapping (held open instead of resolving and paging again).",
            registry=r,
        )
        self.slo_budget = SloBudgets()
        r.register(self.slo_budget)  # type: ignore[arg-type]
        self.source_collections = Counter(
            "fsincident_source_collections_total", "Source collections by result.", ["source", "result"], registry=r
        )
        self.source_samples = Gauge(
            "fsincident_source_samples", "Samples in the last successful collection.", ["source"], registry=r
        )
        self.source_up = Gauge("fsincident_source_up", "1 when the last collection succeeded.", ["source"], registry=r)
        self.outbox_depth = Gauge("fsincident_notify_outbox_depth", "Outbox rows by state.", ["state"], registry=r)
        self.deliveries = Counter(
            "fsincident_notify_deliveries_total", "Delivery attempts by result.", ["channel", "result"], registry=r
        )
        self.delivery_seconds = Histogram(
            "fsincident_notify_delivery_duration_seconds", "Time of one delivery attempt.", ["channel"], registry=r
        )
        self.dead_letters = Counter(
            "fsincident_notify_dead_letters_total", "Notifications given up on (dead letters).", ["target"], registry=r
        )
        self.digests = Counter(
            "fsincident_notify_digests_total", "Digests sent (rate-limited pages bundled).", ["target"], registry=r
        )
        self.bundled = Counter(
            "fsincident_notify_bundled_total", "Pages bundled into a digest by a rate limit.", ["target"], registry=r
        )
        self.incidents_open = Gauge(
            "fsincident_incidents_open", "Incidents not resolved, by state.", ["state"], registry=r
        )
        self.incident_events = Counter(
            "fsincident_incidents_events_total", "Incident timeline events by kind.", ["kind"], registry=r
        )
        self.reload_ok = Gauge(
            "fsincident_config_last_reload_successful", "1 when the last config (re)load succeeded.", registry=r
        )
        self.reload_time = Gauge(
            "fsincident_config_last_reload_success_timestamp_seconds", "Time of the last good (re)load.", registry=r
        )
        self.http_requests = Counter(
            "fsincident_api_requests_total", "HTTP API requests by route and status.", ["route", "status"], registry=r
        )
        self.silences = Gauge("fsincident_silences", "Silences by state.", ["state"], registry=r)
        self.series_history_series = Gauge(
            "fsincident_history_series",
            "Series the history records (stored or open), at most history.max_series.",
            registry=r,
        )
        self.series_history_buckets = Counter(
            "fsincident_history_buckets_written_total",
            "History buckets written, by tier (fine, coarse).",
            ["tier"],
            registry=r,
        )
        self.series_history_dropped = Counter(
            "fsincident_history_series_dropped_total",
            "Series not recorded because history.max_series was reached (each counted once).",
            registry=r,
        )
        self.series_history_chunks = Gauge(
            "fsincident_history_chunks", "Chunk rows in the history table, by tier.", ["tier"], registry=r
        )
        self.series_history_bytes = Gauge(
            "fsincident_history_bytes", "Bytes of packed buckets in the history table, by tier.", ["tier"], registry=r
        )
        self.leader = Gauge(
            "fsincident_leader",
            "1 while this replica leads (evaluation, incidents, escalation, silences run here); 0 on a follower.",
            registry=r,
        )


def tune_gc() -> None:
    """Move everything alive now out of the cyclic collector's way and make young collections rarer.

    The daemon holds many small long-lived objects (label sets of every series, rule state); with the default
    thresholds full collections rescan them all and pause every thread (evaluation included) for up to
    hundreds of milliseconds. Reference counting still frees what is dropped; only cycles wait longer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
