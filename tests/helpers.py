"""Real local peers for the tests: an exposition server, a webhook receiver, and the daemon process."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
FSINCIDENT = [sys.executable, "-m", "fsincident"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """An aiohttp app run in its own thread and loop, so a test's blocking calls never starve it."""

    def __init__(self, app: web.Application, port: int | None = None):
        self.app = app
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread = None

    def start(self) -> ThreadedServer:
        import threading

        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._runner = web.AppRunner(self.app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Exposition(ThreadedServer):
    """Serves Prometheus text format at /metrics; ``set(name, value, **labels)`` changes what it serves."""

    def __init__(self, port: int | None = None):
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.status = 200
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        super().__init__(app, port)

    def set(self, name: str, value: float, **labels: str) -> None:
        self.values[(name, tuple(sorted(labels.items())))] = value

    def remove(self, name: str, **labels: str) -> None:
        self.values.pop((name, tuple(sorted(labels.items()))), None)

    def text(self) -> str:
        lines = []
        for name in sorted({n for n, _ in self.values}):
            lines.append(f"# TYPE {name} gauge")
            for (n, labels), v in sorted(self.values.items()):
                if n != name:
                    continue
                lab = ",".join(f'{k}="{val}"' for k, val in labels)
                lines.append(f"{name}{{{lab}}} {v}" if lab else f"{name} {v}")
        return "\n".join(lines) + "\n"

    async def _handle(self, request: web.Request) -> web.Response:
        if self.status != 200:
            return web.Response(status=self.status, text="unavailable")
        return web.Response(text=self.text(), content_type="text/plain")


class Receiver(ThreadedServer):
    """A webhook receiver for apprise ``json://`` URLs; records every POST body with its arrival time."""

    def __init__(self, port: int | None = None):
        self.received: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        super().__init__(app, port)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.Response(status=self.status, text="no")
        try:
            data = json.loads(body)
        except ValueError:
            data = {"raw": body.decode(errors="replace")}
        data["_path"] = request.path
        data["_at"] = time.time()
        self.received.append(data)
        return web.Response(text="ok")

    def apprise_url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def wait_for(self, pred: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until ``pred(received)`` is truthy; returns the messages, raises AssertionError on timeout."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = list(self.received)
            if pred(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"receiver condition not met in {timeout}s; got {[m.get('title') for m in self.received]}")


def write_config(directory: Path, main: str, rules: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fsincident.yaml").write_text(textwrap.dedent(main))
    if rules:
        (directory / "rules.d").mkdir(exist_ok=True)
        for name, text in rules.items():
            (directory / "rules.d" / name).write_text(textwrap.dedent(text))
    return directory


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FSINCIDENT, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )


class DaemonProcess:
    """The real ``fsincident run`` process; logs go to a file the test can read."""

    def __init__(self, config_dir: Path, port: int, env: dict[str, str] | None = None):
        self.config_dir = config_dir
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.log_path = config_dir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> DaemonProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*FSINCIDENT, "run", "--config", str(self.config_dir)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.config_dir,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready in {timeout}s:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()

    def create_token(self, scopes: str = "admin", name: str | None = None) -> str:
        """A new API token, written the way ``fsincident token create`` writes it but in this process (a CLI
        process costs 1-2 s per test; tests/e2e/test_cli_systemd.py runs the real command); AssertionError when
        the config does not load or a scope is unknown, StoreError from the store."""
        from concurrent.futures import ThreadPoolExecutor
        from datetime import UTC, datetime

        from fsincident import config as config_mod
        from fsincident.store import SCOPES, Store, sqlite_path

        name = name or f"t-{scopes.replace(',', '-')}-{time.monotonic_ns()}"
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        assert wanted and all(s in SCOPES for s in wanted), scopes
        url = config_mod.load(self.config_dir, environ=self.env).database
        path = sqlite_path(url)
        if path is not None and not path.is_absolute():  # relative to the daemon's working directory
            url = f"sqlite:///{self.config_dir.resolve() / path}"

        async def create() -> str:
            store = Store(url)
            try:
                await store.upgrade()
                return await store.create_token(name, wanted, datetime.now(UTC))
            finally:
                await store.close()

        with ThreadPoolExecutor(1) as pool:  # its own event loop, also when called from an async test
            return pool.submit(asyncio.run, create()).result(timeout=60)

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        tok = token if token is not None else self.token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def wait_incidents(self, pred: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        last: Any = None
        while time.time() < deadline:
            status, body = self.api("GET", "/api/v1/incidents")
            if status == 200:
                last = body["incidents"]
                if pred(last):
                    return last
            time.sleep(0.1)
        raise AssertionError(f"incident condition not met in {timeout}s; last: {last}")


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"

    def wait(self, n: int = 1, timeout: float = 10) -> list[tuple[str, list[str], EmailMessage]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.02)
        raise AssertionError(f"expected {n} messages, got {len(self.messages)}")


def mailto(port: int, extra: str = "") -> str:
    """An apprise URL sending mail to the local aiosmtpd server on ``port`` (no TLS)."""
    return f"mailto://127.0.0.1:{port}?from=fsincident@example.com&to=oncall@example.com&mode=insecure{extra}"
