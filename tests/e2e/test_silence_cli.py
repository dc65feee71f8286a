"""``fsincident silence add|list|expire`` against the real daemon process."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.helpers import DaemonProcess, free_port, run_cli, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("silence-cli")
    port = free_port()
    cfg = write_config(tmp / "cfg", f"listen: 127.0.0.1:{port}\ndatabase: sqlite:///{tmp}/state.db\n")
    d = DaemonProcess(cfg, port)
    try:
        d.start()
        d.token = d.create_token("ack", name="silence-cli")
        yield d
    finally:
        if d.proc is not None:
            d.stop()


def cli(d: DaemonProcess, *args: str, tz: str = "UTC"):
    env = {"FSINCIDENT_URL": d.url, "FSINCIDENT_TOKEN": d.token, "TZ": tz}
    return run_cli("silence", *args, env=env, cwd=d.config_dir, timeout=30)


def rows(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    assert lines and lines[0].startswith("ID"), stdout
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


def test_add_list_expire(daemon):
    tag = uuid.uuid4().hex[:8]
    res = cli(daemon, "add", f"alertname={tag}", 'instance=~"db[0-9]+"', "--duration", "2h", "--comment", "swap disk")
    assert res.returncode == 0, res.stderr
    sid = res.stdout.strip()
    assert uuid.UUID(sid)
    assert "active from" in res.stderr and f'alertname="{tag}"' in res.stderr

    res = cli(daemon, "list")
    assert res.returncode == 0, res.stderr
    [row] = [r for r in rows(res.stdout) if r[0] == sid]
    assert row[1:3] == ["active", f'alertname="{tag}", instance=~"db[0-9]+"']
    assert row[5:] == ["silence-cli", "swap disk"]  # the token's name is the default author

    later = cli(daemon, "add", f"alertname={tag}", "-c", "later", "--start", "now+1h", "--author", "alice", "-q")
    assert later.returncode == 0 and later.stderr == "", later.stderr
    pid = later.stdout.strip()
    res = cli(daemon, "list", "--state", "pending", "--json")
    body = json.loads(res.stdout)
    [pending] = [s for s in body["silences"] if s["id"] == pid]
    assert pending["created_by"] == "alice" and pending["state"] == "pending"

    res = cli(daemon, "expire", sid, pid)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("expired at") == 2
    ids = cli(daemon, "list", "-q").stdout.split()
    assert sid not in ids and pid not in ids
    expired = cli(daemon, "list", "--state", "expired", "-q").stdout.split()
    assert {sid, pid} <= set(expired)
    assert {sid, pid} <= set(cli(daemon, "list", "--state", "all", "-q").stdout.split())


def test_end_in_local_time(daemon):
    res = cli(daemon, "add", "job=nightly", "-c", "x", "--end", "2099-06-01T12:00", "--json", tz="Europe/Berlin")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ends_at"] == "2099-06-01T10:00:00Z"
    assert cli(daemon, "expire", json.loads(res.stdout)["id"]).returncode == 0


def test_errors(daemon):
    res = cli(daemon, "add", "job=x")  # no --comment
    assert res.returncode == 2 and "--comment" in res.stderr
    res = cli(daemon, "add", "job=x", "-c", "x", "--duration", "1h", "--end", "now+2h")
    assert res.returncode == 2 and "not allowed with" in res.stderr
    res = cli(daemon, "add", "1job=x", "-c", "x")
    assert res.returncode == 1 and "HTTP 400: matchers[0]" in res.stderr
    res = cli(daemon, "add", 'job=~".*"', "-c", "x")
    assert res.returncode == 1 and "must not match the empty string" in res.stderr
    res = cli(daemon, "add", "job=x", "-c", "x", "--end", "tomorrow")
    assert res.returncode == 2 and "--start/--end" in res.stderr
    res = cli(daemon, "expire", str(uuid.uuid4()), "nope")
    assert res.returncode == 1 and res.stderr.count("HTTP 404") == 2
    env = {"FSINCIDENT_URL": daemon.url, "FSINCIDENT_TOKEN": "fsi_wrong"}
    res = run_cli("silence", "list", env=env, cwd=daemon.config_dir, timeout=30)
    assert res.returncode == 1 and "HTTP 401" in res.stderr
