"""``type: heartbeat``: cron-like jobs ping ``/api/v1/heartbeats/{check}``; a late or failed job pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from fsincident.core import FakeClock
from fsincident.plugins import SourceContext
from fsincident.sources.heartbeat import CheckOptions, CheckRecord, HeartbeatOptions, HeartbeatSource, check_series
from fsincident.store import SqlStateStore, Store
from tests.helpers import Receiver, run_cli, write_config
from tests.plugins._ingest import running, wait_received

# One event loop for the module: a daemon stopped mid-query leaves connections that are closed when garbage
# collected, and that must happen on a loop that still runs (as in tests/api).
same_loop = pytest.mark.asyncio(loop_scope="module")

BERLIN = ZoneInfo("Europe/Berlin")
SECRET = "s3cret-key-0123456789abcdef"


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)


def missing(check: CheckOptions, record: CheckRecord, at: datetime) -> bool:
    return check_series(check, record, at)["heartbeat_missing"] == 1.0


# ---------------------------------------------------------------------- pure: when is a check late


def test_period_check_late_after_period_plus_grace_counting_from_first_seen():
    check = CheckOptions(name="backup", period="1d", grace="30m")
    t0 = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
    rec = CheckRecord(first_seen=t0)
    assert not missing(check, rec, t0 + timedelta(days=1, minutes=30))  # a new check is not instantly late
    assert missing(check, rec, t0 + timedelta(days=1, minutes=30, seconds=1))
    rec.signal("success", t0 + timedelta(hours=20))
    s = check_series(check, rec, t0 + timedelta(days=1, hours=1))
    assert s["heartbeat_missing"] == 0 and s["heartbeat_last_ping_age_seconds"] == 5 * 3600
    assert missing(check, rec, t0 + timedelta(days=1, hours=20, minutes=31))


def test_fail_start_and_duration():
    check = CheckOptions(name="etl", period="1h")
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    rec = CheckRecord(first_seen=t0)
    rec.signal("start", t0 + timedelta(minutes=1))
    s = check_series(check, rec, t0 + timedelta(minutes=2))
    assert s["heartbeat_running"] == 1 and s["heartbeat_missing"] == 0 and "heartbeat_last_duration_seconds" not in s
    rec.signal("fail", t0 + timedelta(minutes=3))
    s = check_series(check, rec, t0 + timedelta(minutes=3))
    assert s["heartbeat_missing"] == 1 and s["heartbeat_failed"] == 1 and s["heartbeat_running"] == 0
    rec.signal("start", t0 + timedelta(minutes=4))  # a retry: still failed until it succeeds
    assert check_series(check, rec, t0 + timedelta(minutes=5))["heartbeat_failed"] == 1
    rec.signal("success", t0 + timedelta(minutes=6, seconds=30))
    s = check_series(check, rec, t0 + timedelta(minutes=7))
    assert s["heartbeat_missing"] == 0 and s["heartbeat_failed"] == 0 and s["heartbeat_running"] == 0
    assert s["heartbeat_last_duration_seconds"] == 150  # from the last /start to the ping


def test_cron_schedule_in_berlin_across_spring_forward():
    # 2026-03-29: Berlin's clocks jump from 02:00 CET to 03:00 CEST; the job runs at 03:00 local time.
    check = CheckOptions(name="etl", schedule="0 3 * * *", timezone="Europe/Berlin", grace="1h")
    rec = CheckRecord(first_seen=berlin(2026, 3, 28, 23, 0))
    assert not missing(check, rec, berlin(2026, 3, 29, 3, 59))
    assert missing(check, rec, berlin(2026, 3, 29, 4, 0, 1))  # never pinged: late after 03:00 + 1h (02:00 UTC)
    assert not missing(check, rec, datetime(2026, 3, 29, 2, 0, tzinfo=UTC))
    rec.signal("success", berlin(2026, 3, 29, 3, 5))
    assert not missing(check, rec, berlin(2026, 3, 29, 3, 30))
    assert not missing(check, rec, berlin(2026, 3, 30, 3, 59))  # the next run is expected at 03:00 CEST
    assert missing(check, rec, berlin(2026, 3, 30, 4, 0, 1))


def test_cron_schedule_in_berlin_across_fall_back():
    # 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET; 03:00 local is then 02:00 UTC, not 01:00 UTC.
    check = CheckOptions(name="etl", schedule="0 3 * * *", timezone="Europe/Berlin", grace="1h")
    rec = CheckRecord(first_seen=berlin(2026, 10, 24, 12, 0))
    rec.signal("success", berlin(2026, 10, 24, 3, 5) + timedelta(hours=9))
    assert not missing(check, rec, datetime(2026, 10, 25, 2, 59, tzinfo=UTC))
    assert missing(check, rec, datetime(2026, 10, 25, 3, 0, 1, tzinfo=UTC))


def test_cron_weekdays_follow_crontab_not_apscheduler():
    # Crontab: 1-5 is Monday to Friday, 0 and 7 are Sunday; APScheduler 3 alone would read 0 as Monday.
    weekdays = CheckOptions(name="w", schedule="0 9 * * 1-5", grace="10m")
    friday = datetime(2026, 5, 8, 9, 30, tzinfo=UTC)
    rec = CheckRecord(first_seen=friday)
    assert not missing(weekdays, rec, datetime(2026, 5, 11, 9, 10, tzinfo=UTC))  # nothing due at the weekend
    assert missing(weekdays, rec, datetime(2026, 5, 11, 9, 10, 1, tzinfo=UTC))  # Monday's run is late
    sunday = CheckOptions(name="s", schedule="0 9 * * 7", grace="10m")
    assert not missing(sunday, rec, datetime(2026, 5, 10, 9, 10, tzinfo=UTC))
    assert missing(sunday, rec, datetime(2026, 5, 10, 9, 10, 1, tzinfo=UTC))
    # Day of month and day of week both set: either one matches, as in cron (1 May 2026 is a Friday).
    either = CheckOptions(name="e", schedule="0 9 15 * mon", grace="0s")
    rec = CheckRecord(first_seen=datetime(2026, 5, 12, tzinfo=UTC))  # a Tuesday
    assert missing(either, rec, datetime(2026, 5, 15, 9, 0, 1, tzinfo=UTC))  # the 15th, a Friday


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"name": "a"}, "set exactly one of period or schedule"),
        ({"name": "a", "period": "1h", "schedule": "* * * * *"}, "set exactly one of period or schedule"),
        ({"name": "a", "schedule": "0 3 * *"}, "wrong number of fields"),
        ({"name": "a", "schedule": "0 25 * * *"}, "invalid cron schedule '0 25 * * *'"),
        ({"name": "a", "schedule": "0 0 31 2 *"}, "never fires"),
        ({"name": "a", "schedule": "0 3 * * *", "timezone": "Europe/Berln"}, "unknown time zone 'Europe/Berln'"),
        ({"name": "a", "period": "1h", "timezone": "UTC"}, "timezone applies only to a schedule"),
        ({"name": "a", "period": "0s"}, "period must be positive"),
        ({"name": "a", "period": "1h", "secret": "short"}, "at least 16 characters"),
    ],
)
def test_bad_check_options(check, message):
    with pytest.raises(ValidationError, match=message.replace("*", r"\*")):
        HeartbeatOptions(name="cron", type="heartbeat", checks=[check])


def test_config_errors_are_located(tmp_path):
    cfg = write_config(
        tmp_path / "cfg",
        """
        database: sqlite:///x.db
        sources:
          - name: cron
            type: heartbeat
            checks:
              - {name: backup, period: 1d}
              - {name: etl, schedule: "0 3 * * 8"}
              - {name: backup, period: 1h}
        """,
    )
    res = run_cli("check", "--config", str(cfg))
    assert res.returncode == 1
    assert (
        "fsincident.yaml:8: sources[0].checks[1].schedule: invalid cron schedule '0 3 * * 8'" in res.stdout + res.stderr
    )
    (cfg / "fsincident.yaml").write_text((cfg / "fsincident.yaml").read_text().replace("* * 8", "* * 0"))
    res = run_cli("check", "--config", str(cfg))
    assert res.returncode == 1
    assert "fsincident.yaml:9: sources[0].checks[2].name: duplicate check name 'backup'" in res.stdout + res.stderr


# ---------------------------------------------------------------------- durable pings


@same_loop
async def test_pings_survive_a_new_instance(sqlite_url):
    store = Store(sqlite_url)
    await store.upgrade()
    clock = FakeClock(datetime(2026, 5, 1, tzinfo=UTC))
    opts = HeartbeatOptions(name="cron", type="heartbeat", checks=[{"name": "backup", "period": "1h", "grace": "0s"}])
    try:
        first = HeartbeatSource(opts, context=SourceContext(clock, SqlStateStore(store, "cron", clock)))
        await first.collect(clock.now())  # first seen now
        clock.advance(timedelta(minutes=50))
        await first.ping("backup", "success", clock.now())
        clock.advance(timedelta(minutes=30))  # 80 minutes after first seen, 30 after the ping
        second = HeartbeatSource(opts, context=SourceContext(clock, SqlStateStore(store, "cron", clock)))
        values = {s.name: s.value for s in await second.collect(clock.now())}
        assert values["heartbeat_missing"] == 0 and values["heartbeat_last_ping_age_seconds"] == 1800
        clock.advance(timedelta(minutes=31))
        values = {s.name: s.value for s in await second.collect(clock.now())}
        assert values["heartbeat_missing"] == 1
    finally:
        await store.close()


# ---------------------------------------------------------------------- through the daemon


MAIN = f"""
listen: 127.0.0.1:{{port}}
database: {{db}}
sources:
  - name: cron
    type: heartbeat
    interval: 1s
    checks:
      - {{name: quick, period: 2s, grace: 1s}}
      - {{name: hourly, period: 1h, secret: {SECRET}, labels: {{team: data}}}}
channels:
  - {{name: ops, urls: ["RECEIVER"]}}
routes:
  - {{notify: ["channel:ops"]}}
"""

RULES = {
    "hb.yaml": """
groups:
  - name: cron
    interval: 1s
    source: cron
    rules:
      - alert: JobMissing
        expr: heartbeat_missing == 1
        annotations:
          summary: "{{ labels.check }} is late or failed"
      - alert: JobRunning
        expr: heartbeat_running == 1
"""
}


@pytest.fixture
def receiver():
    rcv = Receiver().start()
    yield rcv
    rcv.stop()


def _titles(msgs, word, check):
    """The JobMissing notifications of ``check`` whose title has ``word`` (TRIGGERED, RESOLVED)."""
    return [m for m in msgs if word in m["title"] and f"JobMissing: {check} is late or failed" in m["title"]]


@same_loop
async def test_late_job_pages_and_ping_resolves(tmp_path, receiver):
    async with running(tmp_path, MAIN.replace("RECEIVER", receiver.apprise_url("ops")), RULES) as d:
        # Nobody pings "quick": 2 s + 1 s after the daemon first saw it, it is late and pages.
        msgs = await wait_received(receiver, lambda m: _titles(m, "TRIGGERED", "quick"), timeout=20)
        assert _titles(msgs, "TRIGGERED", "hourly") == []
        status, body = await d.call("POST", "/api/v1/heartbeats/quick")
        assert status == 200 and body["check"] == "quick" and body["signal"] == "success", body
        await wait_received(receiver, lambda m: _titles(m, "RESOLVED", "quick"))


@same_loop
async def test_fail_pages_at_once_start_sets_running_and_ping_resolves(tmp_path, receiver):
    async with running(tmp_path, MAIN.replace("RECEIVER", receiver.apprise_url("ops")), RULES) as d:
        status, body = await d.call("GET", "/api/v1/heartbeats/hourly/start")
        assert status == 200 and body["signal"] == "start", body
        rule = await d.wait_rule("JobRunning", lambda r: r["state"] == "firing")
        assert rule["alerts"][0]["labels"]["check"] == "hourly"
        assert rule["alerts"][0]["labels"]["team"] == "data"
        status, _ = await d.call("POST", "/api/v1/heartbeats/hourly/fail")
        assert status == 200
        await wait_received(receiver, lambda m: _titles(m, "TRIGGERED", "hourly"))
        await d.wait_rule("JobRunning", lambda r: r["state"] == "inactive")
        status, _ = await d.call("POST", "/api/v1/heartbeats/hourly")
        assert status == 200
        await wait_received(receiver, lambda m: _titles(m, "RESOLVED", "hourly"))


@same_loop
async def test_secret_url_and_auth(tmp_path, receiver):
    async with running(tmp_path, MAIN.replace("RECEIVER", receiver.apprise_url("ops")), RULES) as d:
        status, body = await d.call("GET", f"/api/v1/heartbeats/hourly/fail?key={SECRET}", scope=None)
        assert status == 200 and body["signal"] == "fail", body
        await wait_received(receiver, lambda m: _titles(m, "TRIGGERED", "hourly"))
        for path in (
            "/api/v1/heartbeats/hourly?key=wrong-key-0123456789",
            f"/api/v1/heartbeats/hourly?key={SECRET}x",
            f"/api/v1/heartbeats/quick?key={SECRET}",  # another check's key
            f"/api/v1/heartbeats/nosuch?key={SECRET}",  # unknown check: the same answer, names do not leak
        ):
            status, body = await d.call("POST", path, scope=None)
            assert status == 401 and body["error"] == "invalid heartbeat key", (path, body)
        status, body = await d.call("POST", "/api/v1/heartbeats/hourly", scope=None)
        assert status == 401 and body["error"] == "missing bearer token", body
        status, body = await d.call("POST", "/api/v1/heartbeats/hourly", scope="read")
        assert status == 403, body
        status, body = await d.call("POST", "/api/v1/heartbeats/nosuch", scope="ingest")
        assert status == 404 and body["error"] == "no heartbeat check named 'nosuch'", body
        status, body = await d.call("HEAD", "/api/v1/heartbeats/hourly", scope="ingest")
        assert status == 405, body
        # Still failed: none of the refused requests counted as a ping. The right key resolves it.
        assert (await d.rule("JobMissing"))["state"] == "firing"
        status, _ = await d.call("POST", f"/api/v1/heartbeats/hourly?key={SECRET}", scope=None)
        assert status == 200
        await wait_received(receiver, lambda m: _titles(m, "RESOLVED", "hourly"))
        assert d.daemon.redactor.scrub(f"GET /api/v1/heartbeats/hourly?key={SECRET}").endswith("key=***")


@same_loop
async def test_no_heartbeat_source_is_404(tmp_path, receiver):
    main = MAIN.replace("RECEIVER", receiver.apprise_url("ops"))
    main = main[: main.index("  - name: cron")] + "  - {name: p, type: push}\n" + main[main.index("channels:") :]
    async with running(tmp_path, main) as d:
        status, body = await d.call("POST", "/api/v1/heartbeats/quick")
        assert status == 404 and body["error"] == "no heartbeat check named 'quick'", body


# ---------------------------------------------------------------------- the real process, restarted
