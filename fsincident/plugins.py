"""Source and Notifier protocols, their Options bases, and the entry-point registry for both.

Built-in kinds are registered in pyproject.toml under the same entry-point groups a third-party
package uses (``fsincident.sources`` / ``fsincident.notifiers``); the YAML ``type:`` is the key.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from fsincident.core import FsIncidentError, Sample, parse_duration, valid_label_name


def _duration(v: Any) -> Any:
    if isinstance(v, timedelta):
        return v
    return parse_duration(v)


Duration = Annotated[timedelta, BeforeValidator(_duration)]
"""A duration written ``30s``, ``5m``, ``1h30m``, ``1d`` in YAML."""


def _label_name(k: str) -> str:
    if not valid_label_name(k):
        raise ValueError(f"invalid label name {k!r}")
    return k


def _stringify(v: Any) -> Any:
    # Scalars become label values (true -> "true", null -> ""); a list or mapping stays and fails as "not a string".
    if isinstance(v, dict):
        return {
            k: ("" if x is None else str(x).lower() if isinstance(x, bool) else str(x) if _scalar(x) else x)
            for k, x in v.items()
        }
    return v


def _scalar(x: Any) -> bool:
    return not isinstance(x, dict | list | tuple | set)


LabelMap = Annotated[dict[Annotated[str, AfterValidator(_label_name)], str], BeforeValidator(_stringify)]
"""Labels written in YAML: valid label names, scalar values as strings."""

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=100)]


class Options(BaseModel):
    """Base of every kind's options: strict (unknown keys are errors), frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceOptions(Options):
    """Keys every source has; a kind subclasses this with its own keys."""

    name: Name
    type: str
    interval: Duration = timedelta(seconds=15)
    timeout: Duration = timedelta(seconds=10)
    down_after: int = Field(3, ge=1, le=1000)
    """Consecutive failed collections before the built-in ``SourceDown`` alert fires."""


class RateLimitOptions(Options):
    """``rate_limit:`` of a channel: at most ``max`` sends per ``per`` to each destination; low-urgency pages over
    the limit are bundled into one digest sent ``digest`` later (default: ``per``); high urgency is never held."""

    max: int = Field(ge=1, le=100_000)
    per: Duration
    digest: Duration | None = None


FALLBACK_TARGET = r"^(channel|user):[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class ChannelOptions(Options):
    """Keys every notification channel has; a kind subclasses this with its own keys.

    ``template`` picks the shipped template set (``auto``: by destination), ``max_attempts``/``retry_for`` the
    retry budget of each destination (default: ``delivery:``), ``fallback`` where a dead letter goes, and
    ``rate_limit`` how many pages a destination takes per period."""

    name: Name
    type: str = "apprise"
    template: Literal["auto", "chat", "email", "text"] = "auto"
    max_attempts: int | None = Field(None, ge=1, le=1000)
    retry_for: Duration | None = None
    fallback: Annotated[str, Field(pattern=FALLBACK_TARGET, max_length=200)] | None = None
    rate_limit: RateLimitOptions | None = None


class StateStore(Protocol):
    """Durable key/value state of one source (JSON values), kept in SQL across restarts."""

    async def get(self, key: str) -> Any: ...

    async def set(self, key: str, value: Any) -> None: ...

    async def items(self) -> dict[str, Any]: ...


@dataclass
class SourceContext:
    """What the daemon hands a source kind besides its options: the clock and its durable state."""

    clock: Any
    state: StateStore


@runtime_checkable
class Source(Protocol):
    """A source of samples; ``collect`` raises SourceError when it cannot read its peer.

    A kind is built as ``Kind(options, context=SourceContext(...))``. Optional capabilities:
    ``supports_query = True`` with ``async query(text, now) -> list[Sample]`` (rules with ``query:``),
    ``async ingest(samples, now)`` (``POST /api/v1/metrics``), ``async ping(check, kind, now)``
    (heartbeats), and a static ``secrets_of(options) -> list[str]`` naming strings (passwords,
    tokens) that the log redactor must hide.
    """

    Options: ClassVar[type[SourceOptions]]
    options: SourceOptions

    async def collect(self, now: datetime) -> list[Sample]: ...

    async def close(self) -> None: ...


@dataclass
class Snapshot:
    """A source's latest collection: samples by metric name and label set, or the error that stopped it."""

    source: str
    at: datetime | None = None
    metrics: dict[str, dict[Any, float]] = field(default_factory=dict)
    error: str | None = None
    last_success: datetime | None = None
    failures: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.at is not None


@dataclass(frozen=True)
class Attachment:
    """A file sent with a message (a report's PNG chart): its file name, content and MIME type."""

    name: str
    content: bytes
    mimetype: str = "image/png"


@dataclass(frozen=True)
class Message:
    """What a notifier sends: already rendered, free of secrets."""

    title: str
    body: str
    kind: str  # trigger | acknowledge | resolve | info | digest | handoff | report | handoff_summary
    severity: str = "warning"
    data: Mapping[str, Any] | None = None
    """The page as structured data, for formats that need it (``webhook`` with ``format: alertmanager``):
    ``incident`` (the API form), ``alerts`` (each with fingerprint, labels, annotations, state, starts_at,
    ends_at, generator_url), ``group_key``, ``group_labels``, ``receiver``, ``reason``, ``external_url``.
    None for messages that are not about an incident (handoff notices); for a scheduled ``report`` the analytics
    ``report`` with its ``name`` and ``title``, for a ``handoff_summary`` the shift's ``summary``."""
    format: str = "text"
    """How ``body`` is written: ``text``, ``markdown`` or ``html`` (the destination's template style)."""
    links: Mapping[str, str] | None = None
    """Signed action links of the page (``ack``, ``resolve``) and the incident's ``incident`` URL, when any."""
    attachments: tuple[Attachment, ...] = ()
    """Files to send along (scheduled reports' PNG charts); a kind that cannot send files leaves them out."""


@runtime_checkable
class Notifier(Protocol):
    """A channel kind; each destination is one independently retried delivery."""

    Options: ClassVar[type[ChannelOptions]]
    options: ChannelOptions

    def destinations(self) -> list[str]:
        """Redacted descriptions of each destination, safe to log and show."""
        ...

    # Optional: ``style(index) -> str`` says which template set suits destination ``index``: ``chat`` (short
    # markdown), ``email`` (HTML with a text part), ``text`` or ``raw`` (the kind formats the page itself).

    async def send(self, index: int, message: Message, timeout: float) -> None:
        """Deliver to destination ``index``; raises NotifyError(permanent=...) on failure."""
        ...

    def secrets(self) -> list[str]:
        """Strings that must never appear in logs or API output."""
        ...


class PluginError(FsIncidentError):
    """An unknown kind, or one whose module failed to load."""


class Registry:
    """Kinds of one entry-point group, loaded lazily; ``register`` adds kinds in-process."""

    def __init__(self, group: str):
        self.group = group
        self._extra: dict[str, type] = {}
        self._loaded: dict[str, type] = {}

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group)}

    def kinds(self) -> list[str]:
        return sorted(set(self._entry_points()) | set(self._extra))

    def register(self, name: str, cls: type) -> None:
        self._extra[name] = cls

    def get(self, name: str) -> type:
        """The class for kind ``name``; raises PluginError naming the kinds there are."""
        if name in self._extra:
            return self._extra[name]
        if name in self._loaded:
            return self._loaded[name]
        eps = self._entry_points()
        ep = eps.get(name)
        if ep is None:
            raise PluginError(f"unknown type {name!r} (available: {', '.join(self.kinds()) or 'none'})")
        try:
            cls = ep.load()
        except Exception as e:  # a broken plugin stops start-up with its reason
            raise PluginError(f"type {name!r} failed to load from {ep.value}: {type(e).__name__}: {e}") from e
        if not isinstance(getattr(cls, "Options", None), type) or not issubclass(cls.Options, Options):
            raise PluginError(f"type {name!r} ({ep.value}) has no Options model")
        self._loaded[name] = cls
        return cls


sources = Registry("fsincident.sources")
notifiers = Registry("fsincident.notifiers")
