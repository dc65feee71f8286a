"""Which escalation step is due (pure): a policy, an incident's escalation state and ``now`` in, steps out.

An incident's escalation state is a pointer to the next step to run (``step`` of pass ``loop``), the start of
the current pass (``started_at``: the trigger, re-trigger or the computed start of a repeat pass) and a wake-up
time (``due_at``) with its ``reason``. A step is due at ``started_at`` plus its ``after`` (never earlier than the
step before it); the next pass starts ``repeat_after`` after the last step's time. The due time is always
recomputed from the pointer, so a restart after any downtime runs each overdue step exactly once, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

STEP = "step"
ACK_TIMEOUT = "ack_timeout"
MAX_STEPS_PER_PLAN = 10_000  # a bound on one catch-up, far above any sane policy's steps * passes


class StepLike(Protocol):
    @property
    def after(self) -> timedelta: ...

    @property
    def targets(self) -> Sequence[str]: ...


class PolicyLike(Protocol):
    """What the calculations need of ``config``'s escalation policy."""

    @property
    def steps(self) -> Sequence[StepLike]: ...

    @property
    def repeat(self) -> int: ...

    @property
    def repeat_after(self) -> timedelta: ...


@dataclass(frozen=True)
class EscState:
    """One incident's escalation state, as stored in its ``esc_*`` columns."""

    step: int
    loop: int
    started_at: datetime
    due_at: datetime | None
    reason: str | None = STEP


@dataclass(frozen=True)
class DueStep:
    """A step to run now: its pass (0-based ``loop``), index (0-based ``step``), targets and due time."""

    loop: int
    step: int
    targets: tuple[str, ...]
    due_at: datetime


@dataclass(frozen=True)
class Plan:
    """The steps to run now, in order, and the state to store afterwards."""

    steps: tuple[DueStep, ...]
    state: EscState


def start(now: datetime) -> EscState:
    """The state of a newly triggered (or re-triggered) incident: step 0 of pass 0, checked at once."""
    return EscState(step=0, loop=0, started_at=now, due_at=now, reason=STEP)


def offset(policy: PolicyLike, step: int) -> timedelta:
    """How long after the start of a pass ``step`` is due: its ``after``, but never before an earlier step's."""
    if not policy.steps:
        return timedelta(0)
    last = min(step, len(policy.steps) - 1)
    return max(s.after for s in policy.steps[: last + 1])


def pass_length(policy: PolicyLike) -> timedelta:
    """From the start of one pass to the start of the next: the last step's time plus ``repeat_after``."""
    return offset(policy, len(policy.steps) - 1) + max(policy.repeat_after, timedelta(0))


def exhausted(policy: PolicyLike, state: EscState) -> bool:
    """True when every step of every pass has run (or the policy has no steps)."""
    s = normalize(policy, state)
    return not policy.steps or s.loop > policy.repeat or s.step >= len(policy.steps)


def normalize(policy: PolicyLike, state: EscState) -> EscState:
    """Map a pointer past the last step to the first step of the next pass when one is left (after a reload
    that changed ``repeat`` or the steps); otherwise leave it as it is."""
    n = len(policy.steps)
    if n and state.step >= n and state.loop < policy.repeat:
        return replace(state, step=0, loop=state.loop + 1, started_at=state.started_at + pass_length(policy))
    return state


def due_time(policy: PolicyLike, state: EscState) -> datetime | None:
    """When the pointer step is due; None when the policy is exhausted."""
    if exhausted(policy, state):
        return None
    s = normalize(policy, state)
    return s.started_at + offset(policy, s.step)


def advance(policy: PolicyLike, state: EscState) -> EscState:
    """The pointer after the pointer step ran: the next step, the first step of the next pass, or past the end."""
    s = normalize(policy, state)
    n = len(policy.steps)
    if s.step + 1 < n:
        return replace(s, step=s.step + 1)
    if s.loop < policy.repeat:
        return replace(s, step=0, loop=s.loop + 1, started_at=s.started_at + pass_length(policy))
    return replace(s, step=n)


def _scheduled(policy: PolicyLike, state: EscState) -> EscState:
    """``state`` with ``due_at`` set to its pointer step's due time (reason ``step``), or cleared when exhausted."""
    due = due_time(policy, state)
    if due is None:
        return replace(state, due_at=None, reason=None)
    return replace(normalize(policy, state), due_at=due, reason=STEP)


def plan(policy: PolicyLike, state: EscState, now: datetime, *, triggered: bool = True) -> Plan:
    """Every step due at ``now`` (several after a downtime, in order) and the state after running them.

    Nothing is due unless the incident is ``triggered`` and its state waits for a step (reason ``step``);
    never raises.
    """
    if not triggered or state.reason != STEP or state.due_at is None:
        return Plan((), state)
    out: list[DueStep] = []
    s = state
    while len(out) < MAX_STEPS_PER_PLAN:
        due = due_time(policy, s)
        if due is None or due > now:
            break
        s = normalize(policy, s)
        out.append(DueStep(s.loop, s.step, tuple(policy.steps[s.step].targets), due))
        s = advance(policy, s)
    return Plan(tuple(out), _scheduled(policy, s))


def escalate(policy: PolicyLike, state: EscState, now: datetime) -> Plan:
    """Run the pointer step now (a manual escalation) and shift the rest of the pass so the following steps keep
    their gaps; an exhausted policy yields no step. The returned state is scheduled as for a triggered incident."""
    if exhausted(policy, state):
        return Plan((), _scheduled(policy, state))
    s = normalize(policy, state)
    s = replace(s, started_at=now - offset(policy, s.step))
    ran = DueStep(s.loop, s.step, tuple(policy.steps[s.step].targets), now)
    return Plan((ran,), _scheduled(policy, advance(policy, s)))


def acknowledge(ack_timeout: timedelta | None, state: EscState, now: datetime) -> EscState:
    """An ack stops the steps: nothing is due, except the ack timeout when the policy has one."""
    if ack_timeout is None:
        return replace(state, due_at=None, reason=None)
    return replace(state, due_at=now + ack_timeout, reason=ACK_TIMEOUT)


def urgency_of(severity: str) -> str:
    """An incident's urgency: ``critical`` is high, everything else low."""
    return "high" if severity == "critical" else "low"
