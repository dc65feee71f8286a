"""``fsincident report``: analytics of a period, scheduled reports, through the HTTP API (issue #9).

``fsincident report [summary|response|daily|fatigue|oncall|sla|capacity|incidents|all] [--from T] [--to T]
[--period 7d] [--group-by L] [--format table|json|csv]``, ``fsincident report scheduled`` and
``fsincident report send NAME``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from fsincident.cli.oncall import TIME_HELP, _client, _show, _table

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
SECTIONS = ("summary", "response", "daily", "fatigue", "oncall", "sla", "capacity", "incidents")
COMMANDS = (*SECTIONS, "all", "scheduled", "send")


def _call(args: argparse.Namespace, method: str, path: str) -> Any:
    from fsincident.cli import _client_target, api_call

    url, token = _client_target(args)
    return api_call(url, token, method, path)


def _usage(msg: str) -> int:
    print(f"fsincident: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _iso(text: str, now: datetime) -> str:
    from fsincident.escalation.schedules import parse_instant

    return parse_instant(text, now, local=True).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------- formatting


def dur(seconds: float | None) -> str:
    """Seconds as ``45s``, ``12m 5s``, ``3h 20m``, ``2d 4h``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = round(abs(seconds))
    sign = "-" if seconds < 0 else ""
    if s < 60:
        return f"{sign}{s}s"
    if s < 3600:
        return f"{sign}{s // 60}m {s % 60}s" if s % 60 else f"{sign}{s // 60}m"
    if s < 86400:
        return f"{sign}{s // 3600}h {s % 3600 // 60}m" if s % 3600 // 60 else f"{sign}{s // 3600}h"
    return f"{sign}{s // 86400}d {s % 86400 // 3600}h" if s % 86400 // 3600 else f"{sign}{s // 86400}d"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:g}%"


def _mm(stats: dict[str, Any] | None) -> str:
    """``median / p90`` of a stats object."""
    if not stats or not stats.get("n"):
        return "-"
    return f"{dur(stats['median'])} / {dur(stats['p90'])}"


def _cell(v: Any) -> str:
    """A value made safe for one table cell: no line breaks or control characters."""
    text = "-" if v is None else str(v)
    return "".join(c if c.isprintable() else " " for c in text)


def _tab(header: list[str], rows: Sequence[Sequence[Any]]) -> None:
    _table(header, [[_cell(c) for c in r] for r in rows])


def print_summary(rep: dict[str, Any]) -> None:
    s = rep["summary"]
    aw = s["acked_within"]
    lines = [
        ("Incidents", s["incidents"]),
        ("Acknowledged", s["acknowledged"]),
        ("Resolved", s["resolved"]),
        ("Open", s["open"]),
        ("Pages", s["pages"]),
        ("Escalations", s["escalations"]),
        ("Re-triggers", s["retriggers"]),
        ("Re-opens", s["reopens"]),
        ("MTTA (median / p90)", f"{_mm(s['mtta_seconds'])}  (n={s['mtta_seconds']['n']})"),
        ("MTTR (median / p90)", f"{_mm(s['mttr_seconds'])}  (n={s['mttr_seconds']['n']})"),
        ("TTD (median / p90)", f"{_mm(s['ttd_seconds'])}  (n={s['ttd_seconds']['n']})"),
        (f"Acknowledged within {dur(aw['seconds'])}", f"{aw['count']} ({_pct(aw['percent'])})"),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k.ljust(width)}  {v}")


def print_response(rep: dict[str, Any]) -> None:
    rows = rep["response"]
    if not rows:
        print("no incidents")
        return
    within = dur(rows[0]["acked_within"]["seconds"])
    _tab(
        [
            rep["group_by"].upper(),
            "INCIDENTS",
            "ACKED",
            "RESOLVED",
            "OPEN",
            "PAGES",
            "ESCAL",
            "RETRIG",
            "REOPEN",
            "MTTA MED/P90",
            "MTTR MED/P90",
            f"ACK<={within}",
        ],
        [
            [
                r["group"],
                r["incidents"],
                r["acknowledged"],
                r["resolved"],
                r["open"],
                r["pages"],
                r["escalations"],
                r["retriggers"],
                r["reopens"],
                _mm(r["mtta_seconds"]),
                _mm(r["mttr_seconds"]),
                _pct(r["acked_within"]["percent"]),
            ]
            for r in rows
        ],
    )


def print_daily(rep: dict[str, Any]) -> None:
    days = rep["daily"]
    sevs = [s for s in ("critical", "warning", "info") if any(s in d["by_severity"] for d in days)]
    sevs += sorted({s for d in days for s in d["by_severity"]} - set(sevs))
    _tab(
        ["DATE", "INCIDENTS", *[s.upper() for s in sevs]],
        [[d["date"], d["incidents"], *[d["by_severity"].get(s, 0) for s in sevs]] for d in days],
    )


def print_fatigue(rep: dict[str, Any]) -> None:
    f = rep["fatigue"]
    print("Rules")
    if f["rules"]:
        _tab(
            ["RULE", "INCIDENTS", "PAGES", "ACTED", "ACTED%", "REOPENS", "RETRIGGERS", "FLAGS"],
            [
                [
                    r["rule"],
                    r["incidents"],
                    r["pages"],
                    r["acted"],
                    _pct(r["acted_percent"]),
                    r["reopens"],
                    r["retriggers"],
                    ", ".join(
                        x for x, on in (("rarely acted on", r["rarely_acted"]), ("flapping", r["flapping"])) if on
                    )
                    or "-",
                ]
                for r in f["rules"]
            ],
        )
    else:
        print("no incidents")
    print()
    print("People")
    if f["people"]:
        _tab(
            ["USER", "PAGES", "NIGHT", "WEEKEND", "OUT OF HOURS"],
            [[p["user"], p["pages"], p["night"], p["weekend"], p["out_of_hours"]] for p in f["people"]],
        )
    else:
        print("nobody was paged")


def print_oncall(rep: dict[str, Any]) -> None:
    rows = rep["oncall"]
    if not rows:
        print("nobody was on call or paged")
        return
    _tab(
        ["USER", "HOURS ON CALL", "SHIFTS", "PAGES", "OUT OF HOURS", "NIGHT", "WEEKEND"],
        [
            [
                o["user"],
                f"{o['hours_on_call']:.1f}",
                o["shifts"],
                o["pages"],
                o["out_of_hours_pages"],
                o["night_pages"],
                o["weekend_pages"],
            ]
            for o in rows
        ],
    )


def print_sla(rep: dict[str, Any]) -> None:
    rows = rep["sla"]
    if not rows:
        print("no services configured (analytics.services)")
        return
    _tab(
        ["SERVICE", "SOURCE", "TARGET", "UPTIME", "DOWNTIME", "BUDGET", "LEFT", "LEFT%", "INCIDENTS", "COVERAGE"],
        [
            [
                r["service"],
                r["source"],
                _pct(r["target_percent"]),
                _pct(r["uptime_percent"]),
                dur(r["downtime_seconds"]),
                dur(r["budget_seconds"]),
                dur(r["budget_left_seconds"]),
                _pct(r["budget_left_percent"]),
                r["incidents"],
                _pct(r["coverage_percent"]),
            ]
            for r in rows
        ],
    )


def print_capacity(rep: dict[str, Any]) -> None:
    rows = rep["capacity"]
    if not rows:
        print("no series watched by predict_linear or time_to rules")
        return
    _tab(
        ["RULE", "METRIC", "LABELS", "CURRENT", "TREND/H", "THRESHOLD", "EXHAUSTED IN", "SEVERITY"],
        [
            [
                r.get("rule"),
                r.get("metric"),
                ",".join(f"{k}={v}" for k, v in sorted((r.get("labels") or {}).items())),
                _num(r.get("current")),
                _num(r.get("trend_per_hour")),
                _num(r.get("threshold")),
                dur(r.get("seconds_to_exhaustion")) if r.get("seconds_to_exhaustion") is not None else "never",
                r.get("severity"),
            ]
            for r in rows
        ],
    )


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_incidents(rep: dict[str, Any]) -> None:
    rows = rep["incidents"]
    if not rows:
        print("no incidents")
        return
    _tab(
        ["ID", "STATE", "SEVERITY", rep["group_by"].upper(), "CREATED", "TTA", "TTR", "TITLE"],
        [
            [
                i["id"],
                i["state"],
                i["severity"],
                i["group"],
                _show(i["created_at"]),
                dur(i["tta_seconds"]),
                dur(i["ttr_seconds"]),
                i["title"][:80],
            ]
            for i in rows
        ],
    )


PRINTERS = {
    "summary": print_summary,
    "response": print_response,
    "daily": print_daily,
    "fatigue": print_fatigue,
    "oncall": print_oncall,
    "sla": print_sla,
    "capacity": print_capacity,
    "incidents": print_incidents,
}
TITLES = {
    "summary": "Summary",
    "response": "Response by {group}",
    "daily": "Incidents per day",
    "fatigue": "Alert fatigue",
    "oncall": "On-call load",
    "sla": "SLA and error budgets",
    "capacity": "Capacity",
    "incidents": "Incidents",
}


def print_report(rep: dict[str, Any], sections: Sequence[str]) -> None:
    """The report as terminal tables, one titled block per section."""
    p = rep["period"]
    print(f"Report {_show(p['from'])} .. {_show(p['to'])} (grouped by {rep['group_by']})")
    for name in sections:
        if name not in rep:
            continue
        title = TITLES[name].format(group=rep["group_by"])
        print()
        print(title)
        print("=" * len(title))
        PRINTERS[name](rep)


# ---------------------------------------------------------------------- commands


def cmd_report(args: argparse.Namespace) -> int:
    from fsincident.cli import ClientError

    what = args.what
    try:
        if what == "scheduled":
            return _scheduled(args)
        if what == "send":
            return _send(args)
    except ClientError as e:
        print(str(e), file=sys.stderr)
        return EXIT_FAIL
    if args.name is not None:
        return _usage(f"report {what}: unexpected argument {args.name!r}")
    fmt = "json" if args.json else args.format
    params: dict[str, str] = {}
    now = datetime.now(UTC)
    try:
        if args.from_:
            params["from"] = _iso(args.from_, now)
        if args.to:
            params["to"] = _iso(args.to, now)
    except ValueError as e:
        return _usage(f"--from/--to: {e}")
    if args.period:
        params["period"] = args.period
    if args.group_by:
        params["group_by"] = args.group_by
    if args.ack_within:
        params["ack_within"] = args.ack_within
    if args.limit is not None:
        params["limit"] = str(args.limit)
    path = "/api/v1/analytics/" + ("report" if what == "all" else what)
    try:
        rep = _call(args, "GET", f"{path}?{urlencode(params)}" if params else path)
    except ClientError as e:
        print(str(e), file=sys.stderr)
        return EXIT_FAIL
    sections = [s for s in SECTIONS if s in rep]
    if fmt == "json":
        print(json.dumps(rep, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        from fsincident.analytics.records import section_rows, to_csv

        if what == "all":
            rows = [{"section": s, **r} for s in sections for r in section_rows(rep, s)]
        else:
            rows = section_rows(rep, what)
        sys.stdout.write(to_csv(rows))
    elif what == "all":
        print_report(rep, sections)
    else:
        PRINTERS[what](rep)
    return EXIT_OK


def _scheduled(args: argparse.Namespace) -> int:
    res = _call(args, "GET", "/api/v1/reports")
    if args.json or args.format == "json":
        print(json.dumps(res, indent=2, ensure_ascii=False))
        return EXIT_OK
    items = res.get("reports") or []
    if not items:
        print("no scheduled reports (reports: in fsincident.yaml)")
        return EXIT_OK
    _tab(
        ["NAME", "SCHEDULE", "TIMEZONE", "PERIOD", "TO", "SECTIONS", "NEXT", "LAST"],
        [
            [
                r["name"],
                r["schedule"],
                r["timezone"],
                r["period"],
                ", ".join(r.get("to") or []),
                ", ".join(r.get("sections") or []),
                _show(r.get("next_at")),
                _show(r.get("last_fire_at")),
            ]
            for r in items
        ],
    )
    return EXIT_OK


def _send(args: argparse.Namespace) -> int:
    if not args.name:
        return _usage("report send: give the report's NAME")
    res = _call(args, "POST", f"/api/v1/reports/{quote(args.name, safe='')}/send")
    if args.json or args.format == "json":
        print(json.dumps(res, indent=2, ensure_ascii=False))
        return EXIT_OK
    p = res.get("period") or {}
    print(
        f"queued report {res.get('report', args.name)} for {_show(p.get('from'))} .. {_show(p.get('to'))}: "
        f"{res.get('queued')} notification(s)"
    )
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the ``report`` command to the top-level subparsers."""
    sp = _client(
        sub.add_parser(
            "report",
            help="analytics of a period (MTTA/MTTR, alert fatigue, on-call load, SLA, capacity) and scheduled reports",
            description=(
                "Analytics of the incidents opened in a period (default: the 7 days before now) through the API; "
                "'scheduled' lists the reports: of the config, 'send NAME' queues one now (admin token)."
            ),
        )
    )
    sp.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=COMMANDS,
        metavar="WHAT",
        help=f"{', '.join(SECTIONS)}, all (default), scheduled, or send NAME",
    )
    sp.add_argument("name", nargs="?", metavar="NAME", help="the report to send (with 'send')")
    sp.add_argument("--from", dest="from_", metavar="TIME", help=f"start of the period: {TIME_HELP}")
    sp.add_argument("--to", metavar="TIME", help=f"end of the period (default: now): {TIME_HELP}")
    sp.add_argument("--period", metavar="DURATION", help="length of the period, e.g. 7d, 30d, 12h (default: 7d)")
    sp.add_argument("--group-by", metavar="LABEL", help="a label name, severity, rule or route (default: the config's)")
    sp.add_argument("--ack-within", metavar="DURATION", help="count acknowledgements this soon (default: the config's)")
    sp.add_argument("--limit", type=int, metavar="N", help="incidents listed in the incidents section (default 1000)")
    sp.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="output format (default: table)"
    )
    sp.set_defaults(fn=cmd_report)
