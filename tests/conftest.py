"""Shared fixtures: database URLs for SQLite and a throw-away PostgreSQL database per test; a local SMTP server."""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from tests.helpers import Inbox, free_port

PG_ADMIN = os.environ.get("FSINCIDENT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_available() -> bool:
    try:
        asyncio.run(_pg("SELECT 1"))
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_available() -> bool:
    ok = _pg_available()
    if not ok and os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI but {PG_ADMIN} is unreachable")
    return ok


@pytest.fixture
def pg_url(pg_available):
    """A fresh PostgreSQL database with a unique name, dropped after the test."""
    if not pg_available:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}")
    name = f"fsi_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path}/state.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Parametrises a test over SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return request.getfixturevalue("pg_url")


def pytest_configure(config):
    """In-process daemons log like the real one: JSON lines, no local variables in tracebacks."""
    from fsincident.obs import configure_logging

    configure_logging("warning")


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd) on a free loopback port: ``(Inbox, port)``."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()
