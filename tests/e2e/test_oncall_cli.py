"""``fsincident oncall`` and ``fsincident override`` against the real daemon process."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import DaemonProcess, free_port, run_cli, write_config

pytestmark = pytest.mark.slow

# primary: weekly from Mon 2026-01-05 09:00 Berlin: alice, bob, carol, ... -> carol has the week of 2 March,
# 08:00 UTC to 08:00 UTC; secondary: daily 08:00 UTC from 2026-01-05: carol on 4 March.
CONFIG = """
listen: 127.0.0.1:{port}
database: sqlite:///{db}
users:
  - {{name: alice, timezone: Europe/Berlin}}
  - {{name: bob}}
  - {{name: carol}}
  - {{name: dave}}
schedules:
  - name: primary
    timezone: Europe/Berlin
    layers:
      - {{rotation: weekly, handoff: "Mon 09:00", start: 2026-01-05, users: [alice, bob, carol]}}
  - name: secondary
    timezone: UTC
    layers:
      - {{rotation: daily, handoff: "08:00", start: 2026-01-05, users: [carol, dave]}}
"""
AT = "2026-03-04T12:00:00Z"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One daemon process for the module (each test leaves the overrides as it found them)."""
    tmp = tmp_path_factory.mktemp("oncall-cli")
    port = free_port()
    cfg = write_config(tmp / "cfg", CONFIG.format(port=port, db=tmp / "state.db"))
    d = DaemonProcess(cfg, port)
    try:
        d.start()
        d.token = d.create_token("ack", name="oncall-cli")
        yield d
    finally:
        if d.proc is not None:
            d.stop()


def cli(d, *args: str, token: str | None = None, tz: str = "UTC"):
    env = {"FSINCIDENT_URL": d.url, "FSINCIDENT_TOKEN": token or d.token, "TZ": tz}
    return run_cli(*args, env=env, cwd=d.config_dir, timeout=30)


def rows(stdout: str, first: str = "SCHEDULE") -> list[list[str]]:
    """The table's rows below its header (the line starting with ``first``), split on runs of 2+ spaces."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start + 1 :] if line.strip()]


def test_oncall_prints_a_table_of_every_schedule(daemon):
    res = cli(daemon, "oncall", "--at", AT)
    assert res.returncode == 0, res.stderr
    assert "on call at 2026-03-04 12:00 UTC" in res.stdout
    assert re.search(r"^SCHEDULE\s+USER\s+LAYER\s+UNTIL$", res.stdout, re.M), res.stdout
    assert rows(res.stdout) == [
        ["primary", "carol", "1", "2026-03-09 08:00 UTC"],
        ["secondary", "carol", "1", "2026-03-05 08:00 UTC"],
    ]


def test_oncall_json_is_the_apis_answer(daemon):
    res = cli(daemon, "oncall", "primary", "--at", AT, "--json")
    assert res.returncode == 0, res.stderr
    status, api = daemon.api("GET", f"/api/v1/oncall?schedule=primary&at={AT}")
    assert status == 200
    assert (
        json.loads(res.stdout)
        == api
        == {
            "schedule": "primary",
            "at": AT,
            "oncall": [{"user": "carol", "layer": 1, "from": "2026-03-02T08:00:00Z", "until": "2026-03-09T08:00:00Z"}],
        }
    )


def test_a_time_without_offset_is_local_time(daemon):
    # 13:00 in Berlin (CET) is 12:00 UTC; 08:30 on 9 March in New York (EDT since 8 March) is 12:30 UTC.
    res = cli(daemon, "oncall", "primary", "--at", "2026-03-04T13:00:00", "--json", tz="Europe/Berlin")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["at"] == AT
    res = cli(daemon, "oncall", "primary", "--at", "2026-03-09 08:30", "--json", tz="America/New_York")
    body = json.loads(res.stdout)
    assert body["at"] == "2026-03-09T12:30:00Z" and body["oncall"][0]["user"] == "alice"


def test_flags_and_the_configs_listen_address_find_the_daemon(daemon):
    res = run_cli("oncall", "secondary", "--at", AT, "--url", daemon.url, "--token", daemon.token, timeout=30)
    assert res.returncode == 0, res.stderr
    assert rows(res.stdout) == [["secondary", "carol", "1", "2026-03-05 08:00 UTC"]]
    res = run_cli(
        "oncall", "secondary", "--at", AT, "--config", str(daemon.config_dir),
        env={"FSINCIDENT_TOKEN": daemon.token, "FSINCIDENT_URL": ""}, timeout=30,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert rows(res.stdout)[0][:2] == ["secondary", "carol"]


def test_override_add_list_delete(daemon):
    def who_at_2h() -> list[str]:
        res = cli(daemon, "oncall", "primary", "--at", "now+2h")
        assert res.returncode == 0, res.stderr
        return rows(res.stdout)[0]

    before = who_at_2h()
    assert before[1] != "dave"
    res = cli(daemon, "override", "add", "primary", "--who", "dave", "--from", "now+1h", "--to", "now+3h",
              "--note", "covering the release", "--by", "alice")  # fmt: skip
    assert res.returncode == 0, res.stderr
    m = re.match(r"^override #(\d+): dave is on call for primary from \S+ \S+ UTC to \S+ \S+ UTC$", res.stdout.strip())
    assert m, res.stdout
    oid = m.group(1)

    row = who_at_2h()
    assert row[1:3] == ["dave", f"2 (override #{oid})"]

    res = cli(daemon, "override", "list", "primary")
    assert res.returncode == 0, res.stderr
    [listed] = rows(res.stdout, first="ID")
    assert listed[0] == oid and listed[1] == "dave" and listed[2] == "-"
    assert listed[-2:] == ["alice", "covering the release"]
    res = cli(daemon, "override", "list", "primary", "--json")
    [item] = json.loads(res.stdout)["overrides"]
    assert item["id"] == int(oid) and item["note"] == "covering the release"
    res = cli(daemon, "override", "list", "primary", "--from", "now+4h")
    assert res.stdout.strip() == "no overrides"

    res = cli(daemon, "override", "delete", "primary", oid)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"override #{oid} of primary deleted"
    assert who_at_2h() == before
    res = cli(daemon, "override", "delete", "primary", oid)
    assert res.returncode == 1 and "HTTP 404" in res.stderr

    status, audit = daemon.api("GET", "/api/v1/audit?limit=2", token=daemon.create_token("admin"))
    assert status == 200
    assert [(a["action"], a["actor"]) for a in audit["audit"]] == [
        ("override.delete", "oncall-cli"),
        ("override.create", "alice"),
    ]


def test_override_with_replaces(daemon):
    def shifts() -> list[dict]:
        status, body = daemon.api("GET", "/api/v1/schedules/secondary/shifts?from=now&to=now%2B4d")
        assert status == 200, body
        return body["shifts"]

    assert {s["user"] for s in shifts()} == {"carol", "dave"}
    res = cli(daemon, "override", "add", "secondary", "--who", "alice", "--replaces", "dave",
              "--from", "now-1d", "--to", "now+30d", "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    ov = json.loads(res.stdout)
    assert (ov["who"], ov["replaces"]) == ("alice", "dave")
    # Inside it, dave's days are alice's and carol's stay carol's.
    after = shifts()
    assert {(s["user"], s.get("override")) for s in after} == {("carol", None), ("alice", ov["id"])}
    assert cli(daemon, "override", "delete", "secondary", str(ov["id"])).returncode == 0
    assert {s["user"] for s in shifts()} == {"carol", "dave"}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("oncall", "nope"), 1, "HTTP 404: schedule 'nope' is not configured"),
        (("oncall", "--at", "tomorrow"), 2, "--at"),
        (("override", "add", "primary", "--who", "mallory", "--from", "now", "--to", "now+1h"), 1, "mallory"),
        (("override", "add", "primary", "--who", "dave", "--from", "now+2h", "--to", "now+1h"), 1, "before"),
        (("override", "add", "primary", "--who", "dave", "--from", "soon", "--to", "now+1h"), 2, "--from"),
        (("override", "list", "nope"), 1, "HTTP 404"),
        (("override", "delete", "primary", "424242"), 1, "HTTP 404"),
    ],
)
def test_errors_exit_non_zero_with_the_reason(daemon, args, code, message):
    res = cli(daemon, *args)
    assert res.returncode == code, (res.stdout, res.stderr)
    assert message in res.stderr


def test_a_read_token_cannot_change_overrides(daemon):
    read = daemon.create_token("read")
    res = cli(daemon, "override", "add", "primary", "--who", "dave", "--from", "now", "--to", "now+1h", token=read)
    assert res.returncode == 1 and "HTTP 403" in res.stderr
    assert cli(daemon, "oncall", token=read).returncode == 0


def test_unreachable_daemon(tmp_path):
    res = run_cli("oncall", "--url", f"http://127.0.0.1:{free_port()}", "--token", "x", timeout=30)
    assert res.returncode == 1 and "cannot reach" in res.stderr
