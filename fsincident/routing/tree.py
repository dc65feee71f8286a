"""The route list: first match wins; a route names its targets, escalation policy, grouping and auto-resolve."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fsincident.core import Routed


@dataclass(frozen=True)
class Route:
    index: int
    match: Mapping[str, str]
    notify: tuple[str, ...]
    group_by: tuple[str, ...] | None  # None or ('...',): every label
    auto_resolve: bool = True
    escalation_policy: str | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k, "") == v for k, v in self.match.items())


NO_ROUTE = Route(index=-1, match={}, notify=(), group_by=None, auto_resolve=True)


def select(routes: Sequence[Route], labels: Mapping[str, str]) -> Route:
    """The first route whose ``match`` labels all equal the alert's; NO_ROUTE when none does."""
    for r in routes:
        if r.matches(labels):
            return r
    return NO_ROUTE


def group_labels(route: Route, labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that identify the alert's group under ``route`` (all labels by default)."""
    if route.group_by is None or "..." in route.group_by:
        return dict(labels)
    return {k: labels[k] for k in route.group_by if labels.get(k, "") != ""}


def group_key(route: Route, labels: Mapping[str, str]) -> str:
    """A stable key of (route, group labels), unique per alert group."""
    # The route's content (not its position) identifies it, so reordering routes keeps open incidents.
    ident = [sorted(route.match.items()), list(route.group_by or ["..."]), route.index < 0]
    payload = json.dumps([ident, sorted(group_labels(route, labels).items())], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def route(routes: Sequence[Route], labels: Mapping[str, str]) -> Routed:
    """Select the route for ``labels`` and compute its group."""
    r = select(routes, labels)
    return Routed(r.index, group_key(r, labels), group_labels(r, labels), r.notify, r.auto_resolve, r.escalation_policy)
