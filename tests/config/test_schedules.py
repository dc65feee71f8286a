"""schedules: good ones become Schedule/Layer/Restriction objects; every bad one is reported, located."""

from __future__ import annotations

from datetime import date, time, timedelta

import pytest

from fsincident.config import Layer, Restriction, Schedule
from fsincident.config.model import DEFAULT_LAYER_START

from .conftest import ConfDir

USERS = ("users:", "  - {name: alice}", "  - {name: bob}", "  - {name: carol}")  # lines 1-4


def test_schedule_objects(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        *USERS,
        "schedules:",
        "  - name: infra-primary",
        "    timezone: Europe/Berlin",
        "    layers:",
        "      - {rotation: weekly, handoff: 'Mon 09:00', start: 2026-01-05, users: [alice, bob, carol]}",
        "      - rotation: daily",
        "        handoff: '09:30'",
        "        start: '2026-01-06'",
        "        users: [carol]",
        "        restrictions:",
        "          - {days: [mon, tue, Wednesday, thu, fri], from: '09:00', to: '17:00'}",
        "          - {days: [sat], from: '22:00', to: '06:00'}",
        "          - {from: '00:00', to: '00:00'}",
        "      - {every: 12h, handoff: '08:00', users: [bob, alice]}",
        "      - {every: 3d, handoff: '8:05', users: [alice]}",
        "      - {rotation: weekly, handoff: 'sunday 23:59', users: [bob]}",
    )
    cfg = conf.load()
    s = cfg.schedule("infra-primary")
    assert cfg.schedules == (s,)
    assert cfg.schedule("nope") is None
    assert s == Schedule(
        name="infra-primary",
        timezone="Europe/Berlin",
        layers=(
            Layer(1, "weekly", None, 0, time(9, 0), date(2026, 1, 5), ("alice", "bob", "carol")),
            Layer(
                2,
                "daily",
                None,
                None,
                time(9, 30),
                date(2026, 1, 6),
                ("carol",),
                (
                    Restriction(frozenset({0, 1, 2, 3, 4}), time(9, 0), time(17, 0)),
                    Restriction(frozenset({5}), time(22, 0), time(6, 0)),
                    Restriction(frozenset(range(7)), time(0, 0), time(0, 0)),
                ),
            ),
            Layer(3, "every", timedelta(hours=12), None, time(8, 0), DEFAULT_LAYER_START, ("bob", "alice")),
            Layer(4, "every", timedelta(days=3), None, time(8, 5), DEFAULT_LAYER_START, ("alice",)),
            Layer(5, "weekly", None, 6, time(23, 59), DEFAULT_LAYER_START, ("bob",)),
        ),
    )
    assert [layer.period for layer in s.layers] == [
        timedelta(days=7),
        timedelta(days=1),
        timedelta(hours=12),
        timedelta(days=3),
        timedelta(days=7),
    ]
    assert DEFAULT_LAYER_START.weekday() == 0


def test_layer_problems(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        *USERS,
        "schedules:",  # 5
        "  - name: s",  # 6
        "    timezone: UTC",  # 7
        "    layers:",  # 8
        "      - {handoff: '09:00', users: [alice]}",  # 9
        "      - {rotation: daily, every: 12h, handoff: '09:00', users: [alice]}",  # 10
        "      - {every: 30m, handoff: '09:00', users: [alice]}",  # 11
        "      - {every: 90m30s, handoff: '09:00', users: [alice]}",  # 12
        "      - {every: 400d, handoff: '09:00', users: [alice]}",  # 13
        "      - {rotation: weekly, handoff: '09:00', users: [alice]}",  # 14
        "      - {rotation: daily, handoff: 'Mon 09:00', users: [alice, zed]}",  # 15
        "      - {every: 2d, handoff: 'Tue 09:00', users: [alice]}",  # 16
        "      - {rotation: daily, handoff: 10:00, users: [alice]}",  # 17
        "      - {rotation: daily, handoff: '25:00', users: []}",  # 18
        "      - {rotation: hourly, handoff: 'Funday 09:00', start: '2026-02-30', users: [alice]}",  # 19
        "      - {rotation: daily, handoff: '09:00', users: [bob], shift: 1}",  # 20
        "      - nope",  # 21
    )
    quote = 'write the time in quotes, e.g. "10:00" (YAML reads an unquoted 10:00 as a number)'
    assert conf.problems() == [
        f"{conf.main}:{e}"
        for e in [
            "9: schedules[0].layers[0]: give rotation: daily|weekly or every: DURATION",
            "10: schedules[0].layers[1].every: give either rotation or every, not both",
            "11: schedules[0].layers[2].every: every must be at least 1h",
            "12: schedules[0].layers[3].every: every must be a whole number of minutes",
            "13: schedules[0].layers[4].every: every must be at most 365d",
            '14: schedules[0].layers[5].handoff: a weekly rotation needs a day, e.g. "Mon 09:00"',
            "15: schedules[0].layers[6].handoff: a daily rotation takes no day: write HH:MM",
            "15: schedules[0].layers[6].users[1]: unknown user 'zed'",
            "16: schedules[0].layers[7].handoff: an every: rotation takes no day: write HH:MM",
            f"17: schedules[0].layers[8].handoff: invalid handoff 600: {quote}",
            "18: schedules[0].layers[9].handoff: invalid handoff '25:00': write HH:MM or DAY HH:MM, "
            'e.g. "09:00" or "Mon 09:00"',
            "18: schedules[0].layers[9].users: List should have at least 1 item after validation, not 0",
            "19: schedules[0].layers[10].handoff: invalid handoff 'Funday 09:00': write HH:MM or DAY HH:MM, "
            'e.g. "09:00" or "Mon 09:00"',
            "19: schedules[0].layers[10].rotation: Input should be 'daily' or 'weekly', got 'hourly'",
            "19: schedules[0].layers[10].start: Input should be a valid date or datetime, "
            "day value is outside expected range",
            "20: schedules[0].layers[11].shift: unknown key",
            "21: schedules[0].layers[12]: Input should be a valid dictionary",
        ]
    ]


def test_restriction_problems(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        *USERS,
        "schedules:",  # 5
        "  - name: s",  # 6
        "    timezone: UTC",  # 7
        "    layers:",  # 8
        "      - rotation: daily",  # 9
        "        handoff: '09:00'",  # 10
        "        users: [bob]",  # 11
        "        restrictions:",  # 12
        "          - {days: [mon, someday], from: '9', to: 17:00}",  # 13
        "          - {days: [], from: '09:00'}",  # 14
        "          - {days: mon, from: '09:00', to: '24:00', until: x}",  # 15
    )
    assert conf.problems() == [
        f"{conf.main}:{e}"
        for e in [
            "13: schedules[0].layers[0].restrictions[0].days[1]: invalid day 'someday': "
            "write mon, tue, wed, thu, fri, sat or sun",
            "13: schedules[0].layers[0].restrictions[0].from: invalid time '9': write HH:MM, e.g. 09:00",
            "13: schedules[0].layers[0].restrictions[0].to: invalid time 1020: write the time in quotes, "
            'e.g. "10:00" (YAML reads an unquoted 10:00 as a number)',
            "14: schedules[0].layers[0].restrictions[1].days: List should have at least 1 item after validation, not 0",
            "14: schedules[0].layers[0].restrictions[1].to: required key is missing",
            "15: schedules[0].layers[0].restrictions[2].days: Input should be a valid list",
            "15: schedules[0].layers[0].restrictions[2].to: invalid time '24:00': write HH:MM, e.g. 09:00",
            "15: schedules[0].layers[0].restrictions[2].until: unknown key",
        ]
    ]


def test_schedule_problems(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        *USERS,
        "schedules:",  # 5
        "  - {name: s1, timezone: Mars/Base, layers: []}",  # 6
        "  - {name: s2, timezone: UTC, layers: [{every: 3d, handoff: '08:00', users: [alice]}]}",  # 7
        "  - {name: s2, timezone: UTC, layers: [{every: 3d, handoff: '08:00', users: [alice]}]}",  # 8
        "  - {name: s3, layers: [{every: 1h, handoff: '08:00', users: [nobody]}], color: red}",  # 9
        "  - just text",  # 10
        "  - {name: 'bad name', timezone: UTC, layers: {a: 1}}",  # 11
        "routes:",  # 12
        "  - notify: ['schedule:s1', 'schedule:s2', 'schedule:s3', 'schedule:nope', 'schedule:']",  # 13
    )
    assert conf.problems() == [
        f"{conf.main}:{e}"
        for e in [
            "6: schedules[0].layers: List should have at least 1 item after validation, not 0",
            "6: schedules[0].timezone: unknown time zone 'Mars/Base'",
            "8: schedules[2].name: duplicate schedule name 's2'",
            "9: schedules[3].color: unknown key",
            "9: schedules[3].layers[0].users[0]: unknown user 'nobody'",
            "9: schedules[3].timezone: required key is missing",
            "10: schedules[4]: Input should be a valid dictionary",
            "11: schedules[5].layers: Input should be a valid list",
            "11: schedules[5].name: invalid name 'bad name': use letters, digits, '_', '.', '-'",
            # Invalid schedules are still known to routes: only the missing one is "unknown".
            "13: routes[0].notify[3]: unknown schedule 'nope'",
            "13: routes[0].notify[4]: invalid target 'schedule:': write channel:NAME, user:NAME or schedule:NAME",
        ]
    ]


@pytest.mark.parametrize(
    ("handoff", "day", "at"),
    [
        ("Mon 09:00", 0, time(9)),
        ("tue 0:00", 1, time(0)),
        ("SUN   23:59", 6, time(23, 59)),
        ("Friday 12:30", 4, time(12, 30)),
    ],
)
def test_weekly_handoff_spellings(conf: ConfDir, handoff: str, day: int, at: time):
    conf.write(
        "fsincident.yaml",
        *USERS,
        "schedules:",
        f"  - {{name: s, timezone: UTC, layers: [{{rotation: weekly, handoff: '{handoff}', users: [alice]}}]}}",
    )
    layer = conf.load().schedules[0].layers[0]
    assert (layer.handoff_day, layer.handoff) == (day, at)


def test_surface_example_loads(conf: ConfDir):
    """The shape promised in SURFACE.md (a layer without start) is valid."""
    conf.write(
        "fsincident.yaml",
        "channels:",
        "  - {name: ops-chat, urls: ['json://127.0.0.1:9099/hook']}",
        "users:",
        "  - {name: alice, timezone: Europe/Berlin, contacts: ['json://127.0.0.1:9099/a', 'json://127.0.0.1:9099/b']}",
        "  - {name: bob}",
        "  - {name: carol}",
        "schedules:",
        "  - name: infra-primary",
        "    timezone: Europe/Berlin",
        "    layers:",
        "      - {rotation: weekly, handoff: 'Mon 09:00', users: [alice, bob, carol]}",
        "escalation_policies:",
        "  - name: infra",
        "    repeat: 2",
        "    steps:",
        "      - {after: 0m,  notify: ['schedule:infra-primary', 'channel:ops-chat']}",
        "      - {after: 15m, notify: ['user:carol']}",
        "routes:",
        "  - {match: {team: infra}, escalation_policy: infra, group_by: [alertname, instance]}",
        "  - {notify: ['channel:ops-chat']}",
    )
    cfg = conf.load()
    assert cfg.schedule("infra-primary").layers[0].start == DEFAULT_LAYER_START
    assert cfg.policy("infra").repeat == 2
    assert cfg.routes[0].escalation_policy == "infra"
    assert cfg.routes[1].escalation_policy is None
