"""``type: push``: samples pushed to ``POST /api/v1/metrics`` (JSON and Prometheus text) page through rules."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fsincident.api.ingest import BadInput, parse_json_samples, parse_text_samples
from fsincident.core import Labels, Sample
from fsincident.plugins import SourceContext
from fsincident.sources.push import LimitExceeded, PushOptions, PushSource
from fsincident.store import SqlStateStore, Store
from tests.helpers import DaemonProcess, Receiver, free_port, write_config
from tests.plugins._ingest import running, wait_received

# One event loop for the module: a daemon stopped mid-query leaves connections that are closed when garbage
# collected, and that must happen on a loop that still runs (as in tests/api).
same_loop = pytest.mark.asyncio(loop_scope="module")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

MAIN = """
listen: 127.0.0.1:{port}
database: {db}
sources:
  - {name: pushed, type: push, interval: 1s, expire: 1h}
  - {name: other, type: push, interval: 1s, max_series: 3}
channels:
  - {name: ops, urls: ["RECEIVER"]}
routes:
  - {notify: ["channel:ops"]}
"""

RULES = {
    "push.yaml": """
groups:
  - name: pushed
    interval: 1s
    source: pushed
    rules:
      - alert: CheckoutErrors
        expr: checkout_errors > 10
        severity: critical
        annotations:
          summary: "{{ labels.shop }} has {{ value }} checkout errors"
      - alert: QueueDepth
        expr: queue_depth > 100
      - alert: Probe
        expr: probe >= 0
  - name: other
    interval: 1s
    source: other
    rules:
      - alert: ProbeOther
        expr: probe >= 0
"""
}


@pytest.fixture
def receiver():
    rcv = Receiver().start()
    yield rcv
    rcv.stop()


def config(receiver: Receiver, main: str = MAIN) -> str:
    return main.replace("RECEIVER", receiver.apprise_url("ops"))


# ---------------------------------------------------------------------- parsing (what the endpoint validates)


def test_json_samples_parsed_with_labels_and_timestamps():
    got = parse_json_samples(
        b'[{"metric": "a_b:c", "labels": {"x": "1"}, "value": 2},'
        b' {"metric": "t", "value": 0.5, "timestamp": 1767225600},'
        b' {"metric": "t", "value": 1.5, "timestamp": "2026-01-01T00:00:00Z"}]'
    )
    assert got[0] == Sample("a_b:c", Labels({"x": "1"}), 2.0)
    assert got[1].timestamp == got[2].timestamp == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'[{"metric": "a", "value": 1}, {"metric": "b", "value": "1"}]', "[1].value: must be a number"),
        (b'[{"metric": "a", "value": true}]', "[0].value: must be a number"),
        (b'[{"metric": "a", "value": NaN}]', "malformed JSON body"),
        (b'[{"metric": "1a", "value": 1}]', "[0].metric: '1a' is not a valid metric name"),
        (b'[{"value": 1}]', "[0].metric: must be a string"),
        (b'[{"metric": "a", "value": 1, "labels": {"bad-name": "x"}}]', "[0].labels: 'bad-name' is not a valid label"),
        (b'[{"metric": "a", "value": 1, "labels": {"x": 1}}]', "[0].labels.x: must be a string"),
        (b'[{"metric": "a", "value": 1, "labels": {"x": "\\u0000"}}]', "[0].labels.x: contains a NUL"),
        (b'[{"metric": "a", "value": 1, "timestamp": "yesterday"}]', "[0].timestamp: 'yesterday' is not ISO 8601"),
        (b'[{"metric": "a", "value": 1, "timestamp": "2026-01-01T00:00:00"}]', "[0].timestamp: an ISO 8601"),
        (b'[{"metric": "a", "value": 1, "timestamp": 1e300}]', "[0].timestamp: is out of range"),
        (b'[{"metric": "a", "value": 1, "timestamp": "0001-01-01T00:00:00+14:00"}]', "[0].timestamp: is out of range"),
        (b'[{"metric": "a", "value": 1, "color": "red"}]', "[0].color: unknown field"),
        (b'[{"metric": "a", "value": 1e999}]', "[0].value: must be a finite number"),
        (b'[{"metric": "a", "value": 1' + b"0" * 400 + b"}]", "[0].value: must be a finite number"),
        (b'{"metric": "a", "value": 1}', "the body must be a JSON array"),
        (b"[1]", "[0]: must be an object"),
        (b"[{", "malformed JSON body"),
    ],
)
def test_bad_json_names_index_and_field(body, message):
    with pytest.raises(BadInput) as e:
        parse_json_samples(body)
    assert e.value.message.startswith(message), e.value.message
    assert e.value.status == 400


def test_text_format_parsed_and_bad_line_located():
    ok = parse_text_samples(b'# TYPE jobs gauge\njobs{queue="a"} 3\njobs{queue="b"} NaN\n')
    assert ok == [Sample("jobs", Labels({"queue": "a"}), 3.0)]  # NaN dropped, as a scrape does
    with pytest.raises(BadInput) as e:
        parse_text_samples(b'# HELP jobs Jobs.\njobs{queue="a"} 3\njobs{queue=b} 4\njobs 5\n')
    assert e.value.message == "line 3: Invalid labels: queue=b"
    assert e.value.detail == {"line": 3}
    with pytest.raises(BadInput) as e:
        parse_text_samples(b"jobs 1\n# TYPE jobs histogrammm\n")
    assert e.value.message.startswith("line 2: Invalid metric type")
    with pytest.raises(BadInput, match="not UTF-8"):
        parse_text_samples(b"jobs\xff 1\n")
    with pytest.raises(BadInput) as e:
        parse_text_samples(b'jobs{queue="' + b"q" * 5000 + b'"} 1\n')
    assert e.value.message == "series jobs labels.queue: longer than 4096 characters"


def test_too_many_samples_is_413():
    body = ("[" + ",".join('{"metric": "a", "value": 1}' for _ in range(100_001)) + "]").encode()
    with pytest.raises(BadInput) as e:
        parse_json_samples(body)
    assert e.value.status == 413 and "100001 > 100000" in e.value.message


# ---------------------------------------------------------------------- the source on its own


def _src(**kw) -> PushSource:
    return PushSource(PushOptions(name="app", type="push", **kw))


@same_loop
async def test_latest_value_per_series_with_job_label_and_expiry():
    src = _src(expire="5m")
    await src.ingest([Sample("x", Labels({"a": "1"}), 1.0), Sample("x", Labels({"a": "1"}), 2.0)], T0)
    await src.ingest([Sample("y", Labels({"job": "mine"}), 7.0)], T0 + timedelta(minutes=3))
    got = {(s.name, s.labels): s.value for s in await src.collect(T0 + timedelta(minutes=4))}
    assert got == {("x", Labels({"a": "1", "job": "app"})): 2.0, ("y", Labels({"job": "mine"})): 7.0}
    later = await src.collect(T0 + timedelta(minutes=5, seconds=1))
    assert [(s.name, s.value) for s in later] == [("y", 7.0)]  # x was not pushed for 5m: gone


@same_loop
async def test_older_timestamp_does_not_replace_newer_value():
    src = _src()
    lab = Labels({})
    await src.ingest([Sample("x", lab, 2.0, T0)], T0)
    await src.ingest([Sample("x", lab, 1.0, T0 - timedelta(seconds=30))], T0)
    assert [s.value for s in await src.collect(T0)] == [2.0]


@same_loop
async def test_max_series_refuses_whole_push():
    src = _src(max_series=3)
    await src.ingest([Sample("x", Labels({"n": str(n)}), 1.0) for n in range(2)], T0)
    with pytest.raises(LimitExceeded, match="max_series 3"):
        await src.ingest([Sample("x", Labels({"n": str(n)}), 5.0) for n in range(1, 4)], T0)
    assert sorted(s.value for s in await src.collect(T0)) == [1.0, 1.0]  # n=1 not overwritten by the refused push
    await src.ingest([Sample("x", Labels({"n": "0"}), 9.0), Sample("x", Labels({"n": "2"}), 9.0)], T0)
    assert len(await src.collect(T0)) == 3


@same_loop
async def test_values_survive_a_clean_stop_until_they_expire(sqlite_url):
    store = Store(sqlite_url)
    await store.upgrade()
    clock = type("C", (), {"now": staticmethod(lambda: T0)})()
    try:
        opts = PushOptions(name="app", type="push", expire="10m")
        first = PushSource(opts, context=SourceContext(clock, SqlStateStore(store, "app", clock)))
        await first.ingest([Sample("old", Labels({}), 1.0)], T0 - timedelta(minutes=9))
        await first.ingest([Sample("new", Labels({}), float("inf"))], T0)
        await first.close()
        second = PushSource(opts, context=SourceContext(clock, SqlStateStore(store, "app", clock)))
        got = {s.name: s.value for s in await second.collect(T0 + timedelta(minutes=2))}
        assert got == {"new": float("inf")}  # "old" expired while the daemon was down
        third = PushSource(opts, context=SourceContext(clock, SqlStateStore(store, "app", clock)))
        assert await third.collect(T0) == []  # a saved copy is taken back once, never twice
    finally:
        await store.close()


# ---------------------------------------------------------------------- through the daemon's API


@same_loop
async def test_json_and_text_pushes_page_and_bad_input_stores_nothing(tmp_path, receiver):
    async with running(tmp_path, config(receiver), RULES) as d:
        status, body = await d.call(
            "POST",
            "/api/v1/metrics?source=pushed",
            json=[{"metric": "checkout_errors", "labels": {"shop": "eu"}, "value": 42}],
        )
        assert status == 200 and body == {"accepted": 1, "sources": ["pushed"]}, body
        msgs = await wait_received(receiver, lambda m: len(m) >= 1)
        assert "TRIGGERED" in msgs[0]["title"] and "eu has 42.0 checkout errors" in msgs[0]["message"]

        text = '# TYPE queue_depth gauge\nqueue_depth{queue="orders"} 500\n'
        status, body = await d.call("POST", "/api/v1/metrics?source=pushed", data=text, content_type="text/plain")
        assert status == 200 and body["accepted"] == 1, body
        rule = await d.wait_rule("QueueDepth", lambda r: r["state"] == "firing")
        assert rule["alerts"][0]["labels"] == {
            "queue": "orders",
            "job": "pushed",
            "alertname": "QueueDepth",
            "severity": "warning",
        }

        # Bad input: a 400 naming the line or field, and not even the good samples before it are stored.
        status, body = await d.call(
            "POST",
            "/api/v1/metrics",
            json=[{"metric": "probe", "labels": {"n": "bad-json"}, "value": 1}, {"metric": "probe", "value": "x"}],
        )
        assert status == 400 and body["error"] == "[1].value: must be a number", body
        assert body["detail"] == {"index": 1, "field": "value"}
        bad_text = 'probe{n="bad-text"} 1\nprobe{n=oops} 2\n'
        status, body = await d.call("POST", "/api/v1/metrics", data=bad_text, content_type="text/plain")
        assert status == 400 and body["error"] == "line 2: Invalid labels: n=oops", body
        status, body = await d.call("POST", "/api/v1/metrics", data="[{", content_type="application/json")
        assert status == 400 and body["error"] == "malformed JSON body", body
        status, body = await d.call("POST", "/api/v1/metrics", data="probe 1", content_type="application/x-protobuf")
        assert status == 415, body

        # "other" holds at most 3 series: a push into both sources that it cannot take is refused for both.
        four = [{"metric": "probe", "labels": {"n": f"too-many-{i}"}, "value": 1} for i in range(4)]
        status, body = await d.call("POST", "/api/v1/metrics", json=four)
        assert status == 400 and "max_series 3" in body["error"], body
        assert body["detail"] == {"source": "other", "max_series": 3}

        # A good push to both sources (no ?source=) afterwards: only it shows up, in both.
        status, body = await d.call("POST", "/api/v1/metrics", json=[{"metric": "probe", "value": 1}])
        assert status == 200 and body == {"accepted": 1, "sources": ["pushed", "other"]}, body
        for name in ("Probe", "ProbeOther"):
            rule = await d.wait_rule(name, lambda r: r["state"] == "firing")
            assert rule["series_evaluated"] == 1, rule
            assert [a["labels"].get("n") for a in rule["alerts"]] == [None]


@same_loop
async def test_source_parameter_targets_one_source(tmp_path, receiver):
    async with running(tmp_path, config(receiver), RULES) as d:
        status, body = await d.call("POST", "/api/v1/metrics?source=other", json=[{"metric": "probe", "value": 3}])
        assert status == 200 and body["sources"] == ["other"], body
        await d.wait_rule("ProbeOther", lambda r: r["state"] == "firing")
        # Bytes with no Content-Type (application/octet-stream, like curl's form default): read as text format.
        status, body = await d.call("POST", "/api/v1/metrics?source=pushed", data=b"queue_depth 200\n")
        assert status == 200 and body["accepted"] == 1, body
        await d.wait_rule("QueueDepth", lambda r: r["state"] == "firing")
        # Evaluated in the same group pass as QueueDepth, on a collection made after the probe push: not there.
        assert (await d.rule("Probe"))["series_evaluated"] == 0

        status, body = await d.call("POST", "/api/v1/metrics?source=nope", json=[{"metric": "probe", "value": 3}])
        assert status == 404 and "nope" in body["error"], body
        big = b"probe 1\n" * (5 * 1024 * 1024 // 8)  # over the 4 MiB request bound
        status, body = await d.call("POST", "/api/v1/metrics?source=other", data=big, content_type="text/plain")
        assert status == 413 and isinstance(body, dict) and body["error"], body


@same_loop
async def test_scopes_and_no_push_source(tmp_path, receiver):
    main = config(receiver, MAIN.replace("type: push, interval: 1s, max_series: 3", "type: host, interval: 1s"))
    main = main.replace("  - {name: pushed, type: push, interval: 1s, expire: 1h}\n", "")
    async with running(tmp_path, main) as d:
        sample = [{"metric": "probe", "value": 1}]
        status, body = await d.call("POST", "/api/v1/metrics", json=sample, scope=None)
        assert status == 401, body
        status, body = await d.call("POST", "/api/v1/metrics", json=sample, scope="read")
        assert status == 403 and "ingest" in body["error"], body
        status, body = await d.call("POST", "/api/v1/metrics", json=sample, scope="admin")
        assert status == 404 and body["error"] == "no source accepts ingest", body
        status, body = await d.call("POST", "/api/v1/metrics?source=other", json=sample)
        assert status == 404 and body["error"] == "no source named 'other' accepts ingest", body


@same_loop
async def test_expired_series_resolve_their_alert(tmp_path, receiver):
    main = config(receiver).replace("expire: 1h", "expire: 2s")
    async with running(tmp_path, main, RULES) as d:
        status, _ = await d.call("POST", "/api/v1/metrics", json=[{"metric": "queue_depth", "value": 900}])
        assert status == 200
        msgs = await wait_received(receiver, lambda m: any("TRIGGERED" in x["title"] for x in m))
        assert "QueueDepth" in msgs[0]["title"]
        # Nothing pushed any more: after 2 s the series is gone and the alert resolves.
        await wait_received(receiver, lambda m: any("RESOLVED" in x["title"] for x in m), timeout=15)
        assert (await d.rule("QueueDepth"))["series_evaluated"] == 0


@same_loop
async def test_pushed_values_survive_a_restart(tmp_path, receiver):
    async with running(tmp_path, config(receiver), RULES) as d:
        status, _ = await d.call("POST", "/api/v1/metrics", json=[{"metric": "queue_depth", "value": 900}])
        assert status == 200
        await d.wait_rule("QueueDepth", lambda r: r["state"] == "firing")
        await wait_received(receiver, lambda m: len(m) == 1)
    async with running(tmp_path, config(receiver), RULES) as d:
        rule = await d.wait_rule("QueueDepth", lambda r: r["last_evaluation"] is not None and r["series_evaluated"])
        assert rule["state"] == "firing", rule
        assert rule["alerts"][0]["value"] == 900
    assert [m["title"] for m in receiver.received if "RESOLVED" in m["title"]] == []


@same_loop
async def test_reload_that_changes_the_source_keeps_its_values(tmp_path, receiver):
    async with running(tmp_path, config(receiver), RULES) as d:
        status, _ = await d.call("POST", "/api/v1/metrics", json=[{"metric": "queue_depth", "value": 900}])
        assert status == 200
        await d.wait_rule("QueueDepth", lambda r: r["state"] == "firing")
        cfg = d.daemon.config.directory
        main = (Path(cfg) / "fsincident.yaml").read_text()
        (Path(cfg) / "fsincident.yaml").write_text(main.replace("expire: 1h", "expire: 2h"))
        old = d.daemon.sources.sources["pushed"]
        assert await d.daemon.reload()
        assert d.daemon.sources.sources["pushed"] is not old  # a new instance, with the new options
        status, _ = await d.call(
            "POST", "/api/v1/metrics?source=pushed", json=[{"metric": "checkout_errors", "value": 0}]
        )
        assert status == 200
        await d.wait_rule("CheckoutErrors", lambda r: r["series_evaluated"] == 1)
        rule = await d.rule("QueueDepth")  # evaluated in the same pass, on the new instance's collection
        assert rule["state"] == "firing" and rule["series_evaluated"] == 1, rule
    assert [m["title"] for m in receiver.received if "RESOLVED" in m["title"]] == []


# ---------------------------------------------------------------------- the real process


@pytest.mark.slow
def test_real_daemon_pages_for_pushed_json_and_text(tmp_path, receiver):
    port = free_port()
    main = config(receiver).replace("{port}", str(port)).replace("{db}", f"sqlite:///{tmp_path}/state.db")
    cfg = write_config(tmp_path / "cfg", main, RULES)
    d = DaemonProcess(cfg, port).start()
    try:
        d.token = d.create_token("ingest")
        status, body = d.api("POST", "/api/v1/metrics", [{"metric": "checkout_errors", "value": 11}])
        assert status == 200, body
        status, body = d.api("POST", "/api/v1/metrics", [{"metric": "checkout_errors", "value": "11"}])
        assert status == 400 and body["error"] == "[0].value: must be a number", body
        req = urllib.request.Request(
            d.url + "/api/v1/metrics?source=pushed",
            data=b'queue_depth{queue="mail"} 101\n',
            method="POST",
            headers={"Authorization": f"Bearer {d.token}", "Content-Type": "text/plain; version=0.0.4"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        msgs = receiver.wait_for(lambda m: len(m) >= 2)
        titles = sorted(m["title"] for m in msgs)
        assert any("CheckoutErrors" in t for t in titles) and any("QueueDepth" in t for t in titles), titles
    finally:
        assert d.stop() == 0
