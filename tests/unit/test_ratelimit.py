"""The pure parts of the delivery pipeline: urgency, the rate-limit arithmetic, reservations, retry verdicts and
the plain-text digest."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from fsincident.core import NotifyError
from fsincident.notify.pipeline import style_of
from fsincident.notify.ratelimit import (
    Budget,
    Reservations,
    Verdict,
    digest_delay,
    digest_item,
    digest_text,
    high_urgency,
    over_limit,
    verdict,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("severity", "high"), [("critical", True), ("CRITICAL", True), ("warning", False), ("info", False), (None, False)]
)
def test_only_critical_is_high_urgency(severity, high):
    assert high_urgency(severity) is high


def test_over_limit_counts_sends_in_flight():
    assert not over_limit(0, 0, 1)
    assert over_limit(1, 0, 1)
    assert over_limit(0, 1, 1)
    assert not over_limit(8, 1, 10)
    assert over_limit(9, 1, 10)


def test_digest_waits_for_digest_else_per():
    assert digest_delay(timedelta(minutes=1), None) == timedelta(minutes=1)
    assert digest_delay(timedelta(minutes=1), timedelta(minutes=5)) == timedelta(minutes=5)


def test_reservations_count_per_destination():
    r = Reservations()
    a, b = ("channel:ops", 0), ("channel:ops", 1)
    r.reserve(a)
    r.reserve(a)
    r.reserve(b)
    assert (r.count(a), r.count(b), r.count(("user:x", 0))) == (2, 1, 0)
    r.release(a)
    r.release(b)
    r.release(b)  # never negative
    assert (r.count(a), r.count(b)) == (1, 0)
    assert r.lock(a) is r.lock(a) and r.lock(a) is not r.lock(b)
    assert isinstance(r.lock(a), asyncio.Lock)


def test_verdict_sent():
    assert verdict(None, 1, T0, T0, Budget(3), 10 * S) == Verdict("sent")


def test_verdict_permanent_error_is_dead_at_once():
    v = verdict(NotifyError("HTTP 404", permanent=True), 1, T0, T0, Budget(3), 10 * S)
    assert (v.result, v.reason) == ("failed", "permanent error")


def test_verdict_retries_until_the_budget_is_spent():
    err = NotifyError("HTTP 503")
    assert verdict(err, 2, T0, T0, Budget(3), 10 * S) == Verdict("retry", T0 + 10 * S)
    v = verdict(err, 3, T0, T0, Budget(3), 10 * S)
    assert (v.result, v.reason) == ("failed", "gave up after 3 attempts")


def test_verdict_retry_for_caps_the_next_try_at_the_deadline_then_gives_up():
    err = NotifyError("timed out")
    budget = Budget(100, timedelta(minutes=30))
    assert verdict(err, 1, T0, T0, budget, 10 * S).next_at == T0 + 10 * S
    late = T0 + timedelta(minutes=29, seconds=55)
    assert verdict(err, 7, T0, late, budget, 60 * S) == Verdict("retry", T0 + timedelta(minutes=30))
    v = verdict(err, 8, T0, T0 + timedelta(minutes=30), budget, 60 * S)
    assert (v.result, v.reason) == ("failed", "still failing 30m after it was queued")


def test_digest_text_lists_items_and_counts_the_rest():
    items = [{"title": f"page {i}", "severity": "warning", "incident_id": i + 1 if i % 2 else None} for i in range(205)]
    title, body = digest_text(items)
    assert title == "205 notifications (digest)"
    lines = body.splitlines()
    assert lines[0] == "- [WARNING] page 0"
    assert lines[1] == "- [WARNING] page 1 (incident #2)"
    assert lines[-1] == "... and 5 more"
    assert digest_text([{"title": "one", "severity": "info"}])[0] == "1 notification (digest)"


def test_digest_item_keeps_only_what_the_page_shows():
    row = SimpleNamespace(
        id=7,
        incident_id=3,
        kind="trigger",
        severity="warning",
        title="t",
        body="b",
        created_at=T0,
        data={"incident": {"id": 3, "title": "x"}, "alerts": [{"labels": {}}]},
    )
    item = digest_item(row)
    assert item == {
        "outbox_id": 7,
        "incident_id": 3,
        "kind": "trigger",
        "severity": "warning",
        "title": "t",
        "body": "b",
        "created_at": T0.isoformat(),
        "incident": {"id": 3, "title": "x"},
    }


def test_style_of_a_notifier():
    class Chat:
        def style(self, index: int) -> str:
            return "chat" if index == 0 else ""

    class Broken:
        def style(self, index: int) -> str:
            raise RuntimeError("bug")

    assert style_of(Chat(), 0) == "chat"
    assert style_of(Chat(), 1) == "text"
    assert style_of(Broken(), 0) == "text"
    assert style_of(object(), 0) == "text"
