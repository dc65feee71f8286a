"""The route tree (Alertmanager's semantics): first matching child wins unless it says ``continue``, the
deepest matching routes handle an alert, children inherit what they do not set, and group keys survive
reordering routes and upgrades from the flat route list."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.config.model import RouteOptions
from fsincident.core import Labels
from fsincident.matchers import Matcher
from fsincident.routing.tree import (
    DEFAULT_GROUP_INTERVAL,
    DEFAULT_GROUP_WAIT,
    NO_ROUTE,
    ROOT,
    Route,
    build,
    group_key,
    group_labels,
    receivers,
    route,
    select,
)


def tree(*routes: dict[str, Any]) -> Route:
    return build([RouteOptions.model_validate(r) for r in routes])


def handlers(root: Route, labels: dict[str, str]) -> list[int]:
    return [r.index for r in select(root, labels)]


FLAT = tree(
    {"match": {"team": "db"}, "notify": ["channel:db"], "group_by": ["alertname"]},
    {"match": {"team": "db", "severity": "critical"}, "notify": ["user:ann"]},
    {"match": {"team": "infra"}, "notify": ["channel:ops"], "group_by": ["..."], "auto_resolve": False},
    {"notify": ["channel:all"], "group_by": ["alertname", "instance"]},
)
ALERT = {"alertname": "DiskFull", "team": "db", "severity": "critical", "instance": "h1"}


# --------------------------------------------------------------------------- the flat list still works


def test_first_match_wins():
    assert handlers(FLAT, ALERT) == [0]  # route 1 matches too but comes later
    swapped = tree(
        {"match": {"team": "db", "severity": "critical"}, "notify": ["user:ann"]},
        {"match": {"team": "db"}, "notify": ["channel:db"]},
    )
    assert handlers(swapped, ALERT) == [0]


def test_match_requires_every_label():
    assert handlers(FLAT, {"team": "db2", "alertname": "X"}) == [3]
    only_crit = tree({"match": {"team": "db", "severity": "critical"}})
    assert select(only_crit, {"team": "db", "severity": "warning"}) == [only_crit]


def test_empty_match_value_matches_missing_label():
    t = tree({"match": {"env": ""}, "notify": ["channel:x"]})
    assert handlers(t, {"alertname": "X"}) == [0]
    assert handlers(t, {"alertname": "X", "env": "prod"}) == [-1]


def test_no_route_is_the_root():
    t = tree({"match": {"team": "db"}}, {"match": {"team": "infra"}})
    [r] = route(t, {"alertname": "X", "team": "web"})
    assert r.route == -1 and r.targets == () and r.auto_resolve is True and r.escalation_policy is None
    assert r.receiver == "none" and r.group_labels == {"alertname": "X", "team": "web"}
    assert select(t, {"team": "web"}) == [t] and t.index == NO_ROUTE.index == ROOT.index == -1
    assert select(build([]), {"a": "b"})[0].index == -1


def test_route_result_carries_targets_and_auto_resolve():
    labels = {"alertname": "Down", "team": "infra", "instance": "h2"}
    [r] = route(FLAT, labels)
    assert r.route == 2 and r.targets == ("channel:ops",) and r.auto_resolve is False
    assert r.group_labels == labels
    assert r.group_key == group_key(FLAT.children[2], labels)
    assert r.receiver == "channel:ops"
    assert (r.group_wait, r.group_interval, r.repeat_interval) == (DEFAULT_GROUP_WAIT, DEFAULT_GROUP_INTERVAL, None)


def test_defaults():
    [r] = route(tree({}), {"alertname": "X"})
    assert r.route == 0 and r.targets == () and r.escalation_policy is None and r.auto_resolve is True
    assert r.group_wait == timedelta(0) and r.group_interval == timedelta(minutes=5) and r.repeat_interval is None
    assert r.mute_time_intervals == () and r.active_time_intervals == () and r.receiver == "none"
    assert r.grouping() == {
        "receiver": "none",
        "group_wait": 0.0,
        "group_interval": 300.0,
        "repeat_interval": None,
        "mute_time_intervals": [],
        "active_time_intervals": [],
    }


# --------------------------------------------------------------------------- matchers


@pytest.mark.parametrize(
    ("options", "hits", "misses"),
    [
        ({"match_re": {"job": "api|web"}}, [{"job": "api"}, {"job": "web"}], [{"job": "api2"}, {"job": "xapi"}, {}]),
        ({"matchers": ['job!="api"']}, [{"job": "web"}, {}], [{"job": "api"}]),
        ({"matchers": ['job!~"a.*"']}, [{"job": "web"}, {}], [{"job": "api"}, {"job": "a"}]),
        ({"matchers": ["job=api"]}, [{"job": "api"}], [{"job": "api "}, {}]),
        ({"matchers": ["job=~api|web"]}, [{"job": "web"}], [{"job": "webx"}]),
        ({"matchers": ['{job="api", env!="dev"}']}, [{"job": "api"}, {"job": "api", "env": "prod"}],
         [{"job": "api", "env": "dev"}]),
        ({"matchers": ['env=""']}, [{}, {"env": ""}], [{"env": "x"}]),
        ({"matchers": ['env!=""']}, [{"env": "x"}], [{}]),
        ({"match": {"job": "api"}, "match_re": {"env": "prod|stage"}, "matchers": ['dc!="b"']},
         [{"job": "api", "env": "prod", "dc": "a"}], [{"job": "api", "env": "prod", "dc": "b"}, {"job": "api"}]),
    ],
)  # fmt: skip
def test_matchers(options, hits, misses):
    t = tree({**options, "notify": ["channel:x"]})
    for labels in hits:
        assert handlers(t, labels) == [0], labels
    for labels in misses:
        assert handlers(t, labels) == [-1], labels


# --------------------------------------------------------------------------- the tree


NESTED = tree(
    {
        "match": {"team": "db"},
        "notify": ["channel:db"],
        "group_by": ["alertname"],
        "group_wait": "30s",
        "group_interval": "2m",
        "repeat_interval": "4h",
        "auto_resolve": False,
        "mute_time_intervals": ["nights"],
        "routes": [
            {"match": {"severity": "critical"}, "escalation_policy": "db-oncall", "group_wait": "0s", "continue": True},
            {"match": {"severity": "critical"}, "receiver": "db-chat", "group_by": ["alertname", "instance"]},
            {"match": {"severity": "warning"}, "notify": [], "active_time_intervals": ["office"]},
        ],
    },
    {"match": {"team": "db"}, "notify": ["channel:never"]},  # shadowed: the first route has no continue
    {"receiver": "default", "notify": ["channel:all"]},
)


def test_deepest_match_handles_and_parent_when_no_child_matches():
    assert handlers(NESTED, {"team": "db", "severity": "info"}) == [0]
    assert handlers(NESTED, {"team": "db", "severity": "warning"}) == [3]
    assert handlers(NESTED, {"team": "web"}) == [5]


def test_continue_lets_later_siblings_match_too():
    assert handlers(NESTED, {"team": "db", "severity": "critical"}) == [1, 2]
    a, b = route(NESTED, {"team": "db", "severity": "critical", "alertname": "X", "instance": "h"})
    assert a.escalation_policy == "db-oncall" and a.targets == () and a.receiver == "db-oncall"
    assert b.targets == ("channel:db",) and b.receiver == "db-chat" and b.escalation_policy is None
    assert a.group_key != b.group_key


def test_continue_on_a_top_level_route():
    t = tree(
        {"match": {"severity": "critical"}, "notify": ["channel:pager"], "continue": True},
        {"match": {"team": "db"}, "notify": ["channel:db"]},
        {"notify": ["channel:all"]},
    )
    assert handlers(t, {"severity": "critical", "team": "db"}) == [0, 1]
    assert handlers(t, {"severity": "critical", "team": "web"}) == [0, 2]
    assert handlers(t, {"team": "db"}) == [1]


def test_children_inherit_what_they_do_not_set():
    crit = NESTED.children[0].children[0]
    assert (crit.group_by, crit.group_wait, crit.group_interval, crit.repeat_interval) == (
        ("alertname",),
        timedelta(0),
        timedelta(minutes=2),
        timedelta(hours=4),
    )
    assert crit.auto_resolve is False
    # A child setting only an escalation policy pages through it alone: the parent's notify is not kept.
    assert crit.notify == () and crit.escalation_policy == "db-oncall"
    chat = NESTED.children[0].children[1]
    assert chat.notify == ("channel:db",) and chat.receiver == "db-chat" and chat.group_wait == timedelta(seconds=30)
    # mute_time_intervals / active_time_intervals are not inherited (as in Alertmanager).
    assert NESTED.children[0].mute_time_intervals == ("nights",)
    assert crit.mute_time_intervals == () and chat.mute_time_intervals == ()


def test_explicit_empty_notify_pages_nobody_and_drops_the_inherited_policy():
    t = tree({"escalation_policy": "p", "notify": ["channel:a"], "routes": [{"match": {"x": "1"}, "notify": []}]})
    child = t.children[0].children[0]
    assert child.notify == () and child.escalation_policy is None and child.receiver == "none"


def test_children_inherit_targets_when_they_set_none():
    t = tree({"escalation_policy": "p", "receiver": "team", "routes": [{"match": {"x": "1"}, "group_by": ["x"]}]})
    child = t.children[0].children[0]
    assert child.escalation_policy == "p" and child.receiver == "team" and child.group_by == ("x",)


def test_interval_names_and_receivers():
    [warn] = route(NESTED, {"team": "db", "severity": "warning"})
    assert warn.active_time_intervals == ("office",) and warn.mute_time_intervals == ()
    assert warn.targets == () and warn.receiver == "none"
    [top] = route(NESTED, {"team": "db"})
    assert top.mute_time_intervals == ("nights",)
    assert receivers(NESTED) == ["none", "channel:db", "db-oncall", "db-chat", "channel:never", "default"]


def test_indexes_are_a_pre_order_walk():
    assert [r.index for r in NESTED.walk()] == [-1, 0, 1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- group keys


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
    assert group_labels(Route(index=0, matchers=(), group_by=group_by), ALERT) == expected


def test_group_labels_skip_empty_values():
    r = Route(index=0, matchers=(), group_by=("alertname", "env"))
    assert group_labels(r, {"alertname": "X", "env": ""}) == {"alertname": "X"}


def test_alerts_of_one_group_share_a_key():
    db, catch_all = FLAT.children[0], FLAT.children[3]
    a, b = {**ALERT, "instance": "h1"}, {**ALERT, "instance": "h2"}
    assert group_key(db, a) == group_key(db, b)  # grouped by alertname only
    assert group_key(catch_all, a) != group_key(catch_all, b)


def test_group_key_is_stable_text():
    key = group_key(FLAT.children[0], ALERT)
    assert len(key) == 32 and int(key, 16) >= 0
    assert key == group_key(FLAT.children[0], dict(reversed(list(ALERT.items()))))


def _flat_key(match: dict[str, str] | None, group_by: list[str] | None, labels: dict[str, str]) -> str:
    """The group key of the flat route list before route trees (release 0.x), written out independently."""
    if group_by is None or "..." in group_by:
        grouped = dict(labels)
    else:
        grouped = {k: labels[k] for k in group_by if labels.get(k, "") != ""}
    ident = [sorted((match or {}).items()), list(group_by or ["..."]), match is None]
    payload = json.dumps([ident, sorted(grouped.items())], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def test_group_keys_are_those_of_the_flat_route_list():
    # Open incidents keep their group on upgrade: same keys for plain top-level routes and for no route.
    labels = {"alertname": "DiskFull", "team": "db", "instance": "h1"}
    assert group_key(FLAT.children[0], labels) == _flat_key({"team": "db"}, ["alertname"], labels)
    assert group_key(FLAT.children[2], labels) == _flat_key({"team": "infra"}, ["..."], labels)
    assert group_key(FLAT.children[3], labels) == _flat_key({}, ["alertname", "instance"], labels)
    assert group_key(ROOT, labels) == _flat_key(None, None, labels)
    assert group_key(build([]), labels) == group_key(tree({"match": {"a": "b"}}), labels)  # both the root


def test_group_key_survives_moving_a_route():
    moved = tree({"match": {"team": "web"}}, {"match": {"team": "db"}, "group_by": ["alertname"]})
    assert group_key(moved.children[1], ALERT) == group_key(FLAT.children[0], ALERT)
    [a] = route(moved, ALERT)
    [b] = route(FLAT, ALERT)
    assert a.group_key == b.group_key and a.route != b.route


def test_group_key_ignores_targets_and_timing():
    a = tree({"match": {"team": "db"}, "group_by": ["alertname"], "notify": ["channel:x"]})
    b = tree({"match": {"team": "db"}, "group_by": ["alertname"], "escalation_policy": "p", "group_wait": "1m"})
    assert route(a, ALERT)[0].group_key == route(b, ALERT)[0].group_key


def test_group_key_differs_between_routes():
    db = FLAT.children[0]
    other = tree({"match": {"team": "db", "env": "prod"}, "group_by": ["alertname"]}).children[0]
    assert group_key(other, ALERT) != group_key(db, ALERT)
    # same match and same resulting group labels, but a different grouping: a different group
    regrouped = tree({"match": {"team": "db"}, "group_by": ["alertname", "instance"]}).children[0]
    no_instance = {"alertname": "DiskFull", "team": "db"}
    assert group_labels(regrouped, no_instance) == group_labels(db, no_instance)
    assert group_key(regrouped, no_instance) != group_key(db, no_instance)


def test_no_route_key_differs_from_catch_all_route():
    catch_all = tree({"notify": ["channel:x"]})
    assert group_key(ROOT, ALERT) != group_key(catch_all.children[0], ALERT)


def test_look_alike_routes_get_their_own_groups_and_the_first_keeps_its_key():
    alone = tree({"match": {"team": "db"}, "notify": ["channel:chat"]})
    twins = tree(
        {"match": {"team": "db"}, "notify": ["channel:chat"], "continue": True},
        {"match": {"team": "db"}, "notify": ["channel:pager"]},
    )
    a, b = route(twins, ALERT)
    assert a.group_key != b.group_key
    assert a.group_key == route(alone, ALERT)[0].group_key


def test_nested_route_key_depends_on_its_path():
    a = tree({"match": {"team": "db"}, "routes": [{"matchers": ['severity="critical"']}]})
    b = tree({"match": {"team": "web"}, "routes": [{"matchers": ['severity="critical"']}]})
    c = tree({"match": {"team": "db"}, "routes": [{"match": {"severity": "critical"}}]})
    labels = {"team": "db", "severity": "critical"}
    ka, kc = route(a, labels)[0].group_key, route(c, labels)[0].group_key
    assert ka == kc  # `match` and `matchers` with the same meaning: the same route
    assert ka != route(b, {"team": "web", "severity": "critical"})[0].group_key


# --------------------------------------------------------------------------- properties

NAMES = ["alertname", "team", "severity", "env"]
VALUES = ["", "a", "b"]
label_dicts = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(VALUES), max_size=4)
group_bys = st.one_of(st.none(), st.just(["..."]), st.lists(st.sampled_from(NAMES), unique=True, max_size=3))


@st.composite
def matcher_options(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = draw(st.sampled_from(["none", "match", "match_re", "matchers"]))
    name, value = draw(st.sampled_from(NAMES)), draw(st.sampled_from(VALUES))
    if kind == "match":
        out["match"] = {name: value}
    elif kind == "match_re":
        out["match_re"] = {name: draw(st.sampled_from(["a|b", "a.*", ".+", ""]))}
    elif kind == "matchers":
        op = draw(st.sampled_from(["=", "!=", "!~"]))
        out["matchers"] = [str(Matcher.make(name, op, value))]
    return out


def route_dicts(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    base = st.builds(
        lambda m, cont, gb, notify: {**m, "continue": cont, "group_by": gb, "notify": notify},
        matcher_options(),
        st.booleans(),
        group_bys,
        st.sampled_from([None, ["channel:a"], ["channel:b"], []]),
    )
    if depth == 0:
        return base
    return st.builds(lambda d, kids: {**d, "routes": kids}, base, st.lists(route_dicts(depth - 1), max_size=3))


trees = st.lists(route_dicts(2), max_size=4).map(lambda rs: tree(*rs))


def reference_select(root: Route, labels: dict[str, str]) -> list[Route]:
    """Handlers by the definition, without recursion: a route is reached when it and all its ancestors match
    and no earlier sibling on its path matches without ``continue``; the reached routes with no reached child
    handle the alert (the root when no route is reached)."""

    def paths(node: Route, prefix: list[tuple[Route, list[Route]]]) -> list[list[tuple[Route, list[Route]]]]:
        out = [prefix]
        for i, c in enumerate(node.children):
            out.extend(paths(c, [*prefix, (c, list(node.children[:i]))]))
        return out

    reached = [
        p[-1][0]
        for p in paths(root, [])
        if p
        and all(n.matches(labels) for n, _ in p)
        and not any(s.matches(labels) and not s.continue_ for _, earlier in p for s in earlier)
    ]
    ids = {id(r) for r in reached}
    leaves = [r for r in reached if not any(id(c) in ids for c in r.children)]
    return leaves or [root]


@settings(max_examples=300, deadline=None)
@given(trees, label_dicts)
def test_select_equals_the_reference(root, labels):
    got = select(root, labels)
    assert len(got) >= 1
    assert [r.index for r in got] == [r.index for r in reference_select(root, labels)]
    assert [r.index for r in got] == sorted(r.index for r in got)  # tree order


@settings(max_examples=200, deadline=None)
@given(trees, label_dicts)
def test_a_matching_route_without_continue_stops_its_later_siblings(root, labels):
    chosen = {r.index for r in select(root, labels)}
    for node in root.walk():
        for i, child in enumerate(node.children):
            if child.matches(labels) and not child.continue_:
                later = [d.index for s in node.children[i + 1 :] for d in s.walk()]
                assert not chosen.intersection(later)


@settings(max_examples=200, deadline=None)
@given(trees, label_dicts)
def test_every_label_set_gets_a_group(root, labels):
    got = route(root, labels)
    assert got and all(len(r.group_key) == 32 for r in got)
    assert len({r.group_key for r in got}) == len(got)  # several routes: several groups


@settings(max_examples=200, deadline=None)
@given(trees, label_dicts, label_dicts)
def test_group_keys_equal_iff_route_and_group_labels_equal(root, l1, l2):
    routes = root.walk()
    assert len({r.ident for r in routes}) == len(routes)  # every route has its own identity
    for r1 in routes:
        for r2 in routes:
            same = r1.ident == r2.ident and group_labels(r1, l1) == group_labels(r2, l2)
            assert (group_key(r1, l1) == group_key(r2, l2)) == same


@settings(max_examples=200, deadline=None)
@given(label_dicts, group_bys, st.randoms(use_true_random=False))
def test_group_key_independent_of_label_order(labels, group_by, rnd):
    items = list(labels.items())
    rnd.shuffle(items)
    r = tree({"match": {"team": "db"}, "group_by": group_by}).children[0]
    assert group_key(r, labels) == group_key(r, dict(items)) == group_key(r, Labels(items))


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(4)), label_dicts)
def test_reordering_top_level_routes_keeps_group_keys(order, labels):
    options = [
        {"match": {"team": "a"}, "group_by": ["alertname"]},
        {"matchers": ['severity!="x"'], "continue": True},
        {"match_re": {"env": "a.*"}, "routes": [{"match": {"alertname": "a"}}]},
        {"group_by": []},
    ]
    a, b = tree(*options), tree(*[options[k] for k in order])
    by_content = {r.ident: group_key(r, labels) for r in a.walk()}
    for r in b.walk():
        assert group_key(r, labels) == by_content[r.ident]
