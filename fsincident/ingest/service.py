"""Alerts received from outside (Alertmanager API v2, PagerDuty Events v2): stored, refreshed, expired.

An ingested alert is a row of ``ingested_alert`` (firing until its ``ends_at`` passes or it is resolved) and, for
each start and end, an ``alert_transition`` row the incidents stage turns into incidents. Every request is one
transaction: the 200 is sent after the commit, so a ``kill -9`` never loses an alert that was accepted.

Senders such as Prometheus re-post every firing alert every minute with a later ``endsAt``. Those re-posts are
the bulk of the traffic and change nothing but ``ends_at``, so the service keeps every firing alert in memory
(fingerprint -> times, annotations) and answers such a re-post from memory alone as long as the stored
``ends_at`` stays far enough ahead: at least half of the alert's newly asked lifetime and ``MIN_AHEAD`` beyond
now. After a crash the stored ``ends_at`` is then still that far ahead, and the sender re-posts long before it.
The engine module writes the newer ``ends_at`` values shortly before the stored ones would pass
(``FLUSH_AHEAD``), and resolves alerts whose ``ends_at`` passed with a compare-and-set, so two instances sharing
one database never resolve an alert the other one has just refreshed.

On SQLite the writes of a request run on one dedicated connection in a worker thread (one thread hop per
transaction instead of one per statement); on PostgreSQL they go through the shared async engine.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import itertools
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from prometheus_client import Counter, Gauge

from fsincident.core import Clock, FsIncidentError, ensure_utc
from fsincident.obs import Metrics, get_logger
from fsincident.store import Store, sqlite_path
from fsincident.store.tables import IngestedAlert

log = get_logger("fsincident.ingest")

NEVER = datetime(9999, 12, 31, tzinfo=UTC)
"""``ends_at`` of an alert that does not expire by itself (PagerDuty events stay open until resolved)."""
MIN_AHEAD = timedelta(seconds=30)
"""A re-post is answered from memory only while the stored ``ends_at`` is at least this far ahead."""
FLUSH_AHEAD = timedelta(seconds=15)
"""Newer ``ends_at`` values kept in memory are written this long before the stored ones would pass."""
EXPIRE_BATCH = 1000
SCAN_EVERY = 5.0
"""Seconds between looks for expired rows that memory does not hold (written by another instance)."""
RESENDING = frozenset({"alertmanager"})
"""Origins whose senders re-send firing alerts (Prometheus: every minute): their writes skip the power-loss sync
(``synchronous=NORMAL`` on SQLite), which an application crash does not need. PagerDuty events, sent once, get a
full sync."""
ORIGIN_MAX = 300
ALERTNAME_MAX = 200

_TABLE = IngestedAlert.__table__  # type: ignore[attr-defined]
_dumps = json.JSONEncoder(separators=(",", ":")).encode


class IngestError(FsIncidentError):
    """The database refused or could not take the alerts (the sender should retry)."""


@dataclass(slots=True)
class IncomingAlert:
    """One alert as a sender posts it; ``starts_at`` None means now (or ``ends_at`` when that is earlier),
    ``ends_at`` None means now + ``resolve_timeout``.

    Build it from validated input only: label names are valid, no label value is empty, and no text holds a NUL
    or a lone surrogate (``fsincident.api.alertmanager`` checks Alertmanager's rules)."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime | None
    ends_at: datetime | None
    generator_url: str = ""


def fingerprint(labels: Mapping[str, str]) -> str:
    """The alert's identity: the same 16-hex-digit digest as ``core.Labels(labels).fingerprint``."""
    parts: list[bytes] = []
    for k, v in sorted(labels.items()):
        parts.append(k.encode())
        parts.append(v.encode())
    parts.append(b"")
    return hashlib.sha256(b"\xff".join(parts)).hexdigest()[:16]


class _Firing:
    """What memory knows of one firing alert; ``durable`` is the ``ends_at`` the database has."""

    __slots__ = (
        "annotations",
        "durable",
        "ends",
        "fp",
        "labels",
        "origin",
        "starts",
        "timeout",
        "updated",
        "url",
    )

    def __init__(
        self,
        fp: str,
        labels: dict[str, str],
        annotations: dict[str, str],
        url: str,
        origin: str,
        starts: datetime,
        ends: datetime,
        timeout: bool,
        updated: datetime,
    ):
        self.fp, self.labels, self.annotations, self.url, self.origin = fp, labels, annotations, url, origin
        self.starts, self.ends, self.durable, self.timeout, self.updated = starts, ends, ends, timeout, updated

    def due(self) -> datetime:
        """When the engine module has to look at it: its end, or earlier to write a newer end."""
        if self.durable < self.ends:
            return min(self.ends, self.durable - FLUSH_AHEAD)
        return self.ends


@dataclass(frozen=True, slots=True)
class AlertView:
    """A firing ingested alert as the Alertmanager API shows it."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str
    origin: str
    starts_at: datetime
    ends_at: datetime
    updated_at: datetime


# ---------------------------------------------------------------------------------------------- SQL


_ts_cache: dict[datetime, str] = {}


def _sqlite_ts(dt: datetime) -> str:
    """SQLAlchemy's SQLite storage form of an aware UTC datetime (text that sorts in time order); senders repeat
    the same few times within a request, so the forms are remembered."""
    text = _ts_cache.get(dt)
    if text is None:
        if len(_ts_cache) >= 4096:
            _ts_cache.clear()
        utc = dt if dt.tzinfo is UTC else dt.astimezone(UTC)
        text = _ts_cache[dt] = utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    return text


_ON_CONFLICT = (
    "ON CONFLICT (fingerprint) DO UPDATE SET origin = excluded.origin, annotations = excluded.annotations, "
    "generator_url = excluded.generator_url, starts_at = CASE WHEN ingested_alert.state = 'firing' AND "
    "ingested_alert.starts_at < excluded.starts_at THEN ingested_alert.starts_at ELSE excluded.starts_at END, "
    "state = 'firing', ends_at = excluded.ends_at, updated_at = excluded.updated_at"
)
_FIRE_TR_KEYS = ("fp", "name", "origin", "labels", "annotations", "starts")
_UPSERT_KEYS = ("fp", "origin", "labels", "annotations", "url", "starts", "ends", "now")
_CHUNKS = (256, 64, 16, 4, 1)


@functools.lru_cache(maxsize=len(_CHUNKS))
def _sqlite_fire(n: int) -> tuple[str, str]:
    """The two statements of ``_Exec.fire`` for ``n`` rows at once (SQLite, positional parameters): one
    statement per table and chunk costs far less than one per row."""
    transitions = (
        "INSERT INTO alert_transition (fingerprint, alertname, origin, labels, annotations, value, state, at) "
        "SELECT column1, column2, column3, column4, column5, NULL, 'firing', column6 FROM (VALUES "
        + ",".join(["(?,?,?,?,?,?)"] * n)
        + ") WHERE NOT EXISTS (SELECT 1 FROM ingested_alert WHERE fingerprint = column1 AND state = 'firing')"
    )
    rows = (
        "INSERT INTO ingested_alert (fingerprint, origin, labels, annotations, generator_url, state, starts_at, "
        "ends_at, updated_at) VALUES " + ",".join(["(?,?,?,?,?,'firing',?,?,?)"] * n) + " " + _ON_CONFLICT
    )
    return transitions, rows


def _statements(postgres: bool) -> tuple[str, str, str, str, str]:
    """The write statements (named parameters, valid for sqlite3 and SQLAlchemy text()), per dialect."""

    def cast(p: str, typ: str) -> str:
        return f"CAST(:{p} AS {typ})" if postgres else f":{p}"

    ts = "TIMESTAMP WITH TIME ZONE"
    # A firing transition unless the alert is firing already (posted before, maybe through another instance).
    fire_transition = (
        "INSERT INTO alert_transition (fingerprint, alertname, origin, labels, annotations, value, state, at) "
        f"SELECT {cast('fp', 'VARCHAR')}, {cast('name', 'VARCHAR')}, {cast('origin', 'VARCHAR')}, "
        f"{cast('labels', 'JSON')}, {cast('annotations', 'JSON')}, NULL, 'firing', {cast('starts', ts)} "
        "WHERE NOT EXISTS (SELECT 1 FROM ingested_alert WHERE fingerprint = :fp AND state = 'firing')"
    )
    upsert = (
        "INSERT INTO ingested_alert (fingerprint, origin, labels, annotations, generator_url, state, starts_at, "
        "ends_at, updated_at) VALUES (:fp, :origin, :labels, :annotations, :url, 'firing', :starts, :ends, :now) "
        + _ON_CONFLICT
    )
    # A resolved transition (labels and annotations from the stored row) when the alert is firing and, for an
    # expiry, its stored end has passed; then the row itself.
    resolve_transition = (
        "INSERT INTO alert_transition (fingerprint, alertname, origin, labels, annotations, value, state, at) "
        f"SELECT fingerprint, {cast('name', 'VARCHAR')}, origin, labels, annotations, NULL, 'resolved', "
        f"{cast('at', ts)} FROM ingested_alert "
        "WHERE fingerprint = :fp AND state = 'firing' AND ends_at <= :cutoff"
    )
    resolve = (
        "UPDATE ingested_alert SET state = 'resolved', ends_at = :at, updated_at = :now "
        "WHERE fingerprint = :fp AND state = 'firing' AND ends_at <= :cutoff"
    )
    # A newer end kept in memory, written while the alert is still firing.
    extend = "UPDATE ingested_alert SET ends_at = :ends, updated_at = :now WHERE fingerprint = :fp AND state = 'firing'"
    return fire_transition, upsert, resolve_transition, resolve, extend


_SELECT_EXPIRED = (
    "SELECT fingerprint, labels, origin, ends_at FROM ingested_alert WHERE state = 'firing' AND ends_at <= :now "
    "ORDER BY ends_at LIMIT :n"
)

T = TypeVar("T")
Step = tuple[str, list[dict[str, Any]]]


class _Exec(Protocol):
    """What a transaction body may do: run a statement for many parameter rows, or fetch rows."""

    def many(self, sql: str, rows: list[dict[str, Any]]) -> int: ...

    def fetch(self, sql: str, params: dict[str, Any]) -> list[Any]: ...

    def fire(self, rows: list[dict[str, Any]]) -> None:
        """Store firing alerts (distinct fingerprints): a firing transition for each one not firing yet, then
        its row (inserted, or updated keeping the earliest start of a firing one)."""


class _Writer:
    """Runs a transaction body (a plain function of an _Exec) in one transaction; raises IngestError."""

    async def run(self, body: Callable[[_Exec], T], durable: bool) -> T:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    async def checkpoint(self) -> None:
        """Copy the write-ahead log into the database file where this writer does not on commit; never fails."""
        return None


class _SqliteWriter(_Writer):
    """One dedicated SQLite connection in one worker thread: a transaction costs one thread hop, and its reads
    see the rows it is about to change (BEGIN IMMEDIATE)."""

    def __init__(self, path: str):
        self.path = path
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fsincident-ingest")
        self._conn: sqlite3.Connection | None = None
        self._sync = ""
        self._wrote = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        # No checkpoints from here: the request path leaves them to the other connections (the store's), which
        # run them after their own commits.
        for pragma in ("busy_timeout=30000", "journal_mode=WAL", "foreign_keys=ON", "wal_autocheckpoint=0"):
            conn.execute(f"PRAGMA {pragma}")
        self._sync = ""
        return conn

    def many(self, sql: str, rows: list[dict[str, Any]]) -> int:
        return self._conn.executemany(sql, rows).rowcount if rows else 0  # type: ignore[union-attr]

    def fetch(self, sql: str, params: dict[str, Any]) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()  # type: ignore[union-attr]

    def fire(self, rows: list[dict[str, Any]]) -> None:
        conn = self._conn
        assert conn is not None
        i = 0
        for size in _CHUNKS:
            while len(rows) - i >= size:
                chunk = rows[i : i + size]
                transitions, stored = _sqlite_fire(size)
                conn.execute(transitions, [r[k] for r in chunk for k in _FIRE_TR_KEYS])
                conn.execute(stored, [r[k] for r in chunk for k in _UPSERT_KEYS])
                i += size

    def _run(self, body: Callable[[_Exec], T], durable: bool) -> T:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        # FULL syncs the log at each commit (survives a power loss); NORMAL survives a crash of the process.
        sync = "FULL" if durable else "NORMAL"
        if sync != self._sync:
            conn.execute(f"PRAGMA synchronous={sync}")
            self._sync = sync
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(self)
            conn.execute("COMMIT")
            self._wrote = True
            return result
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._conn = None
                conn.close()
            raise

    async def run(self, body: Callable[[_Exec], T], durable: bool) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, body, durable)
        except (sqlite3.Error, UnicodeError) as e:
            raise IngestError(f"the database refused the alerts: {e}") from e

    def _checkpoint(self) -> None:
        if self._conn is not None and self._wrote:
            self._wrote = False
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def checkpoint(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._checkpoint)
        except sqlite3.Error as e:
            log.warning("ingest_checkpoint_failed", error=str(e))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=True)


class _SaExec:
    def __init__(self, conn: sa.Connection, fire_sql: tuple[str, str]):
        self.conn, self.fire_sql = conn, fire_sql

    def fire(self, rows: list[dict[str, Any]]) -> None:
        for sql in self.fire_sql:
            self.many(sql, rows)

    def many(self, sql: str, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        stmt = sa.text(sql)
        if sql.startswith("UPDATE"):  # asyncpg's executemany reports no row counts; updates are few: one by one
            return sum(self.conn.execute(stmt, row).rowcount for row in rows)
        return self.conn.execute(stmt, rows).rowcount

    def fetch(self, sql: str, params: dict[str, Any]) -> list[Any]:
        return list(self.conn.execute(sa.text(sql), params).all())


class _EngineWriter(_Writer):
    """Through the store's async engine (PostgreSQL; SQLite in memory)."""

    def __init__(self, store: Store):
        self.store = store
        fire_transition, upsert, *_ = _statements(not store.is_sqlite)
        self.fire_sql = (fire_transition, upsert)

    async def run(self, body: Callable[[_Exec], T], durable: bool) -> T:
        try:
            async with self.store.engine.begin() as conn:
                return await conn.run_sync(lambda c: body(_SaExec(c, self.fire_sql)))
        except sa.exc.SQLAlchemyError as e:
            raise IngestError(f"the database refused the alerts: {type(e).__name__}") from e


def _steps(steps: list[Step]) -> Callable[[_Exec], list[int]]:
    """A transaction body running ``steps`` in order; returns the rows each one touched."""
    return lambda ex: [ex.many(sql, rows) for sql, rows in steps]


def _db_time(value: Any) -> datetime:
    """A timestamp as a driver returns it (SQLite: text; PostgreSQL: datetime), as aware UTC."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return ensure_utc(value)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- the service


class IngestService:
    """Stores ingested alerts and turns their starts and ends into alert transitions; also the engine module
    ``ingest`` that expires alerts whose ``ends_at`` passed."""

    name = "ingest"

    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        resolve_timeout: timedelta = timedelta(minutes=5),
        kick_incidents: Callable[[], None] = lambda: None,
    ):
        self.store = store
        self.clock = clock
        self.resolve_timeout = resolve_timeout
        self.kick_incidents = kick_incidents
        self._firing: dict[str, _Firing] = {}
        self._heap: list[tuple[datetime, int, str]] = []
        self._seq = itertools.count()
        self._lock = asyncio.Lock()
        self._loaded = False
        self._next_scan = 0.0
        # False on a follower replica: the leader resolves expired alerts (whichever replica received them) and
        # this one only writes the newer ends it keeps in memory.
        self.expiring = True
        postgres = not store.is_sqlite
        _, _, self._resolve_tr, self._resolve, self._extend = _statements(postgres)
        self._ts: Callable[[datetime], Any] = (lambda d: d) if postgres else _sqlite_ts
        path = sqlite_path(store.url) if store.is_sqlite else None
        self._writer: _Writer = _SqliteWriter(str(path)) if path is not None else _EngineWriter(store)
        r = metrics.registry
        self.m_alerts = Counter(
            "fsincident_ingest_alerts_total",
            "Ingested alerts by origin kind (alertmanager, pagerduty) and result: firing (started), refreshed (posted "
            "again while firing), resolved (ended by the sender), expired (ends_at passed), invalid (refused).",
            ["origin", "result"],
            registry=r,
        )
        self.m_firing = Gauge("fsincident_ingest_alerts_firing", "Ingested alerts firing now.", registry=r)
        self._counters: dict[tuple[str, str], Any] = {}

    def configure(self, config: Any) -> None:
        """Take ``alertmanager.resolve_timeout`` from a (re)loaded config; never fails."""
        self.resolve_timeout = config.alertmanager.resolve_timeout

    def count(self, origin: str, result: str, n: int = 1) -> None:
        """Add ``n`` to ``fsincident_ingest_alerts_total`` (origin ``pagerduty:NAME`` counts as ``pagerduty``)."""
        if n:
            key = (origin.split(":", 1)[0], result)
            c = self._counters.get(key)
            if c is None:
                c = self._counters[key] = self.m_alerts.labels(*key)
            c.inc(n)

    # ------------------------------------------------------------------ memory

    async def restore(self) -> None:
        """Load every firing ingested alert into memory (once; later calls do nothing); raises IngestError."""
        if self._loaded:
            return
        async with self._lock:
            if self._loaded:
                return
            await self._load()

    async def reload(self) -> None:
        """Replace memory with the firing rows of SQL (a replica promoted to leader then expires alerts the other
        replica received on time), keeping a later end that memory has not written yet; raises IngestError."""
        async with self._lock:
            await self._load()

    async def _load(self) -> None:
        """Under ``_lock``: memory := the firing rows of SQL, each with the later end of memory and SQL."""
        t = _TABLE.c
        q = sa.select(
            t.fingerprint, t.labels, t.annotations, t.generator_url, t.origin, t.starts_at, t.ends_at, t.updated_at
        ).where(t.state == "firing")
        try:
            async with self.store.read_engine.connect() as conn:
                rows = (await conn.execute(q)).all()
        except sa.exc.SQLAlchemyError as e:
            raise IngestError(f"cannot read ingested alerts: {type(e).__name__}") from e
        firing: dict[str, _Firing] = {}
        for fp, labels, notes, url, origin, starts, ends, updated in rows:
            ends = ensure_utc(ends) or NEVER
            mem = self._firing.get(fp)
            if mem is not None and mem.ends >= ends:
                mem.durable = ends  # what SQL holds: a later end in memory is written before it passes
                firing[fp] = mem
            else:
                starts, updated = ensure_utc(starts), ensure_utc(updated)
                firing[fp] = _Firing(fp, labels, notes, url, origin, starts, ends, True, updated)  # type: ignore[arg-type]
        self._firing = firing
        self._heap = [(e.due(), next(self._seq), e.fp) for e in firing.values()]
        heapq.heapify(self._heap)
        self._loaded = True
        self._next_scan = 0.0
        self.m_firing.set(len(firing))

    async def _write(self, body: Callable[[_Exec], T], durable: bool) -> T:
        """Run ``body`` in one write transaction, queued with the store's other writers (SQLite has one)."""
        async with self.store.write_lock():
            return await self._writer.run(body, durable)

    def _push(self, e: _Firing) -> None:
        heapq.heappush(self._heap, (e.due(), next(self._seq), e.fp))
        if len(self._heap) > 2 * len(self._firing) + 1024:  # drop the stale entries re-posts left behind
            self._heap = [(x.due(), next(self._seq), x.fp) for x in self._firing.values()]
            heapq.heapify(self._heap)

    def firing(self) -> list[AlertView]:
        """The firing ingested alerts this instance knows, newest data first-hand from memory."""
        return [
            AlertView(e.fp, e.labels, e.annotations, e.url, e.origin, e.starts, e.ends, e.updated)
            for e in self._firing.values()
        ]

    async def snapshot(self, now: datetime) -> list[AlertView]:
        """Every firing ingested alert not past its end: memory, plus rows another instance wrote; raises
        IngestError when the database cannot be read."""
        await self.restore()
        known = self.firing()
        mine = {e.fingerprint: e for e in known if e.ends_at > now}
        t = _TABLE.c
        try:
            async with self.store.read_engine.connect() as conn:
                stored = (await conn.execute(sa.select(sa.func.count()).where(t.state == "firing"))).scalar_one()
                missing: list[str] = []
                if stored != len(known):  # rows written by another instance: find them
                    fps = (await conn.execute(sa.select(t.fingerprint).where(t.state == "firing"))).scalars().all()
                    missing = [fp for fp in fps if fp not in mine]
                rows = []
                for i in range(0, len(missing), 500):
                    chunk = missing[i : i + 500]
                    q = sa.select(
                        t.fingerprint,
                        t.labels,
                        t.annotations,
                        t.generator_url,
                        t.origin,
                        t.starts_at,
                        t.ends_at,
                        t.updated_at,
                    ).where(t.fingerprint.in_(chunk), t.state == "firing")
                    rows.extend((await conn.execute(q)).all())
        except sa.exc.SQLAlchemyError as e:
            raise IngestError(f"cannot read ingested alerts: {type(e).__name__}") from e
        out = list(mine.values())
        for fp, labels, notes, url, origin, starts, ends, updated in rows:
            ends = ensure_utc(ends) or NEVER
            if ends > now:
                view = AlertView(fp, labels, notes, url, origin, ensure_utc(starts), ends, ensure_utc(updated))  # type: ignore[arg-type]
                out.append(view)
        return out

    # ------------------------------------------------------------------ posting

    async def post(self, alerts: Sequence[IncomingAlert], origin: str, now: datetime) -> int:
        """Store ``alerts`` (valid ones: see IncomingAlert) from ``origin`` (``alertmanager`` or
        ``pagerduty:NAME``) in one transaction, as Alertmanager merges them; returns how many started or ended.
        Raises IngestError when the database cannot take them (nothing of them is stored then)."""
        await self.restore()
        origin = origin[:ORIGIN_MAX]
        # One alert per fingerprint: a later one in the same request replaces an earlier one.
        latest: dict[str, IncomingAlert] = {}
        for a in alerts:
            latest[fingerprint(a.labels)] = a
        async with self._lock:
            return await self._post(latest, origin, now)

    async def _post(self, latest: dict[str, IncomingAlert], origin: str, now: datetime) -> int:
        ts = self._ts
        firing = self._firing
        timeout_at = now + self.resolve_timeout
        fire_rows: list[dict[str, Any]] = []
        upserted: list[_Firing] = []
        resolve_rows: list[dict[str, Any]] = []
        resolved: list[str] = []
        refreshed = 0
        new = 0
        sql_now = ts(now)
        for fp, a in latest.items():
            s, e = a.starts_at, a.ends_at
            if s is None:  # now, or the end when that is earlier (a resolved alert)
                s = e if e is not None and e < now else now
            timeout = e is None
            if e is None:
                e = timeout_at
            old = firing.get(fp)
            if old is not None and old.ends <= now:  # ended in memory, not yet expired by the module
                resolve_rows.append(self._resolve_row(old.fp, old.labels, old.ends, now, now))
                resolved.append(fp)
                old = None
            if e <= now:  # a resolved alert: ends the firing one (if any, here or in the database)
                resolve_rows.append(self._resolve_row(fp, a.labels, e, now, NEVER))
                resolved.append(fp)
                continue
            if old is None:
                entry = _Firing(fp, a.labels, a.annotations, a.generator_url, origin, s, e, timeout, now)
                new += 1
            else:
                starts = old.starts if old.starts < s else s
                ends = e
                if not old.timeout and old.ends > e:  # an explicit later end wins over a newer default one
                    ends, timeout = old.ends, False
                old.updated = now
                if (
                    starts == old.starts
                    and a.annotations == old.annotations
                    and a.generator_url == old.url
                    and origin == old.origin
                    and ends >= old.durable
                    and old.durable >= now + max((ends - now) / 2, MIN_AHEAD)
                ):
                    # Only a later end: memory now, the database before the stored end comes near.
                    if ends != old.ends:
                        old.ends, old.timeout = ends, timeout
                        self._push(old)
                    refreshed += 1
                    continue
                entry = _Firing(fp, old.labels, a.annotations, a.generator_url, origin, starts, ends, timeout, now)
                refreshed += 1
            labels_json = _dumps(entry.labels)
            fire_rows.append(
                {
                    "fp": fp,
                    "name": entry.labels.get("alertname", "")[:ALERTNAME_MAX],
                    "origin": origin,
                    "labels": labels_json,
                    "annotations": _dumps(entry.annotations),
                    "url": entry.url,
                    "starts": ts(entry.starts),
                    "ends": ts(entry.ends),
                    "now": sql_now,
                }
            )
            upserted.append(entry)
        if fire_rows or resolve_rows:
            resolve_tr, resolve = self._resolve_tr, self._resolve

            def body(ex: _Exec) -> int:
                ended = 0
                if resolve_rows:  # first: an alert that ended in memory and starts again here ends, then starts
                    ex.many(resolve_tr, resolve_rows)
                    ended = ex.many(resolve, resolve_rows)
                if fire_rows:
                    ex.fire(fire_rows)
                return ended

            ended = await self._write(body, durable=origin not in RESENDING)
            for fp in resolved:
                firing.pop(fp, None)
            for entry in upserted:
                firing[entry.fp] = entry
                self._push(entry)
            self.m_firing.set(len(firing))
            self.kick_incidents()
        else:
            ended = 0
        self.count(origin, "firing", new)
        self.count(origin, "refreshed", refreshed)
        self.count(origin, "resolved", ended)
        return new + ended

    def _resolve_row(
        self, fp: str, labels: Mapping[str, str], at: datetime, now: datetime, cutoff: datetime
    ) -> dict[str, Any]:
        ts = self._ts
        return {
            "fp": fp,
            "name": labels.get("alertname", "")[:ALERTNAME_MAX],
            "at": ts(at),
            "now": ts(now),
            "cutoff": ts(cutoff),
        }

    async def resolve(self, fingerprints: Iterable[str], origin: str, now: datetime) -> int:
        """End the firing alerts with these fingerprints now (PagerDuty ``resolve``); unknown or resolved ones are
        ignored. Returns how many were firing; raises IngestError when the database cannot take it."""
        await self.restore()
        fps = list(dict.fromkeys(fingerprints))
        if not fps:
            return 0
        async with self._lock:
            rows = []
            for fp in fps:
                e = self._firing.get(fp)
                rows.append(self._resolve_row(fp, e.labels if e else {}, now, now, NEVER))
            steps = [(self._resolve_tr, rows), (self._resolve, rows)]
            counts = await self._write(_steps(steps), durable=origin not in RESENDING)
            for fp in fps:
                self._firing.pop(fp, None)
            self.m_firing.set(len(self._firing))
        if counts[1]:
            self.kick_incidents()
        self.count(origin, "resolved", counts[1])
        return counts[1]

    # ------------------------------------------------------------------ the engine module

    async def tick(self, now: datetime) -> bool:
        """Write ends kept in memory whose stored end comes near, resolve alerts whose end passed (firing ->
        resolved at ``ends_at``); True when there was work. Raises IngestError when the database fails."""
        await self.restore()
        async with self._lock:
            flush: dict[str, _Firing] = {}
            expired: dict[str, _Firing] = {}
            soon = now + FLUSH_AHEAD
            heap = self._heap
            while heap and heap[0][0] <= now and len(expired) < EXPIRE_BATCH:
                _, _, fp = heapq.heappop(heap)
                e = self._firing.get(fp)
                if e is None:
                    continue
                if e.ends <= now:
                    expired[fp] = e
                elif e.durable <= soon and e.durable < e.ends:
                    flush[fp] = e
                else:
                    self._push(e)  # a stale heap entry of an alert whose end moved
            if not self.expiring:  # a follower forgets them: the leader resolves them from SQL
                for fp in expired:
                    self._firing.pop(fp, None)
                dropped, expired = bool(expired), {}
                if not flush:
                    self.m_firing.set(len(self._firing))
                    return dropped
            ts = self._ts
            sql_now = ts(now)
            flush_rows = [{"fp": e.fp, "ends": ts(e.ends), "now": sql_now} for e in flush.values()]
            expire_rows = [self._resolve_row(e.fp, e.labels, e.ends, now, now) for e in expired.values()]
            firing = self._firing  # only read by the body (in the writer's thread) while this lock is held

            def body(ex: _Exec) -> tuple[int, list[tuple[str, str, datetime]], int]:
                extended = ex.many(self._extend, flush_rows)
                if not self.expiring:
                    return extended, [], 0
                # Rows firing past their stored end that memory did not name (written by another instance, or
                # with a later end in memory that is not written yet).
                more, later = [], []
                for fp, labels, origin, ends in ex.fetch(_SELECT_EXPIRED, {"now": sql_now, "n": EXPIRE_BATCH}):
                    mem = firing.get(fp)
                    if fp in expired:
                        continue
                    if mem is not None and mem.ends > now:
                        later.append({"fp": fp, "ends": ts(mem.ends), "now": sql_now})
                        continue
                    labels = json.loads(labels) if isinstance(labels, str) else labels
                    ends = _db_time(ends)
                    more.append((fp, origin, ends))
                    expire_rows.append(self._resolve_row(fp, labels, ends, now, now))
                extended += ex.many(self._extend, later)
                ex.many(self._resolve_tr, expire_rows)
                return extended, more, ex.many(self._resolve, expire_rows)

            if not flush and not expired:
                # Nothing due in memory: only look for rows of other instances (and checkpoint) now and then.
                if self.clock.monotonic() < self._next_scan:
                    return False
                await self._writer.checkpoint()
            self._next_scan = self.clock.monotonic() + SCAN_EVERY
            extended, more, ended = await self._write(body, durable=False)
            if extended < len(flush):
                # Some were resolved meanwhile (through another instance): forget them; a later post of one that
                # still fires finds it in the database again.
                for fp in flush:
                    self._firing.pop(fp, None)
            else:
                for e in flush.values():
                    e.durable = e.ends
                    self._push(e)
            for fp in itertools.chain(expired, (m[0] for m in more)):
                self._firing.pop(fp, None)
            self.m_firing.set(len(self._firing))
        if ended:
            for e in expired.values():
                self.count(e.origin, "expired")
            for _, origin, _ in more:
                self.count(origin, "expired")
            self.kick_incidents()
            log.info("ingested_alerts_expired", count=ended)
        return bool(flush or expired or more)

    async def sleep_hint(self, now: datetime) -> float | None:
        """Seconds until the next alert ends or has a newer end to write (None: nothing in memory)."""
        if not self._heap:
            return None
        return max(0.0, (self._heap[0][0] - now).total_seconds())

    async def close(self) -> None:
        """Close the dedicated database connection (SQLite); never fails."""
        try:
            await self._writer.close()
        except Exception:  # pragma: no cover - closing is best effort
            log.exception("ingest_close_failed")
