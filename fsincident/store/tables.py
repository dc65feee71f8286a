"""SQLModel tables: the durable hand-offs between stages, and the alembic target metadata."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING
metadata = SQLModel.metadata


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=sa.DateTime(timezone=True), nullable=nullable, index=index)


def _json(default: Any = dict) -> Any:
    return Field(default_factory=default, sa_type=sa.JSON, nullable=False)


class Incident(SQLModel, table=True):
    """One alert group's incident; ``open_key`` is the group key while open (unique), NULL once resolved."""

    __tablename__ = "incident"
    __table_args__ = (sa.Index("ix_incident_state_severity", "state", "severity"),)
    id: int | None = Field(default=None, primary_key=True)
    group_key: str = Field(max_length=64, index=True)
    open_key: str | None = Field(default=None, max_length=64, unique=True)
    title: str = Field(max_length=500)
    state: str = Field(max_length=20, index=True)
    severity: str = Field(max_length=20)
    labels: dict[str, str] = _json()
    route: int = Field(default=-1)
    targets: list[str] = _json(list)
    auto_resolve: bool = True
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False, index=True)
    updated_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    acknowledged_at: datetime | None = _ts()
    acknowledged_by: str | None = Field(default=None, max_length=200)
    resolved_at: datetime | None = _ts(index=True)  # analytics: incidents overlapping a period (SLA, re-opens)
    resolved_by: str | None = Field(default=None, max_length=200)
    # Escalation (issue #5): the policy fixed at creation, the next step to run and when it is due.
    # ``esc_due_at`` NULL = nothing scheduled; ``esc_reason`` says what is due: step | ack_timeout.
    escalation_policy: str | None = Field(default=None, max_length=200)
    esc_step: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    esc_loop: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    esc_started_at: datetime | None = _ts()
    esc_due_at: datetime | None = _ts(index=True)
    esc_reason: str | None = Field(default=None, max_length=20)
    resolve_due_at: datetime | None = _ts(index=True)
    # Grouping (issue #6): the route's receiver, timing and time intervals fixed at creation (Routed.grouping()),
    # when the group was last notified, and the next group notification due (``notify_reason``: trigger |
    # update | repeat | unmuted).
    grouping: dict[str, Any] = Field(
        default_factory=dict, sa_type=sa.JSON, nullable=False, sa_column_kwargs={"server_default": "{}"}
    )
    notified_at: datetime | None = _ts()
    notify_due_at: datetime | None = _ts(index=True)
    notify_reason: str | None = Field(default=None, max_length=20)


class Alert(SQLModel, table=True):
    """One series of an incident (a rule series or an ingested alert)."""

    __tablename__ = "alert"
    __table_args__ = (
        sa.UniqueConstraint("incident_id", "fingerprint", name="uq_alert_incident_fingerprint"),
        # An incident's alerts and their first start (analytics' time to detect) from the index alone.
        sa.Index("ix_alert_incident_id_starts_at", "incident_id", "starts_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", ondelete="CASCADE")
    fingerprint: str = Field(max_length=32, index=True)
    alertname: str = Field(max_length=200)
    origin: str = Field(max_length=300)
    labels: dict[str, str] = _json()
    annotations: dict[str, str] = _json()
    value: float | None = None
    state: str = Field(max_length=20)
    starts_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    ends_at: datetime | None = _ts()
    updated_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)


class IncidentEvent(SQLModel, table=True):
    """A line of an incident's timeline."""

    __tablename__ = "incident_event"
    # Analytics: the rarer kinds (re-triggers, escalations, notes, acknowledgements) of a period's incidents.
    __table_args__ = (sa.Index("ix_incident_event_kind_incident_id", "kind", "incident_id"),)
    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", index=True, ondelete="CASCADE")
    at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    kind: str = Field(max_length=40)
    actor: str | None = Field(default=None, max_length=200)
    note: str | None = Field(default=None, max_length=4000)
    data: dict[str, Any] = _json()


class AlertTransition(SQLModel, table=True):
    """Evaluation's output: a series started or stopped firing; the incidents stage claims these in id order."""

    __tablename__ = "alert_transition"
    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(max_length=32)
    alertname: str = Field(max_length=200)
    origin: str = Field(max_length=300)
    labels: dict[str, str] = _json()
    annotations: dict[str, str] = _json()
    value: float | None = None
    state: str = Field(max_length=20)
    at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    processed_at: datetime | None = _ts(index=True)


class RuleSeriesState(SQLModel, table=True):
    """Evaluation's own memory of pending and firing series (and of inactive ones with recent condition
    changes, for flap detection), so a restart neither re-pages nor forgets.

    ``condition`` is the rule's condition at the last evaluation (false while a firing alert is held),
    ``changes`` the ISO 8601 times of its recent condition changes, ``flapping`` whether it is flapping.
    """

    __tablename__ = "rule_series_state"
    rule: str = Field(primary_key=True, max_length=300)
    fingerprint: str = Field(primary_key=True, max_length=32)
    state: str = Field(max_length=20)
    labels: dict[str, str] = _json()
    annotations: dict[str, str] = _json()
    value: float | None = None
    active_since: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    fired_at: datetime | None = _ts()
    last_active: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    condition: bool = Field(default=True, nullable=False, sa_column_kwargs={"server_default": sa.true()})
    changes: list[str] = Field(
        default_factory=list, sa_type=sa.JSON, nullable=False, sa_column_kwargs={"server_default": "[]"}
    )
    flapping: bool = Field(default=False, nullable=False, sa_column_kwargs={"server_default": sa.false()})


class Outbox(SQLModel, table=True):
    """A notification to deliver: pending -> sending (leased) -> sent | failed (a dead letter); also cancelled,
    muted, or bundled (waiting in the digest row ``digest_id``)."""

    __tablename__ = "outbox"
    # Delivery's due rows and earliest pending time (``state='pending' AND next_attempt_at <= now``, ``state=
    # 'sending' AND lease_until < now`` few rows), without walking every sent row; also serves ``state`` alone.
    __table_args__ = (sa.Index("ix_outbox_state_next_attempt_at", "state", "next_attempt_at"),)
    id: int | None = Field(default=None, primary_key=True)
    incident_id: int | None = Field(default=None, foreign_key="incident.id", index=True, ondelete="CASCADE")
    event_id: int | None = Field(default=None, foreign_key="incident_event.id", ondelete="SET NULL")
    target: str = Field(max_length=300)
    dest_index: int = 0
    kind: str = Field(max_length=40)
    severity: str = Field(default="warning", max_length=20)
    title: str = Field(max_length=1000)
    body: str
    state: str = Field(max_length=20)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False, index=True)
    lease_until: datetime | None = _ts()
    last_error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    sent_at: datetime | None = _ts()
    data: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON, nullable=True)
    """The page as structured data (incident, alerts, group) for channel formats that need it."""
    digest_id: int | None = Field(default=None, index=True)
    """For a ``bundled`` row: the ``digest`` row that will carry it."""
    fallback_for: int | None = Field(default=None)
    """For a dead letter's copy: the outbox row that could not be delivered."""
    claimed_by: str | None = Field(default=None, max_length=200)
    """The replica that holds (or last held) the lease."""


class NotificationAttempt(SQLModel, table=True):
    """The notification log: one row per attempt or delivery decision of an outbox row."""

    __tablename__ = "notification_attempt"
    # The rate limit counts a destination's sends in a window: (target, dest_index, result, finished_at).
    __table_args__ = (sa.Index("ix_notification_attempt_window", "target", "dest_index", "result", "finished_at"),)
    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int = Field(foreign_key="outbox.id", index=True, ondelete="CASCADE")
    incident_id: int | None = Field(default=None, index=True)
    target: str = Field(max_length=300)
    dest_index: int = 0
    destination: str = Field(default="", max_length=1000)
    kind: str = Field(max_length=40)
    attempt: int = 0
    replica: str = Field(default="", max_length=200)
    started_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    finished_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False, index=True)
    duration_ms: float = 0.0
    result: str = Field(max_length=20)
    """sent | retry | failed | muted | held | bundled | cancelled | superseded"""
    error: str | None = Field(default=None, max_length=2000)


class UsedLink(SQLModel, table=True):
    """A signed action link that was used (its nonce is the primary key: a link acts at most once)."""

    __tablename__ = "used_link"
    nonce: str = Field(primary_key=True, max_length=64)
    incident_id: int
    action: str = Field(max_length=20)
    recipient: str = Field(max_length=300)
    actor: str = Field(max_length=200)
    used_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)


class DaemonSecret(SQLModel, table=True):
    """A secret the daemon generated for itself (e.g. the link signing key when none is configured)."""

    __tablename__ = "daemon_secret"
    name: str = Field(primary_key=True, max_length=100)
    value: str = Field(sa_type=sa.Text, nullable=False)
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)


class ApiToken(SQLModel, table=True):
    """An API token: only the SHA-256 of its secret is stored."""

    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    secret_hash: str = Field(max_length=64, unique=True)
    scopes: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    last_used_at: datetime | None = _ts()
    revoked_at: datetime | None = _ts()


class UiSession(SQLModel, table=True):
    """A web UI sign-in. Only the SHA-256 of the cookie's secret is stored; the session acts with its API token's
    scopes, and revoking or deleting the token ends it. ``csrf`` is the token every form of the session carries."""

    __tablename__ = "ui_session"
    id_hash: str = Field(primary_key=True, max_length=64)
    token_id: int = Field(foreign_key="api_token.id", index=True, ondelete="CASCADE")
    csrf: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False, index=True)
    last_seen_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)


class SeriesHistory(SQLModel, table=True):
    """One chunk of one series' downsampled history (``history:``): ``points`` packs consecutive buckets of
    ``step_seconds`` from ``chunk_start`` as little-endian float32 triples (avg, min, max; NaN = no sample).
    ``tier`` 0 is the fine tier, 1 the coarse one; ``series`` is a fingerprint of source, metric and labels."""

    __tablename__ = "series_history"
    __table_args__ = (
        sa.UniqueConstraint("series", "tier", "chunk_start", name="uq_series_history_chunk"),
        sa.Index("ix_series_history_lookup", "source", "metric", "tier", "chunk_start"),
    )
    id: int | None = Field(default=None, primary_key=True)
    series: str = Field(max_length=64)
    source: str = Field(max_length=200)
    metric: str = Field(max_length=300)
    labels: dict[str, str] = _json()
    tier: int
    chunk_start: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False, index=True)
    step_seconds: int
    points: bytes = Field(sa_type=sa.LargeBinary, nullable=False)
    updated_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)


class SourceState(SQLModel, table=True):
    """Durable state of a source kind (heartbeat pings, log offsets), as JSON per key."""

    __tablename__ = "source_state"
    source: str = Field(primary_key=True, max_length=100)
    key: str = Field(primary_key=True, max_length=300)
    value: Any = Field(default=None, sa_type=sa.JSON, nullable=True)
    updated_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)


class ScheduleOverride(SQLModel, table=True):
    """``who`` is on call for ``schedule`` from ``starts_at`` to ``ends_at`` (instead of ``replaces`` only, if set)."""

    __tablename__ = "schedule_override"
    id: int | None = Field(default=None, primary_key=True)
    schedule: str = Field(max_length=200, index=True)
    who: str = Field(max_length=200)
    replaces: str | None = Field(default=None, max_length=200)
    starts_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    ends_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False, index=True)
    note: str | None = Field(default=None, max_length=2000)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)


class ScheduleState(SQLModel, table=True):
    """Per schedule: the last handoff whose notice was queued (so a restart neither repeats nor skips one)."""

    __tablename__ = "schedule_state"
    schedule: str = Field(primary_key=True, max_length=200)
    last_handoff_at: datetime | None = _ts()
    announced_user: str | None = Field(default=None, max_length=200)  # who the last notice (or start) saw on call


class AuditLog(SQLModel, table=True):
    """Who changed what outside an incident's timeline (overrides, silences, tokens)."""

    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False, index=True)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=60)
    object: str = Field(max_length=300)
    data: dict[str, Any] = _json()


class Silence(SQLModel, table=True):
    """A silence: alerts matching all ``matchers`` page nobody from ``starts_at`` to ``ends_at``.

    ``matchers`` is Alertmanager's form, a list of ``{name, value, isRegex, isEqual}``. Expiring sets
    ``ends_at`` to now. ``expiry_handled`` is set once the expiry notice (alertmanager#730) was considered.
    """

    __tablename__ = "silence"
    id: str = Field(primary_key=True, max_length=36)
    matchers: list[dict[str, Any]] = _json(list)
    starts_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    ends_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False, index=True)
    created_by: str = Field(max_length=200)
    comment: str = Field(default="", sa_type=sa.Text, nullable=False)
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    updated_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    expiry_handled: bool = Field(default=False, nullable=False, sa_column_kwargs={"server_default": sa.false()})


class IngestedAlert(SQLModel, table=True):
    """An alert received over the Alertmanager API or PagerDuty Events (``origin``: ``alertmanager`` |
    ``pagerduty:INTEGRATION``): firing until ``ends_at`` passes or it is resolved, then ``resolved``."""

    __tablename__ = "ingested_alert"
    fingerprint: str = Field(primary_key=True, max_length=32)
    origin: str = Field(max_length=300)
    labels: dict[str, str] = _json()
    annotations: dict[str, str] = _json()
    generator_url: str = Field(default="", sa_type=sa.Text, nullable=False)
    state: str = Field(max_length=20, index=True)
    starts_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    ends_at: datetime | None = _ts(index=True)
    updated_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)


class ReportState(SQLModel, table=True):
    """Per scheduled report (``reports:``): the last fire time whose report was queued, so a restart neither
    repeats nor skips one (advanced by compare-and-set in the transaction that queues the report's outbox rows)."""

    __tablename__ = "report_state"
    name: str = Field(primary_key=True, max_length=200)
    last_fire_at: datetime | None = _ts()
    last_queued_at: datetime | None = _ts()
    last_error: str | None = Field(default=None, max_length=2000)
