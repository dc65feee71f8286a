"""Rendering scheduled reports and shift summaries: HTML for e-mail, text elsewhere, overrides with fallback, the
charts of the outbox row as attachments, and the webhook JSON that carries them."""

from __future__ import annotations

import base64

from fsincident.notify.channels.apprise import attachments
from fsincident.notify.channels.webhook import WebhookNotifier, WebhookOptions
from fsincident.notify.pipeline import attachments_of
from fsincident.notify.render import Renderer, sample_report, sample_shift
from fsincident.plugins import Attachment, Message
from fsincident.sandbox import CompiledTemplate

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def data_with_chart() -> dict:
    data = sample_report()
    data["charts"] = [
        {"name": "incidents-per-day", "title": "Incidents per day", "png_base64": base64.b64encode(PNG).decode()}
    ]
    return data


def test_each_style_renders_a_report():
    r = Renderer(external_url="https://fsi.example")
    html = r.report("email", "report", data_with_chart(), "channel:ops")
    assert html.format == "html" and html.problems == ()
    assert html.title == "Weekly report: 2026-03-01 to 2026-03-07"
    assert "<table" in html.body and "https://fsi.example/api/v1/incidents/1" in html.body
    assert "incidents-per-day.png" in html.body
    for style in ("email-text", "text", "chat", "raw"):
        page = r.report(style, "report", data_with_chart(), "channel:ops")
        assert page.format == "text" and page.problems == ()
        assert "MTTA: median 5m, p90 15m (n=4)" in page.body
        assert "- api: 99.950% up (target 99.900%)" in page.body
        assert "disk/DiskWillFill disk_free_bytes instance=db-1: reaches 0.0 in 10.0h" in page.body


def test_sections_left_out_are_not_shown():
    data = sample_report()
    for key in ("fatigue", "oncall", "capacity", "incidents", "response"):
        del data["report"][key]
    body = Renderer().report("text", "report", data, "").body
    assert "SUMMARY" in body and "SLA" in body
    assert "ALERT FATIGUE" not in body and "INCIDENTS" not in body and "CAPACITY" not in body


def test_report_text_is_escaped_in_html():
    data = sample_report()
    data["report"]["incidents"][0]["title"] = "<script>alert(1)</script> & more"
    body = Renderer().report("email", "report", data, "").body
    assert "<script>" not in body and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in body


def test_a_shift_summary_renders_in_both_forms():
    r = Renderer()
    text = r.report("text", "handoff_summary", sample_shift(), "user:bob")
    assert text.title == "Shift summary for infra-primary: alice handed over to bob"
    assert "1 opened, 0 acknowledged, 0 resolved, 1 still open; 2 pages to alice" in text.body
    assert "Still open:\n- #1 [critical] DiskFull" in text.body
    html = r.report("email", "handoff_summary", sample_shift(), "user:bob")
    assert html.format == "html" and "Still open" in html.body and "<table" in html.body


def test_a_broken_override_falls_back_to_the_shipped_template():
    r = Renderer(
        {"report.txt": CompiledTemplate("{{ nope.nothing }}"), "report_subject": CompiledTemplate("S: {{ title }}")}
    )
    page = r.report("text", "report", sample_report(), "")
    assert page.title == "S: Weekly report: 2026-03-01 to 2026-03-07"
    assert "SUMMARY" in page.body
    assert page.problems and "templates/report.txt.j2 failed" in page.problems[0]
    assert r.check() == ["templates/report.txt.j2: template error: 'nope' is undefined (rendering a sample page)"]


def test_charts_become_attachments():
    [att] = attachments_of(data_with_chart())
    assert att == Attachment("incidents-per-day.png", PNG, "image/png")
    bad = {"charts": [{"name": "x", "png_base64": "%%%"}, {"png_base64": base64.b64encode(PNG).decode()}, "junk"]}
    assert [a.name for a in attachments_of(bad)] == ["chart-2.png"]  # one that does not decode is left out
    assert attachments_of({}) == ()
    assert (
        attachments_of({"charts": [{"name": "../../etc/passwd", "png_base64": ""}]})[0].name == "------etc-passwd.png"
    )
    msg = Message("t", "b", "report", attachments=(att,))
    files = attachments(msg)
    assert files is not None and len(files) == 1 and files[0].name == "incidents-per-day.png"
    assert attachments(Message("t", "b", "trigger")) is None


def test_webhook_json_carries_the_report_and_its_charts():
    att = Attachment("incidents-per-day.png", PNG)
    data = {k: v for k, v in data_with_chart().items() if k != "charts"}
    msg = Message("Weekly", "text", "report", "info", data=data, attachments=(att,))
    hook = WebhookNotifier(WebhookOptions(name="hook", type="webhook", url="http://127.0.0.1:9/x", format="json"))
    body = hook.payload(msg)
    assert body["kind"] == "report" and body["report"]["summary"]["incidents"] == 4
    assert body["attachments"] == [
        {"name": "incidents-per-day.png", "mimetype": "image/png", "content_base64": base64.b64encode(PNG).decode()}
    ]
    am = WebhookNotifier(WebhookOptions(name="am", type="webhook", url="http://127.0.0.1:9/x"))
    assert am.payload(msg) is None  # Alertmanager receivers get no reports


async def test_build_adds_the_capacity_charts_of_series_heading_for_exhaustion(monkeypatch):
    from datetime import UTC, datetime

    from fsincident.analytics import capacity
    from fsincident.analytics.reports import ReportScheduler
    from fsincident.config.model import ReportOptions

    calls = []

    async def fake_chart(row, history, now, *, lookback=None, tz="UTC"):
        calls.append((row["metric"], tz))
        if row["metric"] == "broken":
            raise RuntimeError("no history")
        return PNG

    monkeypatch.setattr(capacity, "capacity_chart", fake_chart)
    rows = [
        {"rule": "disk/Fill", "metric": m, "seconds_to_exhaustion": s}
        for m, s in (("a", 10.0), ("b", None), ("broken", 20.0), ("c", 30.0), ("d", 40.0))
    ]

    class Analytics:
        store = clock = None
        history = object()

        async def report(self, start, end, **kw):
            return {"capacity": rows}

    r = ReportOptions(name="cap", schedule="0 8 * * *", to=["channel:ops"], timezone="Europe/Berlin")
    data = await ReportScheduler(Analytics()).build(
        r, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    )
    # The first three rows heading somewhere; the one whose chart fails is left out.
    assert calls == [("a", "Europe/Berlin"), ("broken", "Europe/Berlin"), ("c", "Europe/Berlin")]
    assert [c["name"] for c in data["charts"]] == ["capacity-1", "capacity-3"]
    assert data["title"] == "cap: 2026-03-01 01:00 to 2026-03-02 01:00 CET"


def test_a_report_to_chat_pings_nobody():
    """An incident title or label from an alert (``@channel``, Discord's ``@everyone``) must not ping a whole chat
    channel from a scheduled report or shift summary, as it cannot from a page."""
    data = sample_report()
    data["report"]["incidents"][0]["title"] = "@everyone db-1 is down"
    data["report"]["response"][0]["group"] = "@here"
    page = Renderer().report("chat", "report", data, "channel:ops")
    assert "@everyone" not in page.body and "@here" not in page.body
    assert "@\u200beveryone db-1 is down" in page.body
    shift = sample_shift()
    shift["summary"]["still_open"][0]["title"] = "@channel disk full"
    page = Renderer().report("chat", "handoff_summary", shift, "user:bob")
    assert "@channel" not in page.body and "@\u200bchannel disk full" in page.body


def test_the_stored_text_of_a_report_pings_nobody_in_chat_either():
    """When the templates cannot render, the row's stored plain text goes out: to chat, defused like the rest."""
    from types import SimpleNamespace

    from fsincident.notify.pipeline import Render
    from fsincident.store.tables import Outbox

    row = Outbox(
        incident_id=None,
        target="channel:ops",
        dest_index=0,
        kind="handoff_summary",
        severity="info",
        title="Shift summary for @here",
        body="- open #1 [critical] @everyone db-1 is down",
        state="pending",
        data=None,
    )
    stage = Render.__new__(Render)
    stage.ctx = SimpleNamespace(renderer=None)
    for style, pinged in (("chat", False), ("text", True)):
        d = stage._report(SimpleNamespace(row=row, message=None), style)
        assert ("@everyone" in d.message.body) is pinged and ("@here" in d.message.title) is pinged
