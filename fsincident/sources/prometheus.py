"""``type: prometheus`` — instant PromQL queries against a Prometheus-compatible HTTP API (``/api/v1/query``)."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import AnyHttpUrl, Field

from fsincident.core import Labels, Sample, SourceError
from fsincident.plugins import Options, SourceOptions
from fsincident.sources.httputil import (
    basic_auth_header,
    header_secrets,
    read_limited,
    split_userinfo,
    url_secrets,
)

MAX_BODY = 64 * 1024 * 1024


class BasicAuth(Options):
    username: str = Field(min_length=1, pattern=r"^[^:]*$")
    password: str


class PrometheusOptions(SourceOptions):
    url: AnyHttpUrl
    """Base URL of the API (``/api/v1/query`` is appended), e.g. ``http://127.0.0.1:9090``."""
    basic_auth: BasicAuth | None = None
    bearer_token: str | None = Field(None, min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    method: Literal["GET", "POST"] = "GET"
    """``POST`` sends the query form-encoded (for queries too long for a URL)."""


class PrometheusSource:
    """Runs rules' ``query:`` as instant queries; ``collect`` only checks that the API answers (for ``up``)."""

    Options: ClassVar[type[SourceOptions]] = PrometheusOptions
    supports_query: ClassVar[bool] = True

    def __init__(self, options: PrometheusOptions, **_: Any):
        self.options = options
        base, self._url_auth = split_userinfo(str(options.url).rstrip("/"))
        self._base = base
        self._endpoint = base + "/api/v1/query"
        self._shown = base
        self._secrets = self.secrets_of(options)
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def validate_options(options: PrometheusOptions) -> list[tuple[tuple[Any, ...], str]]:
        out: list[tuple[tuple[Any, ...], str]] = []
        if options.url.query or options.url.fragment:
            out.append((("url",), "give the API's base URL, without a query string or fragment"))
        if options.basic_auth is not None and options.bearer_token is not None:
            out.append((("bearer_token",), "use either basic_auth or bearer_token, not both"))
        if (options.basic_auth is not None or options.bearer_token is not None) and any(
            k.lower() == "authorization" for k in options.headers
        ):
            out.append((("headers",), "an Authorization header conflicts with basic_auth/bearer_token"))
        return out

    @staticmethod
    def secrets_of(options: PrometheusOptions) -> list[str]:
        """The password, token and credential headers of ``options``; the log redactor hides them."""
        out = url_secrets(str(options.url)) + header_secrets(options.headers)
        if options.basic_auth is not None:
            out.append(options.basic_auth.password)
            header = basic_auth_header(options.basic_auth.username, options.basic_auth.password)
            out += [header, header.partition(" ")[2]]
        if options.bearer_token:
            out.append(options.bearer_token)
        return [s for s in out if s]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Accept": "application/json", **self.options.headers}
            if self._url_auth is not None:
                headers["Authorization"] = self._url_auth
            if self.options.basic_auth is not None:
                headers["Authorization"] = basic_auth_header(
                    self.options.basic_auth.username, self.options.basic_auth.password
                )
            if self.options.bearer_token:
                headers["Authorization"] = f"Bearer {self.options.bearer_token}"
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.options.timeout.total_seconds()), headers=headers
            )
        return self._session

    def _scrub(self, text: str) -> str:
        for s in sorted(self._secrets, key=len, reverse=True):
            if len(s) >= 4:
                text = text.replace(s, "***")
        return text

    async def query(self, text: str, now: datetime) -> list[Sample]:
        """Evaluate PromQL ``text`` at ``now``: one ``value`` sample per vector element, or one for a scalar.

        Raises SourceError for an unreachable API, an HTTP or PromQL error, a timeout, or a matrix/string result.
        """
        timeout = self.options.timeout.total_seconds()
        params = {"query": text, "time": f"{now.timestamp():.3f}", "timeout": f"{timeout:g}"}
        return _samples(await self._call(self._endpoint, params, "query"))

    async def query_range(
        self, text: str, start: datetime, end: datetime, step: float
    ) -> list[tuple[Labels, list[tuple[float, float]]]]:
        """Evaluate PromQL ``text`` from ``start`` to ``end`` every ``step`` seconds (``/api/v1/query_range``): per
        series its labels (``__name__`` dropped) and chronological ``(unix seconds, value)`` points, NaN kept.

        Raises SourceError like :meth:`query`, and for a result that is not a matrix.
        """
        timeout = self.options.timeout.total_seconds()
        params = {
            "query": text,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{step:g}",
            "timeout": f"{timeout:g}",
        }
        return _matrix(await self._call(self._endpoint + "_range", params, "range query"))

    async def label_values(self, label: str) -> list[str]:
        """The values of ``label`` the peer knows (``/api/v1/label/<label>/values``, e.g. ``__name__`` for the
        metric names); raises SourceError like :meth:`query`."""
        data = await self._call(self._base + f"/api/v1/label/{label}/values", {}, "label query", method="GET")
        if not isinstance(data, list):
            raise SourceError("label query answer has no list of values")
        return [str(v) for v in data]

    async def _call(self, endpoint: str, params: dict[str, str], what: str, method: str | None = None) -> Any:
        """The ``data`` of a successful API answer; raises SourceError naming the problem, never a secret."""
        timeout = self.options.timeout.total_seconds()
        session = self._client()
        try:
            if (method or self.options.method) == "POST":
                req = session.post(endpoint, data=params)
            else:
                req = session.get(endpoint, params=params)
            async with req as resp:
                raw = await read_limited(resp, MAX_BODY)
                status, reason, ctype = resp.status, resp.reason, resp.content_type
        except TimeoutError:
            raise SourceError(f"{what} to {self._shown} timed out after {timeout:g}s") from None
        except aiohttp.ClientError as e:
            raise SourceError(self._scrub(f"{what} to {self._shown} failed: {e}")) from None
        if len(raw) > MAX_BODY:
            raise SourceError(f"{what} to {self._shown} returned more than {MAX_BODY} bytes")
        try:
            # A big answer is decoded off the event loop.
            body = json.loads(raw) if len(raw) < 1024 * 1024 else await asyncio.to_thread(json.loads, raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # Prometheus answers 400/422/503 with a JSON error; anything else is a proxy or a wrong URL.
            shown = f"HTTP {status} {reason or ''}".strip() if status != 200 else f"a non-JSON answer ({ctype})"
            raise SourceError(f"{what} to {self._shown} returned {shown}")
        if body.get("status") != "success":
            etype = body.get("errorType") or f"HTTP {status}"
            raise SourceError(self._scrub(f"{what} failed: {etype}: {body.get('error') or 'no error message'}"))
        return body.get("data")

    async def collect(self, now: datetime) -> list[Sample]:
        """Check that the API evaluates a trivial query; no samples (the source's ``up`` tells the rest).

        Raises SourceError when it does not.
        """
        await self.query("1", now)
        return []

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _samples(data: Any) -> list[Sample]:
    """Samples of an instant-query ``data`` object; raises SourceError for other result types."""
    if not isinstance(data, dict):
        raise SourceError("query answer has no data")
    rtype = data.get("resultType")
    result = data.get("result")
    try:
        if rtype == "scalar":
            value = float(result[1])
            return [] if math.isnan(value) else [Sample("value", Labels(), value)]
        if rtype == "vector":
            out: list[Sample] = []
            seen: set[Labels] = set()
            for item in result:
                metric = {str(k): str(v) for k, v in (item.get("metric") or {}).items() if k != "__name__"}
                labels = Labels(metric)
                if labels in seen:
                    raise SourceError(
                        f"query result has two series with the labels {dict(metric)} once __name__ is dropped; "
                        "aggregate or relabel them apart"
                    )
                seen.add(labels)
                value = float(item["value"][1])
                if not math.isnan(value):
                    out.append(Sample("value", labels, value))
            return out
    except (TypeError, KeyError, IndexError, ValueError, AttributeError) as e:
        raise SourceError(f"malformed {rtype} result: {type(e).__name__}: {e}") from None
    raise SourceError(f"query returned a {rtype} result; rules need an instant vector or a scalar")


def _matrix(data: Any) -> list[tuple[Labels, list[tuple[float, float]]]]:
    """Series of a range-query ``data`` object; raises SourceError for other result types."""
    if not isinstance(data, dict):
        raise SourceError("range query answer has no data")
    rtype = data.get("resultType")
    if rtype != "matrix":
        raise SourceError(f"range query returned a {rtype} result, not a matrix")
    try:
        out: list[tuple[Labels, list[tuple[float, float]]]] = []
        for item in data.get("result") or []:
            labels = Labels({str(k): str(v) for k, v in (item.get("metric") or {}).items() if k != "__name__"})
            out.append((labels, [(float(t), float(v)) for t, v in item.get("values") or []]))
        return out
    except (TypeError, KeyError, IndexError, ValueError, AttributeError) as e:
        raise SourceError(f"malformed matrix result: {type(e).__name__}: {e}") from None
