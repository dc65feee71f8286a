"""Runs each configured source on its interval and keeps its latest snapshot for the evaluator.

Each source runs in its own scheduled job with its own timeout, so a slow source never delays
another one. Every snapshot carries an ``up{job=SOURCE}`` series (1 after a good collection, 0
after a failed one) that rules can read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fsincident import plugins
from fsincident.core import Clock, FsIncidentError, Labels, Sample, SourceError
from fsincident.obs import Metrics, get_logger

log = get_logger("fsincident.sources")


class NoSuchSource(FsIncidentError):
    """No source of that name, or none able to do what was asked."""


class SourceRunner:
    """Owns the source instances; ``collect(name)`` is scheduled per source and never raises."""

    def __init__(self, clock: Clock, metrics: Metrics, state: Callable[[str], plugins.StateStore]):
        self.clock = clock
        self.metrics = metrics
        self.state = state
        self.sources: dict[str, Any] = {}
        self.snapshots: dict[str, plugins.Snapshot] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def configure(self, options: tuple[plugins.SourceOptions, ...]) -> None:
        """Replace the sources with ``options`` (reload); unchanged sources keep their instance and snapshot."""
        new: dict[str, Any] = {}
        for opt in options:
            old = self.sources.get(opt.name)
            if old is not None and old.options == opt:
                new[opt.name] = old
            else:
                cls = plugins.sources.get(opt.type)
                ctx = plugins.SourceContext(clock=self.clock, state=self.state(opt.name))
                new[opt.name] = cls(opt, context=ctx)
                start = getattr(new[opt.name], "start", None)
                if start is not None:
                    await start()
                self.snapshots[opt.name] = plugins.Snapshot(source=opt.name)
        for name, src in self.sources.items():
            if new.get(name) is not src:
                await _close(src)
        for name in list(self.snapshots):
            if name not in new:
                del self.snapshots[name]
        self.sources = new

    def snapshot(self, name: str) -> plugins.Snapshot | None:
        return self.snapshots.get(name)

    def all_snapshots(self) -> dict[str, tuple[plugins.Snapshot, int]]:
        """Every source's snapshot with its ``down_after``."""
        return {
            name: (snap, self.sources[name].options.down_after)
            for name, snap in self.snapshots.items()
            if name in self.sources
        }

    async def collect(self, name: str) -> None:
        """Collect one source now and store its snapshot; failures are recorded, never raised."""
        src = self.sources.get(name)
        if src is None:
            return
        lock = self._locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            return  # the previous collection is still running; skip this tick
        async with lock:
            await self._collect(name, src)

    async def _collect(self, name: str, src: Any) -> None:
        now = self.clock.now()
        snap = self.snapshots.setdefault(name, plugins.Snapshot(source=name))
        timeout = src.options.timeout.total_seconds() + 1
        try:
            samples = await asyncio.wait_for(src.collect(now), timeout)
        except (SourceError, TimeoutError, OSError) as e:
            msg = str(e) or type(e).__name__
            if isinstance(e, TimeoutError):
                msg = f"collection timed out after {timeout:g}s"
            self._failed(name, snap, now, msg)
            return
        except Exception as e:  # a buggy plugin must not stop the daemon; it is reported, not skipped silently
            log.exception("source_crashed", source=name)
            self._failed(name, snap, now, f"{type(e).__name__}: {e}")
            return
        metrics: dict[str, dict[Any, float]] = {}
        for s in samples:
            metrics.setdefault(s.name, {})[s.labels] = s.value
        metrics.setdefault("up", {})[Labels({"job": name})] = 1.0
        if snap.error is not None:
            log.info("source_recovered", source=name, failures=snap.failures)
        snap.metrics = metrics
        snap.at = now
        snap.last_success = now
        snap.error = None
        snap.failures = 0
        self.metrics.source_collections.labels(name, "success").inc()
        self.metrics.source_up.labels(name).set(1)
        self.metrics.source_samples.labels(name).set(len(samples))

    def _failed(self, name: str, snap: plugins.Snapshot, now: datetime, msg: str) -> None:
        msg = _scrub(msg, self.sources.get(name))  # the error is shown by the API (rule health), not only logged
        if snap.error != msg:
            log.warning("source_failed", source=name, error=msg)
        snap.error = msg
        snap.failures += 1
        snap.at = now
        snap.metrics = {"up": {Labels({"job": name}): 0.0}}
        self.metrics.source_collections.labels(name, "failure").inc()
        self.metrics.source_up.labels(name).set(0)

    # ------------------------------------------------------------------ capabilities

    async def query(self, name: str, text: str, now: datetime) -> list[Sample]:
        """Run a rule's ``query`` on source ``name``; raises SourceError (also for a timeout)."""
        src = self.sources.get(name)
        if src is None or not getattr(src, "supports_query", False):
            raise SourceError(f"source {name!r} does not run queries")
        timeout = src.options.timeout.total_seconds() + 1
        try:
            return await asyncio.wait_for(src.query(text, now), timeout)
        except TimeoutError:
            raise SourceError(f"query timed out after {timeout:g}s") from None
        except SourceError:
            raise
        except Exception as e:
            log.exception("source_query_crashed", source=name)
            raise SourceError(f"{type(e).__name__}: {e}") from None

    async def query_range(
        self, name: str, text: str, start: datetime, end: datetime, step: float
    ) -> list[tuple[Labels, list[tuple[float, float]]]]:
        """Run PromQL ``text`` as a range query on source ``name`` (a ``prometheus`` source): per series its labels
        and ``(unix seconds, value)`` points; raises SourceError (also for a timeout or a source without it)."""
        src = self.sources.get(name)
        if src is None or not hasattr(src, "query_range"):
            raise SourceError(f"source {name!r} does not run range queries")
        return await self._guarded(name, src, src.query_range(text, start, end, step))

    async def label_values(self, name: str, label: str) -> list[str]:
        """The values of ``label`` that source ``name`` (a ``prometheus`` source) knows; raises SourceError."""
        src = self.sources.get(name)
        if src is None or not hasattr(src, "label_values"):
            raise SourceError(f"source {name!r} does not list label values")
        return await self._guarded(name, src, src.label_values(label))

    async def _guarded(self, name: str, src: Any, call: Any) -> Any:
        timeout = src.options.timeout.total_seconds() + 1
        try:
            return await asyncio.wait_for(call, timeout)
        except TimeoutError:
            raise SourceError(f"query timed out after {timeout:g}s") from None
        except SourceError as e:
            raise SourceError(_scrub(str(e), src)) from None
        except Exception as e:
            log.exception("source_query_crashed", source=name)
            raise SourceError(_scrub(f"{type(e).__name__}: {e}", src)) from None

    def with_capability(self, capability: str, name: str | None = None) -> list[Any]:
        """Sources that implement ``capability`` (e.g. ``ingest``), or the one named; raises NoSuchSource."""
        if name is not None:
            src = self.sources.get(name)
            if src is None or not hasattr(src, capability):
                raise NoSuchSource(f"no source named {name!r} accepts {capability}")
            return [src]
        found = [s for s in self.sources.values() if hasattr(s, capability)]
        if not found:
            raise NoSuchSource(f"no source accepts {capability}")
        return found

    async def close(self) -> None:
        for src in self.sources.values():
            await _close(src)
        self.sources = {}


def _scrub(msg: str, src: Any) -> str:
    """``msg`` with the credentials the source's kind declares (``secrets_of``) replaced by ``***``."""
    secrets_of = getattr(type(src), "secrets_of", None)
    if secrets_of is None:
        return msg
    try:
        found = [s for s in secrets_of(src.options) if s and len(s) >= 4]
    except Exception:
        return msg
    for s in sorted(found, key=len, reverse=True):
        msg = msg.replace(s, "***")
    return msg


async def _close(src: Any) -> None:
    try:
        await src.close()
    except Exception:
        log.exception("source_close_failed", source=src.options.name)
