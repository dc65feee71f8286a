"""``type: scrape`` — read a Prometheus text-format endpoint (node_exporter, any /metrics)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from pydantic import AnyHttpUrl, Field

from fsincident.core import Labels, Sample, SourceError
from fsincident.plugins import LabelMap, SourceOptions
from fsincident.sources.httputil import display_url, header_secrets, read_limited, url_secrets

MAX_BODY = 64 * 1024 * 1024


class ScrapeOptions(SourceOptions):
    url: AnyHttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    labels: LabelMap = Field(default_factory=dict)
    """Extra labels added to every series (``instance`` and ``job`` are added unless present)."""


def parse_exposition(text: str, extra: dict[str, str] | None = None) -> list[Sample]:
    """Parse Prometheus text format into samples (histogram/summary parts become their own series).

    Raises SourceError naming the problem when the text is not valid exposition format.
    """
    extra = extra or {}
    out: list[Sample] = []
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = dict(extra)
                labels.update(s.labels)
                out.append(Sample(s.name, Labels(labels), float(s.value)))
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise SourceError(f"invalid exposition format: {e}") from None
    return out


class ScrapeSource:
    """Fetches ``url`` and parses its samples, with the source's timeout."""

    Options: ClassVar[type[SourceOptions]] = ScrapeOptions

    def __init__(self, options: ScrapeOptions, **_: Any):
        self.options = options
        self._session: aiohttp.ClientSession | None = None
        self._shown = display_url(str(options.url))  # in errors: never the URL's password
        # ``instance`` is host:port, never the user info (labels reach pages, the API and other systems).
        self._extra = {"instance": urlsplit(self._shown).netloc, "job": options.name, **options.labels}

    @staticmethod
    def secrets_of(options: ScrapeOptions) -> list[str]:
        """Credentials in the URL and in headers such as ``Authorization``; the log redactor hides them."""
        return [s for s in url_secrets(str(options.url)) + header_secrets(options.headers) if s]

    async def collect(self, now: datetime) -> list[Sample]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.options.timeout.total_seconds()),
                headers={"Accept": "text/plain;version=0.0.4", **self.options.headers},
            )
        try:
            async with self._session.get(str(self.options.url)) as resp:
                if resp.status != 200:
                    raise SourceError(f"scrape of {self._shown} returned HTTP {resp.status}")
                raw = await read_limited(resp, MAX_BODY)
        except TimeoutError:
            raise SourceError(f"scrape of {self._shown} timed out after {self.options.timeout}") from None
        except aiohttp.ClientError as e:
            raise SourceError(f"scrape of {self._shown} failed: {e}") from None
        if len(raw) > MAX_BODY:
            raise SourceError(f"scrape of {self._shown} returned more than {MAX_BODY} bytes")
        samples = parse_exposition(raw.decode("utf-8", errors="replace"), self._extra)
        return [s for s in samples if not math.isnan(s.value)]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
