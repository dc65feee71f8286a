"""The Alertmanager-style sections: the route tree, time_intervals, inhibit_rules, integrations, alertmanager,
silences. Good configs give the right objects and route tree (cross-checked against the real
``amtool config routes test``); every bad key gives one exact ``file:line: key: message``."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fsincident.app import routes_of
from fsincident.config.model import AlertmanagerApiOptions, SilencesOptions
from fsincident.matchers import MatcherError, parse_matcher_list
from fsincident.routing.tree import route, select
from fsincident.timeintervals import in_any, muted_by_intervals

from .conftest import ConfDir

GOOD = (
    "channels:",  # 1
    "  - {name: chat, urls: ['json://127.0.0.1:9099/chat']}",  # 2
    "  - {name: pager, urls: ['json://127.0.0.1:9099/pager']}",  # 3
    "escalation_policies:",  # 4
    "  - {name: db-oncall, steps: [{notify: ['channel:pager']}]}",  # 5
    "alertmanager: {resolve_timeout: 10m}",  # 6
    "silences: {expiry_notice: false}",  # 7
    "routes:",  # 8
    "  - matchers: ['severity=\"critical\"']",  # 9
    "    receiver: pager",  # 10
    "    notify: ['channel:pager']",  # 11
    "    group_by: [alertname]",  # 12
    "    group_wait: 0s",  # 13
    "    continue: true",  # 14
    "  - match: {team: db}",  # 15
    "    notify: ['channel:chat']",  # 16
    "    group_by: [alertname, cluster]",  # 17
    "    group_wait: 30s",  # 18
    "    group_interval: 5m",  # 19
    "    repeat_interval: 4h",  # 20
    "    mute_time_intervals: [maintenance]",  # 21
    "    routes:",  # 22
    "      - {match_re: {env: 'prod|stage'}, escalation_policy: db-oncall, active_time_intervals: [office]}",  # 23
    "      - {matchers: ['env=~dev.*', 'alertname!=Watchdog'], group_by: ['...'], auto_resolve: false}",  # 24
    "  - {receiver: everyone, notify: ['channel:chat']}",  # 25
    "time_intervals:",  # 26
    "  - name: office",  # 27
    "    time_intervals:",  # 28
    "      - times: [{start_time: '09:00', end_time: '17:00'}]",  # 29
    "        weekdays: ['monday:friday']",  # 30
    "        location: Europe/Berlin",  # 31
    "  - name: maintenance",  # 32
    "    time_intervals:",  # 33
    "      - {days_of_month: [1, '-1'], months: ['january:march', 12], years: [2026]}",  # 34
    "      - {weekdays: [Sunday], times: [{start_time: '02:00', end_time: '04:00'}], location: America/New_York}",  # 35
    "inhibit_rules:",  # 36
    "  - source_matchers: ['severity=\"critical\"']",  # 37
    "    target_matchers: ['severity=~\"warning|info\"']",  # 38
    "    equal: [alertname, cluster]",  # 39
    "  - {source_match: {alertname: NodeDown}, target_match: {team: db}}",  # 40
    "integrations:",  # 41
    "  - {name: payments, type: pagerduty, routing_key: '${PD_KEY}', labels: {team: payments}}",  # 42
    "  - {name: legacy, type: pagerduty, routing_key: R0UT1NGKEY2}",  # 43
)


def test_good_config_objects(conf: ConfDir):
    conf.write("fsincident.yaml", *GOOD)
    cfg = conf.load({"PD_KEY": "k" * 32})
    assert cfg.alertmanager == AlertmanagerApiOptions(resolve_timeout=timedelta(minutes=10))
    assert cfg.silences == SilencesOptions(expiry_notice=False)
    assert [t.name for t in cfg.time_intervals] == ["office", "maintenance"]
    maintenance = cfg.time_intervals[1].time_intervals
    # YAML numbers are read as written, as Alertmanager does.
    assert maintenance[0].days_of_month == ["1", "-1"] and maintenance[0].months == ["january:march", "12"]
    assert maintenance[0].years == ["2026"] and maintenance[1].location == "America/New_York"
    assert in_any(maintenance, datetime(2026, 2, 28, 12, tzinfo=UTC))  # last day of February
    assert not in_any(maintenance, datetime(2026, 2, 27, 12, tzinfo=UTC))
    assert in_any(maintenance, datetime(2026, 3, 8, 7, 30, tzinfo=UTC))  # Sunday 03:30 EDT, the DST day
    rule, legacy = cfg.inhibit_rules
    assert rule.source_matchers == ['severity="critical"'] and rule.equal == ["alertname", "cluster"]
    assert legacy.source_match == {"alertname": "NodeDown"} and legacy.target_matchers == []
    assert [(i.name, i.routing_key, i.labels) for i in cfg.integrations] == [
        ("payments", "k" * 32, {"team": "payments"}),
        ("legacy", "R0UT1NGKEY2", {}),
    ]


def test_good_config_route_tree(conf: ConfDir):
    conf.write("fsincident.yaml", *GOOD)
    root = routes_of(conf.load({"PD_KEY": "x"}))
    crit = {"alertname": "DiskFull", "severity": "critical", "team": "db", "env": "prod", "cluster": "c1"}
    pager, prod = route(root, crit)
    assert (pager.route, pager.receiver, pager.targets, pager.group_labels) == (
        0,
        "pager",
        ("channel:pager",),
        {"alertname": "DiskFull"},
    )
    assert pager.group_wait == timedelta(0) and pager.group_interval == timedelta(minutes=5)
    # The nested route inherits grouping and timing, brings its own policy (and no inherited notify).
    assert (prod.route, prod.escalation_policy, prod.targets, prod.receiver) == (2, "db-oncall", (), "db-oncall")
    assert prod.group_labels == {"alertname": "DiskFull", "cluster": "c1"}
    assert (prod.group_wait, prod.repeat_interval) == (timedelta(seconds=30), timedelta(hours=4))
    assert prod.active_time_intervals == ("office",) and prod.mute_time_intervals == ()

    [dev] = route(root, {**crit, "severity": "warning", "env": "dev1"})
    assert (dev.route, dev.targets, dev.auto_resolve) == (3, ("channel:chat",), False)
    assert dev.group_labels == {**crit, "severity": "warning", "env": "dev1"}  # group_by: ['...']
    [db] = route(root, {"alertname": "Watchdog", "team": "db", "env": "dev"})
    assert (db.route, db.mute_time_intervals, db.receiver) == (1, ("maintenance",), "channel:chat")
    [rest] = route(root, {"alertname": "X"})
    assert (rest.route, rest.receiver) == (4, "everyone")

    intervals = {t.name: t.time_intervals for t in conf.load({"PD_KEY": "x"}).time_intervals}
    monday_night = datetime(2026, 3, 2, 20, tzinfo=UTC)
    assert muted_by_intervals(intervals, prod.mute_time_intervals, prod.active_time_intervals, monday_night)
    assert muted_by_intervals(intervals, db.mute_time_intervals, (), datetime(2026, 3, 31, 12, tzinfo=UTC))


def test_unquoted_numbers_and_names(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "time_intervals:",
        "  - name: t",
        "    time_intervals:",
        "      - {days_of_month: [1, 15, -1], months: [1, 7, December], years: [2026, 2028], weekdays: [Monday]}",
        "      - times: [{start_time: 09:00, end_time: '24:00'}]",  # 09:00 is not a YAML number: fine unquoted
    )
    [t] = conf.load().time_intervals
    assert t.time_intervals[0].days_of_month == ["1", "15", "-1"] and t.time_intervals[0].years == ["2026", "2028"]
    assert t.time_intervals[1].times[0].start_time == "09:00"


# --------------------------------------------------------------------------- problems

HEAD = (
    "channels:",  # 1
    "  - {name: chat, urls: ['json://127.0.0.1:9099/chat']}",  # 2
    "time_intervals:",  # 3
    "  - name: office",  # 4
    "    time_intervals: [{weekdays: ['monday:friday']}]",  # 5
)


def matcher_error(text: str) -> str:
    """What matchers.py says about a bad matcher (its wording is tested there; here the location is)."""
    with pytest.raises(MatcherError) as exc:
        parse_matcher_list(text)
    return str(exc.value)


def problems_of(conf: ConfDir, *lines: str, environ: dict[str, str] | None = None) -> list[str]:
    conf.write("fsincident.yaml", *HEAD, *lines)
    return [p.removeprefix(f"{conf.main}:") for p in conf.problems(environ)]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ["routes:", "  - {matchers: ['severity=~\"(unclosed\"']}"],
            ["7: routes[0].matchers[0]: " + matcher_error('severity=~"(unclosed"')],
        ),
        (["routes:", "  - {matchers: ['severity']}"], ["7: routes[0].matchers[0]: " + matcher_error("severity")]),
        (
            ["routes:", "  - {match_re: {job: '(a'}}"],
            ["7: routes[0].match_re.job: invalid regular expression '(a' for label 'job': missing ): (a"],
        ),
        (["routes:", "  - {match: {bad-name: x}}"], ["7: routes[0].match.bad-name: invalid label name 'bad-name'"]),
        (
            ["routes:", "  - match: {team: db}", "    routes:", "      - {mute_time_intervals: [office, nights]}"],
            ["9: routes[0].routes[0].mute_time_intervals[1]: unknown time interval 'nights'"],
        ),
        (
            ["routes:", "  - {active_time_intervals: [Office]}"],
            ["7: routes[0].active_time_intervals[0]: unknown time interval 'Office'"],
        ),
        (
            ["routes:", "  - routes:", "      - {recevier: x}", "      - {group_by: [a, a]}", "      - {continue: 2}"],
            [
                "8: routes[0].routes[0].recevier: unknown key",
                "9: routes[0].routes[1].group_by[1]: 'a' is listed twice",
                "10: routes[0].routes[2].continue: Input should be a valid boolean, unable to interpret input",
            ],
        ),
        (
            ["routes:", "  - {group_interval: 0s, repeat_interval: 0s, group_wait: 0s}"],
            ["7: routes[0].group_interval: must not be zero", "7: routes[0].repeat_interval: must not be zero"],
        ),
        (["routes:", "  - {group_by: [alertname, 'a-b']}"], ["7: routes[0].group_by[1]: invalid label name 'a-b'"]),
        (["routes:", "  - {routes: {match: {a: b}}}"], ["7: routes[0].routes: Input should be a valid list"]),
        (["routes:", "  - {notify: ['channel:nope'], routes: [{notify: ['user:nobody']}]}"], [
            "7: routes[0].notify[0]: unknown channel 'nope'",
            "7: routes[0].routes[0].notify[0]: unknown user 'nobody'",
        ]),
        (
            ["  - name: m", "    time_intervals:", "      - weekdays: ['mon-fri']"],
            ["8: time_intervals[1].time_intervals[0].weekdays[0]: invalid weekday 'mon-fri': write monday:friday"],
        ),
        (
            ["  - name: m", "    time_intervals:", "      - weekdays: [friday:monday]", "        months: [jan]"],
            [
                "8: time_intervals[1].time_intervals[0].weekdays[0]: weekday range 'friday:monday' ends before it "
                "starts (weeks run sunday:saturday): write two ranges, friday:saturday and sunday:monday",
                "9: time_intervals[1].time_intervals[0].months[0]: invalid month 'jan': write january",
            ],
        ),
        (
            ["  - name: m", "    time_intervals:", "      - times: [{start_time: 17:00, end_time: '8:00'}]"],
            [
                "8: time_intervals[1].time_intervals[0].times[0].end_time: invalid time '8:00': write HH:MM from "
                "00:00 to 24:00, e.g. '09:00'",
                "8: time_intervals[1].time_intervals[0].times[0].start_time: invalid time 1020: write the time in "
                "quotes, e.g. '17:00' (YAML reads an unquoted 17:00 as the number 1020)",
            ],
        ),
        (
            ["  - name: m", "    time_intervals:", "      - days_of_month: [1:5, '-1:5']", "        location: Mars"],
            [
                "8: time_intervals[1].time_intervals[0].days_of_month[0]: day of month 65 is out of range: use "
                "1..31, or -31..-1 from the end (YAML reads an unquoted 1:5 as the number 65: write '1:5' in quotes)",
                "8: time_intervals[1].time_intervals[0].days_of_month[1]: day range '-1:5' starts from the month's "
                "end but ends from its start: the end must be negative too",
                "9: time_intervals[1].time_intervals[0].location: unknown time zone 'Mars'",
            ],
        ),
        (
            ["  - name: office", "    time_intervals: [{}]", "  - {name: x, time_intervals: [{weekdays: monday}]}"],
            [
                "6: time_intervals[1].name: duplicate time interval name 'office'",
                "8: time_intervals[2].time_intervals[0].weekdays: Input should be a valid list",
            ],
        ),
        (
            ["  - {name: empty, time_intervals: []}", "  - {name: n}", "  - {name: x, time_intervals: [{days: [1]}]}"],
            [
                "6: time_intervals[1].time_intervals: List should have at least 1 item after validation, not 0",
                "7: time_intervals[2].time_intervals: required key is missing",
                "8: time_intervals[3].time_intervals[0].days: unknown key",
            ],
        ),
        (
            ["inhibit_rules:", "  - {target_matchers: ['severity=\"warning\"'], equal: [alertname]}"],
            ["7: inhibit_rules[0]: needs source_matchers (or source_match): which alerts inhibit"],
        ),
        (
            ["inhibit_rules:", "  - {source_matchers: ['severity=\"critical\"']}"],
            ["7: inhibit_rules[0]: needs target_matchers (or target_match): which alerts are inhibited"],
        ),
        (
            [
                "inhibit_rules:",
                "  - source_matchers: ['a=~\"(\"']",
                "    target_matchers: ['b=\"x']",
                "    equal: ['c-d']",
            ],
            [
                "7: inhibit_rules[0].source_matchers[0]: " + matcher_error('a=~"("'),
                "8: inhibit_rules[0].target_matchers[0]: " + matcher_error('b="x'),
                "9: inhibit_rules[0].equal[0]: invalid label name 'c-d'",
            ],
        ),
        (
            ["inhibit_rules:", "  - {source_match: {a: b}, target_match: {c: d}, equals: [x]}"],
            ["7: inhibit_rules[0].equals: unknown key"],
        ),
        (
            [
                "integrations:",
                "  - {name: pay, type: pagerduty, routing_key: k1}",
                "  - {name: pay, type: pagerduty, routing_key: k2}",
                "  - {name: ops, type: pagerduty, routing_key: k1}",
                "  - {name: x, type: opsgenie, routing_key: k3}",
                "  - {name: y, type: pagerduty}",
            ],
            [
                "8: integrations[1].name: duplicate integration name 'pay'",
                "9: integrations[2].routing_key: the same routing_key is used twice",
                "10: integrations[3].type: Input should be 'pagerduty', got 'opsgenie'",
                "11: integrations[4].routing_key: required key is missing",
            ],
        ),
        (
            ["integrations:", "  - {name: pay, type: pagerduty, routing_key: '${PD_KEY}'}"],
            [
                "7: integrations[0].routing_key: environment variable PD_KEY is not set "
                "(write ${PD_KEY:-default} for a default)"
            ],
        ),
        (
            ["alertmanager: {resolve_timeout: soon}"],
            ["6: alertmanager.resolve_timeout: invalid duration 'soon' (use e.g. 30s, 5m, 1h30m, 1d)"],
        ),
        (
            ["silences: {expiry_notice: sometimes}"],
            ["6: silences.expiry_notice: Input should be a valid boolean, unable to interpret input"],
        ),
    ],
)  # fmt: skip
def test_problems(conf: ConfDir, lines, expected):
    assert problems_of(conf, *lines) == expected


def test_an_invalid_time_interval_is_still_known_to_routes(conf: ConfDir):
    got = problems_of(
        conf,
        "  - {name: nights, time_intervals: [{weekdays: [nightly]}]}",  # 6
        "routes:",  # 7
        "  - {mute_time_intervals: [nights, office], notify: ['channel:chat']}",  # 8
    )
    assert got == [
        "6: time_intervals[1].time_intervals[0].weekdays[0]: invalid weekday 'nightly': use sunday..saturday"
    ]


def test_a_bad_setting_elsewhere_does_not_hide_the_sections(conf: ConfDir):
    got = problems_of(conf, "listen: nowhere", "routes:", "  - {mute_time_intervals: [office, gone]}")
    assert got[-1] == "8: routes[0].mute_time_intervals[1]: unknown time interval 'gone'"
    assert len(got) == 2 and got[0].startswith("6: listen:")


def test_a_zone_folder_is_not_a_time_zone(conf: ConfDir):
    got = problems_of(conf, "  - {name: x, time_intervals: [{location: Europe}]}")
    assert got == ["6: time_intervals[1].time_intervals[0].location: unknown time zone 'Europe'"]


def test_secrets_are_not_echoed(conf: ConfDir):
    got = problems_of(
        conf,
        "integrations:",
        "  - {name: a, type: pagerduty, routing_key: 'sup3rs3cr3t'}",
        "  - {name: b, type: pagerduty, routing_key: 'sup3rs3cr3t'}",
    )
    assert got == ["8: integrations[1].routing_key: the same routing_key is used twice"]


# --------------------------------------------------------------------------- the real amtool as the reference

AMTOOL = shutil.which("amtool")

ROUTES = """\
  - matchers: ['severity="critical"']
    receiver: pager
    continue: true
  - match: {team: db}
    receiver: db
    routes:
      - matchers: ['env=~"prod|stage"']
        receiver: db-prod
      - match_re: {env: "dev.*"}
        receiver: db-dev
        continue: true
      - matchers: ['alertname!="Watchdog"', 'env!~"dev2"']
        receiver: db-other
  - matchers: ['team=~"web|api"', 'env!=""']
    receiver: web
    continue: true
  - matchers: ['alertname="Watchdog"']
    receiver: watchdog
    routes:
      - {match: {severity: critical}, receiver: never-alone, continue: true}
      - {match: {env: prod}, receiver: watchdog-prod}
"""


@pytest.mark.skipif(AMTOOL is None, reason="amtool (prometheus-alertmanager) is not installed")
def test_routing_decisions_equal_alertmanagers(conf: ConfDir, tmp_path: Path):
    """The same ``routes:`` block, pasted into an Alertmanager config and ours, sends every label set to the
    same receivers (Alertmanager's root receiver is our implicit root, ``none``)."""
    receivers = ["root", "pager", "db", "db-prod", "db-dev", "db-other", "web", "watchdog", "never-alone"]
    receivers.append("watchdog-prod")
    am = tmp_path / "alertmanager.yml"
    am.write_text(
        "route:\n  receiver: root\n  routes:\n"
        + "".join(f"  {line}\n" for line in ROUTES.splitlines())
        + "receivers:\n"
        + "".join(f"  - name: {r}\n" for r in receivers)
    )
    check = subprocess.run([AMTOOL, "check-config", str(am)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    conf.write("fsincident.yaml", "routes:", *ROUTES.splitlines())
    root = routes_of(conf.load())
    # Alertmanager's whole `route:` pasted as our one top-level route (no matchers: it matches everything).
    nested = [f"  {line}" for line in ROUTES.splitlines()]
    conf.write("fsincident.yaml", "routes:", "  - receiver: root", "    routes:", *nested)
    pasted = routes_of(conf.load())
    values = {
        "severity": ["critical", "warning", None],
        "team": ["db", "web", None],
        "env": ["prod", "dev1", "dev2", None],
        "alertname": ["Watchdog", "X"],
    }
    for combo in itertools.product(*values.values()):
        labels = {k: v for k, v in zip(values, combo, strict=True) if v is not None}
        args = [f"{k}={v}" for k, v in labels.items()]
        out = subprocess.run(
            [AMTOOL, "config", "routes", "test", f"--config.file={am}", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        theirs = out.stdout.strip().split(",")
        ours = [r.receiver if r.index >= 0 else "root" for r in select(root, labels)]
        assert ours == theirs, labels
        assert [r.receiver for r in select(pasted, labels)] == theirs, labels
