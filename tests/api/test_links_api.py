"""Signed ack/resolve links against the real in-process daemon: GET confirms without acting, POST acts once."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from fsincident.api.links import clean_name, recipient_actor
from fsincident.notify.links import LinkSigner
from fsincident.obs import configure_logging
from fsincident.store.tables import UsedLink
from tests.api.conftest import Api, serve
from tests.helpers import free_port, write_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "link-secret-for-tests-0123456789"
HARDENING = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
LOGS = io.StringIO()


def _config(tmp: Any, port: int, database: str, secret: str | None) -> Any:
    links = f"links: {{secret: {secret}, ttl: 2h}}" if secret else ""
    return write_config(
        tmp / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: {database}
        external_url: https://oncall.example.com/
        {links}
        channels:
          - {{name: ops, urls: ["json://127.0.0.1:9/ops"]}}
        routes:
          - {{notify: []}}
        """,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """One daemon with a configured link secret; its log lines (info and up) go to LOGS."""
    tmp = tmp_path_factory.mktemp("links")
    port = free_port()
    async with serve(_config(tmp, port, f"sqlite:///{tmp}/state.db", SECRET), port, None, None) as a:
        configure_logging("info", a.daemon.redactor, stream=LOGS)
        try:
            yield a
        finally:
            configure_logging("warning")


def sign(api: Api, iid: int, action: str = "ack", recipient: str = "user:alice", ago: timedelta = timedelta(0)) -> str:
    assert api.daemon.links is not None
    return api.daemon.links.sign(iid, action, recipient, api.daemon.clock.now() - ago)


async def get(api: Api, token: str, method: str = "GET") -> tuple[int, str, Any]:
    async with api.http.request(method, f"{api.base}/l/{token}") as r:
        return r.status, await r.text(), r.headers


async def post(api: Api, token: str, name: str | None = None, raw: bytes | None = None) -> tuple[int, str, Any]:
    data: Any = raw if raw is not None else ({"name": name} if name is not None else {})
    async with api.http.post(f"{api.base}/l/{token}", data=data) as r:
        return r.status, await r.text(), r.headers


async def incident(api: Api, iid: int) -> dict[str, Any]:
    return await api.daemon.incidents.get(iid)


def hardened(headers: Any) -> None:
    for k, v in HARDENING.items():
        assert headers.get(k) == v, k
    assert headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]


async def test_daemon_exposes_signer_base_and_redacts_secret(api):
    assert isinstance(api.daemon.links, LinkSigner)
    assert api.daemon.link_base == "https://oncall.example.com"
    assert api.daemon.links.ttl == timedelta(hours=2)
    assert SECRET not in api.daemon.redactor.scrub(f"x {SECRET} y")


async def test_get_confirms_and_never_acts(api):
    iid = await api.incident()
    token = sign(api, iid)
    for method in ("GET", "GET", "HEAD"):
        status, text, headers = await get(api, token, method)
        assert status == 200
        hardened(headers)
    _, text, _ = await get(api, token)
    assert f"Acknowledge incident #{iid}" in text and 'method="post"' in text and 'name="name"' in text
    assert "<script" not in text and "http" not in text.split("</style>", 1)[1]  # no script, no external asset
    assert (await incident(api, iid))["state"] == "triggered"
    async with api.daemon.store.read() as s:
        assert (await s.exec(select(UsedLink).where(UsedLink.incident_id == iid))).first() is None


async def test_post_acks_once_and_timeline_says_who_and_how(api):
    iid = await api.incident()
    token = sign(api, iid, recipient="channel:ops")
    status, text, headers = await post(api, token, name="  Bob\x07  Smith\n")
    assert status == 200, text
    hardened(headers)
    assert "acknowledged" in text.lower() and "Bob Smith" in text
    inc = await incident(api, iid)
    assert inc["state"] == "acknowledged" and inc["acknowledged_by"] == "Bob Smith"
    [ev] = [e for e in inc["timeline"] if e["kind"] == "acknowledged"]
    assert ev["actor"] == "Bob Smith"
    assert ev["data"] == {"via": "link", "recipient": "channel:ops"}
    # The same link again: used, nothing changes; GET says so too.
    for status, text, _ in (await post(api, token), await get(api, token)):
        assert status == 410 and "already used" in text and "Bob Smith" in text
    assert [e["kind"] for e in (await incident(api, iid))["timeline"]].count("acknowledged") == 1


async def test_actor_defaults_to_the_recipient(api):
    a, b = await api.incidents(2)
    assert (await post(api, sign(api, a, "resolve", "user:alice")))[0] == 200
    assert (await post(api, sign(api, b, "ack", "channel:ops"), name=" \t "))[0] == 200
    assert (await incident(api, a))["resolved_by"] == "alice"
    assert (await incident(api, b))["acknowledged_by"] == "ops (link)"


async def test_wrong_state_is_409_and_changes_nothing(api):
    iid = await api.incident()
    assert (await post(api, sign(api, iid, "ack", "user:carol")))[0] == 200
    ack_again = sign(api, iid, "ack", "user:dave")
    for status, text, _ in (await get(api, ack_again), await post(api, ack_again)):
        assert status == 409 and "already acknowledged" in text and "carol" in text
    # A resolve link still works on an acknowledged incident; then every link refuses.
    assert (await post(api, sign(api, iid, "resolve", "user:dave")))[0] == 200
    for action in ("ack", "resolve"):
        token = sign(api, iid, action, "user:erin")
        for status, text, _ in (await get(api, token), await post(api, token)):
            assert status == 409 and "already resolved" in text
    inc = await incident(api, iid)
    assert (inc["acknowledged_by"], inc["resolved_by"]) == ("carol", "dave")
    async with api.daemon.store.read() as s:
        used = (await s.exec(select(UsedLink).where(UsedLink.incident_id == iid))).all()
    assert sorted(u.actor for u in used) == ["carol", "dave"]  # refused links were not spent


async def test_expired_is_410(api):
    iid = await api.incident()
    token = sign(api, iid, ago=timedelta(hours=2))
    for status, text, headers in (await get(api, token), await post(api, token)):
        assert status == 410 and "expired" in text
        hardened(headers)
    assert (await incident(api, iid))["state"] == "triggered"


async def test_tampered_or_foreign_is_403(api):
    iid = await api.incident()
    token = sign(api, iid)
    tampered = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    foreign = LinkSigner(b"not the daemon's key at all.....", timedelta(hours=1)).sign(
        iid, "ack", "user:alice", api.daemon.clock.now()
    )
    for bad in (tampered, foreign, "garbage", "x" * 3000):
        for status, text, headers in (await get(api, bad), await post(api, bad)):
            assert status == 403 and "not valid" in text, bad
            hardened(headers)
    assert (await incident(api, iid))["state"] == "triggered"


async def test_unknown_incident_is_404(api):
    token = sign(api, 2**31 - 1)
    for status, text, _ in (await get(api, token), await post(api, token)):
        assert status == 404 and "not found" in text


async def test_odd_forms_do_not_break_it(api):
    iid = await api.incident()
    long_name = "N" * 500
    assert (await post(api, sign(api, iid, "ack"), raw=b"name=%ff%fe&name=x&&=="))[0] == 200
    iid2 = await api.incident()
    status, _, _ = await post(api, sign(api, iid2, "ack"), name=long_name)
    assert status == 200
    assert (await incident(api, iid2))["acknowledged_by"] == "N" * 100
    iid3 = await api.incident()
    async with api.http.post(
        f"{api.base}/l/{sign(api, iid3)}", data=b"\x00\xff{", headers={"Content-Type": "multipart/form-data"}
    ) as r:
        assert r.status < 500


async def test_clean_name_and_recipient_actor():
    assert clean_name("  a\x00b\u202ec\td  ") == "abc d"
    assert clean_name(None) == "" and clean_name(b"x") == "" and clean_name("\n\t") == ""
    assert len(clean_name("é" * 300)) == 100
    assert recipient_actor("user:alice") == "alice"
    assert recipient_actor("channel:ops") == "ops (link)"
    assert recipient_actor("schedule:infra") == "infra (link)"
    assert recipient_actor("") == "(link)"
    assert len(recipient_actor("channel:" + "x" * 400)) <= 200


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(min_size=1, max_size=200),
        st.binary(min_size=1, max_size=150).map(lambda b: b.hex()),
        st.tuples(st.integers(0, 200), st.characters()).map(lambda t: t),
    ),
    st.sampled_from(["GET", "POST"]),
)
async def test_fuzzed_tokens_never_5xx_never_act(api, raw, method):
    if isinstance(raw, tuple):  # one character of a valid token replaced
        iid = await _fuzz_incident(api)
        token = sign(api, iid)
        i, c = raw[0] % len(token), raw[1]
        raw = token[:i] + c + token[i + 1 :]
        if raw == token:
            return
    path = quote(raw.encode("utf-8", "surrogatepass"), safe="")
    if not path or path in (".", ".."):
        return
    async with api.http.request(method, f"{api.base}/l/{path}", data={"name": "fuzz"}) as r:
        assert r.status < 500, (raw, r.status)
        assert r.status != 200 or method == "GET"
    if _FUZZ:
        assert (await incident(api, _FUZZ[0]))["state"] == "triggered"


_FUZZ: list[int] = []


async def _fuzz_incident(api: Api) -> int:
    if not _FUZZ:
        _FUZZ.append(await api.incident())
    return _FUZZ[0]


async def test_no_token_in_logs(api):
    """Every token this module sent stays out of the log; the configured secret too."""
    iid = await api.incident()
    token = sign(api, iid)
    await post(api, token)
    await post(api, token)
    text = LOGS.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(e.get("event") == "link_used" and e.get("incident_id") == iid for e in lines)
    assert token not in text and token[:40] not in text
    assert "/l/" not in text and SECRET not in text


# ---------------------------------------------------------------------- compare-and-set, both databases


@pytest_asyncio.fixture(loop_scope="module")
async def fresh(tmp_path, db_url) -> AsyncIterator[Api]:
    """A daemon on SQLite or PostgreSQL with no configured secret (the key is generated and kept)."""
    port = free_port()
    async with serve(_config(tmp_path, port, db_url, None), port, None, None, prefix="cas") as a:
        yield a


async def test_concurrent_posts_act_once(fresh):
    api = fresh
    first = api.daemon.links
    iids = await api.incidents(3)
    for iid in iids:
        token = sign(api, iid, "resolve", "user:zed")
        async with aiohttp.ClientSession() as http:

            async def one(i: int, token: str = token, http: aiohttp.ClientSession = http) -> int:
                async with http.post(f"{api.base}/l/{token}", data={"name": f"n{i}"}) as r:
                    return r.status

            statuses = await asyncio.gather(*(one(i) for i in range(6)))
        assert sorted(statuses) == [200] + [410] * 5, statuses
        inc = await incident(api, iid)
        assert [e["kind"] for e in inc["timeline"]].count("resolved") == 1
    # A reload keeps the generated key: links already sent stay valid.
    token = sign(api, iids[0], "ack")
    assert await api.daemon.reload()
    assert api.daemon.links is not first and api.daemon.links is not None
    assert api.daemon.links.verify(token, api.daemon.clock.now()).incident_id == iids[0]
