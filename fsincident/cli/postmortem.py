"""``fsincident postmortem ID [--output DIR]``: an incident's postmortem draft through the HTTP API (issue #9).

Without ``--output`` it prints the self-contained Markdown (the chart embedded as a data URI); with ``--output DIR`` it
writes ``incident-ID-postmortem.md`` and ``incident-ID-chart.png`` (linked relatively) into DIR and prints their
paths.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fsincident.cli.oncall import _client

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _call(args: argparse.Namespace, path: str) -> Any:
    from fsincident.cli import _client_target, api_call

    url, token = _client_target(args)
    return api_call(url, token, "GET", path)


def _write(directory: Path, res: dict[str, Any], iid: str) -> list[Path]:
    """Write the draft and its charts into ``directory`` (created if missing); raises OSError or ValueError."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for c in res.get("charts") or []:
        name = Path(str(c.get("filename") or f"incident-{iid}-{c.get('name', 'chart')}.png")).name
        path = directory / name
        path.write_bytes(base64.b64decode(c["png_base64"], validate=True))
        written.append(path)
    md = directory / f"incident-{iid}-postmortem.md"
    md.write_text(res["markdown"], encoding="utf-8")
    return [md, *written]


def cmd_postmortem(args: argparse.Namespace) -> int:
    """Print or write the draft; 1 when the daemon answers an error or a file cannot be written."""
    from fsincident.cli import ClientError

    iid = str(args.id).strip()
    if not iid.isdigit():
        print(f"fsincident: incident id {args.id!r} is not a number", file=sys.stderr)
        return EXIT_USAGE
    images = "files" if args.output else "inline"
    try:
        res = _call(args, f"/api/v1/incidents/{quote(iid, safe='')}/postmortem?format=json&images={images}")
    except ClientError as e:
        print(str(e), file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps(res, indent=2))
        return EXIT_OK
    if not args.output:
        sys.stdout.write(res["markdown"])
        return EXIT_OK
    try:
        paths = _write(Path(args.output), res, iid)
    except (OSError, ValueError, binascii.Error, KeyError) as e:
        print(f"fsincident: cannot write the draft to {args.output}: {e}", file=sys.stderr)
        return EXIT_FAIL
    for p in paths:
        print(p)
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the ``postmortem`` command to the top-level subparsers."""
    sp = _client(
        sub.add_parser(
            "postmortem",
            help="Markdown draft of an incident's postmortem (timeline, pages, related incidents, chart)",
            description="Print an incident's postmortem draft as self-contained Markdown (the chart embedded), or "
            "write it with its chart into a folder with --output.",
        )
    )
    sp.add_argument("id", metavar="ID", help="incident id")
    sp.add_argument(
        "--output",
        "-o",
        metavar="DIR",
        help="write incident-ID-postmortem.md and incident-ID-chart.png (linked relatively) into DIR",
    )
    sp.set_defaults(fn=cmd_postmortem)
