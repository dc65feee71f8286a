"""escalation_policies:, routes[].escalation_policy and users[].contacts rules: objects and located problems."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fsincident.app import routes_of
from fsincident.config import EscalationPolicy, Step
from fsincident.config.model import ContactOptions
from fsincident.notify.outbox import Notifiers
from fsincident.routing.tree import route

from .conftest import ConfDir

BAD_TGRAM = "not a valid apprise URL for scheme 'tgram'"
NEGATIVE = "invalid duration -5: must not be negative"

HEAD = (
    "channels:",  # 1
    "  - {name: ops, urls: ['json://127.0.0.1:9099/ops']}",  # 2
    "users:",  # 3
    "  - name: alice",  # 4
    "    contacts:",  # 5
    "      - json://127.0.0.1:9099/alice",  # 6
    "      - {url: 'json://127.0.0.1:9099/alice-late', after: 5m, urgency: high}",  # 7
    "      - {url: 'json://127.0.0.1:9099/alice-low', urgency: low}",  # 8
    "  - {name: bob}",  # 9
    "schedules:",  # 10
    "  - {name: s, timezone: UTC, layers: [{rotation: daily, handoff: '09:00', users: [alice, bob]}]}",  # 11
)


def test_policies_routes_and_contacts(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        *HEAD,
        "escalation_policies:",
        "  - name: infra",
        "    repeat: 2",
        "    ack_timeout: 30m",
        "    auto_resolve_after: 24h",
        "    steps:",
        "      - {after: 0m, notify: ['schedule:s', 'channel:ops']}",
        "      - {after: 15m, notify: ['user:bob']}",
        "      - {after: 40m, notify: ['user:alice']}",
        "  - {name: one, steps: [{notify: ['user:bob']}]}",
        "  - {name: same, repeat_after: 1h, steps: [{after: 1m, notify: [user:bob]}, {after: 1m, notify: [user:bob]}]}",
        "  - {name: tie, steps: [{after: 2m, notify: [user:bob]}, {after: 2m, notify: [user:alice]}]}",
        "routes:",
        "  - {match: {team: infra}, escalation_policy: infra, group_by: [alertname]}",
        "  - {match: {team: db}, escalation_policy: one, notify: ['channel:ops']}",
        "  - {notify: ['channel:ops']}",
    )
    cfg = conf.load()
    assert cfg.policy("infra") == EscalationPolicy(
        name="infra",
        steps=(
            Step(timedelta(0), ("schedule:s", "channel:ops")),
            Step(timedelta(minutes=15), ("user:bob",)),
            Step(timedelta(minutes=40), ("user:alice",)),
        ),
        repeat=2,
        repeat_after=timedelta(minutes=25),  # the gap between the last two steps
        ack_timeout=timedelta(minutes=30),
        auto_resolve_after=timedelta(hours=24),
    )
    one = cfg.policy("one")
    assert (one.repeat, one.repeat_after, one.ack_timeout, one.auto_resolve_after) == (
        0,
        timedelta(minutes=5),
        None,
        None,
    )
    assert one.steps == (Step(timedelta(0), ("user:bob",)),)
    assert cfg.policy("same").repeat_after == timedelta(hours=1)
    assert cfg.policy("tie").repeat_after == timedelta(minutes=5)  # no gap between the last two steps
    assert cfg.policy("nope") is None
    assert [p.name for p in cfg.escalation_policies] == ["infra", "one", "same", "tie"]

    # Routing hands the policy on, next to the route's direct targets.
    routes = routes_of(cfg)
    [infra] = route(routes, {"team": "infra", "alertname": "Down"})
    assert (infra.escalation_policy, infra.targets) == ("infra", ())
    [db] = route(routes, {"team": "db"})
    assert (db.escalation_policy, db.targets) == ("one", ("channel:ops",))
    [other] = route(routes, {"team": "web"})
    assert (other.escalation_policy, other.targets) == (None, ("channel:ops",))

    # Contacts: a plain URL is immediate and for every urgency.
    assert cfg.contacts("alice") == (
        ContactOptions(url="json://127.0.0.1:9099/alice"),
        ContactOptions(url="json://127.0.0.1:9099/alice-late", after=timedelta(minutes=5), urgency="high"),
        ContactOptions(url="json://127.0.0.1:9099/alice-low", urgency="low"),
    )
    assert [(c.applies("high"), c.applies("low")) for c in cfg.contacts("alice")] == [
        (True, True),
        (True, False),
        (False, True),
    ]
    assert cfg.contacts("bob") == ()
    assert cfg.contacts("nobody") == ()
    # The outbox counts every contact URL of a user as one destination (delays are applied when enqueued).
    notifiers = Notifiers(cfg)
    assert notifiers.destinations("user:alice") == 3
    assert notifiers.destinations("user:bob") == 0
    assert notifiers.destinations("channel:ops") == 1


def test_policy_problems(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        *HEAD,
        "escalation_policies:",  # 12
        "  - name: p1",  # 13
        "    repeat: 21",  # 14
        "    steps: []",  # 15
        "  - name: p2",  # 16
        "    repeat_after: 0s",  # 17
        "    ack_timeout: 0s",  # 18
        "    auto_resolve_after: 0s",  # 19
        "    steps:",  # 20
        "      - {after: 10m, notify: ['schedule:s', 'user:carol']}",  # 21
        "      - {after: 5m, notify: ['channel:nope', 'schedule:t']}",  # 22
        "      - {notify: []}",  # 23
        "  - name: p2",  # 24
        "    steps: [{notify: ['pager:x']}]",  # 25
        "  - name: p3",  # 26
        "    repeat: -1",  # 27
        "    steps:",  # 28
        "      - {after: 1m, notify: ['user:carol'], color: red}",  # 29
        "      - {after: soon, notify: user:bob}",  # 30
        "      - text",  # 31
        "  - {steps: [{notify: ['user:bob']}]}",  # 32
    )
    target_hint = "write channel:NAME, user:NAME or schedule:NAME"
    assert conf.problems() == [
        f"{conf.main}:{e}"
        for e in [
            "14: escalation_policies[0].repeat: Input should be less than or equal to 20",
            "15: escalation_policies[0].steps: List should have at least 1 item after validation, not 0",
            "17: escalation_policies[1].repeat_after: repeat_after must be positive",
            "18: escalation_policies[1].ack_timeout: ack_timeout must be positive",
            "19: escalation_policies[1].auto_resolve_after: auto_resolve_after must be positive",
            "21: escalation_policies[1].steps[0].notify[1]: unknown user 'carol'",
            "22: escalation_policies[1].steps[1].after: after must not be earlier than the previous step's 10m",
            "22: escalation_policies[1].steps[1].notify[0]: unknown channel 'nope'",
            "22: escalation_policies[1].steps[1].notify[1]: unknown schedule 't'",
            "23: escalation_policies[1].steps[2].notify: List should have at least 1 item after validation, not 0",
            "24: escalation_policies[2].name: duplicate escalation policy name 'p2'",
            f"25: escalation_policies[2].steps[0].notify[0]: invalid target 'pager:x': {target_hint}",
            "27: escalation_policies[3].repeat: Input should be greater than or equal to 0",
            "29: escalation_policies[3].steps[0].color: unknown key",
            "29: escalation_policies[3].steps[0].notify[0]: unknown user 'carol'",
            "30: escalation_policies[3].steps[1].after: invalid duration 'soon' (use e.g. 30s, 5m, 1h30m, 1d)",
            "30: escalation_policies[3].steps[1].notify: Input should be a valid list",
            "31: escalation_policies[3].steps[2]: Input should be a valid dictionary",
            "32: escalation_policies[4].name: required key is missing",
        ]
    ]


def test_route_policy_problems(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        *HEAD,
        "escalation_policies:",  # 12
        "  - {name: broken, steps: [{notify: ['user:carol']}]}",  # 13
        "routes:",  # 14
        "  - {escalation_policy: nope}",  # 15
        "  - {escalation_policy: broken, notify: ['schedule:s']}",  # 16
        "  - {escalation_policy: 'bad name!'}",  # 17
        "  - {escalation_policy: [infra]}",  # 18
    )
    assert conf.problems() == [
        f"{conf.main}:{e}"
        for e in [
            "13: escalation_policies[0].steps[0].notify[0]: unknown user 'carol'",
            # An invalid policy is still known: the route naming it is not also "unknown".
            "15: routes[0].escalation_policy: unknown escalation policy 'nope'",
            "17: routes[2].escalation_policy: invalid name 'bad name!': use letters, digits, '_', '.', '-'",
            "18: routes[3].escalation_policy: Input should be a valid string",
        ]
    ]


@pytest.mark.parametrize(
    ("item", "problems"),
    [
        (
            "{url: 'tgram://topsecret/', after: 5m}",
            ["8: users[0].contacts[0].url: not a valid apprise URL for scheme 'tgram'"],
        ),
        ("'tgram://topsecret/'", [f"8: users[0].contacts[0]: {BAD_TGRAM}"]),
        ("{url: 'topsecret'}", ["8: users[0].contacts[0].url: not an apprise URL (expected SCHEME://...)"]),
        (
            "{url: 'json://127.0.0.1:9/topsecret', after: soon, urgency: urgent}",
            [
                "8: users[0].contacts[0].after: invalid duration 'soon' (use e.g. 30s, 5m, 1h30m, 1d)",
                "8: users[0].contacts[0].urgency: Input should be 'high', 'low' or 'any', got 'urgent'",
            ],
        ),
        (
            "{url: 'json://127.0.0.1:9/topsecret', after: -5}",
            [f"8: users[0].contacts[0].after: {NEGATIVE}"],
        ),
        ("5", ["8: users[0].contacts[0]: a contact is an apprise URL or a mapping {url, after, urgency}"]),
        ("{after: 5m}", ["8: users[0].contacts[0].url: required key is missing"]),
        ("{url: 'json://127.0.0.1:9/topsecret', delay: 5m}", ["8: users[0].contacts[0].delay: unknown key"]),
    ],
)
def test_contact_problems_never_show_the_secret(conf: ConfDir, item: str, problems: list[str]):
    conf.write(
        "fsincident.yaml",
        "users:",  # 1
        "  - {name: alice}",  # 2
        "  - {name: bob}",  # 3
        "  - {name: carol}",  # 4
        "  - {name: dave}",  # 5
        "  - name: erin",  # 6
        "    contacts:",  # 7
        f"      - {item}",  # 8
    )
    found = conf.problems({})
    assert found == [f"{conf.main}:{p.replace('users[0]', 'users[4]')}" for p in problems]
    assert "topsecret" not in "\n".join(found)
