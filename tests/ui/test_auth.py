"""Sign-in, session cookie, CSRF, scopes and error pages of the web UI against the real daemon."""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

from tests.ui.conftest import sign_in

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_pages_need_a_session_and_redirect_to_sign_in(ui):
    async with aiohttp.ClientSession() as http:
        async with http.get(ui.base + "/ui/incidents?state=triggered", allow_redirects=False) as r:
            assert r.status == 303
            loc = URL(r.headers["Location"])
            assert loc.path == "/ui/login" and loc.query["next"] == "/ui/incidents?state=triggered"


async def test_sign_in_sets_a_strict_httponly_cookie_and_a_bad_token_is_refused(ui):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(ui.base + "/ui/login", data={"token": "fsi_nope", "next": "/ui/"}) as r:
            assert r.status == 401
            assert "not valid" in await r.text()
        async with http.post(
            ui.base + "/ui/login", data={"token": ui.tokens["read"], "next": "/ui/rules"}, allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/ui/rules"
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/ui/" in cookie
            assert ui.tokens["read"] not in cookie
        evil = {"token": ui.tokens["read"], "next": "https://evil.example/"}
        async with http.post(ui.base + "/ui/login", data=evil, allow_redirects=False) as r:
            assert r.headers["Location"] == "/ui/"  # no open redirect


async def test_a_post_without_the_csrf_token_or_from_another_site_is_refused(ui):
    b = await sign_in(ui, "ack")
    try:
        page = await b.post("/ui/logout", {}, csrf=False)
        assert page.status == 403 and "Form expired" in page.html
        page = await b.post("/ui/logout", {"_csrf": "wrong"}, csrf=False)
        assert page.status == 403
        page = await b.post("/ui/logout", headers={"Origin": "https://evil.example"})
        assert page.status == 403 and "Cross-site" in page.html
        page = await b.post("/ui/logout")  # with the token: signs out, back to the sign-in page
        assert page.status == 200 and 'id="login-form"' in page.html
        page = await b.get("/ui/")
        assert 'id="login-form"' in page.html  # the session is gone
    finally:
        await b.http.close()


async def test_error_pages_are_readable_html_without_a_stack_trace(ui, browser):
    page = await browser.get("/ui/no/such/page")
    assert page.status == 404
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Not found" in page.html and "Traceback" not in page.html
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "app;dur=" in page.headers["Server-Timing"]


async def test_a_revoked_token_ends_its_session(ui):
    b = await sign_in(ui, "admin")
    try:
        assert 'id="login-form"' not in (await b.get("/ui/")).html
        from sqlmodel import select

        from fsincident.store.tables import ApiToken

        async with ui.daemon.store.session() as s:
            tok = (await s.exec(select(ApiToken).where(ApiToken.name == "test-admin"))).one()
            tok.revoked_at = ui.daemon.clock.now()
        assert 'id="login-form"' in (await b.get("/ui/")).html
    finally:
        async with ui.daemon.store.session() as s:
            tok = (await s.exec(select(ApiToken).where(ApiToken.name == "test-admin"))).one()
            tok.revoked_at = None
        await b.http.close()
