"""Value types, the clock and the error hierarchy shared by every layer (stdlib only)."""

from __future__ import annotations

import enum
import hashlib
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

# --------------------------------------------------------------------------- errors


class FsIncidentError(Exception):
    """Base class of every error fsincident raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One located configuration problem: ``file:line: key: message``."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(FsIncidentError):
    """The configuration is invalid; ``problems`` lists every problem found, located."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.key, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class SourceError(FsIncidentError):
    """A source could not collect samples (network, parse or command failure)."""


class NotifyError(FsIncidentError):
    """A notification was not delivered; ``permanent`` says that retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class TransitionError(FsIncidentError):
    """A named state transition is not allowed from the current state."""


# --------------------------------------------------------------------------- enums


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


class IncidentState(enum.StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertState(enum.StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


# --------------------------------------------------------------------------- labels & samples


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class Labels(Mapping[str, str]):
    """An immutable, hashable, sorted label set; ``fingerprint`` is stable across processes."""

    __slots__ = ("_fp", "_hash", "_items")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: tuple[tuple[str, str], ...] = tuple(sorted((str(k), str(v)) for k, v in pairs))
        self._hash = hash(self._items)
        self._fp: str | None = None

    def __getitem__(self, key: str) -> str:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._items == other._items
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in self._items) + "}"

    def merged(self, other: Mapping[str, str]) -> Labels:
        """A new label set with ``other``'s labels added (``other`` wins on conflicts)."""
        d = dict(self._items)
        d.update(other)
        return Labels(d)

    def without(self, *names: str) -> Labels:
        return Labels((k, v) for k, v in self._items if k not in names)

    @property
    def fingerprint(self) -> str:
        """A 16-hex-digit digest of the label set, the same in every process and database."""
        if self._fp is None:
            h = hashlib.sha256()
            for k, v in self._items:
                h.update(k.encode())
                h.update(b"\xff")
                h.update(v.encode())
                h.update(b"\xff")
            self._fp = h.hexdigest()[:16]
        return self._fp

    def as_dict(self) -> dict[str, str]:
        return dict(self._items)


def valid_label_name(name: str) -> bool:
    return bool(_LABEL_NAME.match(name))


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of a series: metric name, labels (without the name), value, time."""

    name: str
    labels: Labels
    value: float
    timestamp: datetime | None = None


@dataclass(frozen=True)
class Routed:
    """Where routing sends an alert: its group's key and labels, the targets, auto-resolve and escalation policy."""

    route: int
    group_key: str
    group_labels: dict[str, str]
    targets: tuple[str, ...]
    auto_resolve: bool = True
    escalation_policy: str | None = None
    receiver: str = "none"
    group_wait: timedelta = timedelta(0)
    group_interval: timedelta = timedelta(minutes=5)
    repeat_interval: timedelta | None = None
    mute_time_intervals: tuple[str, ...] = ()
    active_time_intervals: tuple[str, ...] = ()

    def grouping(self) -> dict[str, object]:
        """The JSON form stored on an incident (``incident.grouping``): receiver, timing in seconds, intervals."""
        return {
            "receiver": self.receiver,
            "group_wait": self.group_wait.total_seconds(),
            "group_interval": self.group_interval.total_seconds(),
            "repeat_interval": None if self.repeat_interval is None else self.repeat_interval.total_seconds(),
            "mute_time_intervals": list(self.mute_time_intervals),
            "active_time_intervals": list(self.active_time_intervals),
        }


@dataclass(frozen=True)
class MuteStatus:
    """Why an alert pages nobody right now: the ids of the silences and the fingerprints of the alerts that
    inhibit it (both empty: it is not muted)."""

    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()

    @property
    def muted(self) -> bool:
        return bool(self.silenced_by or self.inhibited_by)


class Muter(Protocol):
    """Asked by the delivery stage (and the Alertmanager API) whether label sets are silenced or inhibited at
    ``now``; implemented by ``silences.service.SilenceService``. Never raises for unknown labels."""

    async def status(self, label_sets: list[Mapping[str, str]], now: datetime) -> list[MuteStatus]: ...


# --------------------------------------------------------------------------- time


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock: aware UTC datetimes."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock for tests that only moves when told to."""

    def __init__(self, start: datetime | None = None):
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, delta: timedelta | float) -> None:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        self._now += delta
        self._mono += delta.total_seconds()


def ensure_utc(dt: datetime | None) -> datetime | None:
    """Normalise a datetime to aware UTC; naive values (as SQLite returns them) are taken as UTC."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def isoformat(dt: datetime | None) -> str | None:
    """ISO 8601 with a ``Z`` suffix for aware UTC datetimes, or None."""
    dt = ensure_utc(dt)
    if dt is None:
        return None
    return dt.isoformat().replace("+00:00", "Z")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> timedelta:
    """Parse ``90s``, ``2m``, ``1h30m``, ``1d``, ``0`` into a timedelta; raises ValueError naming the input."""
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}")
    if isinstance(text, int | float):
        if isinstance(text, float) and not math.isfinite(text):
            raise ValueError(f"invalid duration {text!r}")
        if text < 0:
            raise ValueError(f"invalid duration {text!r}: must not be negative")
        return _bounded(text, text)
    s = str(text).strip()
    if s == "0":
        return timedelta(0)
    pos = 0
    total = timedelta(0)
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        # Each part is exact on its own (timedelta rounds to microseconds), so parts add up exactly.
        try:
            total += _bounded(float(m.group(1)) * _UNIT[m.group(2)], text)
        except OverflowError:
            raise ValueError(f"invalid duration {text!r}: too large") from None
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"invalid duration {text!r} (use e.g. 30s, 5m, 1h30m, 1d)")
    return total


def _bounded(seconds: float, text: object) -> timedelta:
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"invalid duration {text!r}: too large") from None


def format_duration(td: timedelta) -> str:
    """The exact inverse of parse_duration for display: ``1h30m``, ``15s``, ``1.5s``, ``0s``."""
    micros = td // timedelta(microseconds=1)
    if micros == 0:
        return "0s"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    out = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000)):
        n, micros = divmod(micros, size)
        if n:
            out.append(f"{n}{unit}")
    if micros:
        secs, frac = divmod(micros, 1_000_000)
        out.append(f"{secs}.{frac:06d}".rstrip("0").rstrip(".") + "s")
    return sign + "".join(out)


def storable_text(text: str) -> bool:
    """Text both databases can store: UTF-8 encodable (no lone surrogates) and free of NUL (PostgreSQL)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
