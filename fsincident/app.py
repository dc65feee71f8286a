"""Composition root: ``Daemon(config).start() / stop() / reload()``; the only place that wires stages."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import web
from sqlmodel.ext.asyncio.session import AsyncSession

from fsincident import config as config_mod
from fsincident import plugins, ui
from fsincident.analytics.reports import ReportScheduler
from fsincident.analytics.service import AnalyticsService
from fsincident.api import ApiContext, build_app
from fsincident.config import Config
from fsincident.core import Clock, ConfigError, Problem, SystemClock
from fsincident.engine import Engine
from fsincident.escalation.schedules import HandoffNotifier, ScheduleService
from fsincident.escalation.service import EscalationService
from fsincident.evaluation.evaluator import Evaluator
from fsincident.history import HistoryService, wanted_metrics
from fsincident.incidents.service import IncidentService
from fsincident.ingest.service import IngestService
from fsincident.notify.links import LinkSigner, link_key
from fsincident.notify.outbox import Deliverer, Notifiers
from fsincident.notify.render import Renderer
from fsincident.obs import Metrics, Redactor, get_logger
from fsincident.routing.tree import Route
from fsincident.routing.tree import build as build_routes
from fsincident.routing.tree import route as route_alert
from fsincident.silences.service import SilenceService
from fsincident.sources.runner import SourceRunner
from fsincident.store import SqlStateStore, Store
from fsincident.store.leader import Leadership, replica_name

log = get_logger("fsincident.app")


def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd's NOTIFY_SOCKET when there is one (Type=notify); never fails."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall(message.encode())
        return True
    except OSError:
        return False


def routes_of(config: Config) -> Route:
    """The route tree of ``config`` (its matchers were checked by the loader)."""
    return build_routes(config.routes)


class Daemon:
    """The whole daemon, embeddable: build from a Config, start, reload, stop (never touches signals)."""

    def __init__(self, config: Config, *, clock: Clock | None = None, redactor: Redactor | None = None):
        self.config = config
        self.clock = clock or SystemClock()
        self.redactor = redactor or Redactor()
        self.metrics = Metrics()
        self.store = Store(config.database)
        self.engine = Engine(self.clock)
        self.replica = replica_name()  # hostname:pid, recorded on the outbox rows this replica claims
        # PostgreSQL: one replica at a time leads (advisory lock); SQLite: one daemon per database file.
        self.leadership = Leadership(config.database, self.replica)
        self.leadership.on_change(self._leader_changed)
        self._restored = False
        self.sources = SourceRunner(self.clock, self.metrics, lambda name: SqlStateStore(self.store, name, self.clock))
        self.history = HistoryService(  # downsampled series history for the web UI (leader only)
            self.store,
            self.clock,
            self.metrics,
            self.sources.snapshot,
            query_range=self.sources.query_range,
            label_values=self.sources.label_values,
        )
        self.notifiers = Notifiers(config)
        self.renderer = Renderer(config.templates, config.external_url)
        self.silences = SilenceService(self.store, self.clock, self.metrics, config)  # also the delivery's Muter
        self.silences.kick_incidents = self.engine.kicker(IncidentService.name)
        self.silences.on_change = self.engine.kicker(self.silences.name)
        self.deliverer = Deliverer(
            self.store,
            self.clock,
            self.metrics,
            self.notifiers,
            config.delivery,
            muter=self.silences,
            time_intervals=config.time_intervals,
            replica=self.replica,
            renderer=self.renderer,
            link_base=config.external_url,
        )
        self.schedules = ScheduleService(self.store, self.clock, self.metrics, config)
        self.handoffs = HandoffNotifier(
            self.schedules,
            destinations=lambda t: self.notifiers.destinations(t),
            kick_delivery=self.engine.kicker(self.deliverer.name),
            summary=lambda *a: self.reports.handoff_summary(*a),  # analytics.handoff_summary (issue #9)
        )
        self.schedules.on_change = self.engine.kicker(self.handoffs.name)
        self.escalation = EscalationService(
            self.store,
            self.clock,
            self.metrics,
            config,
            self.schedules,
            render_page=lambda *a: self.incidents.render_page(*a),
            destinations=lambda t: self.notifiers.destinations(t),
            kick_delivery=self.engine.kicker(self.deliverer.name),
        )
        self.incidents = IncidentService(
            self.store,
            self.clock,
            self.metrics,
            render=lambda *a: self.renderer.render(*a),
            destinations=lambda t: self.notifiers.destinations(t),
            route=lambda labels: route_alert(self.routes, labels),
            kick_delivery=self.engine.kicker(self.deliverer.name),
            escalation=self.escalation,
            kick_escalation=self.engine.kicker(self.escalation.name),
        )
        self.evaluator = Evaluator(
            self.store,
            self.clock,
            self.metrics,
            self.sources.snapshot,
            kick=self.engine.kicker(self.incidents.name),
            query=self.sources.query,
            health=self.sources.all_snapshots,
        )
        self.ingest = IngestService(  # Alertmanager API v2 / PagerDuty Events v2 alerts
            self.store,
            self.clock,
            self.metrics,
            config.alertmanager.resolve_timeout,
            kick_incidents=self.engine.kicker(self.incidents.name),
        )
        self.analytics = AnalyticsService(  # issue #9: reports, postmortems, capacity, SLA
            self.store,
            self.clock,
            lambda: self.config,
            history=self.history,
            snapshot=self.sources.snapshot,
            shifts=self.schedules.all_shifts,
        )
        self.reports = ReportScheduler(
            self.analytics,
            resolve=self._report_destinations,
            kick_delivery=self.engine.kicker(self.deliverer.name),
        )
        self.routes: Route = routes_of(config)
        self.runner: web.AppRunner | None = None
        self._ready = False
        self._watchdog: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._jobs: set[asyncio.Task[None]] = set()
        self.links: LinkSigner | None = None  # signs ack/resolve links in pages; set by start() and reload()

    async def _report_destinations(
        self, targets: Sequence[str], now: datetime, session: AsyncSession | None
    ) -> list[tuple[str, int]]:
        """Where a scheduled report or shift summary goes: each target resolved as a low-urgency page (a schedule
        to who is on call, a user to their low-urgency contacts, a channel to its destinations)."""
        res = await self.escalation.resolve_targets(targets, "info", now, session=session)
        for target, why in res.skipped:
            log.warning("report_target_skipped", target=target, reason=why)
        return [(target, index) for target, index, _ in res.pages]

    @property
    def link_base(self) -> str:
        """Where signed links point: the external URL (``http://{listen}`` when none is configured)."""
        return self.config.external_url

    async def _link_signer(self, config: Config) -> LinkSigner:
        """The link signer of ``config``: its secret, else the key kept in the database; raises on a store error."""
        key = await link_key(self.store, config.links.secret)
        self.redactor.add([key.decode("utf-8", "replace")])  # the generated key is a secret like a configured one
        return LinkSigner(key, config.links.ttl)

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        """Migrate, load rule state, bind the API, start the engine; raises on a bad database or port."""
        self._set_secrets(self.config)
        await self.leadership.start()  # SQLite: refuses a second daemon on the file; PostgreSQL: first try
        if not self.leadership.is_leader:
            await self._leader_changed(False)
        async with self.leadership.exclusive():  # replicas starting together migrate one at a time
            await self.store.upgrade()
        self.links = await self._link_signer(self.config)
        if self.store.is_sqlite:  # single node (lock file): pages left in "sending" died with their process
            await self.deliverer.release_orphaned_leases(self.clock.now())
        term = self.leadership.term
        await self.evaluator.restore()
        await self.ingest.restore()
        self._restored = True
        if self.leadership.term != term and self.leadership.is_leader:  # promoted while loading: load again
            await self._leader_changed(True)
        ctx = ApiContext(
            store=self.store,
            incidents=self.incidents,
            evaluator=self.evaluator,
            metrics=self.metrics,
            ready=lambda: self._ready,
            sources=self.sources,
            schedules=self.schedules,
            escalation=self.escalation,
            silences=self.silences,
            ingest=self.ingest,
            config=lambda: self.config,
            routes=lambda: self.routes,
            started_at=time.time(),
            links=lambda: self.links,
            role=lambda: self.leadership.role,
            history=self.history,
            analytics=self.analytics,
            reports=self.reports,
        )
        api = build_app(ctx, extra_routes=ui.add_routes if self.config.ui.enabled else None)
        self.runner = web.AppRunner(api, access_log=None, handle_signals=False, shutdown_timeout=5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        # Leader-only stages run on one replica at a time; delivery (SKIP LOCKED claims) and the API run on every
        # one. Ingest runs everywhere to write the ends it keeps in memory; only the leader expires (``expiring``).
        self.engine.add(self.incidents, idle=1.0, leader_only=True)
        self.engine.add(self.deliverer, idle=1.0)
        self.engine.add(self.escalation, idle=1.0, leader_only=True)
        self.engine.add(self.silences, idle=5.0, leader_only=True)  # wakes when a silence starts or ends (sleep_hint)
        self.engine.add(self.ingest, idle=5.0)  # wakes when an ingested alert ends (sleep_hint)
        self.engine.add(self.handoffs, idle=30.0, leader_only=True)  # wakes at the next handoff (sleep_hint) or kick
        self.engine.add(self.history, idle=1.0, leader_only=True)  # wakes when its fine buckets end (sleep_hint)
        self.engine.add(self.reports, idle=30.0, leader_only=True)  # wakes at the next report's fire time (sleep_hint)
        await self._apply(self.config)
        self.engine.start()
        self._ready = True
        self.metrics.reload_ok.set(1)
        self.metrics.reload_time.set(time.time())
        log.info(
            "daemon_started",
            listen=self.config.listen,
            database=_safe_db(self.config.database),
            sources=len(self.config.sources),
            rules=len(self.config.rules),
        )
        sd_notify("READY=1\nSTATUS=running")
        self._start_watchdog()

    async def _apply(self, config: Config) -> None:
        """Wire a validated config into the running stages and (re)schedule their jobs."""
        await self.sources.configure(config.sources)
        self.notifiers = Notifiers(config)
        self.renderer = Renderer(config.templates, config.external_url)
        self.deliverer.configure(
            self.notifiers,
            config.delivery,
            config.time_intervals,
            renderer=self.renderer,
            signer=self.links,
            link_base=config.external_url,
        )
        self.incidents.external_url = config.external_url
        self.routes = routes_of(config)
        self.schedules.configure(config)
        self.escalation.configure(config)
        self.silences.configure(config)
        self.ingest.configure(config)
        self.history.configure(config.history, wanted_metrics(config), {s.name: s.type for s in config.sources})
        self.evaluator.set_groups(config.groups, config.slos)
        if self.leadership.is_leader:  # a follower's rule state may be stale; the leader resolves removed rules
            await self.evaluator.resolve_removed()
        keep = set()
        for s in config.sources:
            job = f"source:{s.name}"
            keep.add(job)
            self.engine.every(job, s.interval, _quiet(lambda n=s.name: self.sources.collect(n), self._jobs))
        for g in config.groups:
            job = f"group:{g.name}"
            keep.add(job)
            # Start a quarter of a source interval (at most 250 ms) after the sources, so a group evaluates
            # data collected moments before instead of racing the collection of the same tick.
            shortest = min((s.interval for s in config.sources), default=g.interval)
            delay = min(timedelta(milliseconds=250), shortest / 4)
            self.engine.every(
                job,
                g.interval,
                _quiet(lambda n=g.name: self.evaluator.evaluate_group(n), self._jobs),
                delay=delay,
                leader_only=True,
            )
        self.engine.every(
            "health:sources", timedelta(seconds=2), _quiet(self.evaluator.evaluate_health, self._jobs), leader_only=True
        )
        self.engine.remove_jobs_except("source:", keep)
        self.engine.remove_jobs_except("group:", keep)

    async def _leader_changed(self, leader: bool) -> None:
        """On promotion take over the rule state and the firing index from SQL (the previous leader kept them),
        then run the leader-only stages; on step-down pause them. Raises on a database error (Leadership then
        steps down and tries again)."""
        if leader and self._restored:
            await self.evaluator.restore(reset=True)
            self.evaluator.set_groups(self.config.groups, self.config.slos)  # state of rules no longer configured
            await self.evaluator.resolve_removed()
            await self.ingest.reload()
        self.ingest.expiring = leader
        self.history.reset()  # the leader's buckets are in SQL; a new leader continues from there
        self.engine.set_leader(leader)
        self.metrics.leader.set(1 if leader else 0)

    def _set_secrets(self, config: Config) -> None:
        secrets = Notifiers(config).secrets()
        secrets.extend(i.routing_key for i in config.integrations)  # PagerDuty routing keys are credentials
        password = _db_password(config.database)
        if password:
            secrets.append(password)
        if config.links.secret:
            secrets.append(config.links.secret)
        if config.chatops.slack is not None:  # chat-ops credentials
            secrets.append(config.chatops.slack.signing_secret)
        if config.chatops.mattermost is not None:
            secrets.append(config.chatops.mattermost.token)
        # A source kind declares its secrets (passwords, tokens, heartbeat keys) with a static
        # ``secrets_of(options) -> list[str]``.
        for opts in config.sources:
            secrets_of = getattr(plugins.sources.get(opts.type), "secrets_of", None)
            if secrets_of is not None:
                secrets.extend(s for s in secrets_of(opts) if s)
        # Added to those of earlier configs, not replacing them: a reload that fails after this keeps running the
        # old config, and pages already in flight may still name an old destination.
        self.redactor.add(secrets)

    async def reload(self) -> bool:
        """Reload the config directory; a bad config keeps the running one. Returns success."""
        async with self._reload_lock:
            sd_notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                new = config_mod.load(self.config.directory)
                if new.database != self.config.database or new.listen != self.config.listen:
                    raise ConfigError(
                        [
                            Problem(
                                str(Path(self.config.directory) / config_mod.MAIN_FILE),
                                None,
                                "listen/database",
                                "changing these needs a restart",
                            )
                        ]
                    )
                self._set_secrets(new)
                signer = await self._link_signer(new)
                await self._apply(new)
            except ConfigError as e:
                self.metrics.reload_ok.set(0)
                log.error("config_reload_failed", problems=[str(p) for p in e.problems])
                sd_notify("READY=1\nSTATUS=running (last reload failed)")
                return False
            except Exception as e:
                self.metrics.reload_ok.set(0)
                log.exception("config_reload_failed", error=str(e))
                sd_notify("READY=1\nSTATUS=running (last reload failed)")
                return False
            self.config = new
            self.links = signer
            self.deliverer.signer = signer
            self.metrics.reload_ok.set(1)
            self.metrics.reload_time.set(time.time())
            log.info("config_reloaded", sources=len(new.sources), rules=len(new.rules))
            sd_notify("READY=1\nSTATUS=running")
            return True

    def _start_watchdog(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC")
        if not usec or not usec.isdigit():
            return
        interval = int(usec) / 1e6 / 2

        async def ping() -> None:
            while True:
                await asyncio.sleep(interval)
                if await self.store.ping():
                    sd_notify("WATCHDOG=1")

        self._watchdog = asyncio.create_task(ping())

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Stop in reverse order: API, evaluation, then let in-flight deliveries finish and record."""
        sd_notify("STOPPING=1")
        self._ready = False
        if self._watchdog:
            self._watchdog.cancel()
        if self.runner is not None:
            await self.runner.cleanup()
        self.deliverer.draining = True
        drain = drain_seconds if drain_seconds is not None else self.config.delivery.timeout.total_seconds() + 5
        await self.engine.stop(drain={self.deliverer.name: drain, self.incidents.name: 10, self.escalation.name: 10})
        # Collections and evaluations still running get a moment to finish, then are cancelled and
        # awaited, so no database connection is left checked out when the store closes.
        if self._jobs:
            _, pending = await asyncio.wait(set(self._jobs), timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.leadership.is_leader:  # the open history buckets, partial as they are
            try:
                await self.history.close()
            except Exception:
                log.exception("history_flush_failed")
        await self.evaluator.close()
        await self.sources.close()
        await self.ingest.close()
        await self.leadership.close()  # after the leader-only work stopped: a follower takes over at once
        await self.store.close()
        log.info("daemon_stopped")


def _safe_db(url: str) -> str:
    if "@" in url and ":" in url.split("@", 1)[0].split("://", 1)[-1]:
        scheme, rest = url.split("://", 1)
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}://{user}:***@{rest.split('@', 1)[1]}"
    return url


def _db_password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _quiet(fn: Callable[[], object], running: set[asyncio.Task[None]]) -> Callable[[], object]:
    """Wrap a scheduled coroutine: failures are logged, shutdown's cancellation is not an error, and
    the running task is kept in ``running`` so ``stop`` can wait for it before closing the store."""

    async def run() -> None:
        task = asyncio.current_task()
        if task is not None:
            running.add(task)  # type: ignore[arg-type]
        try:
            await fn()  # type: ignore[misc]
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("job_failed")
        finally:
            if task is not None:
                running.discard(task)  # type: ignore[arg-type]

    return run
