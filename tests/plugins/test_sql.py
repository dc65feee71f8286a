"""``type: sql`` against a SQLite file and the PostgreSQL at 127.0.0.1:5432: rows to series, read-only, timeouts."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from fsincident.config import load
from fsincident.core import ConfigError, SourceError
from fsincident.sources.sql import SqlOptions, SqlSource
from tests.helpers import DaemonProcess, free_port, write_config


def source(url: str, query: str, **kw) -> SqlSource:
    return SqlSource(SqlOptions(name="shop", type="sql", url=url, query=query, **kw))


async def collect(src: SqlSource) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One collection as ``{(name, sorted labels): value}``; the source is closed afterwards."""
    try:
        samples = await src.collect(datetime.now(UTC))
    finally:
        await src.close()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}


@pytest.fixture
def shop_db(tmp_path) -> Path:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")  # like a live application database
        db.execute("CREATE TABLE orders (region TEXT, total REAL, note TEXT, discount REAL)")
        db.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?)",
            [("eu", 10.0, "a", None), ("eu", 5.5, "b", None), ("us", 7.0, "c", 1.5)],
        )
    return path


async def test_sqlite_rows_become_series(shop_db):
    got = await collect(
        source(
            f"sqlite:///{shop_db}",
            "SELECT region, sum(total) AS revenue, count(*) AS orders, max(discount) AS discount "
            "FROM orders GROUP BY region ORDER BY region",
            labels=["region"],
            metric_prefix="shop_",
        )
    )
    eu = (("job", "shop"), ("region", "eu"))
    us = (("job", "shop"), ("region", "us"))
    assert got == {
        ("shop_revenue", eu): 15.5,
        ("shop_orders", eu): 2.0,
        ("shop_revenue", us): 7.0,
        ("shop_orders", us): 1.0,
        ("shop_discount", us): 1.5,  # eu's discount is NULL: no sample
    }
    only = await collect(
        source(
            f"sqlite:///{shop_db}",
            "SELECT region, sum(total) AS revenue, count(*) AS n FROM orders GROUP BY region",
            labels=["region"],
            values=["n"],
        )
    )
    assert only == {("n", eu): 2.0, ("n", us): 1.0}


async def test_sqlite_non_numeric_and_duplicate_rows_are_errors(shop_db):
    with pytest.raises(SourceError, match=r"column 'note' has a non-numeric value 'a'"):
        await collect(source(f"sqlite:///{shop_db}", "SELECT region, note FROM orders", labels=["region"]))
    with pytest.raises(SourceError, match="same labels"):
        await collect(source(f"sqlite:///{shop_db}", "SELECT region, total FROM orders", labels=["region"]))
    with pytest.raises(SourceError, match=r"column\(s\) zone not in the query's columns: region, total"):
        await collect(source(f"sqlite:///{shop_db}", "SELECT region, total FROM orders", labels=["zone"]))


async def test_sqlite_is_read_only(shop_db):
    for query in ("INSERT INTO orders VALUES ('xx', 1, 'w', NULL) RETURNING total", "DELETE FROM orders RETURNING 1"):
        with pytest.raises(SourceError, match="read-only"):
            await collect(source(f"sqlite:///{shop_db}", query))
    with sqlite3.connect(shop_db) as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone() == (3,)
    with pytest.raises(SourceError, match="unable to open"):
        await collect(source(f"sqlite:///{shop_db.parent}/missing.db", "SELECT 1 AS one"))
    assert not (shop_db.parent / "missing.db").exists()  # never created


async def test_sqlite_slow_query_is_interrupted(shop_db):
    endless = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) AS n FROM r"
    src = source(f"sqlite:///{shop_db}", endless, timeout="0.5s")
    with pytest.raises(SourceError, match=r"timed out after 0\.5s"):
        await asyncio.wait_for(collect(src), 5)


async def _pg_exec(url: str, *sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for s in sql:
            await conn.execute(s)
    finally:
        await conn.close()


async def test_postgresql_rows_labels_and_read_only(pg_url):
    await _pg_exec(
        pg_url,
        "CREATE TABLE signups (day date, plan text, n integer, amount numeric(10,2), ok boolean)",
        "INSERT INTO signups VALUES ('2026-01-01', 'pro', 3, 29.90, true), ('2026-01-01', 'free', 12, NULL, false)",
    )
    got = await collect(source(pg_url, "SELECT day, plan, n, amount, ok FROM signups", labels=["day", "plan"]))
    pro = (("day", "2026-01-01"), ("job", "shop"), ("plan", "pro"))
    free = (("day", "2026-01-01"), ("job", "shop"), ("plan", "free"))
    assert got == {
        ("n", pro): 3.0,
        ("amount", pro): 29.9,
        ("ok", pro): 1.0,
        ("n", free): 12.0,
        ("ok", free): 0.0,
    }
    for query in ("INSERT INTO signups (n) VALUES (1) RETURNING n", "CREATE TABLE x AS SELECT 1 AS one"):
        with pytest.raises(SourceError, match="read-only"):
            await collect(source(pg_url, query))
    conn = await asyncpg.connect(pg_url, timeout=10)
    try:
        assert await conn.fetchval("SELECT count(*) FROM signups") == 2
        assert await conn.fetchval("SELECT to_regclass('x')") is None
    finally:
        await conn.close()


async def test_postgresql_statement_timeout(pg_url):
    src = source(pg_url, "SELECT pg_sleep(5) IS NULL AS slept", timeout="1s")
    with pytest.raises(SourceError, match="timed out after 1s"):
        await asyncio.wait_for(collect(src), 4)


def test_url_password_is_registered_as_a_secret(tmp_path):
    from fsincident.app import Daemon

    write_config(
        tmp_path,
        f"""\
        database: sqlite:///{tmp_path}/state.db
        sources:
          - name: shop
            type: sql
            url: "postgresql://shop:${{SHOP_DB_PASSWORD}}@127.0.0.1/shop"
            query: SELECT 1 AS one
        """,
    )
    cfg = load(tmp_path, environ={"SHOP_DB_PASSWORD": "pw-hunter2"})
    d = Daemon(cfg)
    d._set_secrets(cfg)
    assert d.redactor.scrub("connect to postgresql://shop:pw-hunter2@127.0.0.1/shop") == (
        "connect to postgresql://shop:***@127.0.0.1/shop"
    )


def test_bad_options_are_located(tmp_path):
    main = (
        write_config(
            tmp_path,
            """\
            sources:
              - name: a
                type: sql
                url: mysql://u@h/db
                query: SELECT 1 AS one
              - name: b
                type: sql
                url: sqlite:///x.db
                query: SELECT 1 AS one
                labels: [region, "bad-name"]
                values: [region]
            """,
        )
        / "fsincident.yaml"
    )
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, environ={})
    assert [str(p) for p in exc.value.problems] == [
        f"{main}:4: sources[0].url: unsupported database; use sqlite:///PATH or postgresql://USER@HOST/DB",
        f"{main}:10: sources[1].labels[1]: 'bad-name' is not a valid label name; alias the column (AS name)",
        f"{main}:11: sources[1].values[0]: column 'region' is also in labels",
    ]


@pytest.mark.slow
def test_daemon_fires_when_rows_arrive(tmp_path, shop_db):
    with sqlite3.connect(shop_db) as db:
        db.execute("CREATE TABLE jobs (queue TEXT, state TEXT)")
        db.executemany("INSERT INTO jobs VALUES (?, 'waiting')", [("orders",)] * 3 + [("mail",)] * 2)
    port = free_port()
    cfg = write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp_path}/state.db
        sources:
          - name: shop
            type: sql
            url: sqlite:///{shop_db}
            query: "SELECT queue, count(*) AS queue_depth FROM jobs WHERE state = 'waiting' GROUP BY queue"
            labels: [queue]
            interval: 1s
        """,
        {
            "shop.yaml": """
            groups:
              - name: queues
                interval: 1s
                source: shop
                rules:
                  - alert: QueueBacklog
                    expr: queue_depth > 10
            """
        },
    )
    d = DaemonProcess(cfg, port)
    try:
        d.start()
        d.token = d.create_token("read")
        status, body = d.api("GET", "/api/v1/rules")
        assert status == 200 and body["groups"][0]["rules"][0]["state"] == "inactive", body
        with sqlite3.connect(shop_db) as db:
            db.executemany("INSERT INTO jobs VALUES ('orders', 'waiting')", [()] * 10)
        incs = d.wait_incidents(lambda i: len(i) == 1)
        assert incs[0]["labels"]["queue"] == "orders" and incs[0]["labels"]["job"] == "shop"
        with sqlite3.connect(shop_db) as db:
            db.execute("UPDATE jobs SET state = 'done'")
        d.wait_incidents(lambda i: i[0]["state"] == "resolved")
    finally:
        d.stop()
