"""Alertmanager-style grouping in the incidents stage: group_wait, group_interval, repeat_interval, continue,
firing/resolved sections, and the notices that only follow a page that arrived."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from fsincident.config.model import DeliveryOptions, RouteOptions, TimeIntervalOptions, TimeIntervalSpec
from fsincident.core import FakeClock, Labels
from fsincident.incidents.service import IncidentService
from fsincident.notify.outbox import Deliverer
from fsincident.notify.render import Renderer
from fsincident.obs import Metrics
from fsincident.plugins import Message
from fsincident.routing.tree import build, route
from fsincident.store import Store
from fsincident.store.tables import AlertTransition, Incident, Outbox
from tests.store.test_incidents import kinds, rows, transition

MIN = timedelta(minutes=1)


class Recorder:
    """A channel notifier that keeps what it was asked to send (one destination)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def destinations(self) -> list[str]:
        return ["recorder"]

    async def send(self, index: int, message: Message, timeout: float) -> None:
        self.sent.append(message)


WEEKEND = TimeIntervalOptions(name="weekend", time_intervals=[TimeIntervalSpec(weekdays=["saturday", "sunday"])])


def stack(
    store: Store, clock: FakeClock, routes: list[RouteOptions], intervals: tuple[TimeIntervalOptions, ...] = ()
) -> SimpleNamespace:
    tree = build(routes)
    chans = {name: Recorder() for name in ("ops", "pager", "chat")}
    renderer = Renderer()
    svc = IncidentService(
        store,
        clock,
        Metrics(),
        render=renderer.render,
        destinations=lambda t: 1 if t.removeprefix("channel:") in chans else 0,
        route=lambda labels: route(tree, labels),
    )
    notifiers: Any = SimpleNamespace(by_target={f"channel:{k}": v for k, v in chans.items()}, describe=lambda t, i: t)
    deliverer = Deliverer(store, clock, Metrics(), notifiers, DeliveryOptions(), time_intervals=intervals)
    return SimpleNamespace(svc=svc, deliverer=deliverer, chans=chans)


async def run(st: SimpleNamespace, clock: FakeClock, advance: timedelta = timedelta(seconds=1)) -> None:
    """Let time pass, then run the incidents stage and delivery until both are idle."""
    clock.advance(advance)
    for _ in range(10):
        busy = await st.svc.tick(clock.now())
        busy |= await st.deliverer.tick(clock.now())
        if not busy:
            return


def firing_lines(msg: Message) -> list[str]:
    return [a["labels"]["instance"] for a in msg.data["alerts"] if a["state"] == "firing"]  # type: ignore[index]


async def test_group_wait_gathers_the_first_alerts_into_one_notification(store, clock):
    st = stack(
        store, clock, [RouteOptions(notify=["channel:ops"], group_by=["alertname"], group_wait=timedelta(seconds=30))]
    )
    await transition(store, clock, "firing", instance="a")
    await run(st, clock)
    assert st.chans["ops"].sent == []  # waiting
    await transition(store, clock, "firing", instance="b")
    await run(st, clock, timedelta(seconds=10))
    assert st.chans["ops"].sent == []
    await run(st, clock, timedelta(seconds=25))  # 36 s after the first alert
    [msg] = st.chans["ops"].sent
    assert sorted(firing_lines(msg)) == ["a", "b"]
    assert "2 alerts firing" in msg.body
    [inc] = await rows(store, Incident)
    assert inc.notified_at is not None and inc.notify_due_at is None


async def test_a_group_that_resolves_within_group_wait_pages_nobody(store, clock):
    st = stack(store, clock, [RouteOptions(notify=["channel:ops"], group_wait=MIN)])
    await transition(store, clock, "firing", instance="a")
    await run(st, clock)
    await transition(store, clock, "resolved", instance="a")
    await run(st, clock, 2 * MIN)
    assert st.chans["ops"].sent == []
    [inc] = await rows(store, Incident)
    assert inc.state == "resolved"
    assert all(o.state == "cancelled" for o in await rows(store, Outbox))


async def test_group_interval_sends_updates_with_firing_and_resolved_sections(store, clock):
    st = stack(store, clock, [RouteOptions(notify=["channel:ops"], group_by=["alertname"], group_interval=5 * MIN)])
    await transition(store, clock, "firing", instance="a")
    await run(st, clock)
    assert len(st.chans["ops"].sent) == 1  # group_wait 0: at once
    await transition(store, clock, "firing", instance="b")
    await run(st, clock, MIN)
    assert len(st.chans["ops"].sent) == 1  # within group_interval of the first notification
    await transition(store, clock, "resolved", instance="a")
    await run(st, clock, MIN)
    await run(st, clock, 3 * MIN + timedelta(seconds=30))  # 5 min after the first notification
    assert len(st.chans["ops"].sent) == 2
    update = st.chans["ops"].sent[1]
    assert update.kind == "trigger" and update.data["reason"] == "update"  # type: ignore[index]
    assert firing_lines(update) == ["b"]
    assert update.body.startswith("Update: 1 alert firing")
    assert "Resolved (1):" in update.body
    [inc] = await rows(store, Incident)
    assert "group_update" in await kinds(store, inc.id)
    await run(st, clock, 10 * MIN)
    assert len(st.chans["ops"].sent) == 2  # nothing changed since: no more updates (no repeat_interval)


async def test_repeat_interval_repeats_until_acknowledged(store, clock):
    st = stack(store, clock, [RouteOptions(notify=["channel:ops"], repeat_interval=60 * MIN)])
    await transition(store, clock, "firing", instance="a")
    await run(st, clock)
    await run(st, clock, 61 * MIN)
    assert [m.data["reason"] for m in st.chans["ops"].sent] == ["trigger", "repeat"]  # type: ignore[index]
    assert st.chans["ops"].sent[1].body.startswith("Still firing:")
    [inc] = await rows(store, Incident)
    await st.svc.ack(inc.id, "alice")
    await run(st, clock, 121 * MIN)
    assert [m.kind for m in st.chans["ops"].sent] == ["trigger", "trigger", "acknowledge"]


async def test_continue_sends_one_alert_to_two_groups(store, clock):
    st = stack(
        store,
        clock,
        [
            RouteOptions(matchers=['team="db"'], notify=["channel:chat"], group_by=["team"], **{"continue": True}),
            RouteOptions(matchers=['severity=~"crit.*"'], notify=["channel:pager"]),
            RouteOptions(notify=["channel:ops"]),
        ],
    )
    await transition(store, clock, "firing", instance="a", team="db", severity="critical")
    await run(st, clock)
    incs = await rows(store, Incident)
    assert sorted(i.grouping["receiver"] for i in incs) == ["channel:chat", "channel:pager"]
    assert len(st.chans["chat"].sent) == 1 and len(st.chans["pager"].sent) == 1
    assert st.chans["ops"].sent == []  # the second route did not continue
    await transition(store, clock, "resolved", instance="a", team="db", severity="critical")
    await run(st, clock)
    assert {i.state for i in await rows(store, Incident)} == {"resolved"}
    assert [m.kind for m in st.chans["chat"].sent] == ["trigger", "resolve"]


async def test_structured_page_data_carries_the_group(store, clock):
    st = stack(store, clock, [RouteOptions(notify=["channel:ops"], group_by=["alertname"], receiver="team-db")])
    await transition(store, clock, "firing", instance="a")
    await run(st, clock)
    [msg] = st.chans["ops"].sent
    data: Any = msg.data
    assert data["receiver"] == "team-db"
    assert data["group_labels"] == {"alertname": "DiskFull"}
    assert data["incident"]["state"] == "triggered"
    assert data["alerts"][0]["labels"]["instance"] == "a"
    assert set(data["alerts"][0]) >= {"fingerprint", "labels", "annotations", "state", "starts_at", "generator_url"}


async def test_a_mute_time_interval_holds_pages_until_it_ends(store, clock):
    # T0 is Sunday 2026-03-01 12:00 UTC: inside the weekend window.
    st = stack(store, clock, [RouteOptions(notify=["channel:ops"], mute_time_intervals=["weekend"])], (WEEKEND,))
    await transition(store, clock, "firing", instance="a")
    await run(st, clock)
    await run(st, clock, 5 * MIN)
    assert st.chans["ops"].sent == []
    [inc] = await rows(store, Incident)
    evs = await kinds(store, inc.id)
    assert evs.count("notify_held") == 1  # said once, however often it looks again
    [page] = await rows(store, Outbox)
    assert (page.state, page.attempts, page.last_error) == ("pending", 0, "held: weekend")
    await run(st, clock, timedelta(hours=12))  # Monday 00:05
    await run(st, clock, 2 * MIN)
    [msg] = st.chans["ops"].sent
    assert msg.kind == "trigger"


async def test_active_time_intervals_send_only_inside_them(store, clock):
    st = stack(store, clock, [RouteOptions(notify=["channel:ops"], active_time_intervals=["weekend"])], (WEEKEND,))
    await transition(store, clock, "firing", instance="a")
    await run(st, clock)
    assert len(st.chans["ops"].sent) == 1  # Sunday: inside
    clock.advance(timedelta(hours=13))  # Monday 01:00
    await transition(store, clock, "firing", instance="b", alertname="Other")
    await run(st, clock)
    await run(st, clock, 10 * MIN)
    assert len(st.chans["ops"].sent) == 1  # Monday: held
    [_, held] = await rows(store, Outbox)
    assert held.last_error == "held: outside active_time_intervals"


async def test_a_held_page_is_superseded_by_the_repeat_not_piled_up(store, clock):
    st = stack(
        store,
        clock,
        [RouteOptions(notify=["channel:ops"], mute_time_intervals=["weekend"], repeat_interval=60 * MIN)],
        (WEEKEND,),
    )
    await transition(store, clock, "firing", instance="a")
    for _ in range(5):  # five hours of repeats while the weekend holds the pages
        await run(st, clock, 61 * MIN)
    pending = [o for o in await rows(store, Outbox) if o.state == "pending"]
    assert len(pending) == 1  # only the newest notification waits
    await run(st, clock, timedelta(hours=8))  # Monday
    await run(st, clock, 2 * MIN)
    assert [m.data["reason"] for m in st.chans["ops"].sent] == ["repeat"]  # type: ignore[index]


async def test_an_alert_without_alertname_still_pages(store, clock):
    st = stack(store, clock, [RouteOptions(notify=["channel:ops"])])
    labels = {"job": "batch"}
    async with store.session() as s:
        s.add(
            AlertTransition(
                fingerprint=Labels(labels).fingerprint,
                alertname="",
                origin="alertmanager",
                labels=labels,
                annotations={},
                value=None,
                state="firing",
                at=clock.now(),
            )
        )
    await run(st, clock)
    [msg] = st.chans["ops"].sent
    assert "- alert" in msg.body
