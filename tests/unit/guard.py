"""A CPU-time guard for tests that must not hang."""

from __future__ import annotations

import signal
from contextlib import contextmanager


class Hang(Exception):
    pass


@contextmanager
def cpu_bound(seconds: float):
    """Raise Hang in the test if the block burns more than ``seconds`` of CPU time.

    Uses ITIMER_PROF/SIGPROF so that pytest-timeout's SIGALRM timer is left alone.
    """

    def on_timeout(signum, frame):
        raise Hang(f"still running after {seconds}s of CPU")

    old = signal.signal(signal.SIGPROF, on_timeout)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)
