"""The CLI as a client of the real daemon, `db upgrade`, and the systemd notify protocol."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.e2e.harness import make_config, rules_yaml, scrape_source, wait_until
from tests.helpers import free_port, run_cli

pytestmark = pytest.mark.slow

RULE = rules_yaml("      - {alert: Backlog, expr: 'queue_depth > 100', severity: critical}")


def test_incidents_cli_lists_shows_acks_and_resolves(tmp_path, exposition, receiver, spawn):
    exposition.set("queue_depth", 500, queue="orders")
    port = free_port()
    cfg = make_config(
        tmp_path / "cfg",
        port=port,
        database=f"sqlite:///{tmp_path}/state.db",
        sources=scrape_source(exposition.url),
        channel_urls=[receiver.apprise_url()],
        rules=RULE,
    )
    d = spawn(cfg, port)
    token = d.create_token("ack")
    env = {"FSINCIDENT_TOKEN": token}
    # No --url: the client finds the daemon through the config's listen address.
    listing = wait_until(
        lambda: (
            (r := run_cli("incidents", "list", "--config", str(cfg), env=env)).returncode == 0
            and "Backlog" in r.stdout
            and r
        ),
        20,
        "incident listed",
    )
    assert "triggered" in listing.stdout and "critical" in listing.stdout
    iid = int(listing.stdout.splitlines()[1].split()[0])

    r = run_cli("incidents", "ack", str(iid), "--note", "on it", "--by", "bob", "--config", str(cfg), env=env)
    assert r.returncode == 0, r.stderr
    assert f"#{iid} is acknowledged" in r.stdout

    r = run_cli("incidents", "show", str(iid), "--url", d.url, "--token", token)
    assert r.returncode == 0, r.stderr
    assert "state: acknowledged" in r.stdout and "by bob" in r.stdout and "on it" in r.stdout

    r = run_cli("incidents", "resolve", str(iid), "--url", d.url, "--token", token)
    assert r.returncode == 0 and f"#{iid} is resolved" in r.stdout

    r = run_cli("incidents", "list", "--state", "resolved", "--json", "--url", d.url, "--token", token)
    assert r.returncode == 0 and f'"id": {iid}' in r.stdout

    # Errors are the API's JSON errors, said plainly, with exit code 1.
    r = run_cli("incidents", "show", "999999", "--url", d.url, "--token", token)
    assert r.returncode == 1 and "HTTP 404" in r.stderr and "not found" in r.stderr
    r = run_cli("incidents", "list", "--url", d.url, "--token", "wrong")
    assert r.returncode == 1 and "HTTP 401" in r.stderr
    r = run_cli("incidents", "ack", "--url", d.url, "--token", token)
    assert r.returncode == 2 and "needs an incident ID" in r.stderr


def test_cli_reports_an_unreachable_daemon(tmp_path):
    r = run_cli("incidents", "list", "--url", f"http://127.0.0.1:{free_port()}", "--token", "x")
    assert r.returncode == 1 and "cannot reach" in r.stderr


def test_db_upgrade_and_token_create(tmp_path):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "fsincident.yaml").write_text(f"database: sqlite:///{tmp_path}/up.db\n")
    r = run_cli("db", "upgrade", "--config", str(cfg))
    assert r.returncode == 0 and "latest schema" in r.stdout
    assert (tmp_path / "up.db").exists()
    r = run_cli("token", "create", "--name", "ci", "--scopes", "read,ingest", "--config", str(cfg))
    assert r.returncode == 0 and r.stdout.startswith("fsi_")
    assert "shown only once" in r.stderr
    r = run_cli("token", "create", "--name", "ci", "--scopes", "read", "--config", str(cfg))
    assert r.returncode == 1 and "exists already" in r.stderr
    r = run_cli("token", "create", "--name", "x", "--scopes", "root", "--config", str(cfg))
    assert r.returncode == 2 and "invalid scope 'root'" in r.stderr


def test_systemd_notify_ready_reloading_stopping_watchdog(tmp_path, exposition, spawn):
    exposition.set("queue_depth", 1)
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    messages: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                return messages

    port = free_port()
    cfg = make_config(
        tmp_path / "cfg",
        port=port,
        database=f"sqlite:///{tmp_path}/state.db",
        sources=scrape_source(exposition.url),
        channel_urls=["json://127.0.0.1:9/never"],
        rules=RULE,
    )
    d = spawn(cfg, port, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})
    try:
        wait_until(lambda: any("READY=1" in m for m in drain()), 10, "READY=1")
        wait_until(lambda: any("WATCHDOG=1" in m for m in drain()), 10, "WATCHDOG=1")
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any("RELOADING=1" in m for m in drain()), 10, "RELOADING=1")
        time.sleep(0.3)
        assert d.stop() == 0
        drain()
        assert any("STOPPING=1" in m for m in messages)
        reloading = next(i for i, m in enumerate(messages) if "RELOADING=1" in m)
        assert any("READY=1" in m for m in messages[reloading:]), "READY=1 must follow a reload"
    finally:
        sock.close()
