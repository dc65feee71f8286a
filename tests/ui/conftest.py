"""The real Daemon in-process with a config that exercises every UI page, and a signed-in browser-like client
(cookie jar, CSRF token taken from the page's forms, HTML parsed with BeautifulSoup)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from bs4 import BeautifulSoup

from tests.api.conftest import Api, running_api
from tests.helpers import Exposition, write_config

CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


DISK_RULE = """
                  - alert: DiskFull
                    expr: disk_used_percent > 90
                    severity: warning
                    labels: {team: storage}
                    annotations:
                      summary: "{{ labels.mount }} is {{ value }}% full"
"""


def ui_config(
    directory: Path,
    database: str,
    port: int,
    exposition: Exposition,
    receiver: Any,
    *,
    refresh: str = "0s",
    alice_secret: str | None = None,
    extra_rules: str = "",
) -> Path:
    """A daemon with a scrape source, two rules (plus ``extra_rules``), users, a schedule with a weekly layer, an
    escalation policy, a channel and two metric cards; ``alice_secret`` puts a password in alice's contact URL."""
    hook = receiver.apprise_url
    alice = hook("alice") if alice_secret is None else hook("alice").replace("//", f"//pager:{alice_secret}@")
    return write_config(
        directory / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: {database}
        sources:
          - {{name: app, type: scrape, url: "{exposition.url}/metrics", interval: 1s}}
        channels:
          - {{name: ops, urls: ["{hook("ops")}"]}}
        users:
          - {{name: alice, timezone: Europe/Berlin, contacts: ["{alice}"]}}
          - {{name: bob, timezone: America/New_York, contacts: ["{hook("bob")}"]}}
        schedules:
          - name: primary
            timezone: Europe/Berlin
            layers:
              - {{rotation: weekly, handoff: "Mon 09:00", start: 2026-01-05, users: [alice, bob]}}
        escalation_policies:
          - name: app
            steps:
              - {{after: 0m, notify: ["schedule:primary", "channel:ops"]}}
              - {{after: 30m, notify: ["user:bob"]}}
        routes:
          - {{match: {{team: app}}, escalation_policy: app}}
          - {{notify: ["channel:ops"]}}
        ui:
          refresh: {refresh}
          cards:
            - title: Orders queue
              series: 'queue_depth{{queue="orders"}}'
              source: app
              unit: jobs
              warn: 50
              crit: 100
            - {{title: All queues, series: queue_depth, reduce: sum}}
        history:
          step: 1s
          keep: 1h
          coarse_step: 10s
          coarse_keep: 1d
        """,
        {
            "app.yaml": """
            groups:
              - name: app
                interval: 1s
                source: app
                rules:
                  - alert: QueueBacklog
                    expr: queue_depth > 100
                    severity: critical
                    labels: {team: app}
                    annotations:
                      summary: "{{ labels.queue }} has {{ value }} jobs"
                  - alert: QueueSlow
                    expr: queue_depth > 1000
                    for: 5m
                    severity: warning
            """
            + extra_rules
        },
    )


@dataclass
class Page:
    status: int
    html: str
    url: str
    headers: Any

    @property
    def soup(self) -> BeautifulSoup:
        return BeautifulSoup(self.html, "html.parser")


@dataclass
class Browser:
    """A cookie-keeping client of the UI, signed in with one token."""

    api: Api
    http: aiohttp.ClientSession
    csrf: str = ""

    async def get(self, path: str, **kw: Any) -> Page:
        async with self.http.get(self.api.base + path, allow_redirects=True, **kw) as r:
            html = await r.text()
            m = CSRF.search(html)
            if m:
                self.csrf = m.group(1)
            return Page(r.status, html, str(r.url), r.headers)

    async def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True, **kw: Any) -> Page:
        """POST a form (with the session's CSRF token unless ``csrf=False``); follows the 303 redirect."""
        form = dict(data or {})
        if csrf:
            if not self.csrf:
                await self.get("/ui/")
            form.setdefault("_csrf", self.csrf)
        async with self.http.post(self.api.base + path, data=form, allow_redirects=True, **kw) as r:
            return Page(r.status, await r.text(), str(r.url), r.headers)


async def sign_in(api: Api, scope: str) -> Browser:
    """A new client signed in with the daemon's ``scope`` token (read, ack or admin)."""
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), cookie_jar=aiohttp.CookieJar(unsafe=True))
    b = Browser(api, http)
    page = await b.post("/ui/login", {"token": api.tokens[scope], "next": "/ui/"}, csrf=False)
    assert page.status == 200, page.html[:500]
    return b


def running_ui(directory: Path, database: str | None = None) -> AbstractAsyncContextManager[Api]:
    """The real Daemon on :func:`ui_config` with its peers (see ``tests.api.conftest.running_api``)."""
    return running_api(directory, database, config=ui_config)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ui(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """One daemon for a whole test module (SQLite)."""
    async with running_ui(tmp_path_factory.mktemp("ui")) as a:
        yield a


@pytest_asyncio.fixture(loop_scope="module")
async def browser(ui: Api) -> AsyncIterator[Browser]:
    """A client signed in with an ``ack`` token."""
    b = await sign_in(ui, "ack")
    try:
        yield b
    finally:
        await b.http.close()
