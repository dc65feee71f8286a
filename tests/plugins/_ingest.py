"""The real Daemon in-process for the push and heartbeat tests: config text in, an HTTP client and tokens out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from fsincident import config as config_mod
from fsincident.app import Daemon
from tests.helpers import free_port, write_config


@dataclass
class Running:
    daemon: Daemon
    http: aiohttp.ClientSession
    base: str
    tokens: dict[str, str] = field(default_factory=dict)

    async def call(
        self,
        method: str,
        path: str,
        *,
        scope: str | None = "ingest",
        json: Any = None,
        data: bytes | str | None = None,
        content_type: str | None = None,
    ) -> tuple[int, Any]:
        """One request with the token of ``scope`` (None: no token); returns (status, JSON body or text)."""
        headers = {}
        if scope is not None:
            headers["Authorization"] = f"Bearer {self.tokens[scope]}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        async with self.http.request(method, self.base + path, json=json, data=data, headers=headers) as r:
            raw = await r.read()
            try:
                return r.status, await r.json(content_type=None) if raw else None
            except ValueError:
                return r.status, raw.decode(errors="replace")

    async def rule(self, name: str) -> dict[str, Any]:
        status, body = await self.call("GET", "/api/v1/rules", scope="read")
        assert status == 200, body
        for g in body["groups"]:
            for r in g["rules"]:
                if r["name"] == name:
                    return r
        raise AssertionError(f"no rule {name!r}")

    async def wait_rule(self, name: str, pred: Any, timeout: float = 15.0) -> dict[str, Any]:
        """Poll ``GET /api/v1/rules`` until ``pred(rule)``; AssertionError with the last state on timeout."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = await self.rule(name)
            if pred(last):
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"rule {name} condition not met in {timeout}s; last: {last}")


async def wait_received(receiver: Any, pred: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Like Receiver.wait_for, without blocking the event loop the in-process daemon runs on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = list(receiver.received)
        if pred(got):
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"receiver condition not met in {timeout}s; got {[m.get('title') for m in receiver.received]}")


@asynccontextmanager
async def running(directory: Path, main: str, rules: dict[str, str] | None = None) -> AsyncIterator[Running]:
    """Start ``fsincident.Daemon`` on ``main`` (``{port}`` and ``{db}`` filled in) with read/ingest/admin tokens."""
    port = free_port()
    text = main.replace("{port}", str(port)).replace("{db}", f"sqlite:///{directory}/state.db")
    cfg = write_config(directory / "cfg", text, rules)
    daemon = Daemon(config_mod.load(cfg))
    await daemon.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            r = Running(daemon, http, f"http://127.0.0.1:{port}")
            now = daemon.clock.now()
            for scope in ("read", "ingest", "admin"):
                name = f"t-{scope}-{time.monotonic_ns()}"
                r.tokens[scope] = await daemon.store.create_token(name, [scope], now)
            yield r
    finally:
        await daemon.stop(drain_seconds=2)
