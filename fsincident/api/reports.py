"""Issue #9 routes (``reports``). Filled in by its owner."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Register this module's routes on ``app``."""
