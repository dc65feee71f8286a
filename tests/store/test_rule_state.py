"""The evaluator's rule state in SQL: a restart continues pending, held and flapping alerts exactly where they were.

Each test runs the evaluator in-process with an injected clock and snapshot, "restarts" it by building a new
evaluator on the same database, and checks the ``alert_transition`` rows (what would page) it wrote.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import select

from fsincident.config import Config, load
from fsincident.core import FakeClock, Labels
from fsincident.evaluation.evaluator import Evaluator
from fsincident.obs import Metrics
from fsincident.plugins import Snapshot
from fsincident.store import Store, run_migrations
from fsincident.store.tables import AlertTransition, RuleSeriesState

from .conftest import T0

HOST = Labels({"host": "web1"})


def _config(tmp_path: Path, rules: str) -> Config:
    (tmp_path / "cfg" / "rules.d").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cfg" / "fsincident.yaml").write_text(
        f"database: sqlite:///{tmp_path}/unused.db\nsources:\n  - {{name: app, type: host}}\n"
    )
    (tmp_path / "cfg" / "rules.d" / "r.yaml").write_text(rules)
    return load(tmp_path / "cfg", environ={})


def _rule(extra: str, expr: str = "cpu > 90") -> str:
    return f"""\
groups:
  - name: g
    source: app
    rules:
      - alert: HotCpu
        expr: {expr}
{extra}"""


class Harness:
    """An evaluator on ``store`` whose source ``app`` serves ``cpu{host="web1"}`` at the value last set."""

    def __init__(self, store: Store, clock: FakeClock, config: Config):
        self.store, self.clock, self.config = store, clock, config
        self.snap = Snapshot(source="app")
        self.ev = self._new()

    def _new(self) -> Evaluator:
        ev = Evaluator(self.store, self.clock, Metrics(), lambda name: self.snap if name == "app" else None)
        ev.set_groups(self.config.groups, self.config.slos)
        return ev

    async def at(self, seconds: float, cpu: float | None, **more: float) -> None:
        """Collect at T0+seconds (``cpu`` None = no cpu series) and evaluate group ``g``."""
        self.clock._now = T0 + timedelta(seconds=seconds)
        metrics = {} if cpu is None else {"cpu": {HOST: float(cpu)}}
        for name, v in more.items():
            metrics[name] = {Labels(): float(v)}
        self.snap.metrics, self.snap.at, self.snap.last_success = metrics, self.clock.now(), self.clock.now()
        for g in self.config.groups:
            await self.ev.evaluate_group(g.name)

    async def restart(self) -> None:
        await self.ev.close()
        self.ev = Evaluator(self.store, self.clock, Metrics(), lambda name: self.snap if name == "app" else None)
        await self.ev.restore()
        self.ev.set_groups(self.config.groups, self.config.slos)

    async def transitions(self) -> list[tuple[str, float]]:
        """(state, seconds since T0) of every transition written so far."""
        async with self.store.session() as s:
            rows = (await s.exec(select(AlertTransition).order_by(AlertTransition.id))).all()
        out = []
        for r in rows:
            at = r.at if r.at.tzinfo else r.at.replace(tzinfo=T0.tzinfo)
            out.append((r.state, (at - T0).total_seconds()))
        return out

    async def rows(self) -> list[RuleSeriesState]:
        async with self.store.session() as s:
            return list((await s.exec(select(RuleSeriesState))).all())

    def alerts(self) -> list[dict]:
        return self.ev.rules_view()[0]["rules"][0]["alerts"]


async def test_pending_continues_on_its_original_schedule(store, clock, tmp_path):
    h = Harness(store, clock, _config(tmp_path, _rule("        for: 60s\n")))
    await h.at(0, 95)
    await h.at(15, 95)
    await h.restart()
    await h.at(45, 95)
    assert await h.transitions() == []
    await h.at(60, 95)
    assert await h.transitions() == [("firing", 60)], "pending was forgotten: for counted again from the restart"
    await h.restart()
    await h.at(75, 95)
    assert await h.transitions() == [("firing", 60)], "a restart re-paged a firing alert"
    await h.ev.close()


async def test_keep_firing_for_is_neither_cut_short_nor_extended_by_a_restart(store, clock, tmp_path):
    h = Harness(store, clock, _config(tmp_path, _rule("        keep_firing_for: 60s\n")))
    for t in (0, 10, 20):
        await h.at(t, 95)  # last true evaluation at 20 s
    await h.restart()  # the process dies while the condition still holds
    await h.at(30, 50)
    await h.at(79, 50)
    assert await h.transitions() == [("firing", 0)], "resolved before keep_firing_for since the last true value"
    await h.restart()  # and again while held
    await h.at(80, 50)
    assert await h.transitions() == [("firing", 0), ("resolved", 80)], "keep_firing_for was extended"
    await h.ev.close()


async def test_hysteresis_hold_survives_a_restart(store, clock, tmp_path):
    h = Harness(store, clock, _config(tmp_path, _rule("        resolve_expr: cpu < 80\n")))
    await h.at(0, 95)
    await h.at(10, 85)
    await h.restart()
    await h.at(20, 85)
    await h.at(30, 81)
    assert await h.transitions() == [("firing", 0)]
    assert [(a["state"], a["value"]) for a in h.alerts()] == [("firing", 81)]
    await h.at(40, 79)
    assert await h.transitions() == [("firing", 0), ("resolved", 40)]
    await h.ev.close()


async def test_flapping_alert_is_held_across_a_restart_and_resolves_after_a_quiet_window(store, clock, tmp_path):
    h = Harness(store, clock, _config(tmp_path, _rule("        flapping: {window: 5m, changes: 2}\n")))
    await h.at(0, 95)
    await h.at(10, 50)  # two changes within 5 minutes: flapping, held firing
    assert [(a["state"], a["flapping"]) for a in h.alerts()] == [("firing", True)]
    await h.restart()
    await h.at(20, 95)
    await h.at(30, 50)
    await h.restart()
    await h.at(329, 50)
    assert await h.transitions() == [("firing", 0)], "a flapping alert resolved (and would page again)"
    assert h.ev.rules_view()[0]["rules"][0]["flapping"] == {"window": 300.0, "changes": 2}
    await h.at(330, 50)  # the condition has not changed for a whole window since 30 s
    assert await h.transitions() == [("firing", 0), ("resolved", 330)]
    assert h.alerts() == []
    await h.ev.close()


async def test_inactive_series_keep_their_flap_history_until_it_ages_out(store, clock, tmp_path):
    h = Harness(store, clock, _config(tmp_path, _rule("        for: 1m\n        flapping: {window: 5m, changes: 3}\n")))
    await h.at(0, 95)  # pending
    await h.at(10, 50)  # back to inactive: its two changes are remembered
    rows = await h.rows()
    assert [(r.state, len(r.changes), r.flapping) for r in rows] == [("inactive", 2, False)]
    assert h.alerts() == []
    await h.restart()
    await h.at(20, 95)  # third change within the window: flapping (still pending: for is 1 minute)
    rows = await h.rows()
    assert [(r.state, len(r.changes), r.flapping) for r in rows] == [("pending", 3, True)]
    await h.at(30, 50)
    await h.at(329, 50)
    assert len(await h.rows()) == 1
    await h.at(330, 50)  # the last change (30 s) is a window old: nothing left to remember
    assert await h.rows() == []
    assert await h.transitions() == []
    await h.ev.close()


async def test_rows_from_before_flap_detection_load_as_plain_state(db_url):
    """Rows written by the previous schema (0002) migrate with a true condition and no flap history."""
    await asyncio.to_thread(run_migrations, db_url, "upgrade", "0002")
    st = Store(db_url)
    try:
        async with st.engine.begin() as c:
            await c.execute(
                sa.text(
                    "INSERT INTO rule_series_state (rule, fingerprint, state, labels, annotations, value,"
                    " active_since, fired_at, last_active) VALUES ('g/A', 'fp', 'firing', '{}', '{}', 1.0,"
                    " :t, :t, :t)"
                ),
                {"t": T0},
            )
    finally:
        await st.close()
    await asyncio.to_thread(run_migrations, db_url, "upgrade", "head")
    st = Store(db_url)
    try:
        async with st.session() as s:
            (row,) = (await s.exec(select(RuleSeriesState))).all()
        assert (row.state, row.condition, row.changes, row.flapping) == ("firing", True, [], False)
        ev = Evaluator(st, FakeClock(T0), Metrics(), lambda name: None)
        await ev.restore()
        state = ev.tracked["g/A"]["fp"].state
        assert (state.condition, state.changes, state.flapping, state.fired_at) == (True, (), False, T0)
        await ev.close()
    finally:
        await st.close()


async def test_slo_error_budget_is_a_gauge_and_in_the_rules_view(store, clock, tmp_path):
    cfg = _config(
        tmp_path,
        """\
slos:
  - name: api
    source: app
    objective: 99
    window: 1h
    interval: 15s
    good: ok_total
    total: requests_total
""",
    )
    h = Harness(store, clock, cfg)
    await h.at(0, None, ok_total=0, requests_total=0)
    await h.at(60, None, ok_total=995, requests_total=1000)
    await h.at(120, None, ok_total=1995, requests_total=2000)  # 5 errors in 2000 requests: 0.25% of a 1% budget
    (slo,) = h.ev.slos_view()
    assert slo["name"] == "api" and slo["health"] == "ok", slo
    (budget,) = slo["error_budget_remaining"]
    assert budget["labels"] == {}
    assert abs(budget["value"] - 0.75) < 1e-9, budget
    from prometheus_client import generate_latest

    text = generate_latest(h.ev.metrics.registry).decode()
    assert 'fsincident_slo_error_budget_remaining_ratio{slo="api"} 0.75' in text, text
    assert {r["slo"] for g in h.ev.rules_view() for r in g["rules"]} == {"api"}
    await h.ev.close()


async def test_evaluation_runs_off_the_event_loop(tmp_path, clock):
    """A large cycle runs in the evaluator's worker thread: the event loop keeps serving meanwhile."""
    store = Store(f"sqlite:///{tmp_path}/state.db")
    await store.upgrade()
    cfg = _config(tmp_path, _rule("", expr='avg_over_time(cpu, "5m") > 90 and cpu > 90'))
    n = 200_000
    series = {Labels({"host": f"h{i}", "dc": f"d{i % 7}"}): float(i % 90) for i in range(n)}
    snap = Snapshot(source="app")
    ev = Evaluator(store, clock, Metrics(), lambda name: snap if name == "app" else None)
    ev.set_groups(cfg.groups, cfg.slos)
    threads: set[str] = set()
    evaluate = ev._rs.evaluate

    def spy(*a, **kw):
        threads.add(threading.current_thread().name)
        return evaluate(*a, **kw)

    ev._rs.evaluate = spy  # type: ignore[method-assign]
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    try:
        for k in range(3):
            clock.advance(15)
            snap.metrics, snap.at = {"cpu": series}, clock.now()
            task = asyncio.create_task(ticker())
            t0 = time.perf_counter()
            await ev.evaluate_group("g")
            took = time.perf_counter() - t0
            stop.set()
            await task
            stop.clear()
            print(f"cycle {k}: {took * 1000:.0f} ms, longest event-loop stall {max(gaps) * 1000:.1f} ms")
            assert max(gaps) < max(0.1, took / 3), (took, max(gaps))
            gaps.clear()
        assert threads and all(t.startswith("fsincident-eval") for t in threads), threads
        assert ev.status["g/HotCpu"].series_evaluated >= n
    finally:
        await ev.close()
        await store.close()
