"""A scheduled report from the real daemon, received by e-mail: ``fsincident run`` with a report scheduled every
minute to a ``mailto`` channel, a local aiosmtpd server, and a mail with a text part, an HTML part and PNG charts
that decode; ``GET /api/v1/reports`` shows its fire times and ``POST /api/v1/reports/NAME/send`` queues one now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import free_port, mailto, write_config

pytestmark = pytest.mark.slow

WAIT = 100.0  # seconds: the next minute's fire (at most 60 s away), the report, its charts and the delivery


def config(tmp_path: Path, port: int, smtp_port: int) -> Path:
    mail = mailto(smtp_port)
    return write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp_path}/state.db
        channels:
          - {{name: mail, urls: ["{mail}"]}}
        analytics:
          services:
            - {{name: api, target: 99.9, matchers: ['service="api"']}}
        reports:
          - name: minutely
            title: Ops report
            schedule: "* * * * *"
            period: 1h
            to: [channel:mail]
            sections: [summary, response, sla, incidents]
        """,
    )


def parts(msg: EmailMessage) -> tuple[str, str, list[tuple[str, bytes]]]:
    """The text part, the HTML part and the attachments (file name, bytes) of a mail."""
    text = html = ""
    files: list[tuple[str, bytes]] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        if name:
            files.append((name, part.get_payload(decode=True)))
        elif part.get_content_type() == "text/plain":
            text = part.get_content()
        elif part.get_content_type() == "text/html":
            html = part.get_content()
    return text, html, files


def test_a_scheduled_report_arrives_by_email_with_its_charts(tmp_path, smtp, spawn):
    inbox, smtp_port = smtp
    port = free_port()
    d = spawn(config(tmp_path, port, smtp_port), port)
    d.token = d.create_token("admin")
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": "ApiDown", "service": "api", "severity": "critical"},
        "annotations": {"summary": "api is down"},
        "startsAt": (now - timedelta(seconds=30)).isoformat().replace("+00:00", "Z"),
        "endsAt": (now + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
    }
    status, body = d.api("POST", "/api/v2/alerts", [alert])
    assert status == 200, body
    d.wait_incidents(lambda incs: len(incs) == 1)

    [(_, _, msg)] = inbox.wait(1, WAIT)[:1]
    assert msg["Subject"].startswith("Ops report: ")
    text, html, files = parts(msg)
    assert "Period:" in text and "Period:" in html
    assert "<table" in html and "SLA" in html
    names = sorted(n for n, _ in files)
    assert "incidents-per-day.png" in names and "sla-uptime.png" in names
    for name, content in files:
        img = Image.open(BytesIO(content))
        img.load()
        assert img.format == "PNG" and img.size[0] >= 400, name

    status, listed = d.api("GET", "/api/v1/reports")
    assert status == 200, listed
    [rep] = listed["reports"]
    assert rep["name"] == "minutely" and rep["schedule"] == "* * * * *" and rep["to"] == ["channel:mail"]
    assert rep["last_fire_at"] is not None and rep["next_at"] > rep["last_fire_at"]

    # On demand: the incident pushed above is in the report's hour.
    before = len(inbox.messages)
    status, out = d.api("POST", "/api/v1/reports/minutely/send")
    assert status == 202 and out["report"] == "minutely" and out["queued"] == 1, out
    mails = inbox.wait(before + 1, 30)
    text, html, files = parts(mails[-1][2])
    assert "ApiDown" in text or "api is down" in text, text
    assert files
    status, out = d.api("POST", "/api/v1/reports/nope/send")
    assert status == 404 and "nope" in out["error"]
    status, out = d.api("POST", "/api/v1/reports/minutely/send", token=d.create_token("read"))
    assert status == 403
    assert d.stop() == 0
    logs = d.logs()
    for problem in ("report_failed", "render_failed", "template_failed", "report_chart_failed", "Traceback"):
        assert problem not in logs, logs[-3000:]
