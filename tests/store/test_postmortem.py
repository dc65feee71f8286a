"""Postmortem related incidents and the whole draft on a seeded store (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from fsincident.analytics.postmortem import draft, related_incidents
from fsincident.store.tables import Incident
from tests.store.conftest import T0


def _inc(gk: str, labels: dict[str, str], created, resolved=None, title: str = "t") -> Incident:
    return Incident(
        group_key=gk,
        title=title,
        state="resolved" if resolved else "triggered",
        severity="warning",
        labels=labels,
        created_at=created,
        updated_at=resolved or created,
        resolved_at=resolved,
    )


async def _seed(store) -> dict[str, int]:
    rows = {
        "subject": _inc("g1", {"alertname": "A", "instance": "i1", "team": "t"}, T0, T0 + timedelta(minutes=30)),
        "same_group": _inc("g1", {"alertname": "A", "instance": "i1", "team": "t"}, T0 - timedelta(days=10), T0),
        "overlap": _inc("g2", {"alertname": "B", "team": "other"}, T0 + timedelta(minutes=10)),
        "shared": _inc(
            "g3",
            {"alertname": "A", "instance": "i2", "team": "t"},
            T0 + timedelta(hours=3),
            T0 + timedelta(hours=3, minutes=5),
        ),
        "one_label": _inc("g4", {"alertname": "C", "team": "t", "severity": "warning"}, T0 + timedelta(hours=5)),
        "far": _inc("g5", {"alertname": "A", "team": "t"}, T0 + timedelta(days=3), T0 + timedelta(days=3, hours=1)),
        "long_open": _inc("g6", {"x": "y"}, T0 - timedelta(days=5)),
        "long_closed": _inc("g7", {"x": "y"}, T0 - timedelta(days=5), T0 - timedelta(days=4)),
    }
    async with store.session() as s:
        for r in rows.values():
            s.add(r)
        await s.flush()
        return {k: int(r.id) for k, r in rows.items()}


async def test_related_incidents_by_group_time_and_labels(store):
    ids = await _seed(store)
    found = await related_incidents(
        store, ids["subject"], {"alertname": "A", "instance": "i1", "team": "t"}, T0, T0 + timedelta(minutes=30)
    )
    by_id = {r.id: r for r in found}
    assert [r.id for r in found] == [ids["same_group"], ids["overlap"], ids["long_open"], ids["shared"]]
    assert by_id[ids["same_group"]].same_group and not by_id[ids["same_group"]].overlapping
    assert by_id[ids["overlap"]].overlapping and by_id[ids["overlap"]].shared == []
    assert by_id[ids["shared"]].shared == [("alertname", "A"), ("team", "t")]
    assert by_id[ids["long_open"]].overlapping
    for left_out in ("subject", "one_label", "far", "long_closed"):
        assert ids[left_out] not in by_id, left_out
    assert len(await related_incidents(store, ids["subject"], {}, T0, T0 + timedelta(minutes=30), limit=2)) == 2


async def test_a_whole_draft_without_config_or_history(store):
    ids = await _seed(store)
    inc = {
        "id": ids["subject"],
        "title": "A on i1",
        "state": "resolved",
        "severity": "warning",
        "labels": {"alertname": "A", "instance": "i1", "team": "t"},
        "created_at": T0.isoformat(),
        "acknowledged_at": None,
        "resolved_at": (T0 + timedelta(minutes=30)).isoformat(),
        "resolved_by": "fsincident",
        "alerts": [],
        "timeline": [],
    }
    d = await draft(store, None, None, inc, [], T0 + timedelta(hours=1))
    assert d.charts == []
    assert "resolved automatically (all its alerts resolved) after 30m 0s" in d.markdown
    assert "TTA 30m 0s" in d.markdown and "resolved without an acknowledgement" in d.markdown
    assert f"| \\#{ids['same_group']} |" in d.markdown
    assert "No alert of this incident comes from a rule" in d.markdown
    js = d.as_json()
    assert js["charts"] == [] and {r["id"] for r in js["related"]} == {
        ids["same_group"],
        ids["overlap"],
        ids["long_open"],
        ids["shared"],
    }
