"""``type: apprise`` (the default channel kind) — one destination per apprise URL."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import apprise
from pydantic import Field

from fsincident.appriseurl import check_apprise_url, redact, secret_parts
from fsincident.core import NotifyError
from fsincident.plugins import ChannelOptions, Message

_HTTP_ERROR = re.compile(r"error=(\d{3})")
_NOTIFY_TYPE = {
    "trigger": apprise.NotifyType.FAILURE,
    "acknowledge": apprise.NotifyType.WARNING,
    "resolve": apprise.NotifyType.SUCCESS,
}
# A refusal a retry cannot fix; 408, 425 and 429 are worth another try.
_RETRYABLE_4XX = {408, 425, 429}


class AppriseOptions(ChannelOptions):
    urls: list[str] = Field(min_length=1)


class AppriseNotifier:
    """Sends through apprise; FAILURE/PARTIAL/TIMEOUT are retryable unless the peer refused with a 4xx."""

    Options: ClassVar[type[ChannelOptions]] = AppriseOptions

    def __init__(self, options: AppriseOptions, **_: Any):
        self.options = options
        self._apprise: dict[int, apprise.Apprise] = {}

    @staticmethod
    def validate_options(options: AppriseOptions) -> list[tuple[tuple[Any, ...], str]]:
        out = []
        for i, url in enumerate(options.urls):
            msg = check_apprise_url(url)
            if msg:
                out.append((("urls", i), msg))
        return out

    def destinations(self) -> list[str]:
        return [redact(u) for u in self.options.urls]

    def secrets(self) -> list[str]:
        return [p for u in self.options.urls for p in secret_parts(u)]

    async def send(self, index: int, message: Message, timeout: float) -> None:
        if not 0 <= index < len(self.options.urls):
            raise NotifyError(f"channel {self.options.name!r} has no destination #{index}", permanent=True)
        a = self._apprise.get(index)
        if a is None:
            a = apprise.Apprise()
            if not a.add(self.options.urls[index]):
                raise NotifyError(f"invalid apprise URL {redact(self.options.urls[index])}", permanent=True)
            self._apprise[index] = a
        res = await a.async_notify(
            title=message.title,
            body=message.body,
            notify_type=_NOTIFY_TYPE.get(message.kind, apprise.NotifyType.INFO),
            timeout=timeout,
        )
        status = res.status
        if status == apprise.AppriseResultStatus.SUCCESS:
            return
        logs = " ".join(str(entry) for r in res.results for entry in r.logs())
        if status == apprise.AppriseResultStatus.NOMATCH:
            raise NotifyError("no apprise service matched the URL", permanent=True)
        if status == apprise.AppriseResultStatus.TIMEOUT:
            raise NotifyError(f"timed out after {timeout:g}s", permanent=False)
        codes = [int(c) for c in _HTTP_ERROR.findall(logs)]
        permanent = bool(codes) and all(400 <= c < 500 and c not in _RETRYABLE_4XX for c in codes)
        detail = f"HTTP {codes[-1]}" if codes else "delivery failed"
        if "Connection error" in logs:
            detail = "connection error"
        raise NotifyError(f"{status.name.lower()}: {detail}", permanent=permanent)
