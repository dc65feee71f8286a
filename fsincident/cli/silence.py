"""``fsincident silence add|list|expire``: silences through the HTTP API (``/api/v1/silences``)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from fsincident.cli.oncall import TIME_HELP, _client, _show, _table

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    from fsincident.cli import _client_target, api_call

    url, token = _client_target(args)
    return api_call(url, token, method, path, body)


def _iso(text: str, now: datetime) -> str:
    """A TIME argument as ISO 8601 UTC; raises ValueError saying what is wrong."""
    from fsincident.escalation.schedules import parse_instant

    return parse_instant(text, now, local=True).isoformat().replace("+00:00", "Z")


def _usage(msg: str) -> int:
    print(f"fsincident: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _add(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    body: dict[str, Any] = {"matchers": args.matchers, "comment": args.comment}
    try:
        if args.start:
            body["starts_at"] = _iso(args.start, now)
        if args.end:
            body["ends_at"] = _iso(args.end, now)
    except ValueError as e:
        return _usage(f"--start/--end: {e}")
    if not args.end:
        body["duration"] = args.duration or "1h"
    if args.author:
        body["created_by"] = args.author
    res = _call(args, "POST", "/api/v1/silences", body)
    if args.json:
        print(json.dumps(res, indent=2))
    elif args.quiet:
        print(res["id"])
    else:
        print(res["id"])
        print(
            f"{res['state']} from {_show(res['starts_at'])} to {_show(res['ends_at'])}: " + ", ".join(res["matchers"]),
            file=sys.stderr,
        )
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    state = None if args.state in (None, "all") else args.state
    path = "/api/v1/silences" + (f"?{urlencode({'state': state})}" if state else "")
    res = _call(args, "GET", path)
    items = res["silences"]
    if args.state is None:
        items = [s for s in items if s["state"] != "expired"]
        res = {"silences": items}
    if args.json:
        print(json.dumps(res, indent=2))
        return EXIT_OK
    if args.quiet:
        for s in items:
            print(s["id"])
        return EXIT_OK
    if not items:
        print("no silences")
        return EXIT_OK
    rows = [
        [
            s["id"],
            s["state"],
            ", ".join(s["matchers"]),
            _show(s["starts_at"]),
            _show(s["ends_at"]),
            s["created_by"],
            s["comment"].splitlines()[0] if s["comment"] else "",
        ]
        for s in items
    ]
    _table(["ID", "STATE", "MATCHERS", "STARTS", "ENDS", "CREATED BY", "COMMENT"], rows)
    return EXIT_OK


def _expire(args: argparse.Namespace) -> int:
    from fsincident.cli import ClientError

    failed = 0
    for sid in args.ids:
        try:
            res = _call(args, "DELETE", f"/api/v1/silences/{quote(sid, safe='')}", {"by": args.by} if args.by else {})
        except ClientError as e:
            print(f"{sid}: {e}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            print(f"silence {res['id']} expired at {_show(res['ends_at'])}")
    return EXIT_FAIL if failed else EXIT_OK


def cmd_silence(args: argparse.Namespace) -> int:
    from fsincident.cli import ClientError

    try:
        if args.silence_command == "add":
            return _add(args)
        if args.silence_command == "list":
            return _list(args)
        return _expire(args)
    except ClientError as e:
        print(str(e), file=sys.stderr)
        return EXIT_FAIL


def register(sub: Any) -> None:
    """Add the ``silence`` command (add, list, expire) to the top-level subparsers."""
    sp = sub.add_parser("silence", help="add, list or expire silences through the API")
    ssub = sp.add_subparsers(dest="silence_command", metavar="SUBCOMMAND", required=True)

    add = _client(ssub.add_parser("add", help="silence the alerts matching every MATCHER; prints the silence id"))
    add.add_argument(
        "matchers", nargs="+", metavar="MATCHER", help='label matcher: name=value, name!="v", name=~"re", name!~"re"'
    )
    add.add_argument("--comment", "-c", required=True, help="why (kept with the silence and in the audit log)")
    until = add.add_mutually_exclusive_group()
    until.add_argument("--duration", "-d", metavar="DURATION", help="how long, e.g. 30m, 2h, 1d (default: 1h)")
    until.add_argument("--end", metavar="TIME", help=f"when it ends, instead of --duration: {TIME_HELP}")
    add.add_argument("--start", metavar="TIME", help=f"when it starts (default: now): {TIME_HELP}")
    add.add_argument("--author", "-a", help="who creates it (default: the token's name)")
    add.add_argument("--quiet", "-q", action="store_true", help="print only the id")
    add.set_defaults(fn=cmd_silence)

    ls = _client(ssub.add_parser("list", help="silences (default: active and pending)"))
    ls.add_argument("--state", choices=["active", "pending", "expired", "all"], help="only this state, or all")
    ls.add_argument("--quiet", "-q", action="store_true", help="print only the ids")
    ls.set_defaults(fn=cmd_silence)

    ex = _client(ssub.add_parser("expire", help="end silences now"))
    ex.add_argument("ids", nargs="+", metavar="ID")
    ex.add_argument("--by", help="who ends them (default: the token's name)")
    ex.set_defaults(fn=cmd_silence)
