"""analytics.postmortem, the pure parts: TTD/TTA/TTR, Markdown escaping (hypothesis), the draft's sections."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.analytics.postmortem import (
    ChartPlan,
    Related,
    code_block,
    duration_text,
    incident_times,
    md_text,
    render_markdown,
    simple_threshold,
)

markdown_it = pytest.importorskip("markdown_it")

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=2)


def _md():
    # html=True: the worst case, a renderer that passes raw HTML through.
    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").enable("strikethrough")


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


def _incident(**over):
    inc = {
        "id": 42,
        "title": "QueueBacklog: orders has 500 jobs",
        "state": "resolved",
        "severity": "critical",
        "labels": {"alertname": "QueueBacklog", "queue": "orders", "team": "app"},
        "created_at": _iso(T0),
        "acknowledged_at": _iso(T0 + timedelta(minutes=7)),
        "acknowledged_by": "alice",
        "resolved_at": _iso(T0 + timedelta(minutes=30)),
        "resolved_by": "bob",
        "targets": ["user:alice", "channel:ops"],
        "escalation_policy": "app",
        "alerts": [
            {
                "alertname": "QueueBacklog",
                "origin": "rule:app/QueueBacklog",
                "labels": {"alertname": "QueueBacklog", "queue": "orders"},
                "annotations": {"summary": "orders has 500 jobs"},
                "value": 500.0,
                "state": "resolved",
                "starts_at": _iso(T0 - timedelta(minutes=2)),
                "ends_at": _iso(T0 + timedelta(minutes=29)),
            }
        ],
        "timeline": [
            {"id": 1, "at": _iso(T0), "kind": "triggered", "actor": "fsincident", "note": None, "data": {}},
            {
                "id": 2,
                "at": _iso(T0),
                "kind": "escalated",
                "actor": "fsincident",
                "note": "step 1 of app",
                "data": {
                    "policy": "app",
                    "step": 0,
                    "loop": 0,
                    "users": ["alice"],
                    "oncall": [{"schedule": "primary", "user": "alice"}],
                },
            },
            {"id": 3, "at": _iso(T0 + timedelta(minutes=7)), "kind": "acknowledged", "actor": "alice", "data": {}},
            {"id": 4, "at": _iso(T0 + timedelta(minutes=30)), "kind": "resolved", "actor": "bob", "data": {}},
        ],
    }
    inc.update(over)
    return inc


NOTIFICATIONS = [
    {
        "id": 1,
        "target": "user:alice",
        "destination": "mailto://a***@example.com",
        "kind": "trigger",
        "state": "sent",
        "attempts": 1,
        "created_at": _iso(T0),
        "sent_at": _iso(T0 + timedelta(seconds=2)),
        "last_error": None,
        "log": [],
    },
    {
        "id": 2,
        "target": "channel:ops",
        "destination": "json://127.0.0.1:1/ops",
        "kind": "trigger",
        "state": "failed",
        "attempts": 5,
        "created_at": _iso(T0),
        "sent_at": None,
        "last_error": "connection refused | <b>x</b>",
        "log": [],
    },
]


def test_times_follow_the_definitions():
    t = incident_times(_incident())
    assert (t.ttd, t.tta, t.ttr, t.tta_is_resolve) == (120.0, 420.0, 1800.0, False)
    assert t.impact_start == T0 - timedelta(minutes=2) and t.impact_end == T0 + timedelta(minutes=30)
    # Resolved without an ack: the resolve is the response.
    t = incident_times(_incident(acknowledged_at=None, acknowledged_by=None))
    assert (t.tta, t.ttr, t.tta_is_resolve) == (1800.0, 1800.0, True)
    # Open and unacknowledged: neither.
    t = incident_times(_incident(acknowledged_at=None, resolved_at=None, state="triggered"))
    assert (t.tta, t.ttr, t.impact_end) == (None, None, None)
    # An alert that started after the incident opened (grouped in later) detects nothing earlier.
    late = _incident()
    late["alerts"][0]["starts_at"] = _iso(T0 + timedelta(minutes=1))
    assert incident_times(late).ttd is None
    assert incident_times(_incident(alerts=[])).ttd is None
    with pytest.raises(ValueError):
        incident_times({"id": 1})


def test_duration_text():
    assert [duration_text(s) for s in (None, 0, 59.6, 61, 3600 * 5 + 60 * 7, 86400 * 2 + 3600)] == [
        "–",
        "0s",
        "1m 0s",
        "1m 1s",
        "5h 7m",
        "2d 1h",
    ]


def test_simple_threshold_moved_here_reads_only_plain_comparisons():
    assert simple_threshold("queue_depth > 100") == ("queue_depth", ">", 100.0)
    assert simple_threshold("10 < errors") == ("errors", ">", 10.0)
    assert simple_threshold("a > 1 and b < 2") is None
    from fsincident.ui.incidents import simple_threshold as ui_version

    assert ui_version is simple_threshold


def _text_of(cell_html: str) -> str:
    return " ".join(html.unescape(re.sub(r"<br\s*/?>", " ", cell_html)).split())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00") | st.just("\n")))
def test_escaped_text_stays_in_its_cell_and_renders_as_itself(text):
    doc = f"| a | b |\n|---|---|\n| {md_text(text)} | end |\n"
    out = _md().render(doc)
    cells = re.findall(r"<td>(.*?)</td>", out, flags=re.S)
    assert len(cells) == 2, out
    assert cells[1] == "end"
    # No HTML but the line breaks: the only tags in the cell are <br>.
    assert not re.search(r"<(?!br>)[a-zA-Z/!?]", cells[0]), cells[0]
    assert _text_of(cells[0]) == " ".join(text.split())


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\n")))
def test_escaped_text_as_a_paragraph_is_one_paragraph(text):
    out = _md().render(md_text(text, line_start=True) + "\n")
    if not text.split():
        return
    assert re.fullmatch(r"<p>.*</p>\n", out, flags=re.S), out
    assert _text_of(out[3:-5]) == " ".join(text.split())


def test_only_text_that_starts_a_line_gets_its_list_marker_escaped():
    assert md_text("2026-12-01 10:00") == "2026-12-01 10:00"
    assert md_text("127.0.0.1") == "127.0.0.1"
    assert md_text("1. first", line_start=True) == "1\\. first"
    assert md_text("- item", line_start=True) == "\\- item"
    assert md_text("2026-12-01", line_start=True) == "2026-12-01"


def test_code_blocks_outlast_backtick_runs():
    block = code_block("a ```` b\n```\nc", "python")
    out = _md().render(block + "\n\nafter\n")
    assert "<p>after</p>" in out
    assert html.unescape(re.search(r"<code[^>]*>(.*?)</code>", out, flags=re.S).group(1)) == "a ```` b\n```\nc\n"


def _render(inc=None, **kw):
    args = {
        "notifications": NOTIFICATIONS,
        "related": [],
        "config": None,
        "plan": ChartPlan(note="Series history is off (history.enabled), so there is no chart."),
        "chart_ref": None,
        "now": NOW,
        "ack_within": timedelta(minutes=5),
    }
    args.update(kw)
    return render_markdown(inc or _incident(), **args)


def test_the_draft_has_every_section_and_the_hand_checked_times():
    md = _render()
    heads = re.findall(r"^## (.+)$", md, flags=re.M)
    assert heads == [
        "Summary",
        "Impact",
        "Detection, response and resolution",
        "The series",
        "What fired",
        "Timeline",
        "Who was paged and when",
        "Related incidents",
        "Causes",
        "Contributing factors",
        "What went well",
        "Follow-ups",
    ]
    assert md.startswith("# Postmortem: incident #42 — QueueBacklog: orders has 500 jobs\n")
    assert "| Incident opened (detected) | 2026-12-01 10:00:00 UTC | TTD 2m 0s |" in md
    assert "TTA 7m 0s" in md and "over the 5m 0s target" in md and "TTR 30m 0s" in md
    assert "Impact window: **2026-12-01 09:58:00 UTC** to **2026-12-01 10:30:00 UTC** (32m 0s)" in md
    assert "acknowledged by alice after 7m 0s and was resolved by bob after 30m 0s" in md
    assert "user:alice (on call: schedule:primary)" in md
    assert "People paged: alice (first at 2026-12-01 10:00:00 UTC)." in md
    assert "- [ ] Find out why the acknowledgement took 7m 0s (target 5m 0s)" in md
    assert "- [ ] 1 notification(s) failed: check those destinations" in md
    assert md.count("- [ ]") >= 3
    assert "Series history is off" in md


def test_an_open_incident_and_an_ingested_alert():
    inc = _incident(state="triggered", acknowledged_at=None, acknowledged_by=None, resolved_at=None, resolved_by=None)
    inc["alerts"][0]["origin"] = "pagerduty:shop"
    md = _render(inc, notifications=[])
    assert "is still triggered (2h 0m so far)" in md
    assert "ongoing at 2026-12-01 12:00:00 UTC" in md
    assert "the PagerDuty Events API integration shop" in md
    assert "Nobody was notified." in md


def test_user_text_cannot_inject_html_or_break_tables():
    evil = "<script>alert(1)</script> | x | y |\n# heading\n- [x](javascript:alert(1)) **bold** `code`"
    inc = _incident(title=evil, labels={"team": evil})
    inc["timeline"].append({"id": 9, "at": _iso(T0), "kind": "note", "actor": evil, "note": evil, "data": {}})
    rel = Related(7, evil, "warning", "resolved", T0, T0 + timedelta(minutes=1), overlapping=True)
    rel.shared = [("team", evil)]
    md = _render(inc, related=[rel])
    out = _md().render(md)
    assert "<script" not in out
    assert 'href="javascript' not in out
    assert "<strong>bold" not in out and "<code>code" not in out
    assert not re.search(r"^<h1>heading", out, flags=re.M)
    # Every table row has as many cells as its header.
    for table in re.findall(r"<table>.*?</table>", out, flags=re.S):
        widths = {len(re.findall(r"<t[hd]>", row)) for row in re.findall(r"<tr>.*?</tr>", table, flags=re.S)}
        assert len(widths) == 1, table
    assert md.count("\\<script") == 0 and "&lt;script&gt;" in md


def test_the_chart_is_referenced_with_its_address():
    plan = ChartPlan(title="queue_depth on app", lines=[("q", [(T0, 1.0)])], threshold_text="queue_depth > 100")
    md = _render(plan=plan, chart_ref="incident-42-chart.png")
    assert "![queue\\_depth on app](incident-42-chart.png)" in md
    assert "threshold `queue_depth > 100`" in md
    out = _md().render(md)
    assert '<img src="incident-42-chart.png"' in out


class _History:
    """A fake history reader: series per (source, metric), filtered by equality matchers."""

    def __init__(self, series, *, fail=None, kind="scrape"):
        self.series, self.fail, self.kind, self.calls = series, fail, kind, []

    def source_kind(self, source):
        return self.kind

    async def range(self, source, metric, matchers=(), *, start, end, max_points=400):
        self.calls.append((source, metric, tuple((m.name, m.value) for m in matchers), start, end))
        if self.fail is not None:
            raise self.fail
        from types import SimpleNamespace

        return [
            SimpleNamespace(labels=labels, points=points)
            for labels, points in self.series
            if all(labels.get(m.name) == m.value for m in matchers)
        ]


def _config(expr_text="queue_depth > 100", metrics=("queue_depth",), enabled=True):
    from types import SimpleNamespace

    rule = SimpleNamespace(
        alert="QueueBacklog",
        source="app",
        labels={"team": "app"},
        expr=SimpleNamespace(text=expr_text, metrics=list(metrics)),
    )
    return SimpleNamespace(
        groups=[SimpleNamespace(name="app", rules=[rule])],
        history=SimpleNamespace(enabled=enabled),
        analytics=SimpleNamespace(timezone="UTC"),
    )


def _pts(_name: str = ""):
    return [((T0 + timedelta(minutes=i)).timestamp(), float(i), float(i), float(i)) for i in range(-5, 5)]


async def test_series_plan_reads_the_alerts_series_with_span_marks_and_threshold():
    from fsincident.analytics.postmortem import draw, series_plan

    hist = _History([({"queue": "orders"}, _pts("orders")), ({"queue": "mail"}, _pts("mail"))])
    inc = _incident()
    inc["alerts"][0]["labels"] = {"alertname": "QueueBacklog", "queue": "orders", "team": "app", "severity": "x"}
    plan = await series_plan(_config(), hist, inc, NOW)
    assert plan.note is None
    assert [label for label, _ in plan.lines] == ["queue_depth{queue=orders}"]
    # Only the series' own labels select it (not alertname, severity or the rule's labels).
    assert hist.calls[0][:3] == ("app", "queue_depth", (("queue", "orders"),))
    start, end = hist.calls[0][3], hist.calls[0][4]
    assert start == T0 - timedelta(minutes=2) - timedelta(minutes=30) and end == T0 + timedelta(minutes=40)
    assert plan.spans == [(T0, T0 + timedelta(minutes=30))]
    assert plan.marks == [(T0 + timedelta(minutes=7), "ack by alice"), (T0 + timedelta(minutes=30), "resolved")]
    assert plan.threshold == 100.0 and plan.threshold_text == "queue_depth > 100"
    png = draw(plan)
    assert png is not None and png.startswith(b"\x89PNG")


async def test_series_plan_falls_back_for_aggregates_and_explains_every_missing_chart():
    from fsincident.analytics.postmortem import draw, series_plan

    # An aggregating rule: the alert has a label the series lacks; the series whose labels agree are drawn.
    hist = _History([({"queue": "orders"}, _pts("orders")), ({"queue": "mail"}, _pts("mail"))])
    inc = _incident()
    inc["alerts"][0]["labels"] = {"alertname": "QueueBacklog", "queue": "orders", "region": "eu"}
    plan = await series_plan(_config("sum(queue_depth) > 100"), hist, inc, NOW)
    assert [label for label, _ in plan.lines] == ["queue_depth{queue=orders}"] and plan.threshold is None

    async def note(config, history, inc=None):
        plan = await series_plan(config, history, inc or _incident(), NOW)
        assert plan.lines == [] and draw(plan) is None
        return plan.note

    assert "no longer configured" in await note(None, hist)
    assert "history.enabled" in await note(_config(enabled=False), hist)
    assert "history.enabled" in await note(_config(), None)
    assert "reads no metric" in await note(_config(metrics=()), hist)
    assert "No recorded history" in await note(_config(), _History([]))
    ingested = _incident()
    ingested["alerts"][0]["origin"] = "alertmanager"
    assert "comes from a rule" in await note(_config(), hist, ingested)

    class HistoryError(Exception):
        def __init__(self, message):
            super().__init__(message)
            self.message = message

    assert await note(_config(), _History([], fail=HistoryError("no source named 'app'"))) == (
        "No chart: no source named 'app'"
    )
    assert "could not be read" in await note(_config(), _History([], fail=RuntimeError("boom")))
    # A prometheus source answers range queries even with the daemon's own history off.
    plan = await series_plan(
        _config(enabled=False), _History([({"queue": "orders"}, _pts("o"))], kind="prometheus"), _incident(), NOW
    )
    assert plan.lines
