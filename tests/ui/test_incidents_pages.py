"""The incidents list (filters, sort, paging, exports), an incident's detail page and its actions, against the
real daemon: what the pages show agrees with the JSON API, and actions from the UI land in the timeline."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from urllib.parse import quote

import pytest

from fsincident.store.tables import Incident
from fsincident.ui.incidents import simple_threshold
from tests.ui.conftest import sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")


def ids_of(page) -> list[int]:
    return [int(tr["data-id"]) for tr in page.soup.select("table#incidents tr.incident")]


async def resolved_incidents(ui, n: int, **labels: str) -> list[int]:
    """``n`` resolved incidents written straight to the store (fast; the list pages only read the table)."""
    now = ui.daemon.clock.now()
    rows = [
        Incident(
            group_key=f"bulk-{labels}-{i}-{now.timestamp()}"[:64],
            title=f"Bulk incident {i}",
            state="resolved",
            severity="warning",
            labels={"alertname": "Bulk", **labels},
            created_at=now,
            updated_at=now,
            resolved_at=now,
            resolved_by="test",
        )
        for i in range(n)
    ]
    async with ui.daemon.store.session() as s:
        s.add_all(rows)
        await s.flush()
        return [r.id for r in rows]


async def api_incidents(ui) -> list[dict]:
    status, body, _ = await ui.call("GET", "/api/v1/incidents?limit=10000", scope="read")
    assert status == 200
    return body["incidents"]


async def test_simple_threshold_reads_only_plain_comparisons():
    assert simple_threshold("queue_depth > 100") == ("queue_depth", ">", 100.0)
    assert simple_threshold("  cpu_seconds >= 0.5 ", "cpu_seconds") == ("cpu_seconds", ">=", 0.5)
    assert simple_threshold("10 < errors") == ("errors", ">", 10.0)
    assert simple_threshold("1e3 >= latency") == ("latency", "<=", 1000.0)
    assert simple_threshold("up == 0") == ("up", "==", 0.0)
    assert simple_threshold("queue_depth > 100", "other") is None
    assert simple_threshold("rate(x[5m]) > 1") is None
    assert simple_threshold("a > 1 and b < 2") is None
    assert simple_threshold("a + 1 > 2") is None
    assert simple_threshold("a > b") is None
    assert simple_threshold("") is None


async def test_filters_by_label_matchers_state_and_severity_agree_with_the_api(ui, browser):
    a = await ui.incidents(3, team="lista", severity="critical")
    b = await ui.incidents(2, team="listb", severity="info")
    status, _, _ = await ui.call("POST", f"/api/v1/incidents/{a[1]}/ack", scope="ack", json={})
    assert status == 200

    page = await browser.get("/ui/incidents?match=" + quote('team="lista"'))
    assert page.status == 200
    assert ids_of(page) == sorted(a, reverse=True)
    assert page.soup.select_one("form#filters input[name=match]")["value"] == 'team="lista"'

    page = await browser.get("/ui/incidents?match=" + quote('team=~"list[ab]"'))
    assert sorted(ids_of(page)) == sorted(a + b)

    page = await browser.get("/ui/incidents?match=" + quote('team=~"list.*", severity!="info"'))
    assert sorted(ids_of(page)) == sorted(a)
    page = await browser.get("/ui/incidents?match=" + quote('team=~"lista|listb|nope"'))
    assert sorted(ids_of(page)) == sorted(a + b)
    page = await browser.get("/ui/incidents?match=" + quote('team=~"LIST.*"'))  # case matters
    assert ids_of(page) == []
    page = await browser.get("/ui/incidents?match=" + quote('team=~"list.*", team!~".*b"'))
    assert sorted(ids_of(page)) == sorted(a)
    page = await browser.get("/ui/incidents?match=" + quote('team=~"list.*", nolabel=""'))
    assert sorted(ids_of(page)) == sorted(a + b)  # a missing label matches as the empty string

    page = await browser.get("/ui/incidents?state=acknowledged&match=" + quote('team=~"list."'))
    assert ids_of(page) == [a[1]]
    assert page.soup.select_one(f"tr.incident[data-id='{a[1]}']")["data-state"] == "acknowledged"

    page = await browser.get("/ui/incidents?severity=info&match=" + quote("team=listb"))
    assert sorted(ids_of(page)) == sorted(b)
    assert {tr["data-severity"] for tr in page.soup.select("tr.incident")} == {"info"}

    # Every filter combination the API can express gives the API's answer (through the JSON export: no paging).
    everything = await api_incidents(ui)
    for state in ("triggered", "acknowledged", "resolved"):
        page = await browser.get(f"/ui/incidents.json?state={state}")
        got = {r["id"] for r in json.loads(page.html)["incidents"]}
        assert got == {i["id"] for i in everything if i["state"] == state}


async def test_time_range_presets_and_from_to(ui, browser):
    [iid] = await ui.incidents(1, team="rangeteam")
    q = "match=" + quote('team="rangeteam"')
    assert ids_of(await browser.get(f"/ui/incidents?{q}&range=1h")) == [iid]
    assert ids_of(await browser.get(f"/ui/incidents?{q}&range=all")) == [iid]
    assert ids_of(await browser.get(f"/ui/incidents?{q}&to=2020-01-01")) == []
    assert ids_of(await browser.get(f"/ui/incidents?{q}&from=2020-01-01T00:00&to=2999-01-01T00:00")) == [iid]
    assert ids_of(await browser.get(f"/ui/incidents?{q}&from=2999-01-01T00:00Z")) == []


async def test_sort_order_and_paging(ui, browser):
    made = await resolved_incidents(ui, 55, team="pager")
    q = "match=" + quote('team="pager"')
    page = await browser.get(f"/ui/incidents?{q}")
    assert ids_of(page) == sorted(made, reverse=True)[:50]
    assert "55 matching" in page.soup.select_one("#incident-total").text
    nxt = page.soup.select_one(".pager a[rel=next]")
    assert nxt is not None and page.soup.select_one(".pager a[rel=prev]") is None
    page2 = await browser.get(nxt["href"])
    assert ids_of(page2) == sorted(made, reverse=True)[50:]
    assert page2.soup.select_one(".pager a[rel=next]") is None

    asc = await browser.get(f"/ui/incidents?{q}&sort=id&dir=asc")
    assert ids_of(asc) == sorted(made)[:50]
    # The column header links flip the direction of the current sort and keep the filters.
    link = asc.soup.select_one("th a[data-sort=id]")["href"]
    assert "dir=" not in link or "dir=desc" in link
    assert "match=" in link
    assert {a["data-sort"] for a in asc.soup.select("th a[data-sort]")} >= {"id", "created_at", "severity", "title"}

    mixed = await ui.incidents(1, team="sevsort", severity="info") + await ui.incidents(
        1, team="sevsort", severity="critical"
    )
    mixed += await ui.incidents(1, team="sevsort", severity="warning")
    page = await browser.get("/ui/incidents?sort=severity&dir=desc&match=" + quote("team=sevsort"))
    assert [tr["data-severity"] for tr in page.soup.select("tr.incident")] == ["critical", "warning", "info"]
    page = await browser.get("/ui/incidents?sort=severity&dir=asc&match=" + quote("team=sevsort"))
    assert [tr["data-severity"] for tr in page.soup.select("tr.incident")] == ["info", "warning", "critical"]


async def test_exports_contain_exactly_the_filtered_rows(ui, browser):
    made = await ui.incidents(4, team="export", note='a,b "quoted"')
    page = await browser.get("/ui/incidents?match=" + quote('team="export"'))
    csv_href = page.soup.select_one("a#export-csv")["href"]
    json_href = page.soup.select_one("a#export-json")["href"]
    assert "match=" in csv_href and "match=" in json_href

    got = await browser.get(csv_href)
    assert got.status == 200 and "attachment" in got.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(got.html)))
    assert sorted(int(r["id"]) for r in rows) == sorted(made)
    assert list(rows[0]) == [
        "id",
        "title",
        "state",
        "severity",
        "created_at",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
        "resolved_by",
        "labels",
    ]
    assert json.loads(rows[0]["labels"])["note"] == 'a,b "quoted"'

    got = await browser.get(json_href)
    assert got.status == 200 and "attachment" in got.headers["Content-Disposition"]
    body = json.loads(got.html)
    assert sorted(r["id"] for r in body["incidents"]) == sorted(made)
    assert body["count"] == 4
    api = {i["id"]: i for i in await api_incidents(ui)}
    for r in body["incidents"]:
        for k in ("title", "state", "severity", "created_at", "labels"):
            assert r[k] == api[r["id"]][k]

    empty = await browser.get("/ui/incidents.csv?match=" + quote('team="nobody-has-this"'))
    assert list(csv.reader(io.StringIO(empty.html)))[1:] == []


@pytest.mark.parametrize(
    "query",
    [
        "state=bogus",
        "severity=huge",
        "match=" + quote('team=~"("'),
        "match=" + quote("not a matcher"),
        "range=3y",
        "from=yesterday",
        "from=2026-02-01&to=2026-01-01",
        "sort=password",
        "dir=up",
        "page=abc",
        "page=0",
    ],
)
async def test_a_bad_filter_is_a_readable_400_page(ui, browser, query):
    for path in ("/ui/incidents", "/ui/incidents.csv", "/ui/incidents.json"):
        page = await browser.get(f"{path}?{query}")
        assert page.status == 400, (path, query)
        assert "Invalid filter" in page.html and "Traceback" not in page.html
        if path == "/ui/incidents":  # the form again, with what is wrong, to correct it
            assert page.soup.select_one("form#filters") is not None
            assert page.soup.select("#filter-errors li.error")


async def test_detail_shows_labels_alerts_and_the_timeline(ui, browser):
    iid = await ui.incident(team="detail", queue="q1")
    page = await browser.get(f"/ui/incidents/{iid}")
    assert page.status == 200
    inc = page.soup.select_one("#incident")
    assert inc["data-id"] == str(iid) and inc["data-state"] == "triggered"
    _, api, _ = await ui.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert api["title"] in page.soup.select_one(".incident-title").text
    alerts = page.soup.select("#alerts tr.alert")
    assert [tr["data-fingerprint"] for tr in alerts] == [a["fingerprint"] for a in api["alerts"]]
    assert "queue=q1" in alerts[0].text
    kinds = [li["data-kind"] for li in page.soup.select("#timeline li.event")]
    assert "triggered" in kinds
    # The forms post to this incident's actions and carry the CSRF token.
    for form in ("ack", "resolve", "escalate", "reassign", "note"):
        f = page.soup.select_one(f"form#{form}-form")
        assert f["action"] == f"/ui/incidents/{iid}/{form}"
        assert f.select_one("input[name=_csrf]")["value"]
    options = [o["value"] for o in page.soup.select("#reassign-form select[name=to] option")]
    assert options == ["user:alice", "user:bob", "schedule:primary", "channel:ops"]


async def test_pages_from_the_notification_log_show_in_the_timeline(ui, browser):
    iid = await ui.incident(queue="paged")  # routed to channel:ops, delivered to the local receiver
    for _ in range(100):
        page = await browser.get(f"/ui/incidents/{iid}")
        pages = page.soup.select("#timeline li.event[data-kind=page]")
        if pages and pages[0].select_one("[data-delivery=sent]"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(page.soup.select_one("#timeline"))
    assert "channel:ops" in pages[0].text
    assert pages[0].select_one("li.attempt[data-result=sent]") is not None
    kinds = [li["data-kind"] for li in page.soup.select("#timeline li.event")]
    assert kinds.index("triggered") < kinds.index("page")


async def test_ack_and_resolve_from_the_ui_record_the_session_and_via_ui(ui, browser):
    iid = await ui.incident(team="acking")
    page = await browser.post(f"/ui/incidents/{iid}/ack", {"note": "on it"})
    assert page.status == 200 and page.url.endswith(f"/ui/incidents/{iid}?done=acknowledged")
    assert page.soup.select_one(".flash") is not None
    assert page.soup.select_one("#incident")["data-state"] == "acknowledged"
    _, api, _ = await ui.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert api["state"] == "acknowledged" and api["acknowledged_by"] == "test-ack"
    [ev] = [e for e in api["timeline"] if e["kind"] == "acknowledged"]
    assert ev["actor"] == "test-ack" and ev["data"]["via"] == "ui" and ev["note"] == "on it"
    li = page.soup.select_one("#timeline li.event[data-kind=acknowledged]")
    assert li["data-actor"] == "test-ack" and li["data-via"] == "ui"

    page = await browser.post(f"/ui/incidents/{iid}/resolve", {})
    assert page.url.endswith("?done=resolved")
    _, api, _ = await ui.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert api["state"] == "resolved" and api["resolved_by"] == "test-ack"
    [ev] = [e for e in api["timeline"] if e["kind"] == "resolved"]
    assert ev["data"]["via"] == "ui"

    # Acknowledging a resolved incident is a conflict, explained in a sentence.
    page = await browser.post(f"/ui/incidents/{iid}/ack", {})
    assert page.status == 409 and "Cannot ack" in page.html and "Traceback" not in page.html


async def test_notes_from_the_ui_and_the_json_api(ui, browser):
    iid = await ui.incident(team="notes")
    page = await browser.post(f"/ui/incidents/{iid}/note", {"note": "first look: disk <b>full</b>"})
    assert page.url.endswith("?done=noted")
    li = page.soup.select_one("#timeline li.event[data-kind=note]")
    assert li["data-actor"] == "test-ack" and "first look: disk <b>full</b>" in li.select_one(".note").text
    assert "<b>full</b>" not in page.html  # escaped

    status, body, _ = await ui.call(
        "POST", f"/api/v1/incidents/{iid}/notes", scope="ack", json={"note": "from the API", "by": "carol"}
    )
    assert status == 201 and body["id"] == iid
    _, api, _ = await ui.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    notes = [e for e in api["timeline"] if e["kind"] == "note"]
    assert [(e["actor"], e["note"], e["data"]) for e in notes] == [
        ("test-ack", "first look: disk <b>full</b>", {"via": "ui"}),
        ("carol", "from the API", {}),
    ]
    assert (await ui.call("POST", f"/api/v1/incidents/{iid}/notes", scope="ack", json={}))[0] == 400
    assert (await ui.call("POST", f"/api/v1/incidents/{iid}/notes", scope="ack", json={"note": 3}))[0] == 400
    assert (await ui.call("POST", "/api/v1/incidents/999999/notes", scope="ack", json={"note": "x"}))[0] == 404
    assert (await ui.call("POST", f"/api/v1/incidents/{iid}/notes", scope="read", json={"note": "x"}))[0] == 403

    page = await browser.post(f"/ui/incidents/{iid}/note", {"note": "   "})
    assert page.status == 400


async def test_escalate_and_reassign_from_the_ui(ui, browser):
    iid = await ui.incident(team="app", queue="esc")  # on the escalation policy ``app``
    page = await browser.post(f"/ui/incidents/{iid}/escalate", {"note": "need help"})
    assert page.status == 200 and page.url.endswith("?done=escalated"), page.html[:800]
    page = await browser.post(f"/ui/incidents/{iid}/reassign", {"to": "user:bob"})
    assert page.url.endswith("?done=reassigned")
    _, api, _ = await ui.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    esc = [e for e in api["timeline"] if e["kind"] == "escalated" and e["actor"] == "test-ack"]
    assert esc and esc[-1]["data"]["via"] == "ui" and "need help" in esc[-1]["note"]
    [re] = [e for e in api["timeline"] if e["kind"] == "reassigned"]
    assert re["actor"] == "test-ack" and re["data"]["via"] == "ui" and re["data"]["to"] == "user:bob"
    li = page.soup.select_one("#timeline li.event[data-kind=reassigned]")
    assert "user:bob" in li.text

    page = await browser.post(f"/ui/incidents/{iid}/reassign", {"to": "user:nobody"})
    assert page.status == 400 and "nobody" in page.html
    plain = await ui.incident(queue="nopolicy")  # the catch-all route: no escalation policy
    page = await browser.post(f"/ui/incidents/{plain}/escalate", {})
    assert page.status == 409 and "no escalation policy" in page.html


async def test_a_read_only_session_sees_why_and_gets_403(ui):
    iid = await ui.incident(team="readonly")
    b = await sign_in(ui, "read")
    try:
        page = await b.get(f"/ui/incidents/{iid}")
        assert page.status == 200
        assert "ack" in page.soup.select_one("#readonly-note").text
        assert page.soup.select_one("#ack-form button")["disabled"] is not None
        for action in ("ack", "resolve", "escalate", "note"):
            got = await b.post(f"/ui/incidents/{iid}/{action}", {"note": "x"})
            assert got.status == 403 and "lacks the" in got.html and "Not allowed" in got.html
        _, api, _ = await ui.call("GET", f"/api/v1/incidents/{iid}", scope="read")
        assert api["state"] == "triggered"
        assert not [e for e in api["timeline"] if e["kind"] in ("acknowledged", "note", "escalated")]
    finally:
        await b.http.close()


async def test_unknown_incident_is_a_404_page(ui, browser):
    for path in ("/ui/incidents/999999", "/ui/incidents/abc", "/ui/incidents/99999999999"):
        page = await browser.get(path)
        assert page.status == 404 and "Incident not found" in page.html
    page = await browser.post("/ui/incidents/999999/ack", {})
    assert page.status == 404


async def test_label_values_are_escaped(ui, browser):
    iid = await ui.incident(team="xss", payload='<script>alert("x")</script>')
    for path in (f"/ui/incidents/{iid}", "/ui/incidents?match=" + quote("team=xss")):
        page = await browser.get(path)
        assert page.status == 200
        assert "<script>alert" not in page.html
        assert "&lt;script&gt;" in page.html
        assert not [s for s in page.soup.find_all("script") if "alert" in (s.string or "")]


async def test_the_chart_shows_the_triggering_series_the_threshold_and_the_firing_span(ui, browser):
    # QueueBacklog (queue_depth > 100) fires for queue=orders (500) by itself.
    for _ in range(100):
        found = [i for i in await api_incidents(ui) if i["labels"].get("alertname") == "QueueBacklog"]
        if found:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("QueueBacklog never fired")
    iid = found[0]["id"]
    for _ in range(50):  # the history records a point a second
        page = await browser.get(f"/ui/incidents/{iid}")
        svg = page.soup.select_one("#chart svg.line-chart")
        if svg is not None and int(svg.get("data-points", "0")) > 0:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(page.soup.select_one("#chart"))
    assert page.soup.select_one("#chart rect.span.firing") is not None
    assert float(page.soup.select_one("#chart line.threshold")["data-value"]) == 100.0
    assert svg["data-series"] == "1"  # only the alert's own series (queue=orders), not queue=mail
    assert "queue=orders" in svg.text and "queue=mail" not in svg.text


async def test_the_cli_adds_a_note(ui, capsys):
    from fsincident.cli import main

    iid = await ui.incident(team="clinote")
    argv = ["incidents", "note", str(iid), "checked the disk", "--url", ui.base, "--token", ui.tokens["ack"]]
    assert await asyncio.to_thread(main, argv) == 0
    assert f"#{iid}: note added" in capsys.readouterr().out
    _, api, _ = await ui.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert [(e["actor"], e["note"]) for e in api["timeline"] if e["kind"] == "note"] == [
        ("test-ack", "checked the disk")
    ]
    bad = ["incidents", "ack", str(iid), "stray text", "--url", ui.base, "--token", ui.tokens["ack"]]
    assert await asyncio.to_thread(main, bad) == 2


async def test_silence_this_opens_a_new_silence_prefilled_with_the_incidents_labels(ui, browser):
    iid = await ui.incident(team="app", queue="silence-me")
    page = await browser.get(f"/ui/incidents/{iid}")
    link = page.soup.select_one("a#silence-link")["href"]
    form = (await browser.get(link)).soup.select_one("form#silence-form")
    text = form.select_one("textarea[name=matchers]").get_text()
    assert 'queue="silence-me"' in text and 'team="app"' in text
