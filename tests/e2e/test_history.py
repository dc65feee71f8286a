"""The real ``fsincident run`` records the history of the series its rules read; a restart (clean or ``kill -9``)
keeps it and continues the chunks. Read back with sqlite3 from the ``series_history`` table."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.harness import make_config, metric, metrics_text, rules_yaml, scrape_source, wait_until
from tests.helpers import free_port

pytestmark = pytest.mark.slow

RULES = rules_yaml(
    """\
      - alert: QueueBacklog
        expr: queue_depth > 100
        severity: critical
"""
)
HISTORY = "history: {step: 1s, keep: 1h, coarse_step: 2s, coarse_keep: 1d}\n"


def buckets(db: Path, tier: int = 0) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per ``queue`` label, the stored non-empty buckets ``(t, avg, min, max)`` of ``queue_depth``."""
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT labels, chunk_start, step_seconds, points FROM series_history WHERE metric = 'queue_depth' "
            "AND tier = ? ORDER BY chunk_start",
            (tier,),
        ).fetchall()
    except sqlite3.OperationalError:
        return {}  # not migrated yet
    finally:
        con.close()
    for labels, chunk_start, step, points in rows:
        start = datetime.fromisoformat(chunk_start).replace(tzinfo=UTC).timestamp()
        for i, (avg, lo, hi) in enumerate(struct.iter_unpack("<fff", points)):
            if not math.isnan(avg):
                out.setdefault(json.loads(labels)["queue"], []).append((start + i * step, avg, lo, hi))
    return out


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_history_is_recorded_and_survives_a_restart(tmp_path, exposition, receiver, spawn, how):
    exposition.set("queue_depth", 5, queue="orders")
    exposition.set("queue_depth", 7, queue="mail")
    exposition.set("unread_metric", 1)
    port = free_port()
    db = tmp_path / "state.db"
    cfg = make_config(
        tmp_path / "cfg",
        port=port,
        database=f"sqlite:///{db}",
        sources=scrape_source(exposition.url),
        channel_urls=[receiver.apprise_url()],
        rules=RULES,
        extra=HISTORY,
    )
    d = spawn(cfg, port)
    got = wait_until(lambda: (b := buckets(db)) and len(b.get("orders", [])) >= 3 and b, 20, "three fine buckets")
    assert {p[1] for p in got["orders"]} == {5.0} and {p[1] for p in got["mail"]} == {7.0}
    wait_until(lambda: len(buckets(db, tier=1).get("orders", [])) >= 1, 20, "a coarse bucket")
    text = metrics_text(d)
    assert metric(text, "fsincident_history_series") == 2  # only what the rules read
    assert (metric(text, "fsincident_history_buckets_written_total", tier="fine") or 0) >= 6
    before = buckets(db)["orders"]
    if how == "kill9":
        d.kill9()
    else:
        assert d.stop(signal.SIGTERM) == 0
    after_stop = buckets(db)["orders"]
    assert after_stop[: len(before)] == before  # nothing written is lost
    exposition.set("queue_depth", 9, queue="orders")
    d2 = spawn(cfg, port)
    wait_until(lambda: any(p[1] == 9.0 for p in buckets(db)["orders"]), 20, "buckets after the restart")
    final = buckets(db)["orders"]
    assert final[: len(after_stop)] == after_stop  # the old buckets are still there, the chunks continued
    times = [p[0] for p in final]
    assert times == sorted(set(times))
    con = sqlite3.connect(db)
    try:
        (rows,) = con.execute("SELECT count(*) FROM series_history WHERE tier = 0").fetchone()
        (chunks,) = con.execute("SELECT count(DISTINCT chunk_start) FROM series_history WHERE tier = 0").fetchone()
    finally:
        con.close()
    assert rows == 2 * chunks  # one row per series and chunk: the restart updated the rows, not duplicated them
    assert d2.stop(signal.SIGTERM) == 0
