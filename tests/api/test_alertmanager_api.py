"""Alertmanager API v2 on the real daemon: ``POST/GET /api/v2/alerts`` (wire shapes of Alertmanager 0.25's
OpenAPI spec), ``/api/v2/alerts/groups``, ``/api/v2/status``, ``/api/v2/receivers``; 4xx JSON errors; ingested
alerts open incidents, and an ``endsAt`` that passes resolves them."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsincident.core import Labels
from fsincident.store.tables import AlertTransition
from tests.helpers import Exposition, Receiver, free_port, write_config

from .conftest import Api, serve

pytestmark = pytest.mark.asyncio(loop_scope="module")

_serial = itertools.count(1)
AM_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ALERT_KEYS = {"annotations", "endsAt", "fingerprint", "receivers", "startsAt", "status", "updatedAt", "labels"}

CONFIG = """
listen: 127.0.0.1:{port}
database: sqlite:///{dir}/state.db
alertmanager: {{resolve_timeout: 5m}}
channels:
  - {{name: ops, urls: ["{hook}"]}}
time_intervals:
  - name: weekend
    time_intervals: [{{weekdays: [saturday, sunday], location: Europe/Berlin}}]
inhibit_rules:
  - source_matchers: ['severity="critical"', 'inhibitor="yes"']
    target_matchers: ['severity="warning"']
    equal: [instance]
routes:
  - matchers: ['team="db"']
    receiver: database
    group_by: [alertname]
    group_wait: 30s
    notify: ["channel:ops"]
    routes:
      - matchers: ['severity=~"critical|page"']
        receiver: db-pager
        continue: true
        mute_time_intervals: [weekend]
      - match: {{severity: critical}}
        receiver: db-chat
        repeat_interval: 2h
  - receiver: catchall
    notify: ["channel:ops"]
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    directory = tmp_path_factory.mktemp("am")
    exposition = Exposition().start()
    receiver = Receiver().start()
    port = free_port()
    cfg = write_config(
        directory / "cfg",
        CONFIG.format(port=port, dir=directory, hook=receiver.apprise_url("ops")),
    )
    try:
        async with serve(cfg, port, exposition, receiver, prefix="am") as a:
            yield a
    finally:
        exposition.stop()
        receiver.stop()


def am(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def unique(**labels: str) -> dict[str, str]:
    """Labels no other test posts (a ``test`` label with a serial)."""
    return {"alertname": "AmTest", "test": f"t{next(_serial)}", **labels}


async def post(api: Api, alerts: list[dict[str, Any]], scope: str = "ingest") -> tuple[int, Any]:
    status, body, _ = await api.call("POST", "/api/v2/alerts", scope=scope, json=alerts)
    return status, body


async def get(api: Api, query: str = "", path: str = "/api/v2/alerts") -> list[dict[str, Any]]:
    status, body, _ = await api.call("GET", path + query, scope="read")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def eventually(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await fn()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def incident_of(api: Api, labels: dict[str, str]) -> dict[str, Any] | None:
    fp = Labels(labels).fingerprint
    for inc in await api.daemon.incidents.list(limit=1000):
        full = await api.daemon.incidents.get(inc["id"])
        if any(a["fingerprint"] == fp for a in full["alerts"]):
            return full
    return None


# ---------------------------------------------------------------------------------------------- posting


async def test_post_then_get_has_alertmanagers_shape(api: Api) -> None:
    now = datetime.now(UTC)
    a = unique(team="db", severity="critical", instance="db1")
    b = unique(instance="web1")
    status, body, _ = await api.call(
        "POST",
        "/api/v2/alerts",
        scope="ingest",
        json=[
            {
                "labels": a,
                "annotations": {"summary": "db down"},
                "startsAt": am(now - timedelta(minutes=3)),
                "endsAt": am(now + timedelta(minutes=4)),
                "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
            },
            {"labels": b},
        ],
    )
    assert status == 200 and body is None  # an empty body, as Alertmanager answers
    got = {x["labels"]["test"]: x for x in await get(api, f'?filter=test=~"{a["test"]}|{b["test"]}"')}
    ga, gb = got[a["test"]], got[b["test"]]
    assert set(ga) == ALERT_KEYS | {"generatorURL"} and set(gb) == ALERT_KEYS  # generatorURL omitted when empty
    assert ga["labels"] == a and ga["annotations"] == {"summary": "db down"} and gb["annotations"] == {}
    assert ga["fingerprint"] == Labels(a).fingerprint and re.fullmatch(r"[0-9a-f]{16}", ga["fingerprint"])
    assert ga["generatorURL"] == "http://prometheus:9090/graph?g0.expr=up"
    for x in (ga, gb):
        assert all(AM_TIME.match(x[k]) for k in ("startsAt", "endsAt", "updatedAt")), x
        assert set(x["status"]) == {"state", "silencedBy", "inhibitedBy"}
        assert x["status"]["silencedBy"] == [] and x["status"]["inhibitedBy"] == []
        assert x["status"]["state"] in ("unprocessed", "active")
    assert ga["startsAt"] == am(now - timedelta(minutes=3)) and ga["endsAt"] == am(now + timedelta(minutes=4))
    # Defaults: startsAt now, endsAt now + resolve_timeout.
    starts = datetime.fromisoformat(gb["startsAt"])
    assert abs((starts - now).total_seconds()) < 5
    assert datetime.fromisoformat(gb["endsAt"]) - starts == timedelta(minutes=5)
    # Receivers: every route the alert lands in (continue), as Alertmanager computes them.
    assert ga["receivers"] == [{"name": "db-pager"}, {"name": "db-chat"}]
    assert gb["receivers"] == [{"name": "catchall"}]
    # The incidents stage picks them up: an incident per group, and the alerts turn active.
    assert await eventually(lambda: incident_of(api, a))
    assert await eventually(lambda: incident_of(api, b))
    got = await eventually(
        lambda: _states(api, f'?filter=test=~"{a["test"]}|{b["test"]}"', {"active"}),
    )
    assert len(got) == 2


async def _states(api: Api, query: str, want: set[str]) -> list[dict[str, Any]] | None:
    got = await get(api, query)
    return got if got and {x["status"]["state"] for x in got} == want else None


async def test_whole_body_refusals_store_nothing(api: Api) -> None:
    lab = unique()
    good = {"labels": lab}
    bodies: list[Any] = [
        {"labels": lab},  # an object, not an array
        [good, None],
        [good, {}],  # labels required
        [good, {"labels": None}],
        [good, {"labels": ["a"]}],
        [good, {"labels": {"a": 1}}],
        [good, {"labels": {"a": "b"}, "annotations": {"x": 2}}],
        [good, {"labels": {"a": "b"}, "annotations": "x"}],
        [good, {"labels": {"a": "b"}, "startsAt": "yesterday"}],
        [good, {"labels": {"a": "b"}, "startsAt": "2026-01-01"}],
        [good, {"labels": {"a": "b"}, "endsAt": "2026-01-01 00:00:00Z"}],
        [good, {"labels": {"a": "b"}, "endsAt": 1767225600}],
        [good, {"labels": {"a": "b"}, "startsAt": "2026-13-01T00:00:00Z"}],
        [good, {"labels": {"a": "b"}, "generatorURL": "not a url"}],
        [good, {"labels": {"a": "b"}, "generatorURL": 5}],
    ]
    for body in bodies:
        status, got = await post(api, body)
        # Alertmanager's BadRequest: the message as a JSON string
        assert status == 400 and isinstance(got, str) and got.startswith("parsing alerts body failed"), (body, got)
    for raw in (b"xx", b"[{", b'[{"labels": {"a": "\xff"}}]', b"[" * 100_000 + b"]" * 100_000):
        status, got, _ = await api.call(
            "POST", "/api/v2/alerts", scope="ingest", data=raw, headers={"Content-Type": "application/json"}
        )
        assert status == 400 and isinstance(got, str), (raw[:20], status, got)
    assert await get(api, f'?filter=test="{lab["test"]}"') == []


async def test_invalid_alerts_are_refused_one_by_one(api: Api) -> None:
    """As Alertmanager: the valid alerts of a request are stored, the invalid ones named in a 400."""
    now = datetime.now(UTC)
    ok1, ok2 = unique(n="1"), unique(n="2", empty="")
    alerts = [
        {"labels": ok1},
        {"labels": {}},
        {"labels": {"a b": "c"}},
        {"labels": {"only_empty": ""}},
        {"labels": unique(), "startsAt": am(now), "endsAt": am(now - timedelta(minutes=1))},
        {"labels": unique(), "annotations": {"bad name": "x"}},
        {"labels": unique(nul="a\x00b")},
        {"labels": ok2, "annotations": {"empty": ""}},
        {"labels": {"ä": "b"}},
    ]
    status, body = await post(api, alerts)
    # Alertmanager's answer: a 400 whose body is the messages of the refused alerts, joined by "; ".
    assert status == 400, body
    assert body.split("; ") == [
        "at least one label pair required",
        'invalid label set: invalid name "a b"',
        "at least one label pair required",
        "start time must be before end time",
        'invalid annotations: invalid name "bad name"',
        'invalid label set: invalid value "a\\u0000b"',
        'invalid label set: invalid name "\\u00e4"',
    ]
    got = await get(api, f'?filter=test=~"{ok1["test"]}|{ok2["test"]}"')
    assert sorted(x["labels"]["test"] for x in got) == sorted([ok1["test"], ok2["test"]])
    # Empty label values are dropped (Alertmanager's removeEmptyLabels), empty annotations kept.
    [g2] = [x for x in got if x["labels"]["test"] == ok2["test"]]
    assert "empty" not in g2["labels"] and g2["annotations"] == {"empty": ""}
    assert g2["fingerprint"] == Labels({k: v for k, v in ok2.items() if v}).fingerprint


async def test_time_forms_alertmanager_accepts(api: Api) -> None:
    lab = unique()
    forms = [
        ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000Z"),
        ("2026-01-02T03:04:05.123456789Z", "2026-01-02T03:04:05.123Z"),
        ("2026-01-02T05:04:05+02:00", "2026-01-02T03:04:05.000Z"),
        ("2026-01-02T05:04:05.5+0200", "2026-01-02T03:04:05.500Z"),
        ("2026-01-02T03:04:05", "2026-01-02T03:04:05.000Z"),
        ("2026-01-02T03:04Z", "2026-01-02T03:04:00.000Z"),
        ("2026-01-02 03:04:05", "2026-01-02T03:04:05.000Z"),
    ]
    for i, (text, shown) in enumerate(forms):
        labels = {**lab, "form": str(i)}
        status, body = await post(api, [{"labels": labels, "startsAt": text, "endsAt": "2099-01-01T00:00:00Z"}])
        assert status == 200, (text, body)
        [got] = await get(api, f'?filter=test="{lab["test"]}"&filter=form="{i}"')
        assert got["startsAt"] == shown, text


async def test_scopes(api: Api) -> None:
    body = [{"labels": unique()}]
    status, got = await post(api, body, scope="read")
    assert status == 403 and set(got) == {"error", "detail"}
    status, got, _ = await api.call("POST", "/api/v2/alerts", json=body)
    assert status == 401 and set(got) == {"error", "detail"}
    status, got, _ = await api.call("POST", "/api/v2/alerts", token="fsi_nope", json=body)
    assert status == 401
    status, got, _ = await api.call("POST", "/api/v2/alerts", scope="admin", json=body)
    assert status == 200  # admin includes ingest
    for path in ("/api/v2/alerts", "/api/v2/alerts/groups", "/api/v2/status", "/api/v2/receivers"):
        status, got, _ = await api.call("GET", path, scope="ingest")
        assert status == 403 and set(got) == {"error", "detail"}, path
        status, got, _ = await api.call("GET", path)
        assert status == 401, path


async def test_big_body_is_413(api: Api) -> None:
    big = [{"labels": unique(), "annotations": {"x": "y" * 1000}} for _ in range(5000)]
    status, got = await post(api, big)
    assert status == 413 and set(got) == {"error", "detail"}


# ---------------------------------------------------------------------------------------------- resolving


async def test_explicit_end_resolves_and_an_end_that_passes_resolves(api: Api) -> None:
    now = datetime.now(UTC)
    soon, gone = unique(instance="a"), unique(instance="b")
    status, body = await post(
        api,
        [
            {"labels": soon, "endsAt": am(now + timedelta(seconds=1.5))},
            {"labels": gone, "endsAt": am(now + timedelta(minutes=4))},
        ],
    )
    assert status == 200, body
    inc_soon = await eventually(lambda: incident_of(api, soon))
    inc_gone = await eventually(lambda: incident_of(api, gone))
    assert inc_soon["state"] == "triggered" and inc_gone["state"] == "triggered"
    # An alert posted with an end in the past (Prometheus' "resolved") resolves at once ...
    status, body = await post(api, [{"labels": gone, "endsAt": am(datetime.now(UTC) - timedelta(seconds=1))}])
    assert status == 200, body

    async def resolved(labels: dict[str, str]) -> dict[str, Any] | None:
        inc = await incident_of(api, labels)
        return inc if inc and inc["state"] == "resolved" else None

    await eventually(lambda: resolved(gone))
    # ... and one whose endsAt passes is resolved by the ingest module, at its endsAt.
    inc = await eventually(lambda: resolved(soon), timeout=15)
    [alert] = inc["alerts"]
    assert alert["state"] == "resolved" and alert["ends_at"].startswith(am(now + timedelta(seconds=1.5))[:19])
    assert await get(api, f'?filter=test=~"{soon["test"]}|{gone["test"]}"') == []


# ---------------------------------------------------------------------------------------------- reading


async def test_filters_and_flags(api: Api) -> None:
    a = unique(team="db", severity="warning", instance="x1")
    b = unique(severity="info", instance="x2")
    tag = f'test=~"{a["test"]}|{b["test"]}"'
    assert (await post(api, [{"labels": a}, {"labels": b}]))[0] == 200
    assert len(await get(api, f"?filter={tag}")) == 2
    assert [x["labels"] for x in await get(api, f'?filter={tag}&filter=severity="info"')] == [b]
    assert [x["labels"] for x in await get(api, f"?filter={tag}&filter=team!=db")] == [b]
    assert [x["labels"] for x in await get(api, f"?filter={tag}&receiver=data.*")] == [a]
    assert [x["labels"] for x in await get(api, f"?filter={tag}&receiver=catchall")] == [b]
    assert await get(api, f"?filter={tag}&receiver=data") == []  # anchored, as Alertmanager's regex
    await eventually(lambda: _states(api, f"?filter={tag}", {"active"}))
    assert await get(api, f"?filter={tag}&active=false") == []
    assert len(await get(api, f"?filter={tag}&unprocessed=false&silenced=0&inhibited=False")) == 2
    # Sorted by fingerprint, as Alertmanager sorts them.
    fps = [x["fingerprint"] for x in await get(api)]
    assert fps == sorted(fps)
    for query in (
        "?active=maybe",
        "?filter=nolabel",
        "?filter==b",
        "?filter=",
        '?filter=a=~"("',
        "?receiver=(",
        "?silenced=2",
    ):
        status, body, _ = await api.call("GET", "/api/v2/alerts" + query, scope="read")
        assert status == 400 and isinstance(body, str), (query, body)


async def test_rule_alerts_are_listed_too(api: Api) -> None:
    labels = unique(severity="warning", instance="r1")
    now = api.daemon.clock.now()
    async with api.daemon.store.session() as s:
        s.add(
            AlertTransition(
                fingerprint=Labels(labels).fingerprint,
                alertname="AmTest",
                origin="rule:g/AmTest",
                labels=labels,
                annotations={"summary": "from a rule"},
                value=1.0,
                state="firing",
                at=now,
            )
        )
    api.daemon.engine.kick("incidents")

    async def listed() -> list[dict[str, Any]]:
        return await get(api, f'?filter=test="{labels["test"]}"')

    [got] = await eventually(listed)
    assert set(got) == ALERT_KEYS and got["labels"] == labels and got["annotations"] == {"summary": "from a rule"}
    assert got["status"]["state"] == "active" and got["receivers"] == [{"name": "catchall"}]
    assert got["startsAt"] == am(now) and AM_TIME.match(got["endsAt"])


async def test_silenced_and_inhibited_status(api: Api) -> None:
    target = unique(severity="warning", instance="h9")
    source = unique(severity="critical", instance="h9", inhibitor="yes")
    assert (await post(api, [{"labels": target}, {"labels": source}]))[0] == 200
    # The critical alert (once it fires in an incident) inhibits the warning with the same instance.
    inhibited = await eventually(lambda: _states(api, f'?filter=test="{target["test"]}"', {"suppressed"}), 15)
    assert inhibited[0]["status"]["inhibitedBy"] == [Labels(source).fingerprint]
    assert inhibited[0]["status"]["silencedBy"] == []
    assert await get(api, f'?filter=test="{target["test"]}"&inhibited=false') == []
    # A silence on the critical one.
    now = datetime.now(UTC)
    status, body, _ = await api.call(
        "POST",
        "/api/v2/silences",
        scope="ack",
        json={
            "matchers": [{"name": "test", "value": source["test"], "isRegex": False, "isEqual": True}],
            "startsAt": am(now),
            "endsAt": am(now + timedelta(hours=1)),
            "createdBy": "tests",
            "comment": "quiet",
        },
    )
    assert status == 200, body
    sid = body["silenceID"]
    [got] = await eventually(lambda: _states(api, f'?filter=test="{source["test"]}"', {"suppressed"}), 15)
    assert got["status"]["silencedBy"] == [sid] and got["status"]["state"] == "suppressed"
    assert await get(api, f'?filter=test="{source["test"]}"&silenced=false') == []
    assert len(await get(api, f'?filter=test="{source["test"]}"&active=false')) == 1


async def test_groups(api: Api) -> None:
    a1 = unique(team="db", severity="critical", instance="g1")
    a2 = {**a1, "instance": "g2"}
    assert (await post(api, [{"labels": a1}, {"labels": a2}]))[0] == 200
    groups = await get(api, f'?filter=test="{a1["test"]}"', path="/api/v2/alerts/groups")
    # Two routes (continue), each one group by alertname holding both alerts.
    assert [(g["receiver"], g["labels"]) for g in groups] == [
        ({"name": "db-chat"}, {"alertname": "AmTest"}),
        ({"name": "db-pager"}, {"alertname": "AmTest"}),
    ]
    for g in groups:
        assert set(g) == {"alerts", "labels", "receiver"}
        assert sorted(x["labels"]["instance"] for x in g["alerts"]) == ["g1", "g2"]
        assert all(set(x) == ALERT_KEYS for x in g["alerts"])
    only = await get(api, f'?filter=test="{a1["test"]}"&receiver=db-pager', path="/api/v2/alerts/groups")
    assert [g["receiver"]["name"] for g in only] == ["db-pager"]


async def test_receivers_and_status(api: Api) -> None:
    got = await get(api, path="/api/v2/receivers")
    assert got == [{"name": n} for n in ("none", "database", "db-pager", "db-chat", "catchall")]
    status, body, _ = await api.call("GET", "/api/v2/status", scope="read")
    assert status == 200
    assert set(body) == {"cluster", "config", "uptime", "versionInfo"}
    assert body["cluster"] == {"peers": [], "status": "disabled"}
    assert set(body["versionInfo"]) == {"branch", "buildDate", "buildUser", "goVersion", "revision", "version"}
    assert AM_TIME.match(body["uptime"])
    cfg = yaml.safe_load(body["config"]["original"])
    assert cfg["global"] == {"resolve_timeout": "5m"}
    assert cfg["receivers"] == got
    root = cfg["route"]
    assert root["receiver"] == "none" and root["group_by"] == ["..."]
    [db, catchall] = root["routes"]
    assert db == {
        "receiver": "database",
        "matchers": ['team="db"'],
        "group_by": ["alertname"],
        "group_wait": "30s",
        "routes": [
            {
                "receiver": "db-pager",
                "matchers": ['severity=~"critical|page"'],
                "continue": True,
                "mute_time_intervals": ["weekend"],
            },
            {"receiver": "db-chat", "match": {"severity": "critical"}, "repeat_interval": "2h"},
        ],
    }
    assert catchall == {"receiver": "catchall"}
    assert cfg["inhibit_rules"] == [
        {
            "source_matchers": ['severity="critical"', 'inhibitor="yes"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["instance"],
        }
    ]
    assert cfg["time_intervals"] == [
        {"name": "weekend", "time_intervals": [{"weekdays": ["saturday", "sunday"], "location": "Europe/Berlin"}]}
    ]


async def test_config_yaml_durations() -> None:
    from fsincident.api.alertmanager import am_duration

    assert [am_duration(timedelta(seconds=s)) for s in (0, 1.5, 90, 3600 * 26, 604800)] == [
        "0s",
        "1s500ms",
        "1m30s",
        "1d2h",
        "1w",
    ]


async def test_concurrent_posts_of_the_same_alerts(api: Api) -> None:
    tag = unique()["test"]
    batches = [
        [{"labels": {"alertname": "Burst", "test": tag, "n": str((i * 7 + j) % 30)}} for j in range(10)]
        for i in range(20)
    ]
    results = await asyncio.gather(*(post(api, b) for b in batches))
    assert all(status == 200 for status, _ in results), results
    got = await get(api, f'?filter=test="{tag}"')
    assert sorted(int(x["labels"]["n"]) for x in got) == list(range(30))
    # Each alert started once: one firing transition per fingerprint.
    async with api.daemon.store.read() as s:
        from sqlmodel import col, select

        fps = (await s.exec(select(AlertTransition.fingerprint).where(col(AlertTransition.labels).is_not(None)))).all()
    wanted = {x["fingerprint"] for x in got}
    assert sorted(fp for fp in fps if fp in wanted) == sorted(wanted)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
alertish = st.fixed_dictionaries(
    {},
    optional={
        "labels": st.dictionaries(st.sampled_from(["alertname", "a b", "", "x", "ä"]), st.text(max_size=5))
        | json_values,
        "annotations": st.dictionaries(st.text(max_size=5), st.text(max_size=5)) | json_values,
        "startsAt": st.sampled_from(["", "2026-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z", "x"]) | json_values,
        "endsAt": st.sampled_from(["", "2020-01-01T00:00:00Z", "2099-01-01T00:00:00+01:00"]) | json_values,
        "generatorURL": st.sampled_from(["", "http://x/y", "/rel", "bad url"]) | json_values,
    },
)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.lists(alertish, max_size=4) | json_values)
async def test_posting_anything_is_200_or_400(api: Api, body: Any) -> None:
    status, got = await post(api, body)
    assert status in (200, 400), (body, status, got)
    assert (got is None) if status == 200 else isinstance(got, str)
