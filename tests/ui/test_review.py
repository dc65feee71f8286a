"""Security review of the web UI: hostile input never gives a 500 or a stack trace, user- and alert-controlled
text is escaped everywhere (HTML, attributes, SVG tooltips), state changes need POST + CSRF + the ack scope,
sign-in redirects stay on this site, and exports cannot smuggle spreadsheet formulas."""

from __future__ import annotations

import csv
import io
import math
import re

import aiohttp
import pytest
from bs4 import BeautifulSoup
from yarl import URL

from fsincident.store.tables import Alert, Incident, IncidentEvent
from fsincident.ui.charts import Line, histogram, line_chart, sparkline
from tests.ui.conftest import sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")

EVIL = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


async def hostile_incident(ui) -> int:
    """An incident whose title, labels and timeline note carry markup, quotes and a formula."""
    now = ui.daemon.clock.now()
    async with ui.daemon.store.session() as s:
        inc = Incident(
            group_key=f"review-{now.timestamp()}"[:64],
            title='=HYPERLINK("http://evil")' + EVIL,
            state="triggered",
            severity="critical",
            labels={"alertname": EVIL, "team": EVIL, "url": "javascript:alert(3)", "q": "@SUM(1)"},
            created_at=now,
            updated_at=now,
            acknowledged_by=EVIL,
        )
        s.add(inc)
        await s.flush()
        assert inc.id is not None
        s.add(IncidentEvent(incident_id=inc.id, kind="note", actor=EVIL, note=EVIL, at=now, data={"via": EVIL}))
        s.add(
            Alert(
                incident_id=inc.id,
                fingerprint=f"review{inc.id}",
                alertname=EVIL,
                origin="rule:app/QueueBacklog",
                labels={"alertname": "QueueBacklog", "queue": EVIL, "team": "app"},
                annotations={"summary": EVIL, "runbook_url": "javascript:alert(4)"},
                value=1.0,
                state="firing",
                starts_at=now,
                updated_at=now,
            )
        )
        return inc.id


def assert_no_markup_leak(html: str) -> None:
    assert "<script>alert(1)" not in html
    assert "<img src=x" not in html
    assert "onerror=alert" not in html or "&lt;img src=x onerror=alert" in html


def raw(ui, path_and_query: str) -> URL:
    """A URL sent byte for byte (percent-escapes and all), as a hostile client would."""
    return URL(ui.base + path_and_query, encoded=True)


# ---------------------------------------------------------------------------------------------- hostile input

HOSTILE_VALUES = [
    "",
    "-1",
    "0",
    "1" + "0" * 30,
    "9" * 5000,
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "garbage",
    "%00",
    "a%00b",
    "%FF%FE",
    "%ED%A0%80",  # a UTF-16 surrogate, UTF-8 encoded
    "%C0%AF",
    "x" * 5000,
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00%2B14:00",
    "0001-01-01",
    "%22",
    "a%22b",
    "%27",
    "$.x",
    "1e309",
    "nan",
]
LIST_PARAMS = ["state", "severity", "match", "range", "from", "to", "sort", "dir", "page"]
MATCHES = [
    "a%22b%3D%221%22",  # a"b="1"
    "%24.x%3D%221%22",  # $.x="1"
    "team%3D~%22(%22",  # an invalid regular expression
    "team%3D~%22.*%22",
    "team%3D~%22a%7Cb%22",
    "team%3D%22%00%22",
    "team%3D%22" + "a" * 3000 + "%22",
    "q%3D~%22%40.*%22",
    "x%3D%22%ED%A0%80%22",
]


def hostile_urls(iid: int) -> list[str]:
    urls = []
    for base in ("/ui/incidents", "/ui/incidents.csv", "/ui/incidents.json"):
        for p in LIST_PARAMS:
            urls += [f"{base}?{p}={v}" for v in HOSTILE_VALUES]
        urls += [f"{base}?match={m}" for m in MATCHES]
        urls.append(f"{base}?from=2026-01-01&to=2025-01-01")
        urls.append(f"{base}?to=2026-01-01T00:00")
    for v in ["99999999999", "abc", "-1", "0", "%00", "1e3", "%FF", str(iid), f"{iid}%00", "2147483648"]:
        urls.append(f"/ui/incidents/{v}")
    urls += [f"/ui/incidents/{iid}?done={v}" for v in HOSTILE_VALUES[:12]]
    for p in ("source", "metric", "match", "range", "weeks"):
        urls += [f"/ui/explore?{p}={v}" for v in HOSTILE_VALUES]
    urls += [f"/ui/explore?match={m}" for m in MATCHES]
    urls += [
        "/ui/explore?source=app&metric=queue_depth",
        "/ui/explore?source=nope&metric=queue_depth",
        "/ui/explore?source=app&metric=no_such_metric",
        "/ui/explore?source=app&metric=up)%20or%20vector(1",
        "/ui/explore?source=app&metric=queue_depth&match=queue%3D~%22o.*%22&range=7d&weeks=52",
    ]
    urls += [f"/ui/rules/app/QueueBacklog?range={v}" for v in HOSTILE_VALUES]
    urls += [
        "/ui/rules/nope/nope",
        "/ui/rules/app%2FQueueBacklog/x",
        "/ui/rules/a/b/c",
        "/ui/rules/%00/%FF",
        "/ui/rules/..%2F..%2Fetc/passwd",
        "/ui/rules/app/QueueBacklog%00",
        "/ui/rules?x=%FF",
    ]
    urls += [f"/ui/?{p}={v}" for p in ("x", "done") for v in HOSTILE_VALUES[:10]]
    for p in ("state", "id", "done", "matchers", "duration", "starts_at", "ends_at", "comment"):
        urls += [f"/ui/silences{sub}?{p}={v}" for sub in ("", "/new", "/preview") for v in HOSTILE_VALUES]
    urls += [f"/ui/silences/new?matchers={m}" for m in MATCHES]
    for v in [*HOSTILE_VALUES, "primary", "a%2Fb"]:
        urls += [f"/ui/oncall/{v}", f"/ui/users/{v}", f"/ui/oncall/primary?done={v}"]
    urls += [f"/ui/login?next={v}" for v in HOSTILE_VALUES]
    urls += [
        "/ui/login?next=/ui/%0d%0aSet-Cookie:%20x=1",
        "/ui/login?next=/ui/%E2%80%A8",
        "/ui/static/..%2F__init__.py",
        "/ui/static/%00",
        "/ui/static/.hidden",
        "/ui/no/such/%FF",
    ]
    return urls


async def test_hostile_query_strings_never_give_a_500_or_a_stack_trace(ui, browser):
    iid = await hostile_incident(ui)
    failures = []
    for url in hostile_urls(iid):
        async with browser.http.get(raw(ui, url), allow_redirects=False) as r:
            body = await r.text(errors="replace")
            html = r.headers.get("Content-Type", "").startswith("text/html")
            if r.status >= 500 or "Traceback" in body or (html and "<script>alert(1)" in body):
                failures.append((url[:120], r.status))
    assert not failures, "\n".join(map(str, failures))


async def test_a_time_outside_the_calendar_is_a_400_naming_the_field(browser):
    for q in ("from=9999-12-31T23:59:59-23:59", "to=0001-01-01T00:00:00%2B14:00"):
        page = await browser.get(f"/ui/incidents?{q}")
        assert page.status == 400 and "out of range" in page.html


async def test_nul_in_label_matchers_is_a_400_not_a_database_error(browser):
    page = await browser.get("/ui/incidents?match=team%3D%22a%00b%22")
    assert page.status == 400 and "NUL" in page.html


# ---------------------------------------------------------------------------------------------- escaping


async def test_alert_controlled_text_is_escaped_on_every_page(ui, browser):
    iid = await hostile_incident(ui)
    for path in (f"/ui/incidents/{iid}", "/ui/incidents", "/ui/incidents?match=team%3D~%22.*script.*%22", "/ui/"):
        page = await browser.get(path)
        assert page.status == 200, (path, page.html[:300])
        assert "<script>alert(1)" not in page.html and "<img src=x" not in page.html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.html or path == "/ui/", path
        for tag in page.soup.find_all(href=True):  # labels and annotations never become links
            assert not tag["href"].strip().lower().startswith(("javascript:", "data:")), (path, tag)
        assert not page.soup.find_all("img") and not page.soup.select("script:not([src])"), path
    detail = (await browser.get(f"/ui/incidents/{iid}")).soup
    # attribute values keep their quotes inside the attribute (no attribute injection)
    ev = detail.select_one("#timeline li.event[data-kind=note]")
    assert ev["data-actor"] == EVIL and ev["data-via"] == EVIL
    assert detail.select_one("h1.incident-title").get_text() == '=HYPERLINK("http://evil")' + EVIL


def test_chart_text_and_tooltips_are_escaped():
    from zoneinfo import ZoneInfo

    out = str(
        line_chart(
            [Line(f'm{{q="{EVIL}"}}', [(10.0, 1.0), (20.0, 2.0)], css=EVIL)],
            0,
            100,
            tz=ZoneInfo("UTC"),
            spans=[(15.0, None, EVIL)],
            markers=[(30.0, f"acknowledged by {EVIL}")],
            unit=EVIL,
            title=EVIL,
        )
    )
    assert "<script>" not in out and "<img" not in out
    el = BeautifulSoup(out, "html.parser")
    assert not [t for t in el.find_all(True) if any(a.startswith("on") or a == "src" for a in t.attrs)]
    assert el.select_one("path.series")["data-label"] == f'm{{q="{EVIL}"}}'  # the whole label, in its attribute


# ---------------------------------------------------------------------------------------------- charts


@pytest.mark.parametrize(
    "draw",
    [
        lambda tz: line_chart([Line("x", [(10.0, 1e308), (20.0, -1e308), (30.0, 5.0)])], 0, 100, tz=tz),
        lambda tz: line_chart([Line("x", [(10.0, 1.0)])], 0, 100, tz=tz, threshold=1.7e308),
        lambda tz: line_chart([Line("x", [(10.0, 1.0)])], 0, 100, tz=tz, spans=[(-1e300, None, "firing")]),
        lambda tz: sparkline([(1.0, 1e308), (2.0, -1e308), (3.0, 1.0)], warn=-1e308, crit=1e308),
        lambda tz: histogram([1e308, -1e308, 1.0]),
    ],
)
def test_charts_survive_values_whose_span_overflows_a_float(draw):
    """A scraped or Prometheus value of ±1e308 made every chart raise (the overview's sparkline: a 500)."""
    from zoneinfo import ZoneInfo

    out = str(draw(ZoneInfo("UTC")))
    assert out.startswith("<svg") and out.endswith("</svg>")
    assert not any(math.isnan(float(x)) for x in re.findall(r'\s[xy][12]?="([^"]+)"', out))


# ---------------------------------------------------------------------------------------------- exports


async def test_exports_neutralise_formulas_and_are_attachments_of_their_type(ui, browser):
    iid = await hostile_incident(ui)
    async with browser.http.get(ui.base + "/ui/incidents.csv?match=q%3D%22%40SUM(1)%22") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
        assert r.headers["Content-Disposition"].startswith("attachment;")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        rows = list(csv.DictReader(io.StringIO(await r.text())))
    row = next(x for x in rows if int(x["id"]) == iid)
    assert row["title"].startswith("'=") and row["labels"].startswith("{")
    assert row["acknowledged_by"] == EVIL  # '<' is not a formula character: kept as it is
    async with browser.http.get(ui.base + "/ui/incidents.json?match=q%3D%22%40SUM(1)%22") as r:
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.headers["Content-Disposition"].startswith("attachment;")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        body = await r.json()
    assert any(x["id"] == iid and x["title"].startswith("=HYPERLINK") for x in body["incidents"])


# ---------------------------------------------------------------------------------------------- CSRF, scopes, sessions


async def test_every_ui_route_declares_a_scope_and_every_post_needs_ack(ui):
    from fsincident import ui as ui_mod

    public = {ui_mod.login_page, ui_mod.login, ui_mod.static, ui_mod.root, ui_mod.not_found}
    seen_posts = []
    for route in ui.daemon.runner.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix") or ""
        if not path.startswith("/ui") or route.handler in public:
            continue
        scope = getattr(route.handler, "ui_scope", None)
        assert scope in ("read", "ack", "admin"), (route.method, path)
        if route.method not in ("GET", "HEAD"):
            seen_posts.append(path)
            if path != "/ui/logout":
                assert scope in ("ack", "admin"), (route.method, path, scope)
    assert "/ui/incidents/{id}/{action}" in seen_posts


async def test_a_read_token_cannot_act_and_get_never_acts(ui):
    iid = await ui.incident(team="review")
    reader = await sign_in(ui, "read")
    try:
        page = await reader.get(f"/ui/incidents/{iid}")
        assert page.status == 200 and page.soup.select_one("#readonly-note") is not None
        for action in ("ack", "resolve", "escalate", "note"):
            page = await reader.post(f"/ui/incidents/{iid}/{action}", {"note": "x"})
            assert page.status == 403 and "Not allowed" in page.html, action
        page = await reader.post(f"/ui/incidents/{iid}/reassign", {"to": "user:alice"})
        assert page.status == 403
        for action in ("ack", "resolve", "escalate", "reassign", "note"):
            page = await reader.get(f"/ui/incidents/{iid}/{action}?to=user:alice&note=x")
            assert page.status in (404, 405), action
    finally:
        await reader.http.close()
    status, body, _ = await ui.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert status == 200 and body["state"] == "triggered"
    assert not [e for e in body["timeline"] if e["kind"] in ("note", "acknowledged", "resolved", "escalated")]


async def test_an_ack_post_from_another_origin_or_without_the_token_does_nothing(ui, browser):
    iid = await ui.incident(team="review")
    await browser.get(f"/ui/incidents/{iid}")
    for headers, data in (
        ({"Origin": "https://evil.example"}, {}),
        ({"Origin": "null"}, {}),
        ({"Referer": "https://evil.example/x"}, {}),
        ({}, {"_csrf": ""}),
        ({}, {"_csrf": browser.csrf + "x"}),
    ):
        page = await browser.post(f"/ui/incidents/{iid}/ack", data, headers=headers)
        assert page.status == 403, (headers, data)
    status, body, _ = await ui.call("GET", f"/api/v1/incidents/{iid}", scope="read")
    assert status == 200 and body["state"] == "triggered"


async def test_a_note_with_a_nul_character_is_refused(ui, browser):
    iid = await ui.incident(team="review")
    page = await browser.post(f"/ui/incidents/{iid}/note", {"note": "a\x00b"})
    assert page.status == 400 and "NUL" in page.html


async def test_a_token_that_cannot_read_cannot_sign_in(ui):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(
            ui.base + "/ui/login", data={"token": ui.tokens["ingest"], "next": "/ui/"}, allow_redirects=False
        ) as r:
            assert r.status == 403 and "cannot read" in await r.text()
            assert "Set-Cookie" not in r.headers


@pytest.mark.parametrize(
    "nxt",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/ui\\..\\..\\evil",
        "javascript:alert(1)",
        "/uix",
        "ui/",
        "/ui/%0d%0aSet-Cookie:%20a=b",
    ],
)
async def test_sign_in_never_redirects_off_site(ui, nxt):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(
            ui.base + "/ui/login", data={"token": ui.tokens["read"], "next": nxt}, allow_redirects=False
        ) as r:
            assert r.status == 303
            loc = r.headers["Location"]
            assert loc.startswith("/ui/") and not loc.startswith("//") and "\n" not in loc and "\r" not in loc
            assert not [v for v in r.headers.getall("Set-Cookie", []) if v.startswith("a=")]


async def test_each_sign_in_gets_a_new_session_and_sign_out_ends_it_server_side(ui):
    b = await sign_in(ui, "read")
    try:
        first = {c.key: c.value for c in b.http.cookie_jar}["fsincident_session"]
        await b.post("/ui/login", {"token": ui.tokens["read"], "next": "/ui/"}, csrf=False)
        second = {c.key: c.value for c in b.http.cookie_jar}["fsincident_session"]
        assert first != second  # no fixation: a sign-in never keeps a session id it was handed
        await b.get("/ui/")
        await b.post("/ui/logout")
    finally:
        await b.http.close()
    async with aiohttp.ClientSession(cookies={"fsincident_session": second}) as http:  # a copied cookie is dead
        async with http.get(ui.base + "/ui/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/ui/login")


async def test_pages_stay_private_when_another_middleware_follows_the_ui(ui):
    """The middleware reads the scope off the ``handler`` it is given: a partial when another middleware follows
    (aiohttp copies the attributes onto it with ``update_wrapper``). Pages must stay private either way."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from fsincident import ui as ui_mod
    from fsincident.api import CTX, build_app

    @web.middleware
    async def passthrough(request, handler):
        return await handler(request)

    def routes(app):
        ui_mod.add_routes(app)
        app.middlewares.append(passthrough)

    server = TestServer(build_app(ui.daemon.runner.app[CTX], extra_routes=routes))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/ui/incidents", "/ui/", "/ui/rules"):
                async with http.get(server.make_url(path), allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"].startswith("/ui/login"), path
            async with http.post(server.make_url("/ui/incidents/1/ack"), allow_redirects=False) as r:
                assert r.status == 401
    finally:
        await server.close()


async def test_explore_refuses_what_is_not_a_metric_name(browser):
    """The metric goes into a Prometheus range query on a ``prometheus`` source: ``up) or vector(1`` ran there."""
    page = await browser.get("/ui/explore?source=app&metric=up)%20or%20vector(1")
    assert page.status == 200
    assert "is not a metric name" in page.soup.select_one(".explore-error").get_text()


async def test_with_the_ui_disabled_nothing_is_served_under_ui(ui):
    """``ui.enabled: false`` builds the app without the UI's routes (app.py): no page, no sign-in, no redirect."""
    from aiohttp.test_utils import TestServer

    from fsincident.api import CTX, build_app

    server = TestServer(build_app(ui.daemon.runner.app[CTX], extra_routes=None))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            for method, path in (("GET", "/"), ("GET", "/ui/"), ("GET", "/ui/login"), ("POST", "/ui/login")):
                async with http.request(method, server.make_url(path), allow_redirects=False) as r:
                    assert r.status in (404, 405), (method, path)
                    assert "Set-Cookie" not in r.headers
    finally:
        await server.close()


async def test_an_expired_session_is_refused_even_with_its_cookie(ui):
    from sqlmodel import select

    from fsincident.store import hash_secret
    from fsincident.store.tables import UiSession

    b = await sign_in(ui, "ack")
    try:
        cookie = {c.key: c.value for c in b.http.cookie_jar}["fsincident_session"]
        await b.get("/ui/")
        async with ui.daemon.store.session() as s:
            row = (await s.exec(select(UiSession).where(UiSession.id_hash == hash_secret(cookie)))).one()
            row.expires_at = ui.daemon.clock.now().replace(year=2000)
        assert 'id="login-form"' in (await b.get("/ui/incidents")).html
        page = await b.post("/ui/logout")  # a POST with the old CSRF token: not signed in
        assert page.status == 401
    finally:
        await b.http.close()
