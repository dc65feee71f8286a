"""Named recurring time windows (Alertmanager's ``time_intervals``), pure: is ``now`` inside one of them?

Used by routes' ``mute_time_intervals`` / ``active_time_intervals`` (maintenance windows, business hours).

Semantics are Alertmanager's (0.25): a window matches an instant when every field it sets matches the
instant's wall-clock time in its ``location`` (default UTC); a field left out matches always. ``times`` are
``HH:MM`` ranges ``[start_time, end_time)`` (``24:00`` ends the day; a range never crosses midnight);
``weekdays`` are names or ranges ``monday:friday`` (a week runs ``sunday:saturday``); ``days_of_month`` are
``1``..``31`` or ``-1``..``-31`` (counted from the month's end) and ranges of them (``1:5``, ``-3:-1``,
``25:-1``); ``months`` are ``1``..``12`` or names, and ranges; ``years`` are numbers and ranges. Ranges are
inclusive and never wrap around. Names are case-insensitive. Across a DST change wall time is what counts:
``02:00``-``03:00`` does not occur on the spring-forward day of Europe/Berlin and occurs twice on the
fall-back day.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

Problems = list[tuple[tuple[Any, ...], str]]

WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_TIME = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00")
MAX_YEAR = 9999
OUTSIDE_ACTIVE = "outside active_time_intervals"
"""What :func:`muted_by_intervals` returns when a route's ``active_time_intervals`` do not hold."""


class IntervalError(ValueError):
    """A field of a time interval is malformed; the message says what to write instead."""


@dataclass(frozen=True)
class Window:
    """One compiled ``time_intervals`` entry: each field is None (matches always) or inclusive ranges
    (``times`` in minutes of the day, end exclusive; weekdays with Sunday = 0)."""

    times: tuple[tuple[int, int], ...] | None = None
    weekdays: tuple[tuple[int, int], ...] | None = None
    days_of_month: tuple[tuple[int, int], ...] | None = None
    months: tuple[tuple[int, int], ...] | None = None
    years: tuple[tuple[int, int], ...] | None = None
    location: tzinfo = UTC

    def contains(self, now: datetime) -> bool:
        """True when aware ``now`` is inside the window (in its location's wall time); ValueError if naive."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("time intervals need an aware datetime")
        t = now.astimezone(self.location)
        if self.times is not None:
            minute = t.hour * 60 + t.minute
            if not any(s <= minute < e for s, e in self.times):
                return False
        if self.days_of_month is not None:
            length = calendar.monthrange(t.year, t.month)[1]
            if not any(_day_in(t.day, b, e, length) for b, e in self.days_of_month):
                return False
        if self.months is not None and not any(b <= t.month <= e for b, e in self.months):
            return False
        if self.weekdays is not None:
            weekday = (t.weekday() + 1) % 7  # Python: Monday = 0; here Sunday = 0
            if not any(b <= weekday <= e for b, e in self.weekdays):
                return False
        return self.years is None or any(b <= t.year <= e for b, e in self.years)


def _day_in(day: int, begin: int, end: int, length: int) -> bool:
    """Whether ``day`` of a month of ``length`` days is in the range ``begin:end`` (negative: from the end)."""
    b = length + begin + 1 if begin < 0 else begin
    e = length + end + 1 if end < 0 else end
    if b > length:
        return False
    return max(b, 1) <= day <= min(e, length)


# --------------------------------------------------------------------------- parsing


def _text(value: Any) -> str:
    """A list item as text: YAML numbers (``1``, ``-1``, ``2026``) count as written."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise IntervalError(f"expected text or a number, not {type(value).__name__}")
    return str(value).strip().lower()


def _base60(n: int) -> str:
    """``65`` -> ``1:5``: what an unquoted range probably was before YAML read it as a base-60 number."""
    return f"{n // 60}:{n % 60}"


def _split_range(text: str, what: str, example: str) -> tuple[str, str]:
    parts = text.split(":")
    if len(parts) == 1:
        return text, text
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise IntervalError(f"invalid {what} range {text!r}: write START:END, e.g. {example}")
    return parts[0], parts[1]


def _member(token: str, names: Sequence[str], first: int, what: str, original: Any) -> int:
    if token in names:
        return names.index(token) + first
    if what == "month" and re.fullmatch(r"[0-9]+", token):
        n = int(token)
        if 1 <= n <= 12:
            return n
        hint = ""
        if isinstance(original, int) and n >= 60:
            hint = f" (YAML reads an unquoted {_base60(n)} as the number {n}: write '{_base60(n)}' in quotes)"
        raise IntervalError(f"month {n} is out of range: use 1..12 or january..december{hint}")
    numbers = " or 1..12" if what == "month" else ""
    raise IntervalError(f"invalid {what} {str(original)!r}: use {names[0]}..{names[-1]}{numbers}")


def _suggest(text: str, names: Sequence[str]) -> str | None:
    """What ``text`` probably meant (``mon-fri`` -> ``monday:friday``), or None when unclear."""
    pieces = [p for p in re.split(r"\s*(?:-|–|:|\.\.|,|\s+to\s+|\s)\s*", text) if p]
    fixed = []
    for p in pieces:
        hits = [n for n in names if n.startswith(p)] if len(p) >= 2 else []
        if p not in names and len(hits) != 1:
            return None
        fixed.append(p if p in names else hits[0])
    return ":".join(fixed) if 1 <= len(fixed) <= 2 else None


def _named_range(value: Any, names: Sequence[str], first: int, what: str, example: str) -> tuple[int, int]:
    text = _text(value)
    try:
        a, b = _split_range(text, what, example)
        return _member(a, names, first, what, value), _member(b, names, first, what, value)
    except IntervalError:
        suggestion = _suggest(text, names)
        if suggestion and suggestion != text:
            raise IntervalError(f"invalid {what} {str(value)!r}: write {suggestion}") from None
        raise


def _span(names: Sequence[str], a: int, b: int) -> str:
    return names[a] if a == b else f"{names[a]}:{names[b]}"


def parse_weekdays(value: Any) -> tuple[int, int]:
    """``monday``, ``Monday:Friday`` -> an inclusive range with Sunday = 0; raises IntervalError."""
    begin, end = _named_range(value, WEEKDAYS, 0, "weekday", "monday:friday")
    if begin > end:
        raise IntervalError(
            f"weekday range {str(value)!r} ends before it starts (weeks run sunday:saturday): write two ranges, "
            f"{_span(WEEKDAYS, begin, 6)} and {_span(WEEKDAYS, 0, end)}"
        )
    return begin, end


def parse_months(value: Any) -> tuple[int, int]:
    """``march``, ``1``, ``january:march``, ``10:12`` -> an inclusive range 1..12; raises IntervalError."""
    begin, end = _named_range(value, MONTHS, 1, "month", "january:march")
    if begin > end:
        raise IntervalError(
            f"month range {str(value)!r} ends before it starts: write two ranges, "
            f"{_span(MONTHS, begin - 1, 11)} and {_span(MONTHS, 0, end - 1)}"
        )
    return begin, end


def _int(token: str, what: str, original: str, example: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", token):
        raise IntervalError(f"invalid {what} {original!r}: use a number or a range like {example}")
    return int(token)


def parse_days_of_month(value: Any) -> tuple[int, int]:
    """``1``, ``-1`` (last day), ``1:5``, ``-7:-1``, ``25:-1`` -> an inclusive range; raises IntervalError for
    days outside 1..31 / -31..-1 and for ranges that are empty in every month."""
    text = _text(value)
    a, b = _split_range(text, "day of month", "1:5 or -7:-1")
    begin = _int(a, "day of month", str(value), "1:5 or -7:-1")
    end = _int(b, "day of month", str(value), "1:5 or -7:-1")
    for day in (begin, end):
        if day == 0 or not -31 <= day <= 31:
            hint = ""
            if isinstance(value, int) and abs(day) >= 60:
                hint = f" (YAML reads an unquoted {_base60(day)} as the number {day}: write '{_base60(day)}' in quotes)"
            raise IntervalError(f"day of month {day} is out of range: use 1..31, or -31..-1 from the end{hint}")
    if begin < 0 < end:
        raise IntervalError(
            f"day range {str(value)!r} starts from the month's end but ends from its start: "
            "the end must be negative too"
        )
    # Empty in every month? (A positive start with a negative end is longest in a 31-day month.)
    longest_end = 32 + end if end < 0 else end
    if (begin < 0 and begin > end) or (begin > 0 and begin > longest_end):
        raise IntervalError(f"day range {str(value)!r} ends before it starts in every month")
    return begin, end


def parse_years(value: Any) -> tuple[int, int]:
    """``2026``, ``2026:2028`` -> an inclusive range; raises IntervalError."""
    text = _text(value)
    a, b = _split_range(text, "year", "2026:2028")
    begin = _int(a, "year", str(value), "2026:2028")
    end = _int(b, "year", str(value), "2026:2028")
    for y in (begin, end):
        if not 1 <= y <= MAX_YEAR:
            raise IntervalError(f"year {y} is out of range 1..{MAX_YEAR}")
    if begin > end:
        raise IntervalError(f"year range {str(value)!r} ends before it starts")
    return begin, end


def parse_time(value: Any) -> int:
    """``HH:MM`` (two-digit hour, ``00:00``..``23:59`` or ``24:00``) -> minutes of the day; raises IntervalError."""
    if isinstance(value, int) and not isinstance(value, bool):
        h, m = divmod(value, 60)
        if 0 < h <= 24:
            raise IntervalError(
                f"invalid time {value}: write the time in quotes, e.g. '{h:02d}:{m:02d}' "
                f"(YAML reads an unquoted {h}:{m:02d} as the number {value})"
            )
        raise IntervalError(f"invalid time {value}: write HH:MM in quotes, e.g. '09:00'")
    if not isinstance(value, str) or not _TIME.fullmatch(value.strip()):
        raise IntervalError(f"invalid time {value!r}: write HH:MM from 00:00 to 24:00, e.g. '09:00'")
    hh, mm = value.strip().split(":")
    return int(hh) * 60 + int(mm)


_FIELDS = {
    "weekdays": parse_weekdays,
    "days_of_month": parse_days_of_month,
    "months": parse_months,
    "years": parse_years,
}


def _get(spec: Any, key: str) -> Any:
    return spec.get(key) if isinstance(spec, Mapping) else getattr(spec, key, None)


def _times(items: Any, problems: Problems) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for k, item in enumerate(items):
        start_raw, end_raw = _get(item, "start_time"), _get(item, "end_time")
        bounds: list[int] = []
        for key, raw in (("start_time", start_raw), ("end_time", end_raw)):
            if raw is None:
                problems.append((("times", k, key), "both start_time and end_time are needed"))
                continue
            try:
                bounds.append(parse_time(raw))
            except IntervalError as e:
                problems.append((("times", k, key), str(e)))
        if len(bounds) != 2:
            continue
        start, end = bounds
        if start == end:
            problems.append((("times", k), f"start_time and end_time are both {start_raw}: the range is empty"))
            continue
        if start > end:
            problems.append(
                (
                    ("times", k),
                    f"start_time {start_raw} is after end_time {end_raw} (a range cannot cross midnight): "
                    f"write two ranges, {start_raw} to 24:00 and 00:00 to {end_raw}",
                )
            )
            continue
        out.append((start, end))
    return tuple(out)


def _compile(spec: Any, problems: Problems) -> Window:
    fields: dict[str, Any] = {}
    times = _get(spec, "times")
    if times is not None and not isinstance(times, list | tuple):
        problems.append((("times",), "must be a list of {start_time, end_time}"))
    elif times is not None:
        if not times:
            problems.append((("times",), "an empty list never matches: leave times out to match the whole day"))
        fields["times"] = _times(times, problems)
    for key, parse in _FIELDS.items():
        items = _get(spec, key)
        if items is None:
            continue
        if not isinstance(items, list | tuple):
            problems.append(((key,), "must be a list"))
            continue
        if not items:
            problems.append(((key,), f"an empty list never matches: leave {key} out to match always"))
        ranges = []
        for j, item in enumerate(items):
            try:
                ranges.append(parse(item))
            except IntervalError as e:
                problems.append(((key, j), str(e)))
        fields[key] = tuple(ranges)
    location = _get(spec, "location") or "UTC"
    try:
        fields["location"] = ZoneInfo(location) if isinstance(location, str) else location
        if not isinstance(fields["location"], tzinfo):
            raise ValueError(location)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError; "Europe" is a directory
        problems.append((("location",), f"unknown time zone {location!r}"))
    return Window(**fields)


def interval_problems(spec: Any) -> list[tuple[tuple[Any, ...], str]]:
    """Problems of one ``time_intervals`` entry (TimeIntervalSpec, or a mapping with its keys) as (key path,
    message); [] when valid; never raises."""
    problems: Problems = []
    _compile(spec, problems)
    return problems


def compile_window(spec: Any) -> Window:
    """The compiled form of a TimeIntervalSpec (or a mapping with its keys); raises IntervalError listing the
    problems when it is invalid (a loaded config never is)."""
    if isinstance(spec, Window):
        return spec
    try:
        key = _key(spec)
        hash(key)
    except TypeError:  # odd items (lists, mappings): invalid anyway, say why
        problems: Problems = []
        window = _compile(spec, problems)
        _raise(problems)
        return window
    return _cached(key)


def _raise(problems: Problems) -> None:
    if problems:
        raise IntervalError("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in problems))


def _key(spec: Any) -> tuple[Any, ...]:
    times = _get(spec, "times")
    return (
        None if times is None else tuple((_get(t, "start_time"), _get(t, "end_time")) for t in times),
        *(None if _get(spec, k) is None else tuple(_get(spec, k)) for k in _FIELDS),
        _get(spec, "location") or "UTC",
    )


@lru_cache(maxsize=1024)
def _cached(key: tuple[Any, ...]) -> Window:
    times, weekdays, days, months, years, location = key
    spec = {
        "times": None if times is None else [{"start_time": s, "end_time": e} for s, e in times],
        "weekdays": weekdays,
        "days_of_month": days,
        "months": months,
        "years": years,
        "location": location,
    }
    problems: Problems = []
    window = _compile(spec, problems)
    _raise(problems)
    return window


def in_any(specs: Sequence[Any], now: datetime) -> bool:
    """True when aware ``now`` lies inside any of ``specs`` (TimeIntervalSpec); never raises for valid specs
    (IntervalError for an invalid one, ValueError for a naive ``now``)."""
    return any(compile_window(s).contains(now) for s in specs)


def muted_by_intervals(
    intervals: Mapping[str, Sequence[Any]], mute: Sequence[str], active: Sequence[str], now: datetime
) -> str | None:
    """Why a route's notifications are held at ``now``: the name of the mute interval in effect, or
    OUTSIDE_ACTIVE; None when they may go out. Unknown names are ignored; raises only for an invalid spec."""
    for name in mute:
        if name in intervals and in_any(intervals[name], now):
            return name
    known = [n for n in active if n in intervals]
    if known and not any(in_any(intervals[n], now) for n in known):
        return OUTSIDE_ACTIVE
    return None
