"""The overview page(s) of the web UI."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Register this module's pages."""
