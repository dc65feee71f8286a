"""``type: http`` — synthetic HTTP(S) checks with blackbox_exporter's series names.

A failed probe (refused, timed out, wrong status, body not matching, bad certificate) is not a
source error: it is ``probe_success 0``, so rules can alert on it. Only misconfiguration that
shows at run time (an unreadable ``ca_file``) fails the collection.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

import aiohttp
from pydantic import AnyHttpUrl, Field

from fsincident.core import Labels, Sample, SourceError
from fsincident.obs import get_logger
from fsincident.plugins import SourceOptions
from fsincident.sources.httputil import header_secrets, read_limited, split_userinfo, url_secrets

log = get_logger("fsincident.sources.http")

MAX_BODY = 4 * 1024 * 1024
"""The body is read (and ``body_regex`` searched) up to this many bytes."""

Status = Annotated[int, Field(ge=100, le=599)]


class HttpOptions(SourceOptions):
    url: AnyHttpUrl
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    expect_status: list[Status] | None = Field(None, min_length=1)
    """Statuses that count as success; default any 2xx."""
    body_regex: str | None = None
    """A Python regular expression searched in the body; no match fails the probe."""
    tls_verify: bool = True
    ca_file: str | None = None
    """PEM file of the CAs to trust instead of the system's (for private CAs and self-signed servers)."""
    follow_redirects: bool = True


class HttpSource:
    """One HTTP request per collection on a fresh connection; reports success, status, duration and certificate."""

    Options: ClassVar[type[SourceOptions]] = HttpOptions

    def __init__(self, options: HttpOptions, **_: Any):
        self.options = options
        self._url, self._url_auth = split_userinfo(str(options.url))
        self._labels = Labels({"instance": self._url, "job": options.name})
        self._regex = re.compile(options.body_regex) if options.body_regex is not None else None
        self._session: aiohttp.ClientSession | None = None
        self._peer_cert: list[bytes] = []  # DER of the last handshake's server certificate
        self._last_failure: str | None = None

    @staticmethod
    def validate_options(options: HttpOptions) -> list[tuple[tuple[Any, ...], str]]:
        out: list[tuple[tuple[Any, ...], str]] = []
        if options.body_regex is not None:
            try:
                re.compile(options.body_regex)
            except re.error as e:
                out.append((("body_regex",), f"invalid regular expression: {e}"))
        if options.ca_file is not None:
            if not options.tls_verify:
                out.append((("ca_file",), "ca_file has no effect with tls_verify: false"))
            else:
                try:
                    ssl.create_default_context(cafile=options.ca_file)
                except (OSError, ssl.SSLError) as e:
                    out.append((("ca_file",), f"cannot load CA certificates from {options.ca_file}: {e}"))
        if options.body is not None and options.method in ("GET", "HEAD", "OPTIONS"):
            out.append((("body",), f"a {options.method} request has no body; use method: POST or PUT"))
        return out

    @staticmethod
    def secrets_of(options: HttpOptions) -> list[str]:
        """The URL's password and credential headers of ``options``; the log redactor hides them."""
        return [s for s in url_secrets(str(options.url)) + header_secrets(options.headers) if s]

    def _ssl_context(self) -> ssl.SSLContext:
        """The TLS settings; raises SourceError when ``ca_file`` cannot be read."""
        if self.options.tls_verify:
            try:
                ctx = ssl.create_default_context(cafile=self.options.ca_file)
            except (OSError, ssl.SSLError) as e:
                raise SourceError(f"cannot load CA certificates from {self.options.ca_file}: {e}") from None
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        sink = self._peer_cert

        class _Capture(ssl.SSLObject):
            # asyncio wraps every TLS connection of this context in this class: keep the server's certificate.
            def do_handshake(self) -> None:
                super().do_handshake()
                der = self.getpeercert(binary_form=True)
                if der:
                    sink[:] = [der]

        ctx.sslobject_class = _Capture
        return ctx

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            ctx = await asyncio.to_thread(self._ssl_context)  # reads the CA bundle: off the event loop
            self._session = aiohttp.ClientSession(
                # A fresh connection per probe: the duration includes connect and TLS, and the certificate is current.
                connector=aiohttp.TCPConnector(ssl=ctx, force_close=True),
                timeout=aiohttp.ClientTimeout(total=self.options.timeout.total_seconds()),
                headers={"Authorization": self._url_auth, **self.options.headers}
                if self._url_auth
                else self.options.headers,
            )
        return self._session

    async def collect(self, now: datetime) -> list[Sample]:
        """Probe the URL once; a failed probe is ``probe_success 0``. Raises SourceError only for bad settings."""
        session = await self._client()
        self._peer_cert.clear()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        status = 0
        raw = b""
        failure: str | None = None
        try:
            async with session.request(
                self.options.method,
                self._url,
                data=self.options.body.encode() if self.options.body is not None else None,
                allow_redirects=self.options.follow_redirects,
            ) as resp:
                status = resp.status
                raw = await read_limited(resp, MAX_BODY)
        except TimeoutError:
            failure = f"timed out after {self.options.timeout.total_seconds():g}s"
        except aiohttp.ClientError as e:
            failure = f"{type(e).__name__}: {e}"
        duration = loop.time() - t0
        if failure is None:
            expected = self.options.expect_status
            if (expected is None and not 200 <= status <= 299) or (expected is not None and status not in expected):
                failure = f"HTTP {status} is not an expected status"
            elif self._regex is not None:
                text = raw[:MAX_BODY].decode("utf-8", errors="replace")
                # A pathological regex must not stall the event loop.
                if await asyncio.to_thread(self._regex.search, text) is None:
                    failure = "body does not match body_regex"
        if failure != self._last_failure:
            if failure is not None:
                log.info("probe_failed", source=self.options.name, url=self._labels["instance"], error=failure)
            elif self._last_failure is not None:
                log.info("probe_recovered", source=self.options.name, url=self._labels["instance"])
            self._last_failure = failure
        lab = self._labels
        out = [
            Sample("probe_success", lab, 0.0 if failure else 1.0),
            Sample("probe_http_status_code", lab, float(status)),
            Sample("probe_duration_seconds", lab, duration),
        ]
        if self._peer_cert:
            try:
                expiry = cert_not_after(self._peer_cert[0])
            except ValueError as e:
                log.warning("probe_certificate_unreadable", source=self.options.name, error=str(e))
            else:
                out.append(Sample("probe_ssl_earliest_cert_expiry", lab, expiry))
                out.append(Sample("probe_ssl_cert_days_left", lab, (expiry - now.timestamp()) / 86400))
        return out

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``pos``; raises ValueError if truncated."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def cert_not_after(der: bytes) -> float:
    """The ``notAfter`` of a DER X.509 certificate as a Unix timestamp; raises ValueError if it cannot be read."""
    tag, start, _ = _tlv(der, 0)  # Certificate ::= SEQUENCE
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, pos, _ = _tlv(der, start)  # tbsCertificate ::= SEQUENCE
    if tag != 0x30:
        raise ValueError("not a certificate")
    tag, _, end = _tlv(der, pos)
    if tag == 0xA0:  # [0] version (optional)
        pos = end
    for _ in range(3):  # serialNumber, signature, issuer
        _, _, pos = _tlv(der, pos)
    tag, pos, _ = _tlv(der, pos)  # validity ::= SEQUENCE { notBefore, notAfter }
    if tag != 0x30:
        raise ValueError("no validity in certificate")
    _, _, pos = _tlv(der, pos)
    tag, start, end = _tlv(der, pos)
    text = der[start:end].decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ (RFC 5280: YY < 50 is 20YY)
        year = int(text[:2])
        text = f"{2000 + year if year < 50 else 1900 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("notAfter is not a time")
    if not text.endswith("Z") or len(text) != 15:
        raise ValueError(f"unsupported certificate time {text!r}")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC).timestamp()
