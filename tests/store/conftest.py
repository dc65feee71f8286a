"""Store fixtures: a migrated Store on the parametrised backend, and helpers to feed the incidents stage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from fsincident.core import FakeClock
from fsincident.store import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    st = Store(db_url)
    await st.upgrade()
    try:
        yield st
    finally:
        await st.close()
