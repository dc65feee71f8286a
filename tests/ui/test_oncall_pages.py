"""The on-call pages of the web UI against the real daemon: who is on call, the 14-day timeline, overrides from
the UI, the user page."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from fsincident.appriseurl import redact
from tests.ui.conftest import sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")

BERLIN = ZoneInfo("Europe/Berlin")


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def api_oncall(ui, at: str | None = None) -> str | None:
    path = "/api/v1/oncall?schedule=primary" + (f"&at={at}" if at else "")
    status, body, _ = await ui.call("GET", path, scope="read")
    assert status == 200
    return body["oncall"][0]["user"] if body["oncall"] else None


async def test_the_oncall_page_shows_who_the_api_says_is_on_call(ui, browser):
    page = await browser.get("/ui/oncall")
    assert page.status == 200
    sched = page.soup.select_one('.schedule[data-schedule="primary"]')
    user = sched.select_one(".now .user")
    assert user.text.strip() == await api_oncall(ui) and user.text.strip() in ("alice", "bob")
    assert user["href"] == f"/ui/users/{user.text.strip()}"
    assert page.soup.select_one('nav a.active[href="/ui/oncall"]') is not None


async def test_the_timeline_has_layer_override_and_final_rows_covering_the_coming_14_days(ui, browser):
    page = await browser.get("/ui/oncall")
    svg = page.soup.select_one('.schedule[data-schedule="primary"] svg.oncall-timeline')
    assert svg is not None and svg["data-tz"] == "Europe/Berlin"
    assert [g["data-row"] for g in svg.select("g.row")] == ["layer-1", "overrides", "final"]
    final = svg.select('g.row[data-row="final"] rect.shift')
    assert {r["data-user"] for r in final} == {"alice", "bob"}
    now = ui.daemon.clock.now()
    assert when(final[0]["data-from"]) <= now
    assert when(final[-1]["data-to"]) >= now + timedelta(days=14)
    for a, b in itertools.pairwise(final):  # the final shifts tile the range
        assert a["data-to"] == b["data-from"]
    for r in final:
        assert r.select_one("title").text.startswith(r["data-user"] + ":")
        start = when(r["data-from"])
        if start > when(final[0]["data-from"]):  # a weekly handoff: Mon 09:00 Berlin time
            local = start.astimezone(BERLIN)
            assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)
    layer = svg.select('g.row[data-row="layer-1"] rect.shift')
    assert [(r["data-user"], r["data-from"], r["data-to"]) for r in layer] == [
        (r["data-user"], r["data-from"], r["data-to"]) for r in final
    ]
    # One day tick per local midnight (15 days shown), the "now" line inside.
    days = [t["data-day"] for t in svg.select("line.tick")]
    assert len(days) >= 15 and days[0] == now.astimezone(BERLIN).date().isoformat()
    assert svg.select_one("line.now") is not None


async def test_an_override_created_in_the_ui_is_who_the_api_reports(ui, browser):
    now = ui.daemon.clock.now()
    current = await api_oncall(ui)
    other = "bob" if current == "alice" else "alice"
    page = await browser.get("/ui/oncall/primary")
    assert page.status == 200
    form = page.soup.select_one("form#override-form")
    assert [o["value"] for o in form.select("select[name=who] option") if o["value"]] == ["alice", "bob"]
    start = (now + timedelta(hours=1)).astimezone(BERLIN).replace(second=0, microsecond=0)
    end = start + timedelta(hours=2)
    page = await browser.post(
        form["action"],
        {
            "who": other,
            "from": start.strftime("%Y-%m-%dT%H:%M"),  # wall-clock time in the schedule's zone
            "to": end.strftime("%Y-%m-%dT%H:%M"),
            "note": "swap <for> dentist",
        },
    )
    assert page.status == 200 and "Override created." in page.html
    mid = (start + timedelta(hours=1)).astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await api_oncall(ui, mid) == other
    assert await api_oncall(ui) == current  # not yet
    [ov] = page.soup.select("#overrides li.override")
    assert ov["data-user"] == other and "swap <for> dentist" in ov.text
    bars = page.soup.select('svg.oncall-timeline g.row[data-row="overrides"] rect.shift')
    assert [(b["data-user"], when(b["data-from"]), when(b["data-to"])) for b in bars] == [(other, start, end)]
    assert any(
        r["data-user"] == other and when(r["data-from"]) == start
        for r in page.soup.select('g.row[data-row="final"] rect.shift')
    )
    status, audit, _ = await ui.call("GET", "/api/v1/audit?object=schedule:primary", scope="admin")
    assert status == 200
    assert audit["audit"][0]["action"] == "override.create" and audit["audit"][0]["actor"] == "test-ack"

    # Delete it again from the page.
    page = await browser.post(ov.select_one("form.delete-override")["action"])
    assert page.status == 200 and "Override deleted." in page.html
    assert not page.soup.select("#overrides li.override")
    assert await api_oncall(ui, mid) == current


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"who": "", "from": "2999-01-01T10:00", "to": "2999-01-01T12:00"}, "who"),
        ({"who": "carol", "from": "2999-01-01T10:00", "to": "2999-01-01T12:00"}, "not configured"),
        ({"who": "bob", "from": "2999-01-01T12:00", "to": "2999-01-01T10:00"}, "before"),
        ({"who": "bob", "from": "2001-01-01T10:00", "to": "2001-01-01T12:00"}, "past"),
        ({"who": "bob", "from": "noon", "to": "2999-01-01T12:00"}, "from"),
        ({"who": "bob", "from": "9999-12-31T22:00", "to": "9999-12-31T23:59"}, "range"),
        ({"who": "bob", "from": "2999-01-01T10:00", "to": "3001-01-01T10:00"}, "at most a year"),
    ],
)
async def test_a_bad_override_re_renders_the_page_with_a_message(ui, browser, fields, message):
    page = await browser.post("/ui/oncall/primary/overrides", fields)
    assert page.status == 400
    assert message.lower() in page.soup.select_one("#form-error").text.lower()
    form = page.soup.select_one("form#override-form")
    assert form.select_one("input[name=from]")["value"] == fields["from"]
    status, body, _ = await ui.call("GET", "/api/v1/schedules/primary/overrides", scope="read")
    assert status == 200 and body["overrides"] == []


async def test_the_user_page_lists_shifts_and_contacts_without_secrets(ui, browser):
    page = await browser.get("/ui/users/alice")
    assert page.status == 200
    assert page.soup.select_one(".timezone").text == "Europe/Berlin"
    now = ui.daemon.clock.now()
    status, body, _ = await ui.call(
        "GET",
        f"/api/v1/schedules/primary/shifts?from={now.isoformat().replace('+00:00', 'Z')}"
        f"&to={(now + timedelta(days=14)).isoformat().replace('+00:00', 'Z')}",
        scope="read",
    )
    assert status == 200
    theirs = [s for s in body["shifts"] if s["user"] == "alice"]
    shifts = page.soup.select("#user-shifts li.shift")
    assert len(shifts) == len(theirs) >= 1
    assert all(li["data-schedule"] == "primary" for li in shifts)
    url = ui.daemon.config.user("alice").contacts[0].url
    assert page.soup.select_one("#contacts li.contact code").text == redact(url)


async def test_unknown_schedules_and_users_are_404_pages(ui, browser):
    for path in ("/ui/oncall/nope", "/ui/users/nobody"):
        page = await browser.get(path)
        assert page.status == 404 and "Not found" in page.html and "Traceback" not in page.html
    assert (await browser.post("/ui/oncall/nope/overrides", {"who": "bob"})).status == 404


async def test_a_read_only_session_sees_no_override_form_and_cannot_post_one(ui):
    b = await sign_in(ui, "read")
    try:
        page = await b.get("/ui/oncall/primary")
        assert page.status == 200 and page.soup.select_one("form#override-form") is None
        page = await b.post(
            "/ui/oncall/primary/overrides", {"who": "bob", "from": "2999-01-01T10:00", "to": "2999-01-01T12:00"}
        )
        assert page.status == 403
    finally:
        await b.http.close()


async def test_the_timeline_escapes_its_text():
    from fsincident.ui.oncall import Bar, Row, timeline

    start = datetime(2026, 3, 28, tzinfo=ZoneInfo("UTC"))
    end = start + timedelta(days=3)  # across Berlin's spring-forward: local midnights 23 hours apart
    bar = Bar("<b>x</b>", start + timedelta(hours=5), start + timedelta(hours=30), note='"quoted" & <more>')
    svg = str(timeline([Row("r<1>", "Layer <1>", [bar])], start, end, now=start, tz=BERLIN))
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and "Layer &lt;1&gt;" in svg
    assert 'data-user="&lt;b&gt;x&lt;/b&gt;"' in svg and "&#34;quoted&#34; &amp; &lt;more&gt;" in svg
    assert [d[:10] for d in svg.split('data-day="')[1:]] == ["2026-03-29", "2026-03-30", "2026-03-31"]
