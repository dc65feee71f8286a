"""Per-destination rate limits and the retry budget of the delivery pipeline (the pure parts).

A destination (``target`` + ``dest_index``) takes at most ``max`` sends per ``per``, counted from the
notification log (attempts with result ``sent``), so every replica sees the same count; sends this process
has let through but not yet recorded are counted too. Over the limit a high-urgency page (severity
``critical``) still goes at once; a low-urgency one is bundled into a digest sent ``digest`` later.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fsincident.config.model import DeliveryOptions
from fsincident.core import NotifyError

HIGH_URGENCY = frozenset({"critical"})
MAX_DIGEST_ITEMS = 200  # items listed in one digest message; the rest are counted


def backoff(attempt: int, options: DeliveryOptions, rnd: Callable[[], float] = random.random) -> timedelta:
    """Exponential backoff with jitter: base * 2**(attempt-1), capped, scaled by a random 0.5–1.0."""
    base = options.initial_backoff.total_seconds() * (2 ** max(attempt - 1, 0))
    capped = min(base, options.max_backoff.total_seconds())
    return timedelta(seconds=capped * (0.5 + 0.5 * rnd()))


def high_urgency(severity: str | None) -> bool:
    """True for a page that is never bundled nor delayed by a rate limit (severity ``critical``); never fails."""
    return (severity or "").lower() in HIGH_URGENCY


def over_limit(sent: int, in_flight: int, limit: int) -> bool:
    """True when another send would exceed ``limit`` sends (recorded plus in flight); never fails."""
    return sent + in_flight >= limit


def digest_delay(per: timedelta, digest: timedelta | None) -> timedelta:
    """How long a digest waits for more pages after the first was bundled (``digest``, default ``per``)."""
    return digest if digest is not None else per


Key = tuple[str, int]


class Reservations:
    """Sends let through by the rate limit of this process and not yet recorded, per destination; one lock per
    destination makes counting and reserving atomic within the process (never fails)."""

    def __init__(self) -> None:
        self._counts: dict[Key, int] = {}
        self._locks: dict[Key, asyncio.Lock] = {}

    def lock(self, key: Key) -> asyncio.Lock:
        lk = self._locks.get(key)
        if lk is None:
            lk = self._locks[key] = asyncio.Lock()
        return lk

    def count(self, key: Key) -> int:
        return self._counts.get(key, 0)

    def reserve(self, key: Key) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def release(self, key: Key) -> None:
        n = self._counts.get(key, 0) - 1
        if n > 0:
            self._counts[key] = n
        else:
            self._counts.pop(key, None)


@dataclass(frozen=True)
class Budget:
    """The retry budget of one target: attempts, and how long after queueing a page may still be retried."""

    max_attempts: int
    retry_for: timedelta | None = None


@dataclass(frozen=True)
class Verdict:
    """What an attempt's outcome makes of the row: ``sent``, ``retry`` (at ``next_at``) or ``failed`` (dead)."""

    result: str
    next_at: datetime | None = None
    reason: str | None = None


def verdict(
    error: NotifyError | None, attempts: int, created_at: datetime, now: datetime, budget: Budget, delay: timedelta
) -> Verdict:
    """The outcome of attempt number ``attempts`` of a row queued at ``created_at``: a permanent error, the last
    attempt of the budget or a failure ``retry_for`` after queueing make a dead letter; a retry is never due after
    the ``retry_for`` deadline (so the last try happens right at it). Never fails."""
    if error is None:
        return Verdict("sent")
    if error.permanent:
        return Verdict("failed", reason="permanent error")
    if attempts >= budget.max_attempts:
        return Verdict("failed", reason=f"gave up after {attempts} attempts")
    if budget.retry_for is not None:
        deadline = created_at + budget.retry_for
        if now >= deadline:
            return Verdict("failed", reason=f"still failing {_span(budget.retry_for)} after it was queued")
        return Verdict("retry", min(now + delay, deadline))
    return Verdict("retry", now + delay)


def _span(d: timedelta) -> str:
    s = int(d.total_seconds())
    if s % 3600 == 0 and s:
        return f"{s // 3600}h"
    if s % 60 == 0 and s:
        return f"{s // 60}m"
    return f"{s}s"


def digest_item(row: Any) -> dict[str, Any]:
    """One bundled outbox row as a digest lists it (no secrets: what the page itself would show)."""
    data: Mapping[str, Any] = row.data or {}
    inc = data.get("incident") if isinstance(data.get("incident"), Mapping) else None
    return {
        "outbox_id": row.id,
        "incident_id": row.incident_id,
        "kind": row.kind,
        "severity": row.severity,
        "title": row.title,
        "body": row.body,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "incident": dict(inc) if inc else None,
    }


def digest_text(items: Iterable[Mapping[str, Any]], total: int | None = None) -> tuple[str, str]:
    """Plain-text title and body of a digest of ``items`` (used when no digest template is available)."""
    listed = list(items)
    n = total if total is not None else len(listed)
    title = f"{n} notification{'s' if n != 1 else ''} (digest)"
    lines = []
    for it in listed[:MAX_DIGEST_ITEMS]:
        ref = f" (incident #{it['incident_id']})" if it.get("incident_id") else ""
        lines.append(f"- [{str(it.get('severity') or '').upper()}] {it.get('title')}{ref}")
    if n > len(lines):
        lines.append(f"... and {n - len(lines)} more")
    return title, "\n".join(lines)
