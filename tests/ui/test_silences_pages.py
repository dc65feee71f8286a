"""The silences pages of the web UI against the real daemon: list, create (muting the next alert), live preview,
validation errors, expire, scopes."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import quote

import pytest

from fsincident.ui.silences import matchers_link
from tests.ui.conftest import sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")


def tag() -> str:
    return "T" + uuid.uuid4().hex[:8]


async def api_silences(ui, state: str | None = None) -> list[dict]:
    path = "/api/v1/silences" + (f"?state={state}" if state else "")
    status, body, _ = await ui.call("GET", path, scope="read")
    assert status == 200
    return body["silences"]


async def timeline_kinds(ui, iid: int) -> list[str]:
    status, inc, _ = await ui.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert status == 200
    return [e["kind"] for e in inc["timeline"]]


async def test_a_silence_created_in_the_ui_is_listed_by_the_api_and_mutes_the_next_alert(ui, browser):
    t = tag()
    page = await browser.post(
        "/ui/silences",
        {"matchers": f'alertname="{t}"\nenv=~"prod|staging"', "duration": "2h", "comment": "deploying <db>"},
    )
    assert page.status == 200 and page.url.split("?")[0].endswith("/ui/silences")
    assert "Silence created." in page.soup.select_one(".flash").text
    [made] = [s for s in await api_silences(ui, "active") if f'alertname="{t}"' in s["matchers"]]
    assert made["matchers"] == [f'alertname="{t}"', 'env=~"prod|staging"']
    assert made["created_by"] == "test-ack" and made["comment"] == "deploying <db>"
    row = page.soup.select_one(f'table#silences tr.silence[data-id="{made["id"]}"]')
    assert row is not None and row["data-state"] == "active"
    assert "deploying <db>" in row.select_one(".comment").text  # escaped, shown as text
    assert row.select_one("form.expire") is not None

    muted = await ui.incident(alertname=t, env="prod")
    for _ in range(250):
        if "notify_muted" in await timeline_kinds(ui, muted):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"page never muted: {await timeline_kinds(ui, muted)}")
    assert not [m for m in ui.receiver.received if f"#{muted} " in m.get("title", "")]


async def test_the_preview_fragment_lists_exactly_the_matching_firing_alerts(ui, browser):
    t = tag()
    hits = await ui.incidents(2, alertname=t, team="db")
    miss = await ui.incidents(1, alertname=t, team="web")
    other = await ui.incidents(1, alertname=t + "x", team="db")
    page = await browser.get("/ui/silences/preview?matchers=" + quote(f'alertname="{t}", team="db"'))
    assert page.status == 200
    items = page.soup.select("#silence-preview li.alert")
    assert sorted(int(li["data-incident"]) for li in items) == sorted(hits)
    assert {li["data-alertname"] for li in items} == {t}
    assert page.soup.select_one("#silence-preview")["data-total"] == "2"
    assert items[0].select_one(f'a[href="/ui/incidents/{items[0]["data-incident"]}"]') is not None
    assert 'team="db"' in items[0].text
    assert not set(miss + other) & {int(li["data-incident"]) for li in items}
    assert "<html" not in page.html  # a fragment, not a page

    # A regular expression, comma-separated and on lines, all work; a bad matcher is said, not a 500.
    page = await browser.get("/ui/silences/preview?matchers=" + quote(f'alertname=~"{t}x?"\nteam="db"'))
    assert sorted(int(li["data-incident"]) for li in page.soup.select("#silence-preview li.alert")) == sorted(
        hits + other
    )
    page = await browser.get("/ui/silences/preview?matchers=" + quote(f'alertname="{t}", team!="web"'))
    assert sorted(int(li["data-incident"]) for li in page.soup.select("#silence-preview li.alert")) == sorted(hits)
    page = await browser.get("/ui/silences/preview?matchers=" + quote(f'alertname="{t}", team=""'))
    assert not page.soup.select("#silence-preview li.alert")  # every one of them has a team
    page = await browser.get("/ui/silences/preview?matchers=" + quote('alertname=~"("'))
    assert page.status == 200 and page.soup.select_one("#silence-preview .error") is not None
    assert not page.soup.select("#silence-preview li.alert")


async def test_the_new_form_is_prefilled_from_the_query_and_previews_without_javascript(ui, browser):
    t = tag()
    [iid] = await ui.incidents(1, alertname=t)
    page = await browser.get(matchers_link({"alertname": t}))
    assert page.status == 200
    form = page.soup.select_one("form#silence-form")
    assert form.select_one("textarea[name=matchers]").text == f'alertname="{t}"'
    assert form.select_one("input[name=duration]")["value"] == "2h"
    assert [int(li["data-incident"]) for li in page.soup.select("#silence-preview li.alert")] == [iid]
    assert page.soup.select_one('script[src="/ui/static/silences.js"]') is not None
    assert not page.soup.select("script:not([src])")  # no inline scripts (CSP)

    # The "Preview" button re-renders the form with the preview and keeps what was typed.
    page = await browser.post(
        "/ui/silences", {"matchers": f'alertname="{t}"', "duration": "45m", "comment": "later", "action": "preview"}
    )
    assert page.status == 200
    assert [int(li["data-incident"]) for li in page.soup.select("#silence-preview li.alert")] == [iid]
    assert page.soup.select_one("input[name=duration]")["value"] == "45m"
    assert page.soup.select_one("textarea[name=comment]").text == "later"
    assert not [s for s in await api_silences(ui) if f'alertname="{t}"' in s["matchers"]]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"matchers": 'alertname="X', "duration": "1h", "comment": "c"}, "Matchers"),
        ({"matchers": 'alertname=~"("', "duration": "1h", "comment": "c"}, "regular expression"),
        ({"matchers": 'env=~".*"', "duration": "1h", "comment": "c"}, "must not match the empty string"),
        ({"matchers": "", "duration": "1h", "comment": "c"}, "at least one"),
        ({"matchers": 'alertname="X"', "duration": "1h", "comment": "  "}, "Comment"),
        ({"matchers": 'alertname="X"', "duration": "soon", "comment": "c"}, "Duration"),
        ({"matchers": 'alertname="X"', "duration": "", "comment": "c"}, "duration"),
        ({"matchers": 'alertname="X"', "ends_at": "2001-01-01T00:00", "comment": "c"}, "past"),
        ({"matchers": 'alertname="X"', "ends_at": "tomorrow", "comment": "c"}, "End"),
        ({"matchers": 'alertname="X"', "ends_at": "9999-12-31T23:59", "comment": "c"}, "8999"),
        ({"matchers": 'alertname="X"', "starts_at": "0001-01-01T00:00", "duration": "1h", "comment": "c"}, "1970"),
        ({"matchers": 'alertname="X"', "duration": "99999999d", "comment": "c"}, "duration"),
        ({"matchers": 'alertname="X"', "duration": "1h", "comment": "c\x00"}, "NUL"),
    ],
)
async def test_a_bad_silence_re_renders_the_form_with_a_message_and_the_input_kept(ui, browser, fields, message):
    before = len(await api_silences(ui))
    page = await browser.post("/ui/silences", {"duration": "", **fields})
    assert page.status == 400, page.html[:300]
    err = page.soup.select_one("#form-error")
    assert err is not None and message.lower() in err.text.lower(), err
    assert "Traceback" not in page.html
    form = page.soup.select_one("form#silence-form")
    assert form.select_one("textarea[name=matchers]").text == fields["matchers"]
    assert form.select_one("textarea[name=comment]").text == fields["comment"]
    assert len(await api_silences(ui)) == before


async def test_an_end_time_is_read_in_the_display_zone(ui, browser):
    t = tag()
    page = await browser.post(
        "/ui/silences", {"matchers": f"alertname={t}", "ends_at": "2999-01-01T12:30", "comment": "long"}
    )
    assert page.status == 200
    [made] = [s for s in await api_silences(ui) if f'alertname="{t}"' in s["matchers"]]
    assert made["ends_at"] == "2999-01-01T12:30:00Z"  # ui.timezone is UTC in this config


async def test_expire_from_the_list_and_filter_by_state(ui, browser):
    t = tag()
    status, made, _ = await ui.call(
        "POST", "/api/v1/silences", scope="ack", json={"matchers": [f"alertname={t}"], "duration": "1h", "comment": "x"}
    )
    assert status == 201
    page = await browser.get("/ui/silences?state=active")
    row = page.soup.select_one(f'tr.silence[data-id="{made["id"]}"]')
    assert row is not None and all(r["data-state"] == "active" for r in page.soup.select("tr.silence"))
    action = row.select_one("form.expire")["action"]
    assert action == f"/ui/silences/{made['id']}/expire"
    page = await browser.post(action, {"state": "active"})
    assert page.status == 200 and "Silence expired." in page.html
    assert page.soup.select_one(f'tr.silence[data-id="{made["id"]}"]') is None  # no longer active
    [now] = [s for s in await api_silences(ui) if s["id"] == made["id"]]
    assert now["state"] == "expired"
    page = await browser.get("/ui/silences?state=expired")
    row = page.soup.select_one(f'tr.silence[data-id="{made["id"]}"]')
    assert row["data-state"] == "expired" and row.select_one("form.expire") is None
    assert (await browser.post(f"/ui/silences/{uuid.uuid4()}/expire")).status == 404
    assert (await browser.get("/ui/silences?state=bogus")).status == 400


async def test_a_read_only_session_sees_silences_but_cannot_create_or_expire(ui):
    t = tag()
    status, made, _ = await ui.call(
        "POST", "/api/v1/silences", scope="ack", json={"matchers": [f"alertname={t}"], "duration": "1h", "comment": "x"}
    )
    assert status == 201
    b = await sign_in(ui, "read")
    try:
        page = await b.get("/ui/silences")
        assert page.status == 200
        assert page.soup.select_one(f'tr.silence[data-id="{made["id"]}"] form.expire') is None
        page = await b.get("/ui/silences/new")
        assert page.soup.select_one("#create-silence").has_attr("disabled")
        page = await b.post("/ui/silences", {"matchers": f"alertname={t}x", "duration": "1h", "comment": "no"})
        assert page.status == 403 and "ack" in page.html
        assert (await b.post(f"/ui/silences/{made['id']}/expire")).status == 403
    finally:
        await b.http.close()
    assert not [s for s in await api_silences(ui) if f'alertname="{t}x"' in s["matchers"]]
    [still] = [s for s in await api_silences(ui) if s["id"] == made["id"]]
    assert still["state"] == "active"
