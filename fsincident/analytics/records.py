"""The facts the analytics count, as plain records (times in Unix seconds), and the flat rows of CSV exports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

NONE_GROUP = "(none)"
"""The group of an incident that lacks the grouping label."""


@dataclass(slots=True)
class IncidentRecord:
    """One incident opened in the period, with what the timeline, the outbox and the alerts add to it."""

    id: int
    created: float
    acked: float | None
    resolved: float | None
    state: str
    severity: str
    group: str = NONE_GROUP
    rule: str = NONE_GROUP
    group_key: str = ""
    resolved_by: str | None = None
    ack_events: int = 0
    notes: int = 0
    retriggers: int = 0
    escalations: int = 0
    pages: int = 0
    ttd: float | None = None
    reopen: bool = False

    @property
    def tta(self) -> float | None:
        """Seconds to the acknowledgement (to the resolve when it was resolved unacknowledged), else None."""
        if self.acked is not None:
            return max(0.0, self.acked - self.created)
        if self.resolved is not None:
            return max(0.0, self.resolved - self.created)
        return None

    @property
    def ttr(self) -> float | None:
        """Seconds to the resolve, else None."""
        return None if self.resolved is None else max(0.0, self.resolved - self.created)

    @property
    def acted(self) -> bool:
        """Somebody acted: acknowledged, resolved it by hand (not the system actor), or wrote a note."""
        return (
            self.acked is not None
            or self.ack_events > 0
            or self.notes > 0
            or (self.resolved_by is not None and self.resolved_by != SYSTEM_ACTOR)
        )


SYSTEM_ACTOR = "fsincident"


class PageRecord(NamedTuple):
    """A page to a person: the first queue time of its (incident, event, ``user:NAME``) rows (plain tuples of the
    same shape are accepted wherever one is)."""

    incident_id: int
    user: str
    at: float


@dataclass(slots=True)
class ShiftRecord:
    """A final on-call shift, cut to the period."""

    schedule: str
    user: str
    start: float
    end: float


# ---------------------------------------------------------------------- CSV export

CSV_SECTIONS = ("summary", "response", "daily", "fatigue", "oncall", "sla", "capacity", "incidents")
_STATS = ("mtta_seconds", "mttr_seconds", "ttd_seconds")


def csv_safe(v: Any) -> Any:
    """Keep spreadsheet programs from running a cell as a formula (text starting with = + - @ tab CR)."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def _flat_counts(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in _STATS and isinstance(v, Mapping):
            base = k.removesuffix("_seconds")
            out[f"{base}_median_seconds"] = v.get("median")
            out[f"{base}_p90_seconds"] = v.get("p90")
            out[f"{base}_n"] = v.get("n")
        elif k == "acked_within" and isinstance(v, Mapping):
            out["acked_within_seconds"] = v.get("seconds")
            out["acked_within_count"] = v.get("count")
            out["acked_within_percent"] = v.get("percent")
        else:
            out[k] = v
    return out


def section_rows(report: Mapping[str, Any], section: str) -> list[dict[str, Any]]:
    """The flat rows (one dict per CSV line) of one section of a report; raises KeyError for an unknown section."""
    if section not in CSV_SECTIONS:
        raise KeyError(section)
    if section == "summary":
        s = report.get("summary")
        return [] if s is None else [_flat_counts(s)]
    if section == "response":
        return [_flat_counts(r) for r in report.get("response") or []]
    if section == "daily":
        days = report.get("daily") or []
        severities = sorted({sev for d in days for sev in d.get("by_severity", {})})
        return [
            {
                "date": d["date"],
                "incidents": d["incidents"],
                **{sev: d["by_severity"].get(sev, 0) for sev in severities},
            }
            for d in days
        ]
    if section == "fatigue":
        fat = report.get("fatigue") or {}
        rows = [{"kind": "rule", **r} for r in fat.get("rules", [])]
        rows += [{"kind": "person", **p} for p in fat.get("people", [])]
        return rows
    rows = list(report.get(section) or [])
    return [dict(r) for r in rows]


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of flat rows: the header is every key in first-seen order; dicts and lists become JSON, None empty."""
    header: dict[str, None] = {}
    for r in rows:
        for k in r:
            header.setdefault(k, None)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(list(header))
    for r in rows:
        w.writerow([_cell(r.get(k)) for k in header])
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Mapping | list | tuple):
        return csv_safe(json.dumps(v, sort_keys=True, ensure_ascii=False))
    return csv_safe(v)
