"""The ``fsincident`` command line (argparse); the only place that handles signals."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from fsincident import config as config_mod
from fsincident.cli import oncall, postmortem, render, report, ruletools, silence
from fsincident.core import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

HELP = """fsincident — self-hosted alerting and incident management.

commands:
  run        the daemon, in the foreground (systemd Type=notify; SIGHUP reloads, SIGTERM stops)
  check      validate fsincident.yaml, rules.d/*.yaml and templates/*.j2; exit 1 with file:line errors
  db         database migrations (db upgrade)
  token      API tokens (token create --name N --scopes read,ack,admin,ingest)
  incidents  list | show ID | ack ID | resolve ID | escalate ID | reassign ID --to TARGET | note ID TEXT,
             through the HTTP API
  test       run rule unit tests (promtool test rules format); exit 1 on a failure
  backtest   replay rules over history (CSV or Prometheus): when would alerts have fired?
  oncall     who is on call now (or --at TIME), per schedule, through the HTTP API
  override   add | list | delete schedule overrides, through the HTTP API
  silence    add | list | expire silences (mute matching alerts for a while), through the HTTP API
  render     preview the page each destination of a channel would get (--incident ID --channel NAME)

Client commands find the daemon through --url/--token, else FSINCIDENT_URL/FSINCIDENT_TOKEN,
else the config's listen address."""


def _config_dir(args: argparse.Namespace) -> str:
    return args.config or os.environ.get("FSINCIDENT_CONFIG") or "."


def _load(args: argparse.Namespace) -> config_mod.Config | None:
    try:
        return config_mod.load(_config_dir(args))
    except ConfigError as e:
        for p in e.problems:
            print(str(p), file=sys.stderr)
        print(f"{len(e.problems)} problem{'s' if len(e.problems) != 1 else ''} found", file=sys.stderr)
        return None


# ---------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from fsincident.app import Daemon
    from fsincident.obs import Redactor, configure_logging, get_logger, tune_gc

    cfg = _load(args)
    if cfg is None:
        return EXIT_FAIL
    redactor = Redactor()
    configure_logging(args.log_level or cfg.log_level, redactor)
    log = get_logger("fsincident.cli")

    async def main() -> int:
        daemon = Daemon(cfg, redactor=redactor)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(daemon.reload()))
        try:
            await daemon.start()
        except Exception as e:
            log.error("start_failed", error=f"{type(e).__name__}: {e}")
            await daemon.stop(drain_seconds=0)
            return EXIT_FAIL
        tune_gc()  # process-wide, so here and not in the embeddable Daemon
        await stop.wait()
        log.info("stopping", reason="signal")
        await daemon.stop()
        return EXIT_OK

    return asyncio.run(main())


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return EXIT_FAIL
    for warning in render.template_warnings(cfg):  # overrides that fail on a sample page (shipped ones stand in)
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"ok: {len(cfg.sources)} sources, {len(cfg.channels)} channels, {len(cfg.routes)} routes, "
        f"{len(cfg.groups)} rule groups, {len(cfg.rules)} rules ({_config_dir(args)})"
    )
    return EXIT_OK


def _with_store(cfg: config_mod.Config, action: Any) -> int:
    """Migrate the config's database, run ``await action(store)`` (its return value is printed); exit code."""
    from fsincident.store import Store, StoreError

    async def main() -> int:
        store = Store(cfg.database)
        try:
            await store.upgrade()
            out = await action(store)
        except StoreError as e:
            print(str(e), file=sys.stderr)
            return EXIT_FAIL
        finally:
            await store.close()
        print(out)
        return EXIT_OK

    return asyncio.run(main())


def cmd_db(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return EXIT_FAIL

    async def done(store: Any) -> str:
        return "database is at the latest schema"

    return _with_store(cfg, done)


def cmd_token(args: argparse.Namespace) -> int:
    from fsincident.store import SCOPES

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    bad = [s for s in scopes if s not in SCOPES]
    if not scopes or bad:
        print(f"invalid scope {bad[0] if bad else ''!r}: choose from {', '.join(SCOPES)}", file=sys.stderr)
        return EXIT_USAGE
    cfg = _load(args)
    if cfg is None:
        return EXIT_FAIL

    async def create(store: Any) -> str:
        secret = await store.create_token(args.name, scopes, datetime.now(UTC))
        print(f"token {args.name!r} ({','.join(scopes)}) created; the secret below is shown only once", file=sys.stderr)
        return secret

    return _with_store(cfg, create)


# ---------------------------------------------------------------------------- API client


class ClientError(Exception):
    pass


def _client_target(args: argparse.Namespace) -> tuple[str, str | None]:
    url = args.url or os.environ.get("FSINCIDENT_URL")
    token = args.token or os.environ.get("FSINCIDENT_TOKEN")
    if not url:
        try:
            cfg = config_mod.load(_config_dir(args))
            host = cfg.host if cfg.host not in ("0.0.0.0", "", "::") else "127.0.0.1"
            url = f"http://{host}:{cfg.port}"
        except ConfigError:
            url = "http://127.0.0.1:9095"
    return url.rstrip("/"), token


def api_call(url: str, token: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the daemon's API; raises ClientError with the server's JSON error."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read())
            msg = err.get("error", e.reason)
            if err.get("detail"):
                msg += f" ({err['detail']})"
        except ValueError:
            msg = str(e.reason)
        raise ClientError(f"HTTP {e.code}: {msg}") from None
    except (urllib.error.URLError, OSError) as e:
        raise ClientError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from None


def _print_incidents(items: list[dict[str, Any]]) -> None:
    if not items:
        print("no incidents")
        return
    print(f"{'ID':>6}  {'STATE':<12}  {'SEVERITY':<8}  {'CREATED':<20}  TITLE")
    for i in items:
        created = (i.get("created_at") or "")[:19].replace("T", " ")
        print(f"{i['id']:>6}  {i['state']:<12}  {i['severity']:<8}  {created:<20}  {i['title']}")


def _print_incident(inc: dict[str, Any]) -> None:
    print(f"#{inc['id']} {inc['title']}")
    print(f"state: {inc['state']}   severity: {inc['severity']}")
    print("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(inc["labels"].items())))
    print(f"created: {inc['created_at']}")
    if inc.get("acknowledged_at"):
        print(f"acknowledged: {inc['acknowledged_at']} by {inc.get('acknowledged_by')}")
    if inc.get("resolved_at"):
        print(f"resolved: {inc['resolved_at']} by {inc.get('resolved_by')}")
    if inc.get("alerts"):
        print("alerts:")
        for a in inc["alerts"]:
            print(f"  {a['state']:<9} {a['alertname']} value={a['value']} " + json.dumps(a["labels"], sort_keys=True))
    if inc.get("timeline"):
        print("timeline:")
        for e in inc["timeline"]:
            extra = f" — {e['note']}" if e.get("note") else ""
            target = e.get("data", {}).get("target")
            extra += f" [{target}]" if target else ""
            print(f"  {e['at'][:19].replace('T', ' ')}  {e['kind']:<24} {e.get('actor') or ''}{extra}")


def cmd_incidents(args: argparse.Namespace) -> int:
    url, token = _client_target(args)
    action = args.action or "list"
    try:
        if action == "list":
            q = f"?state={args.state}" if args.state else ""
            res = api_call(url, token, "GET", f"/api/v1/incidents{q}")
            if args.json:
                print(json.dumps(res, indent=2))
            else:
                _print_incidents(res["incidents"])
            return EXIT_OK
        if args.id is None:
            print(f"incidents {action} needs an incident ID", file=sys.stderr)
            return EXIT_USAGE
        if args.text is not None and action != "note":
            print(f"incidents {action} takes no TEXT (use --note)", file=sys.stderr)
            return EXIT_USAGE
        if action == "show":
            res = api_call(url, token, "GET", f"/api/v1/incidents/{args.id}")
        elif action == "note":
            text = args.text if args.text is not None else args.note
            if not text:
                print("incidents note needs the note's TEXT", file=sys.stderr)
                return EXIT_USAGE
            body = {"note": text, **({"by": args.by} if args.by else {})}
            res = api_call(url, token, "POST", f"/api/v1/incidents/{args.id}/notes", body)
        else:
            body: dict[str, Any] = {}
            if args.by:
                body["by"] = args.by
            if args.note:
                body["note"] = args.note
            if action == "reassign":
                if not args.to:
                    print("incidents reassign needs --to user:NAME|schedule:NAME|channel:NAME", file=sys.stderr)
                    return EXIT_USAGE
                body["to"] = args.to
            res = api_call(url, token, "POST", f"/api/v1/incidents/{args.id}/{action}", body)
        if args.json:
            print(json.dumps(res, indent=2))
        elif action == "show":
            _print_incident(res)
        elif action in ("escalate", "reassign"):
            done = res["escalated" if action == "escalate" else "reassigned"]
            what = f"step {done['step'] + 1}" if action == "escalate" else done["to"]
            print(f"#{res['id']} is {res['state']}; paged {what}: {', '.join(done['paged']) or 'nobody'}")
        elif action == "note":
            print(f"#{res['id']}: note added")
        else:
            print(f"#{res['id']} is {res['state']}")
        return EXIT_OK
    except ClientError as e:
        print(str(e), file=sys.stderr)
        return EXIT_FAIL


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fsincident", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", metavar="DIR", help="config directory (default: $FSINCIDENT_CONFIG or .)")
        return sp

    sp = with_config(sub.add_parser("run", help="run the daemon in the foreground"))
    sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override log_level")
    sp.set_defaults(fn=cmd_run)

    sp = with_config(sub.add_parser("check", help="validate config and rules; exit 1 with file:line errors"))
    sp.set_defaults(fn=cmd_check)

    sp = sub.add_parser("db", help="database migrations")
    dsub = sp.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)
    up = with_config(dsub.add_parser("upgrade", help="apply migrations up to the latest schema"))
    up.set_defaults(fn=cmd_db)

    sp = sub.add_parser("token", help="API tokens")
    tsub = sp.add_subparsers(dest="token_command", metavar="SUBCOMMAND", required=True)
    tc = with_config(tsub.add_parser("create", help="create a token and print its secret once"))
    tc.add_argument("--name", required=True)
    tc.add_argument("--scopes", required=True, help="comma-separated: read, ack, admin, ingest")
    tc.set_defaults(fn=cmd_token)

    sp = with_config(
        sub.add_parser(
            "incidents", help="list, show, ack, resolve, escalate, reassign or add a note to incidents through the API"
        )
    )
    sp.add_argument(
        "action", nargs="?", choices=["list", "show", "ack", "resolve", "escalate", "reassign", "note"], default="list"
    )
    sp.add_argument("id", nargs="?", type=int)
    sp.add_argument("text", nargs="?", help="note: the note's text")
    sp.add_argument("--state", choices=["triggered", "acknowledged", "resolved"], help="list: only this state")
    sp.add_argument("--by", help="ack/resolve/escalate/reassign: who acts (default: the token's name)")
    sp.add_argument("--note", help="ack/resolve/escalate/reassign: a note for the timeline")
    sp.add_argument("--to", metavar="TARGET", help="reassign: user:NAME, schedule:NAME or channel:NAME to page now")
    sp.add_argument("--json", action="store_true", help="print the API's JSON")
    sp.add_argument("--url", help="daemon URL (default: $FSINCIDENT_URL or the config's listen address)")
    sp.add_argument("--token", help="API token (default: $FSINCIDENT_TOKEN)")
    sp.set_defaults(fn=cmd_incidents)

    ruletools.register(sub)
    oncall.register(sub)
    silence.register(sub)
    render.register(sub)
    report.register(sub)
    postmortem.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return EXIT_USAGE
    return int(args.fn(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
