"""``type: heartbeat`` — dead-man's switches for cron jobs and batch runs that ping the daemon.

Each check expects a success ping every ``period``, or after every time its cron ``schedule``
fires, plus ``grace``. Pings arrive through ``/api/v1/heartbeats/{check}`` (``/start`` and
``/fail`` variants) and are saved in the source's durable state before they are answered, so a
restart neither forgets a ping nor pages falsely. Whether a check is late is a pure function of
its options, its saved record and ``now`` (``check_series``).
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from pydantic import Field, field_validator, model_validator

from fsincident.core import Labels, Sample, SourceError, ensure_utc
from fsincident.cron import cron_trigger
from fsincident.plugins import Duration, LabelMap, Name, Options, SourceContext, SourceOptions

SIGNALS: tuple[str, ...] = ("success", "start", "fail")
_TICK = timedelta(microseconds=1)


class CheckOptions(Options):
    name: Name
    period: Duration | None = None
    """A success ping is expected at most this long after the previous one."""
    schedule: str | None = None
    """Cron expression (5 fields): a success ping is expected after each time it fires."""
    timezone: str | None = None
    """IANA time zone of ``schedule`` (default UTC)."""
    grace: Duration = timedelta(minutes=5)
    """How late a ping may be before the check counts as missing."""
    secret: str | None = Field(None, min_length=16, max_length=200, pattern=r"^[A-Za-z0-9_.~\-]+$")
    """Lets ``?key=SECRET`` ping this check without a token."""
    labels: LabelMap = Field(default_factory=dict)
    """Labels added to the check's series (e.g. ``team`` for routing)."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory
                raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Berlin)") from None
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                trigger = cron_trigger(v)
            except ValueError as e:
                raise ValueError(f"invalid cron schedule {v!r}: {e}") from None
            if trigger.get_next_fire_time(None, datetime.now(ZoneInfo("UTC"))) is None:
                raise ValueError(f"cron schedule {v!r} never fires")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> CheckOptions:
        if (self.period is None) == (self.schedule is None):
            raise ValueError("set exactly one of period or schedule")
        if self.period is not None and self.period <= timedelta(0):
            raise ValueError("period must be positive")
        if self.timezone is not None and self.schedule is None:
            raise ValueError("timezone applies only to a schedule")
        return self

    def trigger(self) -> BaseTrigger | None:
        """The cron trigger of ``schedule`` in its time zone, or None for a period check."""
        if self.schedule is None:
            return None
        return cron_trigger(self.schedule, self.timezone or "UTC")


class HeartbeatOptions(SourceOptions):
    checks: list[CheckOptions] = Field(min_length=1)


@dataclass
class CheckRecord:
    """What is known of one check; saved as JSON in the source's state under ``check:NAME``."""

    first_seen: datetime
    last_ping: datetime | None = None
    last_start: datetime | None = None
    last_fail: datetime | None = None
    outcome: str | None = None  # "success" | "fail": the last finished run
    running: bool = False
    last_duration: float | None = None

    def to_json(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return None if d is None else d.isoformat()

        return {
            "first_seen": iso(self.first_seen),
            "last_ping": iso(self.last_ping),
            "last_start": iso(self.last_start),
            "last_fail": iso(self.last_fail),
            "outcome": self.outcome,
            "running": self.running,
            "last_duration": self.last_duration,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckRecord:
        """Rebuild a saved record; raises ValueError/KeyError/TypeError when it is malformed."""

        def dt(v: Any) -> datetime | None:
            return None if v is None else ensure_utc(datetime.fromisoformat(v))

        first = dt(data["first_seen"])
        if first is None:
            raise ValueError("first_seen is missing")
        return cls(
            first_seen=first,
            last_ping=dt(data.get("last_ping")),
            last_start=dt(data.get("last_start")),
            last_fail=dt(data.get("last_fail")),
            outcome=data.get("outcome"),
            running=bool(data.get("running")),
            last_duration=data.get("last_duration"),
        )

    def signal(self, kind: str, now: datetime) -> None:
        """Apply a ``success``/``start``/``fail`` signal received at ``now``; raises ValueError for another kind."""
        if kind == "success":
            if self.running and self.last_start is not None and now >= self.last_start:
                self.last_duration = (now - self.last_start).total_seconds()
            self.last_ping, self.outcome, self.running = now, "success", False
        elif kind == "fail":
            self.last_fail, self.outcome, self.running = now, "fail", False
        elif kind == "start":
            self.last_start, self.running = now, True
        else:
            raise ValueError(f"unknown heartbeat signal {kind!r}")


def due(check: CheckOptions, record: CheckRecord, trigger: BaseTrigger | None = None) -> datetime | None:
    """When the check becomes late (expected ping + grace), or None when its schedule never fires again."""
    base = record.last_ping or record.first_seen
    if check.period is not None:
        return base + check.period + check.grace
    trigger = trigger or check.trigger()
    assert trigger is not None
    expected = trigger.get_next_fire_time(None, base + _TICK)  # the first scheduled time strictly after base
    return None if expected is None else ensure_utc(expected) + check.grace


def check_series(
    check: CheckOptions, record: CheckRecord, now: datetime, trigger: BaseTrigger | None = None
) -> dict[str, float]:
    """The series values of one check at ``now`` (pure): missing, failed, running, ping age, last duration."""
    deadline = due(check, record, trigger)
    failed = record.outcome == "fail"
    late = deadline is not None and now > deadline
    base = record.last_ping or record.first_seen
    out = {
        "heartbeat_missing": 1.0 if (late or failed) else 0.0,
        "heartbeat_failed": 1.0 if failed else 0.0,
        "heartbeat_running": 1.0 if record.running else 0.0,
        "heartbeat_last_ping_age_seconds": max(0.0, (now - base).total_seconds()),
    }
    if record.last_duration is not None:
        out["heartbeat_last_duration_seconds"] = record.last_duration
    return out


class HeartbeatSource:
    """Keeps each check's record in memory and in durable state; ``ping`` saves before it returns."""

    Options: ClassVar[type[SourceOptions]] = HeartbeatOptions

    def __init__(self, options: HeartbeatOptions, context: SourceContext | None = None, **_: Any):
        self.options = options
        self.context = context
        self.checks = {c.name: c for c in options.checks}
        self._triggers = {c.name: c.trigger() for c in options.checks}
        self._labels = {
            c.name: Labels({**c.labels, "check": c.name, "job": c.labels.get("job", options.name)})
            for c in options.checks
        }
        self.records: dict[str, CheckRecord] = {}
        self._loaded = False
        self._lock = asyncio.Lock()

    @staticmethod
    def validate_options(options: HeartbeatOptions) -> list[tuple[tuple[Any, ...], str]]:
        problems: list[tuple[tuple[Any, ...], str]] = []
        seen: set[str] = set()
        for i, c in enumerate(options.checks):
            if c.name in seen:
                problems.append((("checks", i, "name"), f"duplicate check name {c.name!r}"))
            seen.add(c.name)
        return problems

    @staticmethod
    def secrets_of(options: HeartbeatOptions) -> list[str]:
        """The checks' ping keys, for the log redactor."""
        return [c.secret for c in options.checks if c.secret]

    def has_check(self, name: str) -> bool:
        return name in self.checks

    def accepts_key(self, name: str, key: str) -> bool:
        """Whether ``key`` is the secret of check ``name`` (constant-time; False for a check without one)."""
        check = self.checks.get(name)
        secret = check.secret if check is not None and check.secret else "\x00" * 16
        ok = hmac.compare_digest(secret.encode(), key.encode("utf-8", "surrogatepass"))
        return ok and check is not None and bool(check.secret)

    async def _load(self, now: datetime) -> None:
        # On first use rather than in start(): after a reload the old instance may record pings between the new
        # instance's start() and the moment the new one takes over; reading at first use sees them.
        if self._loaded:
            return
        async with self._lock:
            if self._loaded:
                return
            saved: dict[str, Any] = {}
            if self.context is not None:
                try:
                    saved = await self.context.state.items()
                except Exception as e:
                    raise SourceError(f"cannot read heartbeat state: {type(e).__name__}: {e}") from None
            for name in self.checks:
                raw = saved.get(f"check:{name}")
                record = None
                if isinstance(raw, dict):
                    try:
                        record = CheckRecord.from_json(raw)
                    except (KeyError, TypeError, ValueError):
                        record = None
                if record is None:
                    # Never pinged: count from now, so a new check is not instantly late.
                    record = CheckRecord(first_seen=now)
                    await self._save(name, record)
                self.records[name] = record
            self._loaded = True

    async def _save(self, name: str, record: CheckRecord) -> None:
        if self.context is None:
            return
        try:
            await self.context.state.set(f"check:{name}", record.to_json())
        except Exception as e:
            raise SourceError(f"cannot save heartbeat of check {name!r}: {type(e).__name__}: {e}") from None

    async def ping(self, check: str, kind: str, now: datetime) -> CheckRecord:
        """Record signal ``kind`` of ``check`` durably; raises KeyError (unknown check), SourceError (not saved)."""
        if check not in self.checks:
            raise KeyError(check)
        if kind not in SIGNALS:
            raise ValueError(f"unknown heartbeat signal {kind!r}")
        await self._load(now)
        async with self._lock:  # one writer at a time: the state store upserts by read-then-write
            current = self.records[check]
            updated = CheckRecord(**vars(current))
            updated.signal(kind, now)
            await self._save(check, updated)
            self.records[check] = updated
        return updated

    async def collect(self, now: datetime) -> list[Sample]:
        """The series of every check; raises SourceError only when the saved records cannot be read."""
        await self._load(now)
        out: list[Sample] = []
        for name, check in self.checks.items():
            labels = self._labels[name]
            values = check_series(check, self.records[name], now, self._triggers[name])
            out.extend(Sample(metric, labels, v) for metric, v in values.items())
        return out

    async def close(self) -> None:
        return None
