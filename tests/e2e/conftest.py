"""Fixtures for the end-to-end tests: local peers and a daemon factory that never leaves a process behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import CountingReceiver
from tests.helpers import DaemonProcess, Exposition


@pytest.fixture
def exposition():
    exp = Exposition().start()
    yield exp
    exp.stop()


@pytest.fixture
def receiver():
    rcv = CountingReceiver().start()
    yield rcv
    rcv.stop()


@pytest.fixture
def spawn():
    """``spawn(cfg_dir, port, wait=True, env=None)`` starts a DaemonProcess; teardown kills any still running."""
    started: list[DaemonProcess] = []

    def start(cfg: Path, port: int, wait: bool = True, env: dict[str, str] | None = None) -> DaemonProcess:
        d = DaemonProcess(cfg, port, env=env)
        started.append(d)
        return d.start(wait=wait)

    yield start
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.kill9()
