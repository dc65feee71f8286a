"""The overview page of the web UI."""

from __future__ import annotations

from aiohttp import web

from fsincident.ui import page, render


@page("read")
async def overview(request: web.Request) -> web.Response:
    return render(request, "overview.html.j2", active="overview", title="Overview", live=True)


def add_routes(app: web.Application) -> None:
    """Register this module's pages."""
    app.router.add_get("/ui/", overview)
