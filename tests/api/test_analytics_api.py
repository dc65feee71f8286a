"""``/api/v1/analytics/...`` and ``fsincident report`` on the real daemon over the hand-worked history of
``tests/store/test_analytics.py`` (JSON, CSV export, every bad parameter a JSON 400 naming it)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio

from fsincident.core import FakeClock
from fsincident.store.tables import Incident
from tests.api.conftest import Api, serve
from tests.helpers import Exposition, Receiver, free_port, run_cli, write_config
from tests.store.test_analytics import END, NOW, T0, seed

module_loop = pytest.mark.asyncio(loop_scope="module")
PERIOD = urlencode({"from": "2026-03-02T00:00:00Z", "to": "2026-03-09T00:00:00Z"})

CONFIG = """
listen: 127.0.0.1:{port}
database: sqlite:///{db}
channels:
  - {{name: ops, urls: ["json://127.0.0.1:{hook}/ops"]}}
users:
  - {{name: alice, timezone: Europe/Berlin}}
  - {{name: bob, timezone: UTC}}
  - {{name: carol}}
routes:
  - {{notify: ["channel:ops"]}}
analytics:
  flap_count: 2
  services:
    - {{name: api, target: 99.9, matchers: ['service="api"']}}
reports:
  - {{name: weekly, schedule: "0 8 1 1 *", period: week, to: ["channel:ops"], sections: [summary, sla]}}
"""


def assert_error(status: int, body: Any, expected: int = 400, parameter: str | None = None) -> None:
    assert status == expected, (status, body)
    assert isinstance(body, dict) and set(body) == {"error", "detail"}, body
    if parameter is not None:
        assert body["detail"]["parameter"] == parameter, body
        assert parameter in body["error"] or parameter == "sections", body


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    directory = tmp_path_factory.mktemp("analytics")
    exposition, receiver = Exposition().start(), Receiver().start()
    port = free_port()
    cfg = write_config(directory / "cfg", CONFIG.format(port=port, db=directory / "state.db", hook=receiver.port))
    try:
        async with serve(cfg, port, exposition, receiver, clock=FakeClock(NOW)) as a:
            a.daemon.analytics.shifts = None  # no schedules configured: on-call hours come from pages only
            ids = await seed(a.daemon.store)
            async with a.daemon.store.session() as s:  # a title a spreadsheet would run as a formula
                inc = await s.get(Incident, ids["E"])
                assert inc is not None
                inc.title = '=HYPERLINK("http://evil")'
                s.add(inc)
            a.exposition = exposition
            yield a
    finally:
        exposition.stop()
        receiver.stop()


@module_loop
async def test_report_json(api: Api) -> None:
    status, rep, headers = await api.call("GET", f"/api/v1/analytics/report?{PERIOD}", scope="read")
    assert status == 200, rep
    assert headers["Content-Type"].startswith("application/json")
    assert set(rep) == {
        "period",
        "group_by",
        "generated_at",
        "timezone",
        "summary",
        "response",
        "daily",
        "fatigue",
        "oncall",
        "sla",
        "capacity",
        "incidents",
    }
    assert rep["period"] == {"from": "2026-03-02T00:00:00Z", "to": "2026-03-09T00:00:00Z", "seconds": 604800.0}
    s = rep["summary"]
    assert (s["incidents"], s["pages"], s["reopens"], s["escalations"]) == (5, 5, 2, 2)
    assert s["mtta_seconds"] == {"median": 900.0, "p90": 1200.0, "n": 4}
    assert [r["group"] for r in rep["response"]] == ["api", "(none)", "db"]
    assert {p["user"]: p["night"] for p in rep["fatigue"]["people"]} == {"alice": 1, "bob": 2}
    assert rep["sla"][0]["downtime_seconds"] == 3600.0
    assert len(rep["daily"]) == 7 and len(rep["incidents"]) == 5

    # period= ends at to (or now); ack_within, group_by and sections narrow it
    q = urlencode({"period": "7d", "to": "2026-03-09T00:00:00Z", "group_by": "severity", "ack_within": "20m"})
    status, rep2, _ = await api.call("GET", f"/api/v1/analytics/report?{q}&sections=summary,response", scope="read")
    assert status == 200, rep2
    assert rep2["period"] == rep["period"] and rep2["group_by"] == "severity"
    assert set(rep2) >= {"summary", "response"} and "fatigue" not in rep2 and "sla" not in rep2
    assert rep2["summary"]["acked_within"] == {"seconds": 1200.0, "count": 4, "percent": 80.0}
    assert {r["group"] for r in rep2["response"]} == {"critical", "warning", "info"}
    # the default period: the 7 days before now (NOW is an hour after the seeded week: A opened at its start, H in)
    status, rep3, _ = await api.call("GET", "/api/v1/analytics/summary", scope="read")
    assert status == 200 and rep3["period"]["to"] == "2026-03-09T01:00:00Z" and rep3["summary"]["incidents"] == 6


@module_loop
async def test_each_section(api: Api) -> None:
    for name in ("summary", "response", "daily", "fatigue", "oncall", "sla", "capacity", "incidents"):
        status, body, _ = await api.call("GET", f"/api/v1/analytics/{name}?{PERIOD}", scope="read")
        assert status == 200, (name, body)
        assert set(body) == {"period", "group_by", "generated_at", "timezone", name}, name
    status, body, _ = await api.call("GET", f"/api/v1/analytics/incidents?{PERIOD}&limit=2", scope="read")
    assert [i["severity"] for i in body["incidents"]] == ["info", "critical"]


@module_loop
async def test_csv_export(api: Api) -> None:
    status, text, headers = await api.call("GET", f"/api/v1/analytics/response?{PERIOD}&format=csv", scope="read")
    assert status == 200, text
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"].startswith('attachment; filename="analytics-response-')
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["group"] for r in rows] == ["api", "(none)", "db"]
    assert rows[0]["incidents"] == "3" and rows[0]["mttr_median_seconds"] == "1200.0"
    assert rows[0]["acked_within_percent"] == "66.67"

    status, text, _ = await api.call("GET", f"/api/v1/analytics/incidents?{PERIOD}&format=csv", scope="read")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["title"] == '\'=HYPERLINK("http://evil")'  # quoted: not a formula
    assert json.loads(rows[-1]["labels"]) == {"alertname": "HighLatency", "service": "api"}

    status, text, _ = await api.call("GET", f"/api/v1/analytics/report?{PERIOD}&format=csv", scope="read")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["section"] for r in rows} == {"summary", "response", "daily", "fatigue", "oncall", "sla", "incidents"}
    [summary] = [r for r in rows if r["section"] == "summary"]
    assert summary["incidents"] == "5" and summary["mtta_median_seconds"] == "900.0"
    assert len([r for r in rows if r["section"] == "daily"]) == 7


@module_loop
async def test_bad_input_is_a_json_400_naming_the_parameter(api: Api) -> None:
    for query, parameter in [
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-03-02T00:00:00", "from"),  # no offset
        ("from=2026-03-09T00:00:00Z&to=2026-03-02T00:00:00Z", "from"),
        ("period=soon", "period"),
        ("period=0s", "period"),
        ("period=500d", "period"),
        ("from=now-1d&to=now&period=1d", "period"),
        ("group_by=no%20spaces", "group_by"),
        ("ack_within=-5m", "ack_within"),
        ("limit=ten", "limit"),
        ("limit=0", "limit"),
        ("format=xml", "format"),
        ("sections=summary,bogus", "sections"),
        ("frm=now", "frm"),
    ]:
        status, body, headers = await api.call("GET", f"/api/v1/analytics/report?{query}", scope="read")
        assert_error(status, body, 400, parameter)
        assert headers["Content-Type"].startswith("application/json")
    status, body, _ = await api.call("GET", "/api/v1/analytics/summary?sections=summary", scope="read")
    assert_error(status, body, 400, "sections")
    status, body, _ = await api.call("GET", "/api/v1/analytics/nope", scope="read")
    assert_error(status, body, 404)
    status, body, _ = await api.call("GET", "/api/v1/analytics/report")
    assert_error(status, body, 401)
    status, body, _ = await api.call("GET", "/api/v1/analytics/report", scope="ingest")
    assert_error(status, body, 403)


def _cli(api: Api, *args: str) -> Any:
    env = {"FSINCIDENT_URL": api.base, "FSINCIDENT_TOKEN": api.tokens["admin"], "TZ": "UTC"}
    return run_cli("report", *args, env=env, timeout=60)


@module_loop
async def test_cli(api: Api) -> None:
    period = ("--from", T0.isoformat(), "--to", END.isoformat())
    res = await asyncio.to_thread(_cli, api, "summary", *period)
    assert res.returncode == 0, res.stderr
    lines = dict(line.split("  ", 1) for line in res.stdout.splitlines())
    assert lines["Incidents"].strip() == "5"
    assert lines["MTTA (median / p90)"].strip() == "15m / 20m  (n=4)"
    assert lines["Acknowledged within 15m"].strip() == "2 (40%)"

    res = await asyncio.to_thread(_cli, api, "all", *period, "--group-by", "rule")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for title in ("Summary", "Response by rule", "Incidents per day", "Alert fatigue", "On-call load", "SLA"):
        assert f"\n{title}" in out, title
    assert "HighLatency" in out and "flapping" in out and "-495.24%" in out

    res = await asyncio.to_thread(_cli, api, "fatigue", *period, "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {(r["kind"], r.get("rule") or r.get("user")) for r in rows} >= {("rule", "HighLatency"), ("person", "bob")}

    res = await asyncio.to_thread(_cli, api, "sla", *period, "--format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["sla"][0]["budget_left_percent"] == -495.24

    res = await asyncio.to_thread(_cli, api, "oncall", "--from", "yesterday")
    assert res.returncode == 2 and "--from" in res.stderr
    res = await asyncio.to_thread(_cli, api, "summary", "--period", "soon")
    assert res.returncode == 1 and "period" in res.stderr

    res = await asyncio.to_thread(_cli, api, "scheduled")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("NAME") and "weekly" in res.stdout and "0 8 1 1 *" in res.stdout
    res = await asyncio.to_thread(_cli, api, "send", "nope")
    assert res.returncode == 1 and "404" in res.stderr
    res = await asyncio.to_thread(_cli, api, "send")
    assert res.returncode == 2
