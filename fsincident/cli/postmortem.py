"""``fsincident postmortem``: a client of the HTTP API (issue #9). Filled in by its owner."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the ``postmortem`` command to the top-level subparsers."""
