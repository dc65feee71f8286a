"""The real ``amtool`` (Debian's prometheus-alertmanager) manages silences in the real daemon, with the same
results as against the real Alertmanager 0.25 run side by side."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, free_port, write_config

pytestmark = pytest.mark.slow

AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


@dataclass
class Peer:
    """Something amtool can talk to: its URL and the --http.config.file giving the bearer token (or None)."""

    name: str
    url: str
    http_config: Path | None

    def amtool(self, *args: str, auth: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [AMTOOL, f"--alertmanager.url={self.url}"]
        if auth and self.http_config is not None:
            cmd.append(f"--http.config.file={self.http_config}")
        return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30)

    def ok(self, *args: str) -> str:
        res = self.amtool(*args)
        assert res.returncode == 0, (self.name, args, res.stdout, res.stderr)
        return res.stdout


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Peer, DaemonProcess]]:
    """Our daemon (a bearer token in amtool's http config) and a private Alertmanager 0.25; both stopped after."""
    if not Path(AMTOOL).exists() or not Path(ALERTMANAGER).exists():
        pytest.skip("amtool / prometheus-alertmanager are not installed")
    tmp = tmp_path_factory.mktemp("amtool-silences")
    port = free_port()
    cfg = write_config(
        tmp / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp}/state.db
        """,
    )
    d = DaemonProcess(cfg, port)
    am_port = free_port()
    (tmp / "am.yml").write_text("route: {receiver: default}\nreceivers: [{name: default}]\n")
    am_log = open(tmp / "am.log", "wb")
    am = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={tmp / 'am.yml'}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        stdout=am_log,
        stderr=subprocess.STDOUT,
    )
    try:
        d.start()
        d.token = d.create_token("ack", name="amtool")
        http = tmp / "http.yml"
        http.write_text(f"authorization:\n  credentials: {d.token}\n")
        ours = Peer("fsincident", d.url, http)
        theirs = Peer("alertmanager", f"http://127.0.0.1:{am_port}", None)
        _wait_up(theirs.url + "/-/ready", am, tmp / "am.log")
        yield ours, theirs, d
    finally:
        am.terminate()
        try:
            am.wait(10)
        except subprocess.TimeoutExpired:
            am.kill()
            am.wait(10)
        am_log.close()
        if d.proc is not None:
            d.stop()


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"alertmanager exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"alertmanager not ready:\n{log.read_text()[-2000:]}")


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, not values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def test_add_query_update_expire_like_alertmanager(peers):
    ours, theirs, d = peers
    results: dict[str, dict[str, Any]] = {}
    for peer in (ours, theirs):
        out = peer.ok(
            "silence", "add", "alertname=DiskFull", 'instance=~"db[0-9]+"', "env!=dev", "-c", "swap", "-d", "2h"
        )
        sid = out.strip()
        listed = json.loads(peer.ok("silence", "query", "-o", "json"))
        table = peer.ok("silence", "query")
        filtered = peer.ok("silence", "query", "-q", "alertname=DiskFull")
        nothing = peer.ok("silence", "query", "-q", "alertname=Other")
        peer.ok("silence", "update", sid, "--duration", "3h", "--comment", "longer")
        updated = json.loads(peer.ok("silence", "query", "-o", "json", "alertname=DiskFull"))
        peer.ok("silence", "expire", sid)
        expired = json.loads(peer.ok("silence", "query", "-o", "json", "--expired"))
        active_after = peer.ok("silence", "query", "-q")
        results[peer.name] = {
            "sid": sid,
            "listed": listed,
            "table": table,
            "filtered": filtered,
            "nothing": nothing,
            "updated": updated,
            "expired": expired,
            "active_after": active_after,
        }
    for r in results.values():
        sid = r["sid"]
        assert [s["id"] for s in r["listed"]] == [sid]
        assert r["listed"][0]["status"] == {"state": "active"}
        assert r["filtered"].split() == [sid] and r["nothing"] == ""
        assert [(s["id"], s["comment"]) for s in r["updated"]] == [(sid, "longer")]  # updated in place
        assert [(s["id"], s["status"]["state"]) for s in r["expired"]] == [(sid, "expired")]
        assert r["active_after"] == ""
    a, b = results["fsincident"], results["alertmanager"]
    assert shape(a["listed"]) == shape(b["listed"])
    assert list(a["listed"][0]) == list(b["listed"][0])  # same keys in the same order
    for key in ("matchers", "comment"):
        assert a["listed"][0][key] == b["listed"][0][key]
    assert a["listed"][0]["createdBy"] == b["listed"][0]["createdBy"]  # amtool's default author: the OS user
    assert a["table"].splitlines()[0].split() == b["table"].splitlines()[0].split()
    assert a["table"].splitlines()[1].split()[1:4] == b["table"].splitlines()[1].split()[1:4]

    # The daemon's own API sees what amtool did.
    status, body = d.api("GET", f"/api/v1/silences/{a['sid']}")
    assert status == 200 and body["state"] == "expired" and body["comment"] == "longer"
    assert body["matchers"] == ['alertname="DiskFull"', 'instance=~"db[0-9]+"', 'env!="dev"']
    status, audit = d.api("GET", f"/api/v1/audit?object=silence:{a['sid']}", token=d.create_token("admin"))
    assert [x["action"] for x in reversed(audit["audit"])] == ["silence_create", "silence_update", "silence_expire"]


def test_import_pending_and_errors_like_alertmanager(peers, tmp_path):
    ours, theirs, _ = peers
    for peer in (ours, theirs):
        sid = peer.ok(
            "silence",
            "add",
            "job=batch",
            "-c",
            "later",
            "--start",
            "2099-01-01T00:00:00Z",
            "--end",
            "2099-01-02T00:00:00Z",
        ).strip()
        [pending] = json.loads(peer.ok("silence", "query", "-o", "json", "job=batch"))
        assert pending["status"]["state"] == "pending" and pending["startsAt"] == "2099-01-01T00:00:00.000Z"
        # Import what query -o json printed (new silences: without ids).
        exported = tmp_path / f"{peer.name}.json"
        exported.write_text(json.dumps([{k: v for k, v in pending.items() if k != "id"}]))
        peer.ok("silence", "import", str(exported))
        assert len(peer.ok("silence", "query", "-q", "job=batch").split()) == 2
        for line in peer.ok("silence", "query", "-q", "job=batch").split():
            peer.ok("silence", "expire", line)
        assert sid

    for args in (['foo=""'], ['a=~".*"'], ['1a="x"']):
        a, b = ours.amtool("silence", "add", *args, "-c", "x"), theirs.amtool("silence", "add", *args, "-c", "x")
        assert a.returncode == b.returncode == 1, (args, a, b)
        assert a.stderr.split("postSilencesBadRequest")[-1] == b.stderr.split("postSilencesBadRequest")[-1] or (
            "bad matcher" in a.stderr and "bad matcher" in b.stderr
        ), (args, a.stderr, b.stderr)

    # Without the token our daemon refuses amtool (Alertmanager has no auth of its own).
    res = ours.amtool("silence", "query", auth=False)
    assert res.returncode != 0 and "401" in res.stderr
