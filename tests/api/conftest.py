"""The real Daemon, in-process, on a free loopback port with a SQLite file; an aiohttp client against it."""

from __future__ import annotations

import asyncio
import itertools
import json as jsonlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from fsincident import config as config_mod
from fsincident.app import Daemon
from fsincident.core import Clock, Labels
from fsincident.store.tables import AlertTransition
from tests.helpers import Exposition, Receiver, free_port, write_config

_serial = itertools.count(1)


@dataclass
class Api:
    """A running daemon, a client session and one token per scope."""

    daemon: Daemon
    http: aiohttp.ClientSession
    base: str
    exposition: Exposition
    receiver: Receiver
    tokens: dict[str, str] = field(default_factory=dict)

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        scope: str | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        """One request; returns (status, decoded JSON body or raw text, headers)."""
        hdrs = dict(headers or {})
        secret = token if token is not None else self.tokens.get(scope) if scope else None
        if secret is not None:
            hdrs["Authorization"] = f"Bearer {secret}"
        url = path if path.startswith("http") else self.base + path
        async with self.http.request(method, url, json=json, data=data, headers=hdrs) as r:
            raw = await r.read()
            try:
                body = await r.json(content_type=None) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            return r.status, body, r.headers

    async def incident(self, state: str = "firing", **labels: str) -> int:
        """Queue an alert transition as evaluation would, kick the incidents stage, return the incident id."""
        [iid] = await self.incidents(1, state, **labels)
        return iid

    async def incidents(self, n: int, state: str = "firing", **labels: str) -> list[int]:
        """``n`` new incidents (one alert series each), created by the incidents stage of the daemon."""
        series = [{"alertname": "ApiTest", "serial": str(next(_serial)), **labels} for _ in range(n)]
        now = self.daemon.clock.now()
        async with self.daemon.store.session() as s:
            for lab in series:
                s.add(
                    AlertTransition(
                        fingerprint=Labels(lab).fingerprint,
                        alertname=lab["alertname"],
                        origin="test",
                        labels=lab,
                        annotations={},
                        value=1.0,
                        state=state,
                        at=now,
                    )
                )
        self.daemon.engine.kick("incidents")
        wanted = {lab["serial"] for lab in series}
        for _ in range(250):
            found = {inc["labels"].get("serial"): inc["id"] for inc in await self.daemon.incidents.list(limit=n + 50)}
            if wanted <= set(found):
                return [found[lab["serial"]] for lab in series]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no incidents for {series}")

    async def raw(self, request: bytes) -> tuple[int, Any]:
        """Send bytes no well-behaved client would send; returns (status, JSON body or None)."""
        host, port = self.base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(request)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        try:
            return status, jsonlib.loads(body)
        except ValueError:
            return status, None

    async def resolved_incident(self) -> int:
        iid = await self.incident()
        status, body, _ = await self.call("POST", f"/api/v1/incidents/{iid}/resolve", scope="ack", json={})
        assert status == 200 and body["state"] == "resolved", body
        return iid


def daemon_config(directory: Path, database: str, port: int, exposition: Exposition, receiver: Receiver) -> Path:
    return write_config(
        directory / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: {database}
        sources:
          - {{name: app, type: scrape, url: "{exposition.url}/metrics", interval: 1s}}
        channels:
          - {{name: ops, urls: ["{receiver.apprise_url("ops")}"]}}
        routes:
          - {{notify: ["channel:ops"]}}
        """,
        {
            "app.yaml": """
            groups:
              - name: app
                interval: 1s
                source: app
                rules:
                  - alert: QueueBacklog
                    expr: queue_depth > 100
                    severity: critical
                    labels: {team: app}
                    annotations:
                      summary: "{{ labels.queue }} has {{ value }} jobs"
            """
        },
    )


@asynccontextmanager
async def serve(
    cfg: Path,
    port: int,
    exposition: Exposition | None,
    receiver: Receiver | None,
    clock: Clock | None = None,
    prefix: str = "test",
) -> AsyncIterator[Api]:
    """Start the real Daemon on ``cfg`` (listening on ``port``), a client session and one token per scope; stop
    the daemon afterwards (the peers are the caller's)."""
    daemon = Daemon(config_mod.load(cfg), clock=clock)
    await daemon.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            api = Api(daemon, http, f"http://127.0.0.1:{port}", exposition, receiver)  # type: ignore[arg-type]
            now = daemon.clock.now()
            for scope in ("read", "ack", "admin", "ingest"):
                api.tokens[scope] = await daemon.store.create_token(f"{prefix}-{scope}", [scope], now)
            yield api
    finally:
        await daemon.stop()


@asynccontextmanager
async def running_api(
    directory: Path, database: str | None = None, config: Callable[..., Path] | None = None
) -> AsyncIterator[Api]:
    """Start the real Daemon (binding a free port) with its peers on ``config(directory, database, port,
    exposition, receiver)`` (default :func:`daemon_config`); stop everything afterwards."""
    exposition = Exposition().start()
    receiver = Receiver().start()
    exposition.set("queue_depth", 500, queue="orders")
    exposition.set("queue_depth", 3, queue="mail")
    port = free_port()
    database = database or f"sqlite:///{directory}/state.db"
    try:
        async with serve(
            (config or daemon_config)(directory, database, port, exposition, receiver), port, exposition, receiver
        ) as api:
            yield api
    finally:
        exposition.stop()
        receiver.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """One daemon for a whole test module (SQLite)."""
    async with running_api(tmp_path_factory.mktemp("api")) as a:
        yield a
