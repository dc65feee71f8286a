"""``analytics:`` and ``reports:``: a good config gives the options; every bad key gives one exact ``file:line``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from .conftest import BASE, ConfDir


def test_good_analytics_and_reports(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        *BASE,
        "analytics:",  # 8
        "  ack_within: 10m",
        "  group_by: team",
        "  working_hours: {days: [Mon, tuesday, wed], start: '08:00', end: '17:00'}",
        "  services:",
        "    - {name: api, matchers: ['service=\"api\"'], target: 99.95}",
        "    - {name: web, series: 'probe_success{job=\"web\"}', source: web}",
        "reports:",
        "  - {name: weekly, schedule: '0 8 * * mon', timezone: Europe/Berlin, to: ['channel:ops', 'user:alice']}",
        "  - {name: daily, schedule: '@daily', period: 1d, sections: [summary, sla], group_by: severity,",
        "     to: ['channel:ops']}",
    )
    c = conf.load()
    assert c.analytics.ack_within == timedelta(minutes=10) and c.analytics.group_by == "team"
    assert c.analytics.working_hours.days == ["mon", "tue", "wed"]
    assert [s.name for s in c.analytics.services] == ["api", "web"]
    assert [r.name for r in c.reports] == ["weekly", "daily"]
    assert c.reports[0].period == "week" and c.reports[1].sections == ["summary", "sla"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ["analytics: {group_by: 'team-name'}"],
            ["8: analytics.group_by: invalid group_by 'team-name': write a label name, severity, rule or route"],
        ),
        (
            ["analytics:", "  services:", "    - {name: web, series: 'probe_success{', source: nope}"],
            [
                "10: analytics.services[0].series: ",
                "10: analytics.services[0].source: unknown source 'nope'",
            ],
        ),
        (
            ["reports:", "  - {name: r, schedule: '0 0 30 2 *', to: ['channel:ops']}"],
            ["9: reports[0].schedule: schedule '0 0 30 2 *' never fires"],
        ),
        (
            ["reports:", "  - {name: r, schedule: '0 8 * *', to: ['channel:ops']}"],
            ["9: reports[0].schedule: invalid schedule '0 8 * *': wrong number of fields"],
        ),
        (
            ["reports:", "  - {name: r, schedule: '@daily', period: fortnight, group_by: 'a b', to: ['channel:nope']}"],
            [
                "9: reports[0].group_by: invalid group_by 'a b'",
                "9: reports[0].period: invalid period 'fortnight'",
                "9: reports[0].to[0]: unknown channel 'nope'",
            ],
        ),
        (
            [
                "reports:",
                "  - {name: r, schedule: '@daily', to: ['channel:ops']}",
                "  - {name: r, schedule: '@daily', to: []}",
            ],
            ["10: reports[1].to: "],
        ),
        (
            [
                "reports:",
                "  - {name: r, schedule: '@daily', to: ['channel:ops']}",
                "  - {name: r, schedule: '@daily', to: ['user:alice']}",
            ],
            ["10: reports[1].name: duplicate report name 'r'"],
        ),
    ],
)
def test_problems(conf: ConfDir, lines, expected):
    conf.write("fsincident.yaml", *BASE, *lines)
    got = [p.removeprefix(f"{conf.main}:") for p in conf.problems()]
    assert len(got) == len(expected), got
    for g, e in zip(sorted(got), sorted(expected), strict=True):
        assert g.startswith(e), (g, e)
