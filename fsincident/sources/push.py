"""``type: push`` — series pushed to ``POST /api/v1/metrics`` (apps, phones, business and A/B figures).

The latest value of each series is kept in memory; a series not pushed for ``expire`` disappears,
so the alerts on it resolve. A clean stop saves the values in the source's durable state and the
next start (or the new instance after a reload that changed the options) takes back the ones not
yet expired; after a crash they are lost, like a Pushgateway without persistence.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import Field

from fsincident.core import Labels, Sample, SourceError
from fsincident.plugins import Duration, SourceContext, SourceOptions

STATE_KEY = "pushed"


class LimitExceeded(SourceError):
    """A push would take the source over its ``max_series``; nothing of it was stored."""


class PushOptions(SourceOptions):
    expire: Duration = timedelta(minutes=5)
    """A series not pushed for this long disappears (its alerts resolve)."""
    max_series: int = Field(100_000, ge=1, le=10_000_000)
    """The most series the source holds; a push that would exceed it is refused whole."""


class PushSource:
    """Holds the latest pushed value per (metric, labels); ``ingest`` stores, ``collect`` reads."""

    Options: ClassVar[type[SourceOptions]] = PushOptions

    def __init__(self, options: PushOptions, context: SourceContext | None = None, **_: Any):
        self.options = options
        self.context = context
        # (metric, labels) -> (value, sample timestamp or None, time it was pushed)
        self._series: dict[tuple[str, Labels], tuple[float, datetime | None, datetime]] = {}
        self._loaded = context is None

    @staticmethod
    def validate_options(options: PushOptions) -> list[tuple[tuple[Any, ...], str]]:
        if options.expire <= timedelta(0):
            return [(("expire",), "expire must be positive")]
        return []

    async def _load(self, now: datetime) -> None:
        # Loaded on first use, not in start(): on a reload the old instance saves in close(), which runs after the
        # new instance's start(), and before the new instance gets its first push or collection.
        if self._loaded or self.context is None:
            return
        try:
            saved = await self.context.state.get(STATE_KEY)
        except Exception as e:
            raise SourceError(f"cannot read the saved pushed values: {type(e).__name__}: {e}") from None
        self._loaded = True
        if not saved:
            return
        cutoff = now - self.options.expire
        for name, labels, value, ts, pushed in saved:
            at = datetime.fromtimestamp(pushed, UTC)
            key = (name, Labels(labels))
            if at > cutoff and key not in self._series and len(self._series) < self.options.max_series:
                self._series[key] = (float(value), None if ts is None else datetime.fromtimestamp(ts, UTC), at)
        try:
            await self.context.state.set(STATE_KEY, None)  # taken back: never load the same copy twice
        except Exception as e:
            raise SourceError(f"cannot clear the saved pushed values: {type(e).__name__}: {e}") from None

    def _expire(self, now: datetime) -> None:
        cutoff = now - self.options.expire
        stale = [k for k, (_, _, at) in self._series.items() if at <= cutoff]
        for k in stale:
            del self._series[k]

    def _keyed(self, samples: list[Sample]) -> list[tuple[tuple[str, Labels], Sample]]:
        job = self.options.name
        out = []
        for s in samples:
            labels = s.labels if "job" in s.labels else s.labels.merged({"job": job})
            out.append(((s.name, labels), s))
        return out

    async def admit(self, samples: list[Sample], now: datetime) -> None:
        """Check that ``samples`` fit under ``max_series``; raises LimitExceeded naming the limit otherwise.

        Raises SourceError when the values saved at the last stop cannot be read.
        """
        await self._load(now)
        self._check(self._keyed(samples), now)

    def _check(self, keyed: list[tuple[tuple[str, Labels], Sample]], now: datetime) -> None:
        new = {k for k, _ in keyed if k not in self._series}
        if len(self._series) + len(new) <= self.options.max_series:
            return
        self._expire(now)  # make room from expired series before refusing
        new = {k for k, _ in keyed if k not in self._series}
        total = len(self._series) + len(new)
        if total > self.options.max_series:
            raise LimitExceeded(
                f"source {self.options.name!r} would hold {total} series, more than its max_series "
                f"{self.options.max_series}; nothing was stored"
            )

    async def ingest(self, samples: list[Sample], now: datetime) -> int:
        """Store the latest value of each series; raises LimitExceeded (and stores nothing) over max_series."""
        await self._load(now)
        keyed = self._keyed(samples)
        self._check(keyed, now)
        series = self._series
        for key, s in keyed:
            old = series.get(key)
            # An explicit timestamp orders pushes of one series: an older sample does not replace a newer one.
            if old is not None and s.timestamp is not None and old[1] is not None and s.timestamp < old[1]:
                continue
            series[key] = (s.value, s.timestamp, now)
        return len(samples)

    async def collect(self, now: datetime) -> list[Sample]:
        """The pushed series not yet expired; raises SourceError only when the saved values cannot be read."""
        await self._load(now)
        self._expire(now)
        return [Sample(name, labels, value, ts) for (name, labels), (value, ts, _) in self._series.items()]

    async def close(self) -> None:
        """Save the pushed values for the next start; a database error is raised (the runner logs it)."""
        if self.context is None or not self._loaded or not self._series:
            return
        rows = [
            [name, labels.as_dict(), repr(value), None if ts is None else ts.timestamp(), at.timestamp()]
            for (name, labels), (value, ts, at) in self._series.items()
        ]
        await self.context.state.set(STATE_KEY, rows)
