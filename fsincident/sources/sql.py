"""``type: sql`` — a read-only SQL query per interval (SQLite or PostgreSQL); one series per row and value column."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fsincident.core import Labels, Sample, SourceError, valid_label_name
from fsincident.plugins import SourceOptions
from fsincident.sources.httputil import url_secrets

MAX_ROWS = 100_000
_METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"


class SqlOptions(SourceOptions):
    url: str = Field(min_length=1)
    """``sqlite:///PATH`` or ``postgresql://USER:PASSWORD@HOST/DB``."""
    query: str = Field(min_length=1)
    labels: list[str] = Field(default_factory=list)
    """Columns whose values become labels."""
    values: list[str] | None = None
    """Columns whose values become series (default: every column that is not a label)."""
    metric_prefix: str = Field("", pattern=r"^([a-zA-Z_:][a-zA-Z0-9_:]*)?$")


def _backend(url: str) -> str | None:
    """``sqlite`` or ``postgresql`` for a supported URL, else None; raises ValueError if it does not parse."""
    u = make_url(url)
    name = u.get_backend_name()
    if name == "sqlite":
        return "sqlite" if u.drivername in ("sqlite", "sqlite+aiosqlite") else None
    if name == "postgresql" or u.drivername.split("+")[0] == "postgres":
        return "postgresql" if u.drivername in ("postgresql", "postgres", "postgresql+asyncpg") else None
    return None


class SqlSource:
    """Runs ``query`` in a read-only transaction with a statement timeout; the engine lives as long as the source."""

    Options: ClassVar[type[SourceOptions]] = SqlOptions

    def __init__(self, options: SqlOptions, **_: Any):
        self.options = options
        self._secrets = self.secrets_of(options)
        self._backend = _backend(options.url)
        self._engine: AsyncEngine | None = None
        self._deadline = math.inf  # SQLite: the progress handler interrupts the query after this monotonic time

    @staticmethod
    def validate_options(options: SqlOptions) -> list[tuple[tuple[Any, ...], str]]:
        out: list[tuple[tuple[Any, ...], str]] = []
        try:
            backend = _backend(options.url)
        except (ValueError, sa.exc.ArgumentError):
            out.append((("url",), "not a database URL; use sqlite:///PATH or postgresql://USER@HOST/DB"))
        else:
            if backend is None:
                out.append((("url",), "unsupported database; use sqlite:///PATH or postgresql://USER@HOST/DB"))
            elif backend == "sqlite" and make_url(options.url).database in (None, "", ":memory:"):
                out.append((("url",), "an in-memory SQLite database has nothing to read; give a file path"))
        for i, name in enumerate(options.labels):
            if not valid_label_name(name):
                out.append((("labels", i), f"{name!r} is not a valid label name; alias the column (AS name)"))
        for i, name in enumerate(options.values or []):
            if not re.match(_METRIC_NAME, options.metric_prefix + name):
                out.append((("values", i), f"{options.metric_prefix + name!r} is not a valid metric name"))
            if name in options.labels:
                out.append((("values", i), f"column {name!r} is also in labels"))
        if options.values is not None and not options.values:
            out.append((("values",), "list at least one value column, or leave values out"))
        return out

    @staticmethod
    def secrets_of(options: SqlOptions) -> list[str]:
        """The password of the database URL; the log redactor hides it."""
        return url_secrets(options.url)

    def _scrub(self, text: str) -> str:
        for s in sorted(self._secrets, key=len, reverse=True):
            if len(s) >= 4:
                text = text.replace(s, "***")
        return text

    def _make_engine(self) -> AsyncEngine:
        timeout = self.options.timeout.total_seconds()
        u = make_url(self.options.url)
        if self._backend == "sqlite":
            # Read-only at two levels: the file is opened mode=ro, and query_only refuses writes to attached files.
            ro = URL.create(
                "sqlite+aiosqlite", database=f"file:{quote(u.database or '')}", query={"mode": "ro", "uri": "true"}
            )
            engine = create_async_engine(ro, connect_args={"timeout": timeout})

            @event.listens_for(engine.sync_engine, "connect")
            def _connect(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA query_only = ON")
                cur.close()

            return engine
        ms = str(max(1, int(timeout * 1000)))
        return create_async_engine(
            u.set(drivername="postgresql+asyncpg"),
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            connect_args={
                "timeout": timeout,
                "command_timeout": timeout + 0.5,  # the server's statement_timeout fires first
                "server_settings": {
                    "default_transaction_read_only": "on",
                    "statement_timeout": ms,
                    "application_name": f"fsincident source {self.options.name}"[:63],
                },
            },
        )

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    async def _rows(self) -> tuple[list[str], list[Any]]:
        if self._engine is None:
            self._engine = self._make_engine()
        async with self._engine.connect() as conn:
            if self._backend == "sqlite":
                raw = await conn.get_raw_connection()
                await raw.driver_connection.set_progress_handler(self._progress, 1000)
                self._deadline = time.monotonic() + self.options.timeout.total_seconds()
            else:
                conn = await conn.execution_options(postgresql_readonly=True)
            # Nothing is ever committed: leaving the block rolls the transaction back.
            try:
                result = await conn.exec_driver_sql(self.options.query)  # as written: no bind-parameter parsing
                if not result.returns_rows:
                    raise SourceError("the query returned no rows (is it a SELECT?)")
                columns = list(result.keys())
                rows = result.fetchmany(MAX_ROWS + 1)
            finally:
                self._deadline = math.inf
        return columns, rows

    async def collect(self, now: datetime) -> list[Sample]:
        """Run the query once; raises SourceError for a database error, a timeout, a write, or a bad column."""
        try:
            columns, rows = await self._rows()
        except SourceError:
            raise
        except sa.exc.DBAPIError as e:
            raise SourceError(self._scrub(self._db_message(e))) from None
        except (sa.exc.SQLAlchemyError, OSError, TimeoutError) as e:
            raise SourceError(self._scrub(f"{type(e).__name__}: {e}")) from None
        if len(rows) > MAX_ROWS:
            raise SourceError(f"the query returned more than {MAX_ROWS} rows")
        return self._samples(columns, rows)

    def _db_message(self, e: sa.exc.DBAPIError) -> str:
        orig = e.orig
        text = str(orig) if orig is not None else str(e)
        low = text.lower()
        if "statement timeout" in low or (self._backend == "sqlite" and low.strip() == "interrupted"):
            return f"query timed out after {self.options.timeout.total_seconds():g}s"
        if "read-only transaction" in low or "readonly database" in low:
            return f"query refused: the source is read-only ({text.strip()})"
        return f"query failed: {text.strip()}"

    def _samples(self, columns: list[str], rows: list[Any]) -> list[Sample]:
        label_cols = self.options.labels
        missing = [c for c in label_cols + (self.options.values or []) if c not in columns]
        if missing:
            raise SourceError(f"column(s) {', '.join(missing)} not in the query's columns: {', '.join(columns)}")
        if self.options.values is not None:
            value_cols = list(self.options.values)
        else:
            value_cols = [c for c in columns if c not in label_cols]
            for c in value_cols:
                if not re.match(_METRIC_NAME, self.options.metric_prefix + c):
                    raise SourceError(f"column {c!r} is not a valid metric name; alias it (AS name)")
        if not value_cols:
            raise SourceError("the query has no value columns (every column is a label)")
        index = {c: i for i, c in enumerate(columns)}
        out: list[Sample] = []
        seen: dict[Labels, int] = {}
        for n, row in enumerate(rows, 1):
            labels = {"job": self.options.name}
            for c in label_cols:
                labels[c] = _label(row[index[c]])
            lab = Labels(labels)
            if lab in seen:
                raise SourceError(
                    f"rows {seen[lab]} and {n} have the same labels {labels}; group by every label column"
                )
            seen[lab] = n
            for c in value_cols:
                v = row[index[c]]
                if v is None:
                    continue
                out.append(Sample(self.options.metric_prefix + c, lab, _number(c, v)))
        return out

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


def _label(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime | date):
        return v.isoformat()
    return str(v)


def _number(column: str, v: Any) -> float:
    """A value cell as a float: numbers, booleans, timestamps (Unix seconds), intervals (seconds).

    Raises SourceError naming the column for anything else.
    """
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float | Decimal):
        return float(v)
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
    if isinstance(v, timedelta):
        return v.total_seconds()
    shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:40] + "…"
    raise SourceError(
        f"column {column!r} has a non-numeric value {shown} ({type(v).__name__}); CAST it or list it in labels"
    )
