"""``fsincident render``: what each destination of a channel (or user) would receive about an incident.

Reads the config dir and the configured database directly (the daemon may be stopped) and renders the
page with the same templates and context the daemon uses. Destinations are shown redacted; ack/resolve
links are placeholders (real pages carry signed, expiring links bound to their recipient).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from fsincident import config as config_mod
from fsincident import plugins
from fsincident.core import ConfigError, FsIncidentError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
KINDS = ("trigger", "acknowledge", "resolve")
_ACTED = {"acknowledge": "acknowledged", "resolve": "resolved"}


class RenderError(FsIncidentError):
    """The preview cannot be made (unknown incident or channel, unreadable database); the message says why."""


def register(sub: Any) -> None:
    """Add the ``render`` command to the top-level subparsers."""
    sp = sub.add_parser("render", help="preview what each destination of a channel would get for an incident")
    sp.add_argument("--config", metavar="DIR", help="config directory (default: $FSINCIDENT_CONFIG or .)")
    sp.add_argument("--incident", required=True, type=int, metavar="ID", help="the incident (read from the database)")
    sp.add_argument(
        "--channel", required=True, metavar="NAME", help="a channel name, or a target channel:NAME or user:NAME"
    )
    sp.add_argument("--kind", choices=KINDS, default="trigger", help="which notification (default: trigger)")
    sp.add_argument("--json", action="store_true", help="print JSON: one object per destination")
    sp.set_defaults(fn=cmd_render)


def _target(cfg: config_mod.Config, name: str) -> str:
    """``channel:NAME`` or ``user:NAME`` for ``name``; raises RenderError naming what is configured."""
    kind, sep, rest = name.partition(":")
    if sep and kind == "user":
        u = cfg.user(rest)
        if u is None or not u.contacts:
            known = ", ".join(x.name for x in cfg.users if x.contacts) or "none"
            raise RenderError(f"unknown user {rest!r} or one without contacts (users with contacts: {known})")
        return f"user:{rest}"
    channel = rest if sep and kind == "channel" else name
    if cfg.channel(channel) is None:
        known = ", ".join(c.name for c in cfg.channels) or "none"
        raise RenderError(f"unknown channel {channel!r} (channels: {known})")
    return f"channel:{channel}"


def _notifier(cfg: config_mod.Config, target: str) -> Any:
    """The notifier of ``target`` built as the daemon builds it (destinations, styles, secrets)."""
    kind, _, name = target.partition(":")
    if kind == "channel":
        ch = cfg.channel(name)
        assert ch is not None
        return plugins.notifiers.get(ch.type)(ch)
    u = cfg.user(name)
    assert u is not None
    apprise_cls = plugins.notifiers.get("apprise")
    return apprise_cls(apprise_cls.Options(name=u.name, type="apprise", urls=[c.url for c in u.contacts]))


async def preview(cfg: config_mod.Config, incident_id: int, channel: str, kind: str) -> dict[str, Any]:
    """The page ``kind`` about incident ``incident_id`` as each destination of ``channel`` would get it:
    ``{"incident", "target", "kind", "destinations": [{index, destination, style, format, title, body,
    problems}]}``; raises RenderError for an unknown incident/channel or a database it cannot read."""
    from sqlmodel import col, select

    from fsincident.incidents.service import IncidentService
    from fsincident.notify.render import Renderer
    from fsincident.store import Store, sqlite_path
    from fsincident.store.tables import Incident, IncidentEvent

    target = _target(cfg, channel)
    notifier = _notifier(cfg, target)
    path = sqlite_path(cfg.database)
    if path is not None and not path.exists():
        raise RenderError(f"no database at {path}: the daemon has not run yet (fsincident db upgrade creates it)")
    renderer = Renderer(cfg.templates, cfg.external_url)
    store = Store(cfg.database)
    try:
        async with store.read() as s:
            inc = (await s.exec(select(Incident).where(Incident.id == incident_id))).first()
            if inc is None:
                raise RenderError(f"incident {incident_id} not found")
            actor, note = None, None
            if kind in _ACTED:
                ev = (
                    await s.exec(
                        select(IncidentEvent)
                        .where(IncidentEvent.incident_id == incident_id, IncidentEvent.kind == _ACTED[kind])
                        .order_by(col(IncidentEvent.id).desc())
                        .limit(1)
                    )
                ).first()
                if ev is not None:
                    actor, note = ev.actor, ev.note
                else:
                    actor = inc.acknowledged_by if kind == "acknowledge" else inc.resolved_by
            # The daemon's own page data (incident, alerts with their latest annotations), built in one place.
            svc = IncidentService(
                store,
                clock=None,  # type: ignore[arg-type]
                metrics=None,  # type: ignore[arg-type]
                render=renderer.render,
                destinations=lambda t: 0,
                route=lambda labels: [],
            )
            svc.external_url = cfg.external_url
            _title, _body, data = await svc.render_page(s, inc, kind, actor, note)
    except RenderError:
        raise
    except Exception as e:  # a database that is unreachable or not migrated: say so, without its password
        raise RenderError(f"cannot read the database: {type(e).__name__}: {_scrub(str(e), cfg)[:300]}") from None
    finally:
        await store.close()
    base = cfg.external_url.rstrip("/")
    # As the delivery stage does: signed ack/resolve links in trigger pages (placeholders here).
    links = {"ack": f"{base}/l/PREVIEW-ack", "resolve": f"{base}/l/PREVIEW-resolve"} if kind == "trigger" else {}
    out = []
    secrets = [x for x in notifier.secrets() if x]
    for i, dest in enumerate(notifier.destinations()):
        style = notifier.style(i) if callable(getattr(notifier, "style", None)) else "text"
        page = renderer.page(style, kind, data, links, target)
        out.append(
            {
                "index": i,
                "destination": dest,
                "style": style,
                "format": page.format,
                "title": _hide(page.title, secrets),
                "body": _hide(page.body, secrets),
                "problems": [_hide(p, secrets) for p in page.problems],
            }
        )
    return {"incident": incident_id, "target": target, "kind": kind, "destinations": out}


def _hide(text: str, secrets: list[str]) -> str:
    for x in sorted(secrets, key=len, reverse=True):
        text = text.replace(x, "***")
    return text


def _scrub(text: str, cfg: config_mod.Config) -> str:
    from sqlalchemy.engine import make_url

    try:
        password = make_url(cfg.database).password
    except Exception:
        password = None
    return text.replace(str(password), "***") if password else text


def cmd_render(args: argparse.Namespace) -> int:
    directory = args.config or os.environ.get("FSINCIDENT_CONFIG") or "."
    try:
        cfg = config_mod.load(directory)
    except ConfigError as e:
        for p in e.problems:
            print(str(p), file=sys.stderr)
        print(f"{len(e.problems)} problem{'s' if len(e.problems) != 1 else ''} found", file=sys.stderr)
        return EXIT_FAIL
    try:
        res = asyncio.run(preview(cfg, args.incident, args.channel, args.kind))
    except RenderError as e:
        print(f"fsincident render: {e}", file=sys.stderr)
        return EXIT_FAIL
    for d in res["destinations"]:
        for p in d["problems"]:
            print(f"warning: destination {d['index']}: {p}", file=sys.stderr)
    if args.json:
        print(json.dumps(res, indent=2, ensure_ascii=False))
        return EXIT_OK
    n = len(res["destinations"])
    print(f"{res['kind']} page about incident #{res['incident']} for {res['target']}: {n} destination{'s' * (n != 1)}")
    print("(ack/resolve links are placeholders: real pages carry signed links that expire)")
    for d in res["destinations"]:
        print()
        print(f"=== #{d['index']} {d['destination']}  (style {d['style']}, format {d['format']})")
        print(f"title: {d['title']}")
        print()
        print(d["body"])
    return EXIT_OK


def template_warnings(cfg: config_mod.Config) -> list[str]:
    """Problems of the config's template overrides on a sample page (``fsincident check`` prints them as
    warnings: at run time the shipped template stands in for a failing override)."""
    if not cfg.templates:
        return []
    from fsincident.notify.render import Renderer

    return Renderer(cfg.templates, cfg.external_url).check()
