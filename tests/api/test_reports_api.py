"""``/api/v1/reports`` on the real daemon: a report that cannot be built answers a JSON error naming why."""

from __future__ import annotations

import pytest

from fsincident.core import FakeClock
from tests.api.conftest import serve
from tests.helpers import Exposition, Receiver, free_port, write_config
from tests.store.test_analytics import NOW

CONFIG = """
listen: 127.0.0.1:{port}
database: sqlite:///{db}
channels:
  - {{name: ops, urls: ["json://127.0.0.1:{hook}/ops"]}}
routes:
  - {{notify: ["channel:ops"]}}
reports:
  - {{name: weekly, schedule: "0 8 * * mon", period: week, to: ["channel:ops"], group_by: "team-name"}}
"""


@pytest.mark.asyncio
async def test_sending_a_report_that_cannot_be_built_is_a_json_error_not_a_500(tmp_path) -> None:
    exposition, receiver = Exposition().start(), Receiver().start()
    port = free_port()
    cfg = write_config(tmp_path / "cfg", CONFIG.format(port=port, db=tmp_path / "state.db", hook=receiver.port))
    try:
        async with serve(cfg, port, exposition, receiver, clock=FakeClock(NOW)) as api:
            status, body, _ = await api.call("POST", "/api/v1/reports/weekly/send", scope="admin")
            assert status == 409, (status, body)
            assert "group_by" in body["error"] and body["detail"]["parameter"] == "group_by", body
            status, body, _ = await api.call("GET", "/api/v1/reports", scope="read")
            assert status == 200 and body["reports"][0]["name"] == "weekly", body
    finally:
        exposition.stop()
        receiver.stop()
