"""Runs each configured source on its interval and keeps its latest snapshot for the evaluator."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fsincident import plugins
from fsincident.core import Clock, SourceError
from fsincident.obs import Metrics, get_logger

log = get_logger("fsincident.sources")


class SourceRunner:
    """Owns the source instances; ``collect(name)`` is scheduled per source and never raises."""

    def __init__(self, clock: Clock, metrics: Metrics):
        self.clock = clock
        self.metrics = metrics
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
                new[opt.name] = cls(opt)
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
        snap.metrics = metrics
        snap.at = now
        snap.last_success = now
        snap.error = None
        snap.failures = 0
        self.metrics.source_collections.labels(name, "success").inc()
        self.metrics.source_up.labels(name).set(1)
        self.metrics.source_samples.labels(name).set(len(samples))

    def _failed(self, name: str, snap: plugins.Snapshot, now: datetime, msg: str) -> None:
        if snap.error != msg:
            log.warning("source_failed", source=name, error=msg)
        snap.error = msg
        snap.failures += 1
        snap.at = now
        self.metrics.source_collections.labels(name, "failure").inc()
        self.metrics.source_up.labels(name).set(0)

    async def close(self) -> None:
        for src in self.sources.values():
            await _close(src)
        self.sources = {}


async def _close(src: Any) -> None:
    try:
        await src.close()
    except Exception:
        log.exception("source_close_failed", source=src.options.name)
