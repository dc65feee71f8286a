"""The engine: a loop per named module (``async tick(now) -> did_work``), kickable, plus apscheduler jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from fsincident.core import Clock
from fsincident.obs import get_logger

log = get_logger("fsincident.engine")


class Module(Protocol):
    """An engine module; it may also define ``async sleep_hint(now) -> seconds | None`` to wake earlier."""

    name: str

    async def tick(self, now: datetime) -> bool: ...


class Engine:
    """Runs modules until stopped; a module runs again at once when it did work or when kicked. Modules and jobs
    added with ``leader_only`` do nothing while ``leader`` is False (another replica leads)."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self._modules: dict[str, tuple[Module, float]] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self._leader_only: set[str] = set()
        self.leader = True

    def add(self, module: Module, idle: float = 1.0, leader_only: bool = False) -> None:
        """Register ``module``; when idle it is polled every ``idle`` seconds (with ``leader_only``, only while
        this replica leads)."""
        self._modules[module.name] = (module, idle)
        self._events[module.name] = asyncio.Event()
        if leader_only:
            self._leader_only.add(module.name)
        else:
            self._leader_only.discard(module.name)

    def set_leader(self, leader: bool) -> None:
        """Run (True) or pause (False) the leader-only modules and jobs; a promotion wakes the modules at once. A
        tick already running finishes."""
        self.leader = leader
        if leader:
            for name in self._leader_only:
                self.kick(name)

    def kick(self, name: str) -> None:
        ev = self._events.get(name)
        if ev is not None:
            ev.set()

    def kicker(self, name: str) -> Callable[[], None]:
        return lambda: self.kick(name)

    def start(self) -> None:
        self._running = True
        for name in self._modules:
            self._tasks[name] = asyncio.create_task(self._loop(name), name=f"engine:{name}")
        self.scheduler.start()

    async def _loop(self, name: str) -> None:
        module, idle = self._modules[name]
        ev = self._events[name]
        failures = 0
        leader_only = name in self._leader_only
        while self._running:
            ev.clear()
            if leader_only and not self.leader:
                try:  # a follower: wait for a promotion (set_leader kicks) or the next poll
                    await asyncio.wait_for(ev.wait(), timeout=idle)
                except TimeoutError:
                    pass
                continue
            try:
                did = await module.tick(self.clock.now())
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("module_failed", module=name, failures=failures)
                did = False
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))
            if did:
                await asyncio.sleep(0)
                continue
            wait = idle
            hint = getattr(module, "sleep_hint", None)
            if hint is not None:
                try:
                    due = await hint(self.clock.now())
                except Exception:
                    log.exception("module_sleep_hint_failed", module=name)
                    due = None
                if due is not None:
                    wait = min(idle, max(0.01, due))
            try:
                await asyncio.wait_for(ev.wait(), timeout=wait)
            except TimeoutError:
                pass

    def every(
        self,
        job_id: str,
        interval: timedelta,
        fn: Callable[[], Awaitable[None]],
        *,
        delay: timedelta = timedelta(0),
        leader_only: bool = False,
    ) -> None:
        """Run ``fn`` every ``interval`` (replacing a job with the same id), the first time after ``delay``; with
        ``leader_only`` a run does nothing while this replica does not lead."""
        if leader_only:
            fn = self._when_leader(fn)
        existing = self.scheduler.get_job(job_id)
        kwargs = {}
        if existing is None or existing.trigger.interval != interval:
            # apscheduler runs on the wall clock whatever ``self.clock`` says: a first run time taken from a clock
            # set in the past (tests) would make it count every missed run since then, freezing the loop.
            kwargs["next_run_time"] = datetime.now(UTC) + delay
        self.scheduler.add_job(
            fn,
            "interval",
            seconds=interval.total_seconds(),
            id=job_id,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(interval.total_seconds())),
            **kwargs,
        )

    def _when_leader(self, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if self.leader:
                await fn()

        return run

    def remove_jobs_except(self, prefix: str, keep: set[str]) -> None:
        for job in self.scheduler.get_jobs():
            if job.id.startswith(prefix) and job.id not in keep:
                job.remove()

    async def stop(self, drain: dict[str, float] | None = None) -> None:
        """Stop the scheduler and the loops; modules named in ``drain`` get that many seconds to finish a tick."""
        self._running = False
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for ev in self._events.values():
            ev.set()
        drain = drain or {}
        for name, task in self._tasks.items():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=drain.get(name, 0.5))
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        self._tasks.clear()
