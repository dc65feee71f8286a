"""Pure silence and inhibition decisions (Alertmanager's semantics), free of SQL and clocks.

A silence mutes the label sets that satisfy all of its matchers (a missing label matches as ``""``) while it is
active: from ``starts_at`` (included) to ``ends_at`` (excluded). Alertmanager counts the very nanosecond of
``endsAt`` as still active; the half-open interval makes "expire now" take effect at once.

Inhibition: a firing *source* alert matching a rule's source side mutes a *target* label set matching its
target side when both have the same values of the rule's ``equal`` labels (a missing label equals a missing or
empty one). When the target also matches the source side, source alerts that match the target side too are
disregarded, so alerts matching both sides never inhibit each other, and no alert inhibits itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fsincident.core import storable_text, valid_label_name
from fsincident.matchers import Matcher, MatcherError, parse_matcher_list

PENDING, ACTIVE, EXPIRED = "pending", "active", "expired"
STATES = (ACTIVE, PENDING, EXPIRED)
"""Silence states in Alertmanager's listing order."""

_OPS = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}


# ---------------------------------------------------------------------- silences


def state(starts_at: datetime, ends_at: datetime, now: datetime) -> str:
    """``pending`` before ``starts_at``, ``expired`` from ``ends_at`` on, else ``active``; never fails."""
    if now < starts_at:
        return PENDING
    if now >= ends_at:
        return EXPIRED
    return ACTIVE


def matches(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfies every matcher (a missing label is ``""``); never fails."""
    return all(m.matches(labels.get(m.name, "")) for m in matchers)


def matcher_from_am(obj: Mapping[str, Any]) -> Matcher:
    """A matcher from Alertmanager's ``{name, value, isRegex, isEqual}`` (``isEqual`` defaults to true); raises
    MatcherError naming the bad label name, value or regular expression, or ValueError for a wrong type."""
    name, value = obj.get("name"), obj.get("value")
    is_regex, is_equal = obj.get("isRegex", False), obj.get("isEqual", True)
    if is_equal is None:
        is_equal = True
    if not isinstance(name, str) or not isinstance(value, str):
        raise ValueError("a matcher needs string 'name' and 'value'")
    if not isinstance(is_regex, bool) or not isinstance(is_equal, bool):
        raise ValueError("a matcher's 'isRegex' and 'isEqual' must be booleans")
    if not valid_label_name(name):
        raise MatcherError(f"invalid label name {json.dumps(name)}")
    if not storable_text(value):
        raise MatcherError(f"invalid label value {json.dumps(value)}")
    try:
        return Matcher.make(name, _OPS[(is_regex, is_equal)], value)
    except MatcherError as e:
        reason = str(e).partition(f" for label {name!r}: ")[2] or str(e)
        raise MatcherError(f"invalid regular expression {json.dumps(value)}: {reason}") from None


def matcher_to_am(m: Matcher) -> dict[str, Any]:
    """Alertmanager's form of a matcher, keys in the order Alertmanager writes them."""
    return {"isEqual": m.op in ("=", "=~"), "isRegex": m.op in ("=~", "!~"), "name": m.name, "value": m.value}


def parse_matcher_text(text: str) -> tuple[Matcher, ...]:
    """``a="b"``, ``a=b``, ``a=~"x|y"`` or ``{a="b", c!="d"}`` (amtool's forms); raises MatcherError."""
    out = parse_matcher_list(text)
    for m in out:
        if not storable_text(m.value):
            raise MatcherError(f"invalid label value {json.dumps(m.value)}")
    return out


def problems(matchers: Sequence[Matcher]) -> str | None:
    """Why a silence with these matchers would be refused (Alertmanager's wording), or None."""
    if not matchers:
        return "at least one matcher required"
    if all(m.matches("") for m in matchers):
        return "at least one matcher must not match the empty string"
    return None


@dataclass(frozen=True)
class ActiveSilence:
    """A silence ready for matching: its id, compiled matchers and time range."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime

    def state(self, now: datetime) -> str:
        return state(self.starts_at, self.ends_at, now)

    def mutes(self, labels: Mapping[str, str], now: datetime) -> bool:
        """Whether the silence is active at ``now`` and matches ``labels``."""
        return self.starts_at <= now < self.ends_at and matches(self.matchers, labels)


def silenced_by(silences: Iterable[ActiveSilence], labels: Mapping[str, str], now: datetime) -> tuple[str, ...]:
    """The sorted ids of the silences muting ``labels`` at ``now``; never fails."""
    return tuple(sorted(s.id for s in silences if s.mutes(labels, now)))


def filter_matches(filters: Sequence[Matcher], silence_matchers: Sequence[Matcher]) -> bool:
    """Whether a silence passes ``GET /api/v2/silences?filter=`` (Alertmanager: every filter matcher appears in
    the silence with the same name, operator and value); never fails."""
    own = {(m.name, m.op, m.value) for m in silence_matchers}
    return all((f.name, f.op, f.value) in own for f in filters)


# ---------------------------------------------------------------------- inhibition


@dataclass(frozen=True)
class InhibitRule:
    """One ``inhibit_rules`` entry, compiled."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceAlert:
    """A firing alert that may inhibit others."""

    fingerprint: str
    labels: Mapping[str, str]


def compile_rule(
    source_matchers: Sequence[str],
    target_matchers: Sequence[str],
    source_match: Mapping[str, str],
    target_match: Mapping[str, str],
    equal: Sequence[str],
) -> InhibitRule:
    """Build a rule from its config form (matcher strings plus the legacy equality maps); raises MatcherError."""
    source = [m for text in source_matchers for m in parse_matcher_list(text)]
    source += [Matcher.make(k, "=", v) for k, v in source_match.items()]
    target = [m for text in target_matchers for m in parse_matcher_list(text)]
    target += [Matcher.make(k, "=", v) for k, v in target_match.items()]
    return InhibitRule(tuple(source), tuple(target), tuple(dict.fromkeys(equal)))


@dataclass
class _RuleIndex:
    rule: InhibitRule
    # equal-label values -> sources matching the source side, sorted by fingerprint, each with "matches the target"
    by_equal: dict[tuple[str, ...], list[tuple[str, bool]]] = field(default_factory=dict)


class Inhibitor:
    """The inhibition decision for a fixed set of firing source alerts: index once, ask for many targets."""

    def __init__(self, rules: Sequence[InhibitRule], sources: Iterable[SourceAlert]):
        self._index = [_RuleIndex(r) for r in rules]
        srcs = sorted({s.fingerprint: s for s in sources}.values(), key=lambda s: s.fingerprint)
        for ix in self._index:
            for s in srcs:
                if matches(ix.rule.source, s.labels):
                    key = tuple(s.labels.get(n, "") for n in ix.rule.equal)
                    ix.by_equal.setdefault(key, []).append((s.fingerprint, matches(ix.rule.target, s.labels)))

    def inhibited_by(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        """The fingerprint of an alert inhibiting ``labels`` (the lowest one of the first rule that inhibits, as
        Alertmanager reports one), or ``()``; never fails."""
        for ix in self._index:
            if not matches(ix.rule.target, labels):
                continue
            candidates = ix.by_equal.get(tuple(labels.get(n, "") for n in ix.rule.equal))
            if not candidates:
                continue
            two_sided = matches(ix.rule.source, labels)
            for fp, also_target in candidates:
                if not (two_sided and also_target):
                    return (fp,)
        return ()


def inhibitors(rules: Sequence[InhibitRule], sources: Iterable[SourceAlert], labels: Mapping[str, str]) -> set[str]:
    """Every source fingerprint that inhibits ``labels`` under any rule (the plain definition, for checks)."""
    out: set[str] = set()
    for r in rules:
        if not matches(r.target, labels):
            continue
        two_sided = matches(r.source, labels)
        for s in sources:
            if not matches(r.source, s.labels):
                continue
            if any(s.labels.get(n, "") != labels.get(n, "") for n in r.equal):
                continue
            if two_sided and matches(r.target, s.labels):
                continue
            out.add(s.fingerprint)
    return out
