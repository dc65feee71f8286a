"""Leadership: one leader per PostgreSQL database (advisory lock) with failover in about a second, SQLite kept
single-node by a file lock; the engine's leader-only modules and jobs; ingest expiry on the leader only."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlmodel import col, select

from fsincident.core import FakeClock, SystemClock
from fsincident.engine import Engine
from fsincident.ingest.service import IncomingAlert, IngestService, fingerprint
from fsincident.obs import Metrics
from fsincident.store import Store
from fsincident.store.leader import LOCK_KEY, Leadership, LeadershipError
from fsincident.store.tables import AlertTransition

MIN = timedelta(minutes=1)
FAST = {"retry": 0.2, "ping": 0.2, "timeout": 1.0}


async def until(pred: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``pred`` every 20 ms; returns the seconds it took, AssertionError naming ``what`` on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout}s: {what}")


def recorder(lead: Leadership) -> list[bool]:
    changes: list[bool] = []
    lead.on_change(changes.append)
    return changes


# ---------------------------------------------------------------------------------------------- PostgreSQL


async def test_two_replicas_on_postgresql_have_exactly_one_leader(pg_url: str) -> None:
    a, b = Leadership(pg_url, "a:1", **FAST), Leadership(pg_url, "b:2", **FAST)
    seen_a, seen_b = recorder(a), recorder(b)
    try:
        await a.start()
        await b.start()
        assert (a.is_leader, b.is_leader) == (True, False)
        assert (a.role, b.role) == ("leader", "follower")
        await asyncio.sleep(1.0)  # several retries of the follower: still one leader
        assert (a.is_leader, b.is_leader) == (True, False)
        assert (seen_a, seen_b) == ([True], [])
        # A graceful stop releases the lock: the follower leads at its next try.
        await a.close()
        took = await until(lambda: b.is_leader, 2.0, "the follower takes over after a close")
        assert seen_b == [True] and b.term == 1
        print(f"\nleader failover after close: {took:.2f}s")
    finally:
        await a.close()
        await b.close()


async def test_a_leader_whose_session_dies_steps_down_and_the_other_takes_over(pg_url: str) -> None:
    a, b = Leadership(pg_url, "a:1", **FAST), Leadership(pg_url, "b:2", **FAST)
    seen_a = recorder(a)
    try:
        await a.start()
        await b.start()
        assert a.is_leader and not b.is_leader
        # The server ends A's session (as a restart or an administrator would): the lock goes with it.
        conn = await asyncpg.connect(pg_url)
        try:
            pids = await conn.fetch(  # a bigint key shows as classid (high 32 bits), objid (low), objsubid 1
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                "AND classid::bigint = $1 AND objid::bigint = $2",
                (LOCK_KEY >> 32) & 0xFFFFFFFF,
                LOCK_KEY & 0xFFFFFFFF,
            )
            assert len(pids) == 1
            await conn.execute("SELECT pg_terminate_backend($1)", pids[0]["pid"])
        finally:
            await conn.close()
        took = await until(lambda: b.is_leader and not a.is_leader, 3.0, "B leads and A stepped down")
        assert seen_a == [True, False]
        await asyncio.sleep(0.6)  # A keeps trying (on a new connection) but stays a follower
        assert b.is_leader and not a.is_leader
        print(f"\nleader failover after the session died: {took:.2f}s")
    finally:
        await a.close()
        await b.close()


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from fsincident.store.leader import Leadership

    async def main():
        lead = Leadership(sys.argv[1], "holder:1", retry=0.2, ping=0.2)
        await lead.start()
        print("leader" if lead.is_leader else "follower", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_kill9_of_the_leader_process_hands_over_within_two_seconds(pg_url: str, tmp_path: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), pg_url, stdout=asyncio.subprocess.PIPE)
    b = Leadership(pg_url, "b:2", **FAST)
    try:
        line = b""
        while line.strip() not in (b"leader", b"follower"):  # log lines come first
            line = await asyncio.wait_for(proc.stdout.readline(), 30)  # type: ignore[union-attr]
            assert line, "the holder exited"
        assert line.strip() == b"leader"
        await b.start()
        await asyncio.sleep(0.5)
        assert not b.is_leader
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        await until(lambda: b.is_leader, 2.0, "the survivor leads after kill -9")
        print(f"\nleader failover after kill -9: {time.monotonic() - t0:.2f}s")
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await b.close()


async def test_a_promotion_that_fails_steps_down_and_tries_again(pg_url: str) -> None:
    lead = Leadership(pg_url, "a:1", **FAST)
    calls: list[bool] = []

    async def flaky(leader: bool) -> None:
        calls.append(leader)
        if leader and calls.count(True) == 1:
            raise RuntimeError("cannot load the rule state")

    lead.on_change(flaky)
    try:
        await lead.start()
        await until(lambda: lead.is_leader and calls.count(True) == 2, 3.0, "a second, successful promotion")
        assert calls == [True, False, True] and lead.term == 2
    finally:
        await lead.close()


async def test_migrations_of_replicas_starting_together_run_one_at_a_time(pg_url: str) -> None:
    a, b = Leadership(pg_url, "a:1"), Leadership(pg_url, "b:2")
    order: list[str] = []

    async def migrate(lead: Leadership, name: str) -> None:
        async with lead.exclusive():
            order.append(f"{name}+")
            await asyncio.sleep(0.2)
            order.append(f"{name}-")

    await asyncio.gather(migrate(a, "a"), migrate(b, "b"))
    assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])


# ---------------------------------------------------------------------------------------------- SQLite


async def test_sqlite_is_single_node(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    first = Leadership(url, "host:1")
    seen = recorder(first)
    await first.start()
    assert first.is_leader and seen == [True]
    second = Leadership(url, "host:2")
    with pytest.raises(LeadershipError) as e:
        await second.start()
    msg = str(e.value)
    assert f"{tmp_path}/state.db" in msg and "host:1" in msg
    assert "SQLite is single-node" in msg and "PostgreSQL" in msg
    assert not second.is_leader
    async with first.exclusive():  # a no-op on SQLite
        pass
    await first.close()
    await second.start()  # the file is free again
    assert second.is_leader
    await second.close()


async def test_in_memory_sqlite_always_leads() -> None:
    a, b = Leadership("sqlite://", "x:1"), Leadership("sqlite:///:memory:", "x:2")
    await a.start()
    await b.start()
    assert a.is_leader and b.is_leader
    await a.close()
    await b.close()


# ---------------------------------------------------------------------------------------------- engine


class Counting:
    def __init__(self, name: str):
        self.name, self.ticks = name, 0

    async def tick(self, now: object) -> bool:
        self.ticks += 1
        return False


async def test_leader_only_modules_and_jobs_run_only_while_leading() -> None:
    engine = Engine(SystemClock())
    everywhere, leader_only = Counting("everywhere"), Counting("leader-only")
    engine.add(everywhere, idle=0.05)
    engine.add(leader_only, idle=0.05, leader_only=True)
    runs = {"all": 0, "leader": 0}

    def job(key: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            runs[key] += 1

        return run

    engine.set_leader(False)
    engine.every("j:all", timedelta(milliseconds=50), job("all"))
    engine.every("j:leader", timedelta(milliseconds=50), job("leader"), leader_only=True)
    engine.start()
    try:
        await asyncio.sleep(0.4)
        assert everywhere.ticks > 2 and runs["all"] > 2
        assert leader_only.ticks == 0 and runs["leader"] == 0
        engine.set_leader(True)
        await until(lambda: leader_only.ticks > 0 and runs["leader"] > 0, 2.0, "leader-only work starts")
        engine.set_leader(False)
        await asyncio.sleep(0.15)
        ticks, jobs = leader_only.ticks, runs["leader"]
        await asyncio.sleep(0.3)
        assert (leader_only.ticks, runs["leader"]) == (ticks, jobs)
    finally:
        await engine.stop()


# ---------------------------------------------------------------------------------------------- ingest expiry


def _alert(ends: object, starts: object = None) -> IncomingAlert:
    return IncomingAlert({"alertname": "Disk", "instance": "h1"}, {}, starts, ends)  # type: ignore[arg-type]


async def _states(store: Store) -> list[str]:
    async with store.session() as s:
        rows = (await s.exec(select(AlertTransition).order_by(col(AlertTransition.id)))).all()
    return [r.state for r in rows]


async def test_the_leader_expires_alerts_posted_to_the_follower(db_url: str) -> None:
    store = Store(db_url)
    await store.upgrade()
    clock = FakeClock()
    leader, follower = IngestService(store, clock, Metrics()), IngestService(store, clock, Metrics())
    follower.expiring = False
    try:
        t0 = clock.now()
        await follower.post([_alert(t0 + 4 * MIN)], "alertmanager", t0)
        await leader.reload()  # a promotion: the leader knows the alert and when it ends
        assert [v.fingerprint for v in leader.firing()] == [fingerprint(_alert(None).labels)]
        assert await leader.sleep_hint(t0) == 240.0
        # The follower refreshes it in memory only, then writes the later end before the stored one passes.
        clock.advance(MIN)
        later = clock.now() + 4 * MIN
        assert await follower.post([_alert(later, starts=t0)], "alertmanager", clock.now()) == 0
        clock.advance(t0 + 4 * MIN - timedelta(seconds=10) - clock.now())
        assert await follower.tick(clock.now()) is True
        clock.advance(timedelta(seconds=20))  # past the first end: the leader must not resolve the alert
        await leader.tick(clock.now())
        assert await _states(store) == ["firing"]
        # Past the later end: the follower only forgets it; the leader resolves it, once.
        clock.advance(later - clock.now())
        assert await follower.tick(clock.now()) is True
        assert follower.firing() == [] and await _states(store) == ["firing"]
        leader._next_scan = 0.0
        assert await leader.tick(clock.now()) is True
        assert await _states(store) == ["firing", "resolved"]
    finally:
        await leader.close()
        await follower.close()
        await store.close()
