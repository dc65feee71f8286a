"""``fsincident oncall`` (who is on call) and ``fsincident override add|list|delete``: clients of the HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _instant(text: str, now: datetime) -> datetime:
    """A TIME argument: ISO 8601 (without an offset: this machine's local time), ``now``, ``now+2h``."""
    from fsincident.escalation.schedules import parse_instant

    return parse_instant(text, now, local=True)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _show(value: str | None) -> str:
    """An API time as ``YYYY-MM-DD HH:MM UTC`` (seconds only when not zero)."""
    if not value:
        return "-"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC" if dt.second or dt.microsecond else "%Y-%m-%d %H:%M UTC")


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for line in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _layer(entry: dict[str, Any]) -> str:
    if entry.get("override") is not None:
        return f"{entry['layer']} (override #{entry['override']})"
    return str(entry["layer"])


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    from fsincident.cli import _client_target, api_call

    url, token = _client_target(args)
    return api_call(url, token, method, path, body)


def _fail(e: Exception) -> int:
    print(str(e), file=sys.stderr)
    return EXIT_FAIL


def _usage(msg: str) -> int:
    print(f"fsincident: {msg}", file=sys.stderr)
    return EXIT_USAGE


# ---------------------------------------------------------------------------- oncall


def cmd_oncall(args: argparse.Namespace) -> int:
    from fsincident.cli import ClientError

    params: dict[str, str] = {}
    if args.at:
        try:
            params["at"] = _iso(_instant(args.at, datetime.now(UTC)))
        except ValueError as e:
            return _usage(f"--at: {e}")
    if args.schedule:
        params["schedule"] = args.schedule
    path = "/api/v1/oncall" + (f"?{urlencode(params)}" if params else "")
    try:
        res = _call(args, "GET", path)
    except ClientError as e:
        return _fail(e)
    if args.json:
        print(json.dumps(res, indent=2))
        return EXIT_OK
    items = [res] if args.schedule else res["schedules"]
    if not items:
        print("no schedules are configured")
        return EXIT_OK
    rows = []
    for item in items:
        if not item["oncall"]:
            rows.append([item["schedule"], "(nobody)", "-", "-"])
        for entry in item["oncall"]:
            rows.append([item["schedule"], entry["user"], _layer(entry), _show(entry["until"])])
    print(f"on call at {_show(res['at'])}")
    _table(["SCHEDULE", "USER", "LAYER", "UNTIL"], rows)
    return EXIT_OK


# ---------------------------------------------------------------------------- override


def _override_path(schedule: str, suffix: str = "") -> str:
    return f"/api/v1/schedules/{quote(schedule, safe='')}/overrides{suffix}"


def _print_overrides(items: list[dict[str, Any]]) -> None:
    if not items:
        print("no overrides")
        return
    rows = [
        [
            str(o["id"]),
            o["who"],
            o.get("replaces") or "-",
            _show(o["from"]),
            _show(o["to"]),
            o.get("created_by") or "",
            o.get("note") or "",
        ]
        for o in items
    ]
    _table(["ID", "WHO", "REPLACES", "FROM", "TO", "BY", "NOTE"], rows)


def cmd_override(args: argparse.Namespace) -> int:
    from fsincident.cli import ClientError

    now = datetime.now(UTC)
    try:
        if args.override_command == "add":
            try:
                start, end = _instant(args.from_, now), _instant(args.to, now)
            except ValueError as e:
                return _usage(f"--from/--to: {e}")
            body: dict[str, Any] = {"who": args.who, "from": _iso(start), "to": _iso(end)}
            for key in ("replaces", "note", "by"):
                if getattr(args, key):
                    body[key] = getattr(args, key)
            res = _call(args, "POST", _override_path(args.schedule), body)
            if args.json:
                print(json.dumps(res, indent=2))
            else:
                instead = f" instead of {res['replaces']}" if res.get("replaces") else ""
                print(
                    f"override #{res['id']}: {res['who']} is on call for {res['schedule']}{instead} "
                    f"from {_show(res['from'])} to {_show(res['to'])}"
                )
            return EXIT_OK
        if args.override_command == "list":
            params = {}
            for key, value in (("from", args.from_), ("to", args.to)):
                if value:
                    try:
                        params[key] = _iso(_instant(value, now))
                    except ValueError as e:
                        return _usage(f"--{key}: {e}")
            q = f"?{urlencode(params)}" if params else ""
            res = _call(args, "GET", _override_path(args.schedule, q))
            if args.json:
                print(json.dumps(res, indent=2))
            else:
                _print_overrides(res["overrides"])
            return EXIT_OK
        body = {"by": args.by} if args.by else {}
        res = _call(args, "DELETE", _override_path(args.schedule, f"/{args.id}"), body)
        if args.json:
            print(json.dumps(res, indent=2))
        else:
            print(f"override #{res['id']} of {res['schedule']} deleted")
        return EXIT_OK
    except ClientError as e:
        return _fail(e)


# ---------------------------------------------------------------------------- parser


def _client(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sp.add_argument("--json", action="store_true", help="print the API's JSON")
    sp.add_argument("--url", help="daemon URL (default: $FSINCIDENT_URL or the config's listen address)")
    sp.add_argument("--token", help="API token (default: $FSINCIDENT_TOKEN)")
    sp.add_argument(
        "--config", metavar="DIR", help="config directory, for its listen address (default: $FSINCIDENT_CONFIG or .)"
    )
    return sp


TIME_HELP = "ISO 8601 (no offset: local time), now, now+2h, now-1d"


def register(sub: Any) -> None:
    """Add the ``oncall`` and ``override`` commands to the top-level subparsers."""
    sp = _client(sub.add_parser("oncall", help="who is on call now (or --at TIME), per schedule, through the API"))
    sp.add_argument("schedule", nargs="?", metavar="SCHEDULE", help="only this schedule (default: all)")
    sp.add_argument("--at", metavar="TIME", help=f"when (default: now): {TIME_HELP}")
    sp.set_defaults(fn=cmd_oncall)

    sp = sub.add_parser("override", help="add, list or delete schedule overrides through the API")
    osub = sp.add_subparsers(dest="override_command", metavar="SUBCOMMAND", required=True)
    add = _client(osub.add_parser("add", help="put someone on call for a time range"))
    add.add_argument("schedule", metavar="SCHEDULE")
    add.add_argument("--who", required=True, help="the user who takes over")
    add.add_argument("--from", dest="from_", required=True, metavar="TIME", help=TIME_HELP)
    add.add_argument("--to", required=True, metavar="TIME", help=TIME_HELP)
    add.add_argument("--replaces", metavar="USER", help="only while this user would be on call (default: all layers)")
    add.add_argument("--note", help="why (kept with the override and in the audit log)")
    add.add_argument("--by", help="who makes the change (default: the token's name)")
    add.set_defaults(fn=cmd_override)
    ls = _client(osub.add_parser("list", help="the overrides not yet over (or overlapping --from/--to)"))
    ls.add_argument("schedule", metavar="SCHEDULE")
    ls.add_argument("--from", dest="from_", metavar="TIME", help=TIME_HELP)
    ls.add_argument("--to", metavar="TIME", help=TIME_HELP)
    ls.set_defaults(fn=cmd_override)
    rm = _client(osub.add_parser("delete", help="remove an override"))
    rm.add_argument("schedule", metavar="SCHEDULE")
    rm.add_argument("id", type=int, metavar="ID")
    rm.add_argument("--by", help="who makes the change (default: the token's name)")
    rm.set_defaults(fn=cmd_override)
