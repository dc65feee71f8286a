"""Routes: first match wins; group labels and a group key that survives reordering routes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.core import Labels
from fsincident.routing.tree import NO_ROUTE, Route, group_key, group_labels, route, select

DB = Route(index=0, match={"team": "db"}, notify=("channel:db",), group_by=("alertname",))
DB_CRIT = Route(index=1, match={"team": "db", "severity": "critical"}, notify=("user:ann",), group_by=None)
INFRA = Route(index=2, match={"team": "infra"}, notify=("channel:ops",), group_by=("...",), auto_resolve=False)
CATCH_ALL = Route(index=3, match={}, notify=("channel:all",), group_by=("alertname", "instance"))
ROUTES = [DB, DB_CRIT, INFRA, CATCH_ALL]

ALERT = {"alertname": "DiskFull", "team": "db", "severity": "critical", "instance": "h1"}


def test_first_match_wins():
    assert select(ROUTES, ALERT) is DB  # DB_CRIT matches too but comes later
    assert select([DB_CRIT, DB], ALERT) is DB_CRIT


def test_match_requires_every_label():
    assert select(ROUTES, {"team": "db2", "alertname": "X"}) is CATCH_ALL
    assert select([DB_CRIT], {"team": "db", "severity": "warning"}) is NO_ROUTE


def test_empty_match_value_matches_missing_label():
    r = Route(index=0, match={"env": ""}, notify=("channel:x",), group_by=None)
    assert r.matches({"alertname": "X"})
    assert not r.matches({"env": "prod"})


def test_no_route():
    routed = route([DB, INFRA], {"alertname": "X", "team": "web"})
    assert routed.route == -1 and routed.targets == () and routed.auto_resolve is True


def test_route_result_carries_targets_and_auto_resolve():
    routed = route(ROUTES, {"alertname": "Down", "team": "infra", "instance": "h2"})
    assert routed.route == 2 and routed.targets == ("channel:ops",) and routed.auto_resolve is False
    assert routed.group_labels == {"alertname": "Down", "team": "infra", "instance": "h2"}
    assert routed.group_key == group_key(INFRA, {"alertname": "Down", "team": "infra", "instance": "h2"})


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        (None, ALERT),
        (("...",), ALERT),
        (("alertname",), {"alertname": "DiskFull"}),
        (("alertname", "instance"), {"alertname": "DiskFull", "instance": "h1"}),
        (("alertname", "missing"), {"alertname": "DiskFull"}),
        ((), {}),
    ],
)
def test_group_labels(group_by, expected):
    r = Route(index=0, match={}, notify=(), group_by=group_by)
    assert group_labels(r, ALERT) == expected


def test_group_labels_skip_empty_values():
    r = Route(index=0, match={}, notify=(), group_by=("alertname", "env"))
    assert group_labels(r, {"alertname": "X", "env": ""}) == {"alertname": "X"}


def test_alerts_of_one_group_share_a_key():
    a = {**ALERT, "instance": "h1"}
    b = {**ALERT, "instance": "h2"}
    assert group_key(DB, a) == group_key(DB, b)  # grouped by alertname only
    assert group_key(CATCH_ALL, a) != group_key(CATCH_ALL, b)


def test_group_key_survives_moving_a_route():
    moved = Route(index=7, match=dict(DB.match), notify=DB.notify, group_by=DB.group_by)
    assert group_key(moved, ALERT) == group_key(DB, ALERT)


def test_group_key_differs_between_routes():
    other = Route(index=0, match={"team": "db", "env": "prod"}, notify=(), group_by=("alertname",))
    assert group_key(other, ALERT) != group_key(DB, ALERT)
    # same match and same resulting group labels, but a different grouping: a different group
    regrouped = Route(index=0, match={"team": "db"}, notify=(), group_by=("alertname", "instance"))
    no_instance = {"alertname": "DiskFull", "team": "db"}
    assert group_labels(regrouped, no_instance) == group_labels(DB, no_instance)
    assert group_key(regrouped, no_instance) != group_key(DB, no_instance)


def test_no_route_key_differs_from_catch_all_route():
    catch_all = Route(index=0, match={}, notify=("channel:x",), group_by=None)
    assert group_key(NO_ROUTE, ALERT) != group_key(catch_all, ALERT)


def test_group_key_is_stable_text():
    key = group_key(DB, ALERT)
    assert len(key) == 32 and int(key, 16) >= 0
    assert key == group_key(DB, dict(reversed(list(ALERT.items()))))


label_dicts = st.dictionaries(
    st.sampled_from(["alertname", "instance", "job", "team", "env", "severity"]), st.text(max_size=6), max_size=6
)
group_bys = st.one_of(
    st.none(),
    st.just(("...",)),
    st.lists(st.sampled_from(["alertname", "instance", "job", "team"]), unique=True, max_size=3).map(tuple),
)


@settings(max_examples=300)
@given(label_dicts, group_bys, st.integers(0, 50), st.integers(0, 50), st.randoms(use_true_random=False))
def test_group_key_independent_of_order_and_position(labels, group_by, i, j, rnd):
    items = list(labels.items())
    rnd.shuffle(items)
    r1 = Route(index=i, match={"team": "db"}, notify=("channel:a",), group_by=group_by)
    r2 = Route(index=j, match={"team": "db"}, notify=("channel:a",), group_by=group_by)
    assert group_key(r1, labels) == group_key(r2, dict(items)) == group_key(r1, Labels(items))


@settings(max_examples=300)
@given(label_dicts, label_dicts, group_bys)
def test_group_key_differs_for_different_group_labels(l1, l2, group_by):
    r = Route(index=0, match={}, notify=(), group_by=group_by)
    same = group_labels(r, l1) == group_labels(r, l2)
    assert (group_key(r, l1) == group_key(r, l2)) == same


@settings(max_examples=200)
@given(label_dicts, st.permutations(range(4)))
def test_first_match_wins_property(labels, order):
    routes = [ROUTES[k] for k in order]
    chosen = select(routes, labels)
    matching = [r for r in routes if all(labels.get(k, "") == v for k, v in r.match.items())]
    assert chosen is (matching[0] if matching else NO_ROUTE)
