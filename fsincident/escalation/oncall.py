"""Who is on call: pure calculations over a schedule's layers, restrictions and overrides.

Everything here is a function of its arguments (no clock, no I/O); datetimes are aware, UTC out.

**Rotations.** A layer hands off at a *local wall-clock time* in the schedule's time zone:
``daily`` every day at ``handoff``; ``weekly`` every week on the handoff day at ``handoff``;
``every: N`` every N of local wall-clock time counted from the first handoff (``every: 12h`` at
08:00 hands off at 08:00 and 20:00 local every day, on both sides of a DST change). The first
handoff is the first one at or after the layer's ``start`` date (local midnight); before it the
layer has nobody. User k (round robin over ``users``) has the k-th rotation period.

**Daylight saving time.** A wall-clock time that does not exist (the spring-forward gap) is
taken as the first instant after the gap: a 02:30 handoff in Europe/Berlin on the March change
happens at 03:00 CEST. A wall-clock time that occurs twice (fall-back) is taken at its *first*
occurrence (``fold=0``): a 02:30 handoff on the October change happens at 02:30 CEST. The same
two rules place the ends of restriction windows. A rotation period that lies wholly inside a
gap (only possible for ``every: 1h`` in a zone with a one-hour gap) has zero length: its user
is skipped that once.

**Restrictions.** A layer with ``restrictions`` counts only inside its windows (local time; a
window whose end is not after its start runs past midnight into the next day, and one whose
end equals its start lasts 24 hours). Outside them, lower layers show through.

**The final schedule.** At each instant the highest-numbered active layer wins. Overrides are
applied on top in creation order (ascending ``id``), each on the result so far: one without
``replaces`` takes its whole range; one with ``replaces: X`` only the parts where X is the one
on call at that point. An override's shift has layer ``len(layers) + 1`` and ``override=id``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from fsincident.config.oncall import Layer, Restriction, Schedule

__all__ = [
    "Layer",
    "Override",
    "Restriction",
    "Schedule",
    "Shift",
    "final_shifts",
    "first_handoff",
    "handoffs",
    "layer_oncall",
    "layer_shifts",
    "local_to_utc",
    "oncall",
]

LOOKAROUND = timedelta(days=366)
"""How far ``oncall`` looks before and after ``at`` for the bounds of the current shift."""

_FIRST_SPAN = timedelta(days=1)
_SECOND = timedelta(seconds=1)
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Override:
    """``who`` is on call from ``start`` to ``end`` (instead of ``replaces`` only, when given)."""

    id: int
    who: str
    start: datetime
    end: datetime
    replaces: str | None = None


@dataclass(frozen=True)
class Shift:
    """``user`` is on call from ``start`` to ``end`` through ``layer`` (or override ``override``)."""

    user: str
    layer: int
    start: datetime
    end: datetime
    override: int | None = None


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _utc(dt: datetime, what: str = "time") -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got {dt!r}")
    return dt.astimezone(UTC)


def _local(t: datetime, tz: ZoneInfo) -> datetime:
    return t.astimezone(tz).replace(tzinfo=None)


def local_to_utc(naive: datetime, tz: ZoneInfo) -> datetime:
    """The instant at which ``tz``'s wall clock shows ``naive``: in a DST gap the first instant after the gap,
    when ambiguous the first occurrence; never fails for dates zoneinfo supports."""
    utc = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _local(utc, tz) == naive:
        return utc
    # In a gap: local time jumps over ``naive`` at one transition between the two readings; find it.
    lo, hi = sorted((naive.replace(tzinfo=tz, fold=1).astimezone(UTC), utc))
    lo = lo.replace(microsecond=0)  # transitions are at whole seconds
    if _local(lo, tz) > naive:  # not expected with zoneinfo's gap readings; be safe rather than loop
        return lo
    while hi - lo > _SECOND:
        mid = lo + ((hi - lo) // 2 // _SECOND) * _SECOND
        if mid <= lo:
            mid = lo + _SECOND
        if _local(mid, tz) > naive:
            hi = mid
        else:
            lo = mid
    return hi


def first_handoff(layer: Layer) -> datetime:
    """The layer's first handoff as a local wall-clock time (naive): its first handoff at or after ``start``."""
    day = layer.start
    if layer.rotation == "weekly" and layer.handoff_day is not None:
        day = day + timedelta(days=(layer.handoff_day - day.weekday()) % 7)
    return datetime.combine(day, layer.handoff)


class _Rotation:
    """One layer's handoff instants ``H(k)`` (k >= 0) in one time zone."""

    __slots__ = ("first", "layer", "n", "period", "tz")

    def __init__(self, layer: Layer, tz: ZoneInfo):
        self.layer = layer
        self.tz = tz
        self.first = first_handoff(layer)
        self.period = layer.period
        self.n = len(layer.users)

    def at(self, k: int) -> datetime:
        return local_to_utc(self.first + k * self.period, self.tz)

    def index(self, t: datetime) -> int:
        """The period containing ``t`` (H(k) <= t < H(k+1)); -1 before the first handoff."""
        k = max(0, (_local(t, self.tz) - self.first) // self.period)
        while k > 0 and self.at(k) > t:
            k -= 1
        if k == 0 and self.at(0) > t:
            return -1
        while self.at(k + 1) <= t:
            k += 1
        return k

    def user(self, k: int) -> str:
        return self.layer.users[k % self.n]


def _windows(restrictions: Sequence[Restriction], tz: ZoneInfo, start: datetime, end: datetime) -> list[tuple]:
    """The union of the restriction windows meeting [start, end), as sorted, disjoint (start, end) instants."""
    first = _local(start, tz).date() - timedelta(days=2)
    last = _local(end, tz).date() + timedelta(days=1)
    raw = []
    day = first
    while day <= last:
        wd = day.weekday()
        for r in restrictions:
            if wd not in r.days:
                continue
            ws = local_to_utc(datetime.combine(day, r.start), tz)
            end_day = day + timedelta(days=1) if r.end <= r.start else day
            we = local_to_utc(datetime.combine(end_day, r.end), tz)
            if we > ws and we > start and ws < end:
                raw.append((ws, we))
        day += timedelta(days=1)
    raw.sort()
    out: list[list[datetime]] = []
    for ws, we in raw:
        if out and ws <= out[-1][1]:
            out[-1][1] = max(out[-1][1], we)
        else:
            out.append([ws, we])
    return [(max(ws, start), min(we, end)) for ws, we in out]


def _layer_pieces(schedule: Schedule, layer: Layer, start: datetime, end: datetime) -> list[Shift]:
    tz = _zone(schedule.timezone)
    rot = _Rotation(layer, tz)
    k = rot.index(start)
    if k < 0:
        k, lo = 0, rot.at(0)
    else:
        lo = rot.at(k)
    periods = []
    while lo < end:
        hi = rot.at(k + 1)
        if hi > lo and hi > start:
            periods.append(Shift(rot.user(k), layer.number, max(lo, start), min(hi, end)))
        k, lo = k + 1, hi
    if not layer.restrictions or not periods:
        return periods
    out = []
    windows = _windows(layer.restrictions, tz, start, end)
    i = 0
    for p in periods:  # both lists sorted and disjoint: intersect with two pointers
        while i < len(windows) and windows[i][1] <= p.start:
            i += 1
        j = i
        while j < len(windows) and windows[j][0] < p.end:
            s, e = max(p.start, windows[j][0]), min(p.end, windows[j][1])
            if e > s:
                out.append(Shift(p.user, p.layer, s, e))
            j += 1
    return out


def layer_shifts(schedule: Schedule, layer: Layer, start: datetime, end: datetime) -> list[Shift]:
    """Who ``layer`` has in [start, end), one Shift per rotation period cut by its restriction windows; raises
    ValueError for naive datetimes."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start:
        return []
    return _layer_pieces(schedule, layer, start, end)


def layer_oncall(schedule: Schedule, layer: Layer, at: datetime) -> Shift | None:
    """Who ``layer`` has at ``at`` (its rotation period cut by the restriction window), or None where it is
    restricted or not started yet; raises ValueError for a naive ``at``."""
    at = _utc(at, "at")
    tz = _zone(schedule.timezone)
    rot = _Rotation(layer, tz)
    k = rot.index(at)
    if k < 0:
        return None
    lo, hi = rot.at(k), rot.at(k + 1)
    if layer.restrictions:
        win = next((w for w in _windows(layer.restrictions, tz, lo, hi) if w[0] <= at < w[1]), None)
        if win is None:
            return None
        lo, hi = win
    return Shift(rot.user(k), layer.number, lo, hi)


def _final(schedule: Schedule, overrides: Iterable[Override], start: datetime, end: datetime) -> list[Shift]:
    top = len(schedule.layers) + 1
    pieces = [_layer_pieces(schedule, layer, start, end) for layer in schedule.layers]
    ovs = sorted(
        (
            Override(o.id, o.who, max(_utc(o.start), start), min(_utc(o.end), end), o.replaces)
            for o in overrides
            if _utc(o.end) > start and _utc(o.start) < end and o.end > o.start
        ),
        key=lambda o: o.id,
    )
    bounds = {start, end}
    for layer_pieces in pieces:
        for p in layer_pieces:
            bounds.add(p.start)
            bounds.add(p.end)
    for o in ovs:
        bounds.add(o.start)
        bounds.add(o.end)
    edges = sorted(bounds)
    ptr = [0] * len(pieces)
    out: list[Shift] = []
    for x, y in itertools.pairwise(edges):
        who: tuple[str, int, int | None] | None = None
        for li in range(len(pieces) - 1, -1, -1):
            lp, i = pieces[li], ptr[li]
            while i < len(lp) and lp[i].end <= x:
                i += 1
            ptr[li] = i
            if who is None and i < len(lp) and lp[i].start <= x:
                who = (lp[i].user, lp[i].layer, None)
        for o in ovs:
            if o.start <= x < o.end and (o.replaces is None or (who is not None and who[0] == o.replaces)):
                who = (o.who, top, o.id)
        if who is None:
            continue
        last = out[-1] if out else None
        if last is not None and last.end == x and (last.user, last.layer, last.override) == who:
            out[-1] = Shift(last.user, last.layer, last.start, y, last.override)
        else:
            out.append(Shift(who[0], who[1], x, y, who[2]))
    return out


def final_shifts(schedule: Schedule, overrides: Iterable[Override], start: datetime, end: datetime) -> list[Shift]:
    """The final on-call shifts in [start, end), cut at both ends: they tile the range except where nobody is on
    call, adjacent pieces of the same user, layer and override merged; raises ValueError for naive datetimes."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start:
        return []
    return _final(schedule, list(overrides), start, end)


def oncall(schedule: Schedule, overrides: Iterable[Override], at: datetime) -> list[Shift]:
    """The final on-call at ``at``: [] or [one Shift] whose start/end are the whole shift's (looked up at most
    LOOKAROUND before and after ``at``); raises ValueError for a naive ``at``."""
    at = _utc(at, "at")
    ovs = list(overrides)
    back = fwd = _FIRST_SPAN
    while True:
        lo, hi = at - back, at + fwd
        shift = next((s for s in _final(schedule, ovs, lo, hi) if s.start <= at < s.end), None)
        if shift is None:
            return []
        grow_back = shift.start == lo and back < LOOKAROUND
        grow_fwd = shift.end == hi and fwd < LOOKAROUND
        if not grow_back and not grow_fwd:
            return [shift]
        if grow_back:
            back = min(back * 8, LOOKAROUND)
        if grow_fwd:
            fwd = min(fwd * 8, LOOKAROUND)


def handoffs(
    schedule: Schedule, overrides: Iterable[Override], start: datetime, end: datetime
) -> list[tuple[datetime, str | None, str]]:
    """Every instant in [start, end) at which a new person goes on call, as (at, outgoing, incoming); outgoing is
    None when nobody was on call just before; raises ValueError for naive datetimes."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start:
        return []
    out: list[tuple[datetime, str | None, str]] = []
    prev: Shift | None = None
    for s in _final(schedule, list(overrides), start - _TICK, end):
        if s.start >= start:
            outgoing = prev.user if prev is not None and prev.end == s.start else None
            if outgoing != s.user:
                out.append((s.start, outgoing, s.user))
        prev = s
    return out
