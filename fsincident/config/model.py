"""Pydantic models of fsincident.yaml and rules.d/*.yaml (strict: unknown keys are errors)."""

from __future__ import annotations

import math
import re
import zoneinfo
from datetime import date, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from fsincident.core import Severity, valid_label_name
from fsincident.plugins import Duration, LabelMap, Name, Options

TARGET_KINDS = ("channel", "user", "schedule")


def _target(v: str) -> str:
    if not isinstance(v, str) or ":" not in v:
        raise ValueError(f"invalid target {v!r}: write channel:NAME, user:NAME or schedule:NAME")
    kind, _, name = v.partition(":")
    if kind not in TARGET_KINDS or not name:
        raise ValueError(f"invalid target {v!r}: write channel:NAME, user:NAME or schedule:NAME")
    return v


Target = Annotated[str, AfterValidator(_target)]


def _listen(v: str) -> str:
    m = re.match(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]*):(\d{1,5})$", v)
    if not m or not 0 <= int(m.group(2)) <= 65535:
        raise ValueError(f"invalid listen address {v!r}: write HOST:PORT, e.g. 127.0.0.1:9095")
    return v


def _database(v: str) -> str:
    if not re.match(r"^(sqlite|postgresql|postgres)(\+\w+)?://", v):
        raise ValueError("database must be sqlite:///PATH or postgresql://USER@HOST/DB")
    return v


def _external_url(v: str) -> str:
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", v):
        raise ValueError(f"invalid external_url {v!r}: write http(s)://HOST[:PORT][/PATH]")
    return v


ExternalUrl = Annotated[
    str | None, BeforeValidator(lambda v: v or None), AfterValidator(lambda v: v and _external_url(v))
]


def _tz(v: str) -> str:
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory
        raise ValueError(f"unknown time zone {v!r}") from None
    return v


class DeliveryOptions(Options):
    """How the outbox delivers: per-attempt timeout, retry budget and backoff."""

    timeout: Duration = timedelta(seconds=30)
    max_attempts: int = Field(10, ge=1, le=1000)
    initial_backoff: Duration = timedelta(seconds=2)
    max_backoff: Duration = timedelta(minutes=10)
    concurrency: int = Field(8, ge=1, le=256)
    lease: Duration = timedelta(minutes=2)
    retry_for: Duration | None = None
    """A page still failing this long after it was queued is a dead letter (None: only ``max_attempts`` count)."""
    fallback: Target | None = None
    """Where dead letters go (``channel:NAME`` or ``user:NAME``) unless their channel names its own."""


TimeZone = Annotated[str, AfterValidator(_tz)]

URGENCIES = ("high", "low", "any")


class ContactOptions(Options):
    """One contact method of a user: an apprise URL, how long after the page, and for which urgency."""

    url: str
    after: Duration = timedelta(0)
    urgency: Literal["high", "low", "any"] = "any"

    def applies(self, urgency: str) -> bool:
        """True when this method is used for a page of ``urgency`` (``high``/``low``); never fails."""
        return self.urgency == "any" or self.urgency == urgency


def _contact(v: Any) -> Any:
    if isinstance(v, str):
        return {"url": v}
    if not isinstance(v, dict | ContactOptions):
        raise ValueError("a contact is an apprise URL or a mapping {url, after, urgency}")
    return v


Contact = Annotated[ContactOptions, BeforeValidator(_contact)]


class UserOptions(Options):
    name: Name
    timezone: TimeZone = "UTC"
    contacts: list[Contact] = Field(default_factory=list)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")
_DAY_NAMES = {*WEEKDAYS, "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
_HANDOFF = re.compile(r"^(?:([A-Za-z]+)\s+)?(\S+)$")
_YAML_NUMBER = 'write the time in quotes, e.g. "10:00" (YAML reads an unquoted 10:00 as a number)'


def _clock(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        raise ValueError(f"invalid time {v!r}: {_YAML_NUMBER}")
    if isinstance(v, str) and not _CLOCK.match(v.strip()):
        raise ValueError(f"invalid time {v!r}: write HH:MM, e.g. 09:00")
    return v.strip() if isinstance(v, str) else v


def _handoff(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        raise ValueError(f"invalid handoff {v!r}: {_YAML_NUMBER}")
    if isinstance(v, str):
        m = _HANDOFF.match(v.strip())
        if not m or not _CLOCK.match(m.group(2)) or (m.group(1) and m.group(1).lower() not in _DAY_NAMES):
            raise ValueError(f'invalid handoff {v!r}: write HH:MM or DAY HH:MM, e.g. "09:00" or "Mon 09:00"')
        return " ".join(v.split())
    return v


ClockTime = Annotated[str, BeforeValidator(_clock)]
"""A local wall-clock time written ``HH:MM`` (24 h)."""

Handoff = Annotated[str, BeforeValidator(_handoff)]
"""``HH:MM`` or ``DAY HH:MM`` (``Mon`` .. ``Sun``)."""


def _weekday(v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() in _DAY_NAMES:
        return v.strip().lower()[:3]
    if isinstance(v, str):
        raise ValueError(f"invalid day {v!r}: write mon, tue, wed, thu, fri, sat or sun")
    return v


Weekday = Annotated[str, BeforeValidator(_weekday)]


class RestrictionOptions(Options):
    """A window in which a layer is active: on each of ``days``, local time ``from`` to ``to`` (to <= from:
    the window runs past midnight into the next day; from == to: 24 hours)."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    from_: ClockTime = Field(alias="from")
    to: ClockTime


DEFAULT_LAYER_START = date(2024, 1, 1)
"""The ``start`` of a layer that names none (a Monday): the rotation is counted from there."""


class LayerOptions(Options):
    """One layer of a schedule; the loader checks that exactly one of ``rotation``/``every`` is given."""

    rotation: Literal["daily", "weekly"] | None = None
    every: Duration | None = None
    handoff: Handoff
    start: date = DEFAULT_LAYER_START
    users: list[Name] = Field(min_length=1)
    restrictions: list[RestrictionOptions] = Field(default_factory=list)


class ScheduleOptions(Options):
    """One entry of ``schedules:``; each of ``layers`` is validated on its own as a LayerOptions."""

    name: Name
    timezone: TimeZone
    layers: list[Any] = Field(min_length=1)


class StepOptions(Options):
    """One step of an escalation policy: ``after`` the start of the pass, page ``notify``."""

    after: Duration = timedelta(0)
    notify: list[Target] = Field(min_length=1)


class EscalationPolicyOptions(Options):
    """One entry of ``escalation_policies:``; each of ``steps`` is validated on its own as a StepOptions."""

    name: Name
    repeat: int = Field(0, ge=0, le=20)
    repeat_after: Duration | None = None
    ack_timeout: Duration | None = None
    auto_resolve_after: Duration | None = None
    steps: list[Any] = Field(min_length=1)


class RouteOptions(Options):
    """One node of the route tree (Alertmanager's semantics): an alert descends into the first matching child
    (or several with ``continue``); timing, grouping and targets are inherited from the parent when unset."""

    match: LabelMap = Field(default_factory=dict)
    match_re: LabelMap = Field(default_factory=dict)
    matchers: list[str] = Field(default_factory=list)
    receiver: Name | None = None
    notify: list[Target] | None = None
    escalation_policy: Name | None = None
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = Field(False, alias="continue")
    mute_time_intervals: list[Name] = Field(default_factory=list)
    active_time_intervals: list[Name] = Field(default_factory=list)
    auto_resolve: bool | None = None
    routes: list[RouteOptions] = Field(default_factory=list)


class TimeRangeOptions(Options):
    """``start_time``/``end_time`` of a time interval: ``HH:MM`` local time, end exclusive, ``24:00`` allowed."""

    start_time: str
    end_time: str


class TimeIntervalSpec(Options):
    """One recurring window (Alertmanager's ``time_intervals`` entry): every given field must match; an
    omitted field matches always. Ranges are written ``monday:friday``, ``1:5``, ``-1`` (last day),
    ``january:march``, ``2026:2027``."""

    times: list[TimeRangeOptions] | None = None
    weekdays: list[str] | None = None
    days_of_month: list[str] | None = None
    months: list[str] | None = None
    years: list[str] | None = None
    location: TimeZone = "UTC"


class TimeIntervalOptions(Options):
    """A named set of recurring windows, used by routes' ``mute_time_intervals``/``active_time_intervals``."""

    name: Name
    time_intervals: list[TimeIntervalSpec] = Field(min_length=1)


class InhibitRuleOptions(Options):
    """A firing alert matching ``source_matchers`` mutes alerts matching ``target_matchers`` that have the same
    values of the ``equal`` labels (Alertmanager's inhibition; ``source_match``/``target_match`` are the legacy
    equality form)."""

    source_matchers: list[str] = Field(default_factory=list)
    target_matchers: list[str] = Field(default_factory=list)
    source_match: LabelMap = Field(default_factory=dict)
    target_match: LabelMap = Field(default_factory=dict)
    equal: list[str] = Field(default_factory=list)


class IntegrationOptions(Options):
    """An inbound integration: events carrying ``routing_key`` get ``labels`` added (PagerDuty Events v2)."""

    name: Name
    type: Literal["pagerduty"]
    routing_key: str = Field(min_length=1, max_length=256)
    labels: LabelMap = Field(default_factory=dict)


class AlertmanagerApiOptions(Options):
    """``alertmanager:`` — the Alertmanager-compatible API: an alert posted without ``endsAt`` resolves this
    long after it was last posted (Alertmanager's ``resolve_timeout``)."""

    resolve_timeout: Duration = timedelta(minutes=5)


class SilencesOptions(Options):
    """``silences:`` — ``expiry_notice``: when a silence ends while alerts it muted still fire, page their
    incidents again at once (instead of staying quiet until the next repeat; alertmanager#730)."""

    expiry_notice: bool = True


class LinksOptions(Options):
    """``links:`` — signed acknowledge/resolve links in pages: the HMAC key (unset: generated once and kept in
    the database) and how long a link stays valid."""

    secret: str | None = Field(None, min_length=16, max_length=1000)
    ttl: Duration = timedelta(hours=24)


class SlackOptions(Options):
    signing_secret: str = Field(min_length=8, max_length=1000)


class MattermostOptions(Options):
    token: str = Field(min_length=8, max_length=1000)


class ChatOpsOptions(Options):
    """``chatops:`` — slash commands from Slack (verified by the app's signing secret) and Mattermost (by the
    command's token); ``users`` maps a chat user id or name to an fsincident user (else the chat name is used)."""

    slack: SlackOptions | None = None
    mattermost: MattermostOptions | None = None
    users: dict[str, str] = Field(default_factory=dict)


class CardOptions(Options):
    """``ui.cards[]`` — a key series on the overview page: a metric card with its latest value and a sparkline.
    ``series`` is a selector (``metric{label="value", ...}``); several matching series are combined by ``reduce``."""

    title: str = Field(min_length=1, max_length=100)
    series: str = Field(min_length=1, max_length=1000)
    source: str | None = None
    unit: str = Field("", max_length=20)
    reduce: Literal["avg", "max", "min", "sum"] = "avg"
    warn: float | None = None
    crit: float | None = None


class UiOptions(Options):
    """``ui:`` — the web UI served under ``/ui/``: session lifetime after sign-in, live-refresh period (0s: off),
    the time zone its times are shown in, and the overview's metric cards."""

    enabled: bool = True
    session_ttl: Duration = timedelta(hours=12)
    refresh: Duration = timedelta(seconds=30)
    timezone: TimeZone = "UTC"
    cards: list[CardOptions] = Field(default_factory=list, max_length=50)


class HistoryOptions(Options):
    """``history:`` — the daemon's own downsampled history of the series its rules read, for the UI's charts and
    rule previews: a fine tier (``step`` buckets kept ``keep``) and a coarse tier (``coarse_step`` kept
    ``coarse_keep``), at most ``max_series`` series (newer ones are not recorded)."""

    enabled: bool = True
    step: Duration = timedelta(minutes=1)
    keep: Duration = timedelta(days=2)
    coarse_step: Duration = timedelta(minutes=15)
    coarse_keep: Duration = timedelta(days=30)
    max_series: int = Field(2000, ge=1, le=100_000)


REPORT_SECTIONS = ("summary", "response", "fatigue", "oncall", "sla", "capacity", "incidents")
"""The sections of a report, in the order they are shown."""
REPORT_PERIODS = ("day", "week", "month")
"""Calendar periods a scheduled report may cover (else a duration such as ``7d``)."""


def _weekday(v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() in _DAY_NAMES:
        return v.strip().lower()[:3]
    raise ValueError(f"invalid weekday {v!r}: write mon, tue, wed, thu, fri, sat or sun")


Weekday = Annotated[str, BeforeValidator(_weekday)]


class WorkingHoursOptions(Options):
    """When people work, in each person's own time zone (``users[].timezone``): a page outside these hours is
    "out of hours"; one inside ``night_start``..``night_end`` is a night page; one on a day outside ``days`` a
    weekend page."""

    days: list[Weekday] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"])
    start: ClockTime = "09:00"
    end: ClockTime = "18:00"
    night_start: ClockTime = "22:00"
    night_end: ClockTime = "07:00"


class ServiceOptions(Options):
    """A service whose uptime is reported against ``target`` (percent): from the incidents whose labels match
    ``matchers`` (and whose severity is in ``severities``), or from a ``probe_success``-style ``series`` (1 = up)
    of ``source`` when one is given."""

    name: Name
    target: float = Field(99.9, gt=0, lt=100)
    matchers: list[str] = Field(default_factory=list)
    severities: list[Severity] = Field(default_factory=lambda: [Severity.CRITICAL])
    series: str | None = Field(None, min_length=1, max_length=1000)
    source: Name | None = None


class AnalyticsOptions(Options):
    """How the analytics (``/api/v1/analytics``, ``fsincident report``, scheduled reports) count."""

    ack_within: Duration = timedelta(minutes=15)
    """"Acknowledged within N minutes" counts acknowledgements this soon after the incident opened."""
    flap_window: Duration = timedelta(hours=1)
    """An incident that opens again this soon after the same alert group resolved is a re-open (flapping)."""
    flap_count: int = Field(3, ge=1, le=10_000)
    """A rule with at least this many re-opens (or re-triggers) in a period is flapping."""
    timezone: TimeZone = "UTC"
    """The time zone of per-day buckets and of the times shown in reports."""
    group_by: str = Field("service", min_length=1, max_length=100)
    """The label reports group by when none is asked for."""
    working_hours: WorkingHoursOptions = Field(default_factory=WorkingHoursOptions)
    services: list[ServiceOptions] = Field(default_factory=list)
    handoff_summary: bool = False
    """At each handoff, send the outgoing and the incoming person a summary of the outgoing shift."""


class ReportOptions(Options):
    """A report sent on a cron ``schedule`` (in ``timezone``) to ``to``, covering the ``period`` before it."""

    name: Name
    schedule: str = Field(min_length=1, max_length=200)
    timezone: TimeZone = "UTC"
    period: str = Field("week", min_length=1, max_length=40)
    """``day``, ``week`` or ``month`` (the previous whole calendar one in ``timezone``), or a duration (``7d``)."""
    to: list[Target] = Field(min_length=1)
    sections: list[Literal["summary", "response", "fatigue", "oncall", "sla", "capacity", "incidents"]] = Field(
        default_factory=lambda: list(REPORT_SECTIONS)
    )
    group_by: str | None = Field(None, min_length=1, max_length=100)
    title: str | None = Field(None, min_length=1, max_length=200)


class DaemonOptions(Options):
    """fsincident.yaml; ``sources`` and ``channels`` are validated per kind by the loader."""

    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9095"
    database: Annotated[str, AfterValidator(_database)] | None = None
    external_url: ExternalUrl = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    delivery: DeliveryOptions = Field(default_factory=DeliveryOptions)
    sources: list[dict[str, Any]] = Field(default_factory=list)
    channels: list[dict[str, Any]] = Field(default_factory=list)
    users: list[UserOptions] = Field(default_factory=list)
    schedules: list[ScheduleOptions] = Field(default_factory=list)
    escalation_policies: list[EscalationPolicyOptions] = Field(default_factory=list)
    routes: list[RouteOptions] = Field(default_factory=list)
    time_intervals: list[TimeIntervalOptions] = Field(default_factory=list)
    inhibit_rules: list[InhibitRuleOptions] = Field(default_factory=list)
    integrations: list[IntegrationOptions] = Field(default_factory=list)
    alertmanager: AlertmanagerApiOptions = Field(default_factory=AlertmanagerApiOptions)
    silences: SilencesOptions = Field(default_factory=SilencesOptions)
    links: LinksOptions = Field(default_factory=LinksOptions)
    chatops: ChatOpsOptions = Field(default_factory=ChatOpsOptions)
    ui: UiOptions = Field(default_factory=UiOptions)
    history: HistoryOptions = Field(default_factory=HistoryOptions)
    analytics: AnalyticsOptions = Field(default_factory=AnalyticsOptions)
    reports: list[dict[str, Any]] = Field(default_factory=list)
    """Validated item by item by the loader (``ReportOptions``)."""


ALERT_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _alert_name(v: str) -> str:
    if not re.match(ALERT_NAME, v) or len(v) > 200:
        raise ValueError(f"invalid alert name {v!r}: use letters, digits and '_', not starting with a digit")
    return v


AlertName = Annotated[str, AfterValidator(_alert_name)]


class FlappingOptions(Options):
    """``flapping:`` of a rule: more than ``changes`` state changes within ``window`` hold the alert open."""

    window: Duration
    changes: int = Field(ge=2, le=10_000)


class RuleOptions(Options):
    alert: AlertName
    expr: str
    resolve_expr: str | None = None
    flapping: FlappingOptions | None = None
    source: Name | None = None
    query: str | None = None
    for_: Duration = Field(timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    severity: Severity = Severity.WARNING
    labels: LabelMap = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    nodata: Literal["ok", "alerting", "keep_state"] = "ok"
    on_error: Literal["ok", "alerting", "keep_state"] = "keep_state"


class GroupOptions(Options):
    name: Name
    interval: Duration | None = None
    source: Name | None = None
    rules: list[RuleOptions] = Field(default_factory=list)


def _objective(v: float) -> float:
    if not math.isfinite(v) or not 0 < v < 100:
        raise ValueError(f"objective must be a percentage between 0 and 100 (exclusive), e.g. 99.9, got {v!r}")
    return v


def _factor(v: float) -> float:
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"factor must be a positive number, got {v!r}")
    return v


def _label_name(v: str) -> str:
    if not valid_label_name(v):
        raise ValueError(f"invalid label name {v!r}")
    return v


LabelName = Annotated[str, AfterValidator(_label_name)]


class BurnAlertOptions(Options):
    """One multiwindow burn-rate alert of an SLO: fires when both windows burn faster than ``factor``."""

    long: Duration
    short: Duration
    factor: Annotated[float, AfterValidator(_factor)]
    severity: Severity = Severity.WARNING
    alert: AlertName | None = None


class SloOptions(Options):
    """One entry of ``slos:``; the loader checks that exactly one indicator is given."""

    name: Name
    source: Name | None = None
    objective: Annotated[float, AfterValidator(_objective)]
    window: Duration = timedelta(days=30)
    interval: Duration = timedelta(minutes=1)
    good: str | None = None
    errors: str | None = None
    total: str | None = None
    error_ratio: str | None = None
    by: list[LabelName] = Field(default_factory=list)
    labels: LabelMap = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    alerts: list[BurnAlertOptions] | None = None


class RuleFileOptions(Options):
    groups: list[GroupOptions] = Field(default_factory=list)
    slos: list[SloOptions] = Field(default_factory=list)
