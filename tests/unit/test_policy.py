"""Escalation policy calculations (pure): which step is due when, repeat passes, acks, manual escalation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsincident.config import EscalationPolicy, Step
from fsincident.config.model import ContactOptions
from fsincident.escalation import policy as pol

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
FAR = T0 + timedelta(days=3650)


@st.composite
def policies(draw: st.DrawFn, sorted_afters: bool = True) -> EscalationPolicy:
    n = draw(st.integers(1, 5))
    afters = draw(st.lists(st.integers(0, 7200), min_size=n, max_size=n))
    if sorted_afters:
        afters.sort()
    steps = tuple(Step(timedelta(seconds=a), (f"user:u{i}",)) for i, a in enumerate(afters))
    return EscalationPolicy(
        name="p",
        steps=steps,
        repeat=draw(st.integers(0, 3)),
        repeat_after=timedelta(seconds=draw(st.integers(1, 3600))),
        ack_timeout=draw(st.none() | st.integers(1, 7200).map(lambda s: timedelta(seconds=s))),
    )


def run_on_time(p: EscalationPolicy, state: pol.EscState) -> tuple[list[pol.DueStep], pol.EscState]:
    """Drive the policy by waking exactly at every due time until nothing is scheduled."""
    ran: list[pol.DueStep] = []
    for _ in range(1000):
        if state.due_at is None:
            return ran, state
        plan = pol.plan(p, state, state.due_at)
        ran.extend(plan.steps)
        state = plan.state
    raise AssertionError("the policy never finished")


def expected_order(p: EscalationPolicy) -> list[tuple[int, int]]:
    return [(loop, i) for loop in range(p.repeat + 1) for i in range(len(p.steps))]


@settings(max_examples=300, deadline=None)
@given(policies(sorted_afters=False))
def test_every_step_runs_once_per_pass_in_order_with_non_decreasing_due_times(p):
    ran, final = run_on_time(p, pol.start(T0))
    assert [(s.loop, s.step) for s in ran] == expected_order(p)  # exactly repeat+1 passes, no step twice
    dues = [s.due_at for s in ran]
    assert dues == sorted(dues)
    assert ran[0].due_at == T0 + p.steps[0].after
    assert final.due_at is None and final.reason is None
    assert pol.plan(p, final, FAR).steps == ()
    assert pol.exhausted(p, final)


@settings(max_examples=300, deadline=None)
@given(policies())
def test_due_times_follow_the_configured_delays(p):
    """Step i of pass k is due at trigger + k * (last step's after + repeat_after) + step i's after."""
    ran, _ = run_on_time(p, pol.start(T0))
    length = p.steps[-1].after + p.repeat_after
    for s in ran:
        assert s.due_at == T0 + s.loop * length + p.steps[s.step].after
        assert s.targets == p.steps[s.step].targets


@settings(max_examples=300, deadline=None)
@given(policies(), st.lists(st.integers(0, 40_000_000), min_size=1, max_size=30))
def test_waking_at_any_times_neither_repeats_nor_skips_a_step(p, gaps):
    """Wake-ups at arbitrary times (late ones = downtime) run the same steps, in order, each once, and each
    at the first wake-up at or after its due time."""
    state = pol.start(T0)
    now = T0
    seen: list[tuple[datetime, pol.DueStep]] = []
    for gap in [*gaps, 10**12]:
        now = now + timedelta(milliseconds=gap)
        plan = pol.plan(p, state, now)
        for s in plan.steps:
            assert s.due_at <= now
            assert not seen or seen[-1][1].due_at <= s.due_at
            seen.append((now, s))
        if plan.state.due_at is not None:
            assert plan.state.due_at > now  # what is left is in the future
        state = plan.state
    assert [(s.loop, s.step) for _, s in seen] == expected_order(p)
    wakeups = sorted({w for w, _ in seen})
    for woke, s in seen:
        earlier = [w for w in wakeups if w < woke]
        assert not earlier or earlier[-1] < s.due_at  # it was not due at the previous wake-up that ran steps


@settings(max_examples=300, deadline=None)
@given(policies(), st.integers(0, 30), st.integers(0, 50_000))
def test_an_ack_stops_every_further_step(p, steps_before, ack_after):
    state = pol.start(T0)
    for _ in range(steps_before):
        if state.due_at is None:
            break
        state = pol.plan(p, state, state.due_at).state
    ack_at = T0 + timedelta(seconds=ack_after)
    acked = pol.acknowledge(p.ack_timeout, state, ack_at)
    if p.ack_timeout is None:
        assert acked.due_at is None and acked.reason is None
    else:
        assert acked.due_at == ack_at + p.ack_timeout and acked.reason == pol.ACK_TIMEOUT
    for later in (ack_at, ack_at + timedelta(hours=1), FAR):
        assert pol.plan(p, acked, later).steps == ()
        assert pol.plan(p, state, later, triggered=False).steps == ()  # an acknowledged incident never pages


@settings(max_examples=300, deadline=None)
@given(policies(), st.integers(0, 30), st.integers(0, 3600))
def test_manual_escalation_runs_the_next_step_now_and_keeps_the_gaps(p, steps_before, wait):
    state = pol.start(T0)
    done: list[tuple[int, int]] = []
    for _ in range(steps_before):
        if state.due_at is None:
            break
        plan = pol.plan(p, state, state.due_at)
        done += [(s.loop, s.step) for s in plan.steps]
        state = plan.state
    now = (state.due_at or T0) - timedelta(seconds=wait)
    now = max(now, T0)
    plan = pol.escalate(p, state, now)
    if pol.exhausted(p, state):
        assert plan.steps == ()
        return
    [ran] = plan.steps
    assert ran.due_at == now
    after = plan.state
    if after.due_at is not None:
        nxt = pol.due_time(p, after)
        gap = pol.offset(p, after.step) - pol.offset(p, ran.step) if after.loop == ran.loop else None
        if gap is not None:
            assert nxt == now + gap
        assert nxt >= now
    rest, _ = run_on_time(p, after)
    assert done + [(ran.loop, ran.step)] + [(s.loop, s.step) for s in rest] == expected_order(p)


def test_a_first_step_with_a_delay_waits_for_it():
    p = EscalationPolicy("p", (Step(timedelta(minutes=5), ("user:a",)),))
    plan = pol.plan(p, pol.start(T0), T0)
    assert plan.steps == ()
    assert plan.state.due_at == T0 + timedelta(minutes=5) and plan.state.reason == pol.STEP
    assert [s.step for s in pol.plan(p, plan.state, T0 + timedelta(minutes=5)).steps] == [0]


def test_a_reload_that_adds_passes_continues_an_exhausted_pointer():
    short = EscalationPolicy("p", (Step(timedelta(0), ("user:a",)),), repeat=0, repeat_after=timedelta(minutes=1))
    _, final = run_on_time(short, pol.start(T0))
    assert pol.exhausted(short, final)
    longer = replace(short, repeat=1)
    assert not pol.exhausted(longer, final)
    plan = pol.escalate(longer, final, T0 + timedelta(seconds=10))
    assert [(s.loop, s.step) for s in plan.steps] == [(1, 0)]


@pytest.mark.parametrize(
    ("urgency", "severity", "used"),
    [
        ("any", "critical", True),
        ("any", "info", True),
        ("high", "critical", True),
        ("high", "warning", False),
        ("low", "warning", True),
        ("low", "info", True),
        ("low", "critical", False),
    ],
)
def test_contact_urgency_filter(urgency, severity, used):
    contact = ContactOptions(url="json://127.0.0.1:1/x", urgency=urgency)
    assert contact.applies(pol.urgency_of(severity)) is used
