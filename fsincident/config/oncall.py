"""Schedules and escalation policies of fsincident.yaml: the value types and their located checks.

The value types are plain frozen dataclasses (stdlib only), so that the pure on-call engine
(``fsincident.escalation.oncall``) and the services use them without pydantic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, time, timedelta
from typing import Any

from pydantic import ValidationError

from fsincident.config.model import (
    TARGET_KINDS,
    WEEKDAYS,
    EscalationPolicyOptions,
    LayerOptions,
    ScheduleOptions,
    StepOptions,
)
from fsincident.config.yamlmarks import Document, pydantic_problems
from fsincident.core import Problem, format_duration

MIN_EVERY = timedelta(hours=1)
MAX_EVERY = timedelta(days=365)
DEFAULT_REPEAT_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class Restriction:
    """A window in which a layer is active: on each of ``days`` (0=Mon) from ``start`` to ``end`` local time;
    ``end <= start`` runs past midnight into the next day (``end == start``: 24 hours)."""

    days: frozenset[int]
    start: time
    end: time


@dataclass(frozen=True)
class Layer:
    """One layer of a schedule (``number`` is 1-based; a higher number wins while it is active)."""

    number: int
    rotation: str  # "daily" | "weekly" | "every"
    every: timedelta | None
    handoff_day: int | None  # 0=Mon, weekly only
    handoff: time
    start: date
    users: tuple[str, ...]
    restrictions: tuple[Restriction, ...] = ()

    @property
    def period(self) -> timedelta:
        """The rotation period in local wall-clock time."""
        if self.rotation == "daily":
            return timedelta(days=1)
        if self.rotation == "weekly":
            return timedelta(days=7)
        assert self.every is not None
        return self.every


@dataclass(frozen=True)
class Schedule:
    name: str
    timezone: str
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class Step:
    """One escalation step: ``after`` the start of the pass, page ``targets``."""

    after: timedelta
    targets: tuple[str, ...]


@dataclass(frozen=True)
class EscalationPolicy:
    name: str
    steps: tuple[Step, ...]
    repeat: int = 0
    repeat_after: timedelta = DEFAULT_REPEAT_AFTER
    ack_timeout: timedelta | None = None
    auto_resolve_after: timedelta | None = None


def _time(text: str) -> time:
    h, m = text.split(":")
    return time(int(h), int(m))


def _parse_handoff(text: str) -> tuple[int | None, time]:
    parts = text.split()
    if len(parts) == 2:
        return WEEKDAYS.index(parts[0].lower()[:3]), _time(parts[1])
    return None, _time(parts[0])


def check_targets(
    doc: Document, path: tuple, targets: Iterable[Any], known: dict[str, set[str]], problems: list[Problem]
) -> None:
    """Append a located problem for every target whose channel, user or schedule does not exist."""
    for j, t in enumerate(targets):
        kind, _, name = t.partition(":") if isinstance(t, str) else ("", "", "")
        if kind not in TARGET_KINDS or not name:
            continue  # not a target at all: the model reports it
        if name not in known.get(kind, set()):
            problems.append(doc.problem((*path, j), f"unknown {kind} {name!r}"))


def _layer(
    doc: Document, path: tuple, number: int, lo: LayerOptions, users: set[str], problems: list[Problem]
) -> Layer | None:
    ok = True
    if lo.rotation is None and lo.every is None:
        problems.append(doc.problem(path, "give rotation: daily|weekly or every: DURATION"))
        ok = False
    elif lo.rotation is not None and lo.every is not None:
        problems.append(doc.problem((*path, "every"), "give either rotation or every, not both"))
        ok = False
    elif lo.every is not None:
        if lo.every < MIN_EVERY:
            problems.append(doc.problem((*path, "every"), f"every must be at least {format_duration(MIN_EVERY)}"))
            ok = False
        elif lo.every > MAX_EVERY:
            problems.append(doc.problem((*path, "every"), f"every must be at most {format_duration(MAX_EVERY)}"))
            ok = False
        elif lo.every % timedelta(minutes=1):
            problems.append(doc.problem((*path, "every"), "every must be a whole number of minutes"))
            ok = False
    day, at = _parse_handoff(lo.handoff)
    rotation = lo.rotation or "every"
    if ok and rotation == "weekly" and day is None:
        problems.append(doc.problem((*path, "handoff"), 'a weekly rotation needs a day, e.g. "Mon 09:00"'))
        ok = False
    elif ok and rotation != "weekly" and day is not None:
        what = "a daily rotation" if rotation == "daily" else "an every: rotation"
        problems.append(doc.problem((*path, "handoff"), f"{what} takes no day: write HH:MM"))
        ok = False
    for j, u in enumerate(lo.users):
        if u not in users:
            problems.append(doc.problem((*path, "users", j), f"unknown user {u!r}"))
            ok = False
    if not ok:
        return None
    restrictions = tuple(
        Restriction(frozenset(WEEKDAYS.index(d) for d in r.days), _time(r.from_), _time(r.to)) for r in lo.restrictions
    )
    return Layer(
        number=number,
        rotation=rotation,
        every=lo.every,
        handoff_day=day,
        handoff=at,
        start=lo.start,
        users=tuple(lo.users),
        restrictions=restrictions,
    )


def load_schedules(
    doc: Document, items: list[Any], users: set[str], names: set[str], problems: list[Problem]
) -> list[Schedule]:
    """Validate ``schedules:``; adds every schedule's name (valid or not) to ``names`` and appends problems."""
    out: list[Schedule] = []
    seen: set[str] = set()
    for i, raw in enumerate(items):
        path = ("schedules", i)
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            names.add(raw["name"])
        so = None
        try:
            so = ScheduleOptions.model_validate(raw)
        except ValidationError as e:
            problems.extend(pydantic_problems(doc, path, e))
        layers: list[Layer | None] = []
        items_raw = raw.get("layers") if isinstance(raw, dict) else None
        for j, lraw in enumerate(items_raw if isinstance(items_raw, list) else []):
            # Each layer on its own: one bad layer hides no problem of another.
            try:
                lo = LayerOptions.model_validate(lraw)
            except ValidationError as e:
                problems.extend(pydantic_problems(doc, (*path, "layers", j), e))
                layers.append(None)
                continue
            layers.append(_layer(doc, (*path, "layers", j), j + 1, lo, users, problems))
        if so is None:
            continue
        if so.name in seen:
            problems.append(doc.problem((*path, "name"), f"duplicate schedule name {so.name!r}"))
        seen.add(so.name)
        if all(layer is not None for layer in layers):
            out.append(Schedule(so.name, so.timezone, tuple(x for x in layers if x is not None)))
    return out


def _positive(doc: Document, path: tuple, value: timedelta | None, problems: list[Problem]) -> bool:
    if value is not None and value <= timedelta(0):
        problems.append(doc.problem(path, f"{path[-1]} must be positive"))
        return False
    return True


def load_policies(
    doc: Document, items: list[Any], known: dict[str, set[str]], names: set[str], problems: list[Problem]
) -> list[EscalationPolicy]:
    """Validate ``escalation_policies:`` against the known targets; adds every name to ``names``, appends problems."""
    out: list[EscalationPolicy] = []
    seen: set[str] = set()
    for i, raw in enumerate(items):
        path = ("escalation_policies", i)
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            names.add(raw["name"])
        po = None
        try:
            po = EscalationPolicyOptions.model_validate(raw)
        except ValidationError as e:
            problems.extend(pydantic_problems(doc, path, e))
        ok = True
        steps: list[Step] = []
        steps_raw = raw.get("steps") if isinstance(raw, dict) else None
        for j, sraw in enumerate(steps_raw if isinstance(steps_raw, list) else []):
            # Each step on its own: one bad step hides no problem of another.
            spath = (*path, "steps", j)
            try:
                so = StepOptions.model_validate(sraw)
            except ValidationError as e:
                problems.extend(pydantic_problems(doc, spath, e))
                notify = sraw.get("notify") if isinstance(sraw, dict) else None
                if isinstance(notify, list):
                    check_targets(doc, (*spath, "notify"), notify, known, problems)
                ok = False
                continue
            n = len(problems)
            check_targets(doc, (*spath, "notify"), so.notify, known, problems)
            ok = ok and len(problems) == n
            if steps and so.after < steps[-1].after:
                msg = f"after must not be earlier than the previous step's {format_duration(steps[-1].after)}"
                problems.append(doc.problem((*spath, "after"), msg))
                ok = False
            steps.append(Step(so.after, tuple(so.notify)))
        if po is None:
            continue
        if po.name in seen:
            problems.append(doc.problem((*path, "name"), f"duplicate escalation policy name {po.name!r}"))
        seen.add(po.name)
        for key in ("repeat_after", "ack_timeout", "auto_resolve_after"):
            ok = _positive(doc, (*path, key), getattr(po, key), problems) and ok
        if not ok:
            continue
        out.append(
            EscalationPolicy(
                name=po.name,
                steps=tuple(steps),
                repeat=po.repeat,
                repeat_after=po.repeat_after or default_repeat_after([s.after for s in steps]),
                ack_timeout=po.ack_timeout,
                auto_resolve_after=po.auto_resolve_after,
            )
        )
    return out


def default_repeat_after(afters: list[timedelta]) -> timedelta:
    """The gap between the last two steps when positive, else 5 minutes; never fails."""
    if len(afters) >= 2 and afters[-1] > afters[-2]:
        return afters[-1] - afters[-2]
    return DEFAULT_REPEAT_AFTER
