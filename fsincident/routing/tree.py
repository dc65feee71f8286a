"""The route tree (Alertmanager's semantics, pure): an alert descends from the implicit root into the first
child route that matches it, recursively; a route with ``continue: true`` lets matching go on to its next
siblings, so one alert may land in several routes. The deepest matching routes handle the alert; when no
top-level route matches, the root does (no targets). Each handling route groups the alert by its ``group_by``
labels into one incident per group.

A child inherits from its parent what it does not set: targets (``notify``, ``escalation_policy``, and the
``receiver`` name with them), ``group_by``, ``group_wait``, ``group_interval``, ``repeat_interval`` and
``auto_resolve``. ``mute_time_intervals``/``active_time_intervals`` are not inherited (as in Alertmanager).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from fsincident.core import Routed
from fsincident.matchers import Matcher, parse_matcher_list

DEFAULT_GROUP_WAIT = timedelta(0)
DEFAULT_GROUP_INTERVAL = timedelta(minutes=5)


@dataclass(frozen=True)
class Route:
    """One node of the tree, with everything inherited already filled in."""

    index: int  # position in a pre-order walk of the configured routes; -1 for the implicit root
    matchers: tuple[Matcher, ...]
    notify: tuple[str, ...] = ()
    group_by: tuple[str, ...] | None = None  # None or ('...',): every label
    auto_resolve: bool = True
    escalation_policy: str | None = None
    receiver: str = "none"
    group_wait: timedelta = DEFAULT_GROUP_WAIT
    group_interval: timedelta = DEFAULT_GROUP_INTERVAL
    repeat_interval: timedelta | None = None
    continue_: bool = False
    mute_time_intervals: tuple[str, ...] = ()
    active_time_intervals: tuple[str, ...] = ()
    children: tuple[Route, ...] = ()
    ident: str = ""  # stable identity for group keys (content, not position, unless two routes look alike)
    match: Mapping[str, str] = field(default_factory=dict)  # the plain equality part, kept for display

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher of this route holds (a missing label counts as ``""``); never raises."""
        return all(m.matches(labels.get(m.name, "")) for m in self.matchers)

    def walk(self) -> list[Route]:
        """This route and every descendant, in pre-order."""
        out = [self]
        for c in self.children:
            out.extend(c.walk())
        return out


ROOT = Route(index=-1, matchers=(), ident=json.dumps([[], ["..."], True], separators=(",", ":")))
NO_ROUTE = ROOT


def route_matchers(options: Any) -> tuple[Matcher, ...]:
    """The matchers of a route's ``match``, ``match_re`` and ``matchers`` keys; raises MatcherError naming the
    bad one (``matchers`` entries are written ``name="value"``, ``name=~"re"``, or ``{a="b", c!="d"}``)."""
    out = [Matcher.make(k, "=", v) for k, v in options.match.items()]
    out.extend(Matcher.make(k, "=~", v) for k, v in options.match_re.items())
    for text in options.matchers:
        out.extend(parse_matcher_list(text))
    return tuple(out)


def build(options: Sequence[Any]) -> Route:
    """The tree of ``routes:`` (RouteOptions) under the implicit root; raises MatcherError for a bad matcher
    (the loader reports those located, so a loaded config never raises here)."""
    counter = iter(range(1_000_000))
    children = tuple(_build(o, ROOT, counter, top=True) for o in options)
    root = replace(ROOT, children=children)
    return _disambiguate(root)


def _build(o: Any, parent: Route, counter: Any, top: bool) -> Route:
    index = next(counter)
    own_targets = o.notify is not None or o.escalation_policy is not None
    notify = tuple(o.notify) if o.notify is not None else (() if o.escalation_policy else parent.notify)
    policy = (
        o.escalation_policy
        if o.escalation_policy is not None
        else (None if o.notify is not None else parent.escalation_policy)
    )
    if o.receiver is not None:
        receiver = o.receiver
    elif own_targets:
        receiver = policy or ",".join(notify) or "none"
    else:
        receiver = parent.receiver
    group_by = tuple(o.group_by) if o.group_by is not None else parent.group_by
    matchers = route_matchers(o)
    plain = not o.match_re and not o.matchers
    if top and plain:
        # The identity routes had before route trees existed: open incidents keep their group keys on upgrade.
        ident: list[Any] = [sorted(o.match.items()), list(group_by or ["..."]), False]
    else:
        chain = json.loads(parent.ident)[0] if parent.index >= 0 else []
        ident = [[*chain, sorted(str(m) for m in matchers)], list(group_by or ["..."]), False]
    node = Route(
        index=index,
        matchers=matchers,
        notify=notify,
        group_by=group_by,
        auto_resolve=o.auto_resolve if o.auto_resolve is not None else parent.auto_resolve,
        escalation_policy=policy,
        receiver=receiver,
        group_wait=o.group_wait if o.group_wait is not None else parent.group_wait,
        group_interval=o.group_interval if o.group_interval is not None else parent.group_interval,
        repeat_interval=o.repeat_interval if o.repeat_interval is not None else parent.repeat_interval,
        continue_=o.continue_,
        mute_time_intervals=tuple(o.mute_time_intervals),
        active_time_intervals=tuple(o.active_time_intervals),
        ident=json.dumps(ident, separators=(",", ":")),
        match=dict(o.match),
    )
    kids = tuple(_build(c, node, counter, top=False) for c in o.routes)
    return replace(node, children=kids)


def _disambiguate(root: Route) -> Route:
    """Two routes with the same matchers and grouping (say, one with ``continue`` to a chat and one to a pager)
    would share group keys: the second and later ones get their position as part of their identity (the first
    keeps its plain identity, so adding a look-alike route does not move the open incidents of the first)."""
    seen: set[str] = set()

    def fix(r: Route) -> Route:
        # [identity, position] has two items, a plain identity three: the two kinds never collide.
        ident = json.dumps([json.loads(r.ident), r.index], separators=(",", ":")) if r.ident in seen else r.ident
        seen.add(r.ident)
        return replace(r, ident=ident, children=tuple(fix(c) for c in r.children))

    return fix(root)


def select(root: Route, labels: Mapping[str, str]) -> list[Route]:
    """The routes that handle ``labels``, in tree order (at least one: the root when nothing else matches);
    never raises."""
    return _match(root, labels) or [root]


def _match(node: Route, labels: Mapping[str, str]) -> list[Route]:
    if not node.matches(labels):
        return []
    found: list[Route] = []
    for child in node.children:
        got = _match(child, labels)
        if got:
            found.extend(got)
            if not child.continue_:
                break
    return found or [node]


def group_labels(route: Route, labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that identify the alert's group under ``route`` (all labels by default)."""
    if route.group_by is None or "..." in route.group_by:
        return dict(labels)
    return {k: labels[k] for k in route.group_by if labels.get(k, "") != ""}


def group_key(route: Route, labels: Mapping[str, str]) -> str:
    """A stable key of (route identity, group labels), unique per alert group; never raises."""
    # ``ident`` is compact JSON already: splicing it in equals dumping the parsed list, without the parse.
    grouped = json.dumps(sorted(group_labels(route, labels).items()), separators=(",", ":"))
    return hashlib.sha256(f"[{route.ident},{grouped}]".encode()).hexdigest()[:32]


def routed(r: Route, labels: Mapping[str, str]) -> Routed:
    """Where ``r`` sends an alert with ``labels``."""
    return Routed(
        r.index,
        group_key(r, labels),
        group_labels(r, labels),
        r.notify,
        r.auto_resolve,
        r.escalation_policy,
        receiver=r.receiver,
        group_wait=r.group_wait,
        group_interval=r.group_interval,
        repeat_interval=r.repeat_interval,
        mute_time_intervals=r.mute_time_intervals,
        active_time_intervals=r.active_time_intervals,
    )


def route(root: Route, labels: Mapping[str, str]) -> list[Routed]:
    """Every group ``labels`` belongs to: one per handling route (several with ``continue``); never raises."""
    return [routed(r, labels) for r in select(root, labels)]


def receivers(root: Route) -> list[str]:
    """The distinct receiver names of the tree, in tree order (``none`` for the root)."""
    seen: dict[str, None] = {}
    for r in root.walk():
        seen.setdefault(r.receiver, None)
    return list(seen)
