"""``type: http`` against local aiohttp servers: status, body, timeout, refused, redirects and TLS certificates."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from fsincident.config import load
from fsincident.core import ConfigError, Labels
from fsincident.sources.http import HttpOptions, HttpSource, cert_not_after
from tests.helpers import free_port, write_config

CERT_DAYS = 30
SEEN = web.AppKey("seen", list)


def source(url: str, **kw) -> HttpSource:
    return HttpSource(HttpOptions(name="web", type="http", url=url, **kw))


async def probe(src: HttpSource) -> dict[str, float]:
    """One collection as ``{series: value}``; every series carries the same instance/job labels."""
    try:
        samples = await src.collect(datetime.now(UTC))
    finally:
        await src.close()
    assert {s.labels for s in samples} == {Labels({"instance": src._url, "job": "web"})}
    return {s.name: s.value for s in samples}


def app() -> web.Application:
    a = web.Application()
    seen: list[dict[str, str]] = []
    a[SEEN] = seen

    async def health(request: web.Request) -> web.Response:
        return web.Response(text='{"status": "ok", "db": "up"}')

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/health")

    async def echo(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "body": await request.text(), "key": request.headers.get("X-Key", "")})
        return web.Response(status=201, text="created")

    a.router.add_get("/health", health)
    a.router.add_get("/broken", broken)
    a.router.add_get("/slow", slow)
    a.router.add_get("/moved", moved)
    a.router.add_post("/echo", echo)
    return a


async def serve(application: web.Application, ssl_context: ssl.SSLContext | None = None):
    runner = web.AppRunner(application, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    return runner, port


@pytest.fixture
async def server():
    application = app()
    runner, port = await serve(application)
    yield f"http://127.0.0.1:{port}", application[SEEN]
    await runner.cleanup()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 valid for CERT_DAYS days (made with the openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    args = "req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1".split()
    subprocess.run(
        [openssl, *args, "-days", str(CERT_DAYS), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
async def tls_server(certificate):
    cert, key = certificate
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    runner, port = await serve(app(), ctx)
    yield f"https://127.0.0.1:{port}"
    await runner.cleanup()


async def test_healthy_endpoint_with_matching_body(server):
    url, _ = server
    got = await probe(source(url + "/health", body_regex=r'"status":\s*"ok"'))
    assert got["probe_success"] == 1 and got["probe_http_status_code"] == 200
    assert 0 < got["probe_duration_seconds"] < 5
    assert "probe_ssl_earliest_cert_expiry" not in got and "probe_ssl_cert_days_left" not in got


async def test_body_not_matching_fails_the_probe(server):
    url, _ = server
    got = await probe(source(url + "/health", body_regex=r'"db":\s*"down"'))
    assert got["probe_success"] == 0 and got["probe_http_status_code"] == 200


async def test_status_outside_expectation_fails_the_probe(server):
    url, _ = server
    got = await probe(source(url + "/broken"))
    assert (got["probe_success"], got["probe_http_status_code"]) == (0, 500)
    got = await probe(source(url + "/broken", expect_status=[500, 503]))
    assert (got["probe_success"], got["probe_http_status_code"]) == (1, 500)


async def test_timeout_and_refused_are_failed_probes_not_errors(server):
    url, _ = server
    # Bounded well below the server's 5 s delay: the probe gives up at its own timeout.
    got = await asyncio.wait_for(probe(source(url + "/slow", timeout="0.5s")), 3)
    assert (got["probe_success"], got["probe_http_status_code"]) == (0, 0)
    assert 0.4 < got["probe_duration_seconds"] < 3
    got = await probe(source(f"http://127.0.0.1:{free_port()}/", timeout="2s"))
    assert (got["probe_success"], got["probe_http_status_code"]) == (0, 0)


async def test_redirects_followed_or_reported(server):
    url, _ = server
    got = await probe(source(url + "/moved"))
    assert (got["probe_success"], got["probe_http_status_code"]) == (1, 200)
    got = await probe(source(url + "/moved", follow_redirects=False))
    assert (got["probe_success"], got["probe_http_status_code"]) == (0, 302)


async def test_method_body_and_headers_are_sent(server):
    url, seen = server
    got = await probe(source(url + "/echo", method="POST", body='{"ping": 1}', headers={"X-Key": "k-1"}))
    assert (got["probe_success"], got["probe_http_status_code"]) == (1, 201)
    assert seen == [{"method": "POST", "body": '{"ping": 1}', "key": "k-1"}]


async def test_tls_certificate_days_left(tls_server, certificate):
    cert, _ = certificate
    expiry = cert_not_after(ssl.PEM_cert_to_DER_cert(cert.read_text()))
    days = (expiry - datetime.now(UTC).timestamp()) / 86400
    assert abs(days - CERT_DAYS) < 1  # the parser reads what openssl wrote

    got = await probe(source(tls_server + "/health", tls_verify=False))
    assert got["probe_success"] == 1 and got["probe_http_status_code"] == 200
    assert got["probe_ssl_earliest_cert_expiry"] == expiry
    assert abs(got["probe_ssl_cert_days_left"] - CERT_DAYS) <= 1

    got = await probe(source(tls_server + "/health", ca_file=str(cert)))
    assert got["probe_success"] == 1 and abs(got["probe_ssl_cert_days_left"] - CERT_DAYS) <= 1

    got = await probe(source(tls_server + "/health"))  # the system's CAs do not know this certificate
    assert (got["probe_success"], got["probe_http_status_code"]) == (0, 0)
    assert "probe_ssl_cert_days_left" not in got


def test_bad_options_are_located(tmp_path):
    main = (
        write_config(
            tmp_path,
            """\
            sources:
              - name: a
                type: http
                url: http://127.0.0.1:1/
                body_regex: "ok("
                ca_file: /nonexistent/ca.pem
              - name: b
                type: http
                url: http://127.0.0.1:1/
                expect_status: [200, 700]
            """,
        )
        / "fsincident.yaml"
    )
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, environ={})
    problems = [str(p) for p in exc.value.problems]
    assert any(p.startswith(f"{main}:5: sources[0].body_regex: invalid regular expression") for p in problems), problems
    assert any(p.startswith(f"{main}:6: sources[0].ca_file: cannot load CA certificates") for p in problems), problems
    assert any(p.startswith(f"{main}:10: sources[1].expect_status[1]:") for p in problems), problems
