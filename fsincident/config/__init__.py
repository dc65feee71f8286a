"""load(dir) -> Config, or ConfigError listing every problem as ``file:line: key: message``.

``check``, ``run`` and the SIGHUP reload all go through :func:`load`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fsincident import cron, plugins
from fsincident.appriseurl import check_apprise_url
from fsincident.config.model import (
    REPORT_PERIODS,
    AlertmanagerApiOptions,
    AnalyticsOptions,
    ChatOpsOptions,
    ContactOptions,
    DaemonOptions,
    DeliveryOptions,
    GroupOptions,
    HistoryOptions,
    InhibitRuleOptions,
    IntegrationOptions,
    LinksOptions,
    ReportOptions,
    RouteOptions,
    RuleFileOptions,
    RuleOptions,
    SilencesOptions,
    TimeIntervalOptions,
    TimeIntervalSpec,
    UiOptions,
    UserOptions,
)
from fsincident.config.oncall import (
    EscalationPolicy,
    Layer,
    Restriction,
    Schedule,
    Step,
    check_targets,
    load_policies,
    load_schedules,
)
from fsincident.config.rule import DEFAULT_INTERVAL, Rule, RuleGroup
from fsincident.config.slo import Slo, load_slos
from fsincident.config.yamlmarks import Document, load_yaml, pydantic_problems
from fsincident.core import ConfigError, Problem, parse_duration, valid_label_name
from fsincident.expr import CompiledExpr, ExprError, compile_expr
from fsincident.matchers import Matcher, MatcherError, parse_matcher_list, parse_selector
from fsincident.sandbox import CompiledTemplate, TemplateProblem
from fsincident.timeintervals import interval_problems

MAIN_FILE = "fsincident.yaml"
TEMPLATE_NAMES = (
    *("title", "message", "chat", "email_subject", "email.html", "email.txt", "digest"),
    *("report_subject", "report.html", "report.txt", "shift.html", "shift.txt"),
)
"""Notification templates a config dir's ``templates/NAME.j2`` may override (see fsincident/notify/render.py)."""

Contact = ContactOptions
"""One contact method of a user: ``url``, ``after`` (timedelta) and ``urgency`` (high|low|any)."""

__all__ = [
    "DEFAULT_INTERVAL",
    "Config",
    "ConfigError",
    "Contact",
    "EscalationPolicy",
    "Layer",
    "Restriction",
    "Rule",
    "RuleGroup",
    "Schedule",
    "Slo",
    "Step",
    "default_database",
    "load",
    "load_rule_files",
]


@dataclass(frozen=True)
class Config:
    """Everything the daemon runs on, validated; build it with :func:`load`."""

    directory: Path
    listen: str
    database: str
    external_url: str
    log_level: str
    delivery: DeliveryOptions
    sources: tuple[plugins.SourceOptions, ...]
    channels: tuple[plugins.ChannelOptions, ...]
    users: tuple[UserOptions, ...]
    routes: tuple[RouteOptions, ...]
    groups: tuple[RuleGroup, ...]
    templates: dict[str, CompiledTemplate] = field(default_factory=dict)
    files: tuple[str, ...] = field(default=())
    slos: tuple[Slo, ...] = field(default=())
    """SLOs; each one's burn-rate rules are also in ``groups`` (a group named after the SLO)."""
    schedules: tuple[Schedule, ...] = field(default=())
    escalation_policies: tuple[EscalationPolicy, ...] = field(default=())
    time_intervals: tuple[TimeIntervalOptions, ...] = field(default=())
    inhibit_rules: tuple[InhibitRuleOptions, ...] = field(default=())
    integrations: tuple[IntegrationOptions, ...] = field(default=())
    alertmanager: AlertmanagerApiOptions = field(default_factory=AlertmanagerApiOptions)
    silences: SilencesOptions = field(default_factory=SilencesOptions)
    links: LinksOptions = field(default_factory=LinksOptions)
    chatops: ChatOpsOptions = field(default_factory=ChatOpsOptions)
    ui: UiOptions = field(default_factory=UiOptions)
    history: HistoryOptions = field(default_factory=HistoryOptions)
    analytics: AnalyticsOptions = field(default_factory=AnalyticsOptions)
    reports: tuple[ReportOptions, ...] = field(default=())

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]") or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def source(self, name: str) -> plugins.SourceOptions | None:
        return next((s for s in self.sources if s.name == name), None)

    def channel(self, name: str) -> plugins.ChannelOptions | None:
        return next((c for c in self.channels if c.name == name), None)

    def user(self, name: str) -> UserOptions | None:
        return next((u for u in self.users if u.name == name), None)

    @property
    def rules(self) -> list[Rule]:
        return [r for g in self.groups for r in g.rules]

    def slo(self, name: str) -> Slo | None:
        return next((s for s in self.slos if s.name == name), None)

    def schedule(self, name: str) -> Schedule | None:
        """The schedule called ``name``, or None when there is none."""
        return next((s for s in self.schedules if s.name == name), None)

    def policy(self, name: str) -> EscalationPolicy | None:
        """The escalation policy called ``name``, or None when there is none."""
        return next((p for p in self.escalation_policies if p.name == name), None)

    def contacts(self, user_name: str) -> tuple[Contact, ...]:
        """The user's contact methods in config order; empty for an unknown user."""
        u = self.user(user_name)
        return tuple(u.contacts) if u is not None else ()


def default_database() -> str:
    """SQLite in systemd's StateDirectory when set, else ``./state/fsincident.db``."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return f"sqlite:///{state}/state.db"
    return "sqlite:///state/fsincident.db"


def _kind_options(
    doc: Document,
    section: str,
    registry: plugins.Registry,
    items: list[dict[str, Any]],
    problems: list[Problem],
    default_type: str | None = None,
    names: set[str] | None = None,
) -> list[Any]:
    out = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        path = (section, i)
        if not isinstance(item, dict):
            problems.append(doc.problem(path, "must be a mapping"))
            continue
        if names is not None and isinstance(item.get("name"), str):
            names.add(item["name"])
        kind = item.get("type", default_type)
        if kind is None:
            problems.append(doc.problem(path, "required key 'type' is missing"))
            continue
        try:
            cls = registry.get(str(kind))
        except plugins.PluginError as e:
            problems.append(doc.problem((*path, "type"), str(e)))
            continue
        data = dict(item)
        data.setdefault("type", kind)
        try:
            opts = cls.Options.model_validate(data)
        except ValidationError as e:
            problems.extend(pydantic_problems(doc, path, e))
            continue
        interval = getattr(opts, "interval", None)
        if isinstance(interval, timedelta) and interval <= timedelta(0):
            problems.append(doc.problem((*path, "interval"), "interval must be positive"))
        extra = getattr(cls, "validate_options", None)
        if extra is not None:
            for key, msg in extra(opts):
                problems.append(doc.problem((*path, *key), msg))
        if opts.name in seen:
            problems.append(doc.problem((*path, "name"), f"duplicate {section[:-1]} name {opts.name!r}"))
        seen[opts.name] = i
        out.append(opts)
    return out


def _check_contacts(doc: Document, i: int, contacts: Any, problems: list[Problem]) -> None:
    # Checked on the raw items, so a URL problem is found even when another key of the user is wrong.
    for j, c in enumerate(contacts if isinstance(contacts, list) else []):
        url, path = (c, ("users", i, "contacts", j)) if isinstance(c, str) else (None, ())
        if isinstance(c, dict) and isinstance(c.get("url"), str):
            url, path = c["url"], ("users", i, "contacts", j, "url")
        msg = check_apprise_url(url) if url is not None else None
        if msg:
            problems.append(doc.problem(path, msg))


def _split(data: Any, key: str) -> tuple[Any, list[Any] | None]:
    """``data`` without its list under ``key`` (validated item by item instead), and that list."""
    if isinstance(data, dict) and isinstance(data.get(key), list):
        return {k: v for k, v in data.items() if k != key}, data[key]
    return data, None


def _load_rules(
    doc: Document,
    sources: dict[str, plugins.SourceOptions | None],
    problems: list[Problem],
    seen_groups: dict[str, tuple[str, str]],
) -> tuple[list[RuleGroup], list[Slo]]:
    # File, groups, rules and SLOs are validated separately, so that one bad rule hides no other problem.
    head, groups_raw = _split(doc.data if doc.data is not None else {}, "groups")
    head, slos_raw = _split(head, "slos")
    try:
        RuleFileOptions.model_validate(head)
    except ValidationError as e:
        problems.extend(pydantic_problems(doc, (), e))
    groups = []
    for gi, graw in enumerate(groups_raw or []):
        gpath = ("groups", gi)
        ghead, rules_raw = _split(graw, "rules")
        g = None
        try:
            g = GroupOptions.model_validate(ghead)
        except ValidationError as e:
            problems.extend(pydantic_problems(doc, gpath, e))
        if g is not None:
            group_name, group_source = g.name, g.source
            if g.name in seen_groups:
                kind, file = seen_groups[g.name]
                msg = (
                    f"duplicate group name {g.name!r} (also in {file})"
                    if kind == "group"
                    else f"group name {g.name!r} is taken by an SLO (in {file}); its alerts form a group of that name"
                )
                problems.append(doc.problem((*gpath, "name"), msg))
            seen_groups.setdefault(g.name, ("group", doc.file))
            if g.interval is not None and g.interval <= timedelta(0):
                problems.append(doc.problem((*gpath, "interval"), "interval must be positive"))
            if g.source is not None and g.source not in sources:
                problems.append(doc.problem((*gpath, "source"), f"unknown source {g.source!r}"))
        elif isinstance(graw, dict):
            # Still check the rules; a broken group source is reported above, not as each rule's "no source".
            group_name = str(graw.get("name", "?"))
            group_source = None if graw.get("source") is None else str(graw["source"])
        else:
            continue
        rules = []
        alerts: set[str] = set()
        for ri, rraw in enumerate(rules_raw or []):
            rpath = (*gpath, "rules", ri)
            try:
                r = RuleOptions.model_validate(rraw)
            except ValidationError as e:
                problems.extend(pydantic_problems(doc, rpath, e))
                for key in ("expr", "resolve_expr"):
                    if isinstance(rraw, dict) and isinstance(rraw.get(key), str):
                        _compile_expr(doc, rpath, rraw[key], rraw.get("query"), problems, key)
                continue
            rule = _compile_rule(doc, rpath, group_name, group_source, r, sources, problems)
            if r.alert in alerts:
                problems.append(doc.problem((*rpath, "alert"), f"duplicate alert {r.alert!r} in group {group_name!r}"))
            alerts.add(r.alert)
            if rule is not None:
                rules.append(rule)
        if g is not None:
            groups.append(RuleGroup(g.name, g.interval or DEFAULT_INTERVAL, g.source, tuple(rules), doc.file))
    slos, slo_groups = load_slos(doc, slos_raw or [], sources, problems, seen_groups)
    return groups + slo_groups, slos


def _compile_expr(
    doc: Document, rpath: tuple, expr: str, query: Any, problems: list[Problem], key: str = "expr"
) -> CompiledExpr | None:
    try:
        compiled = compile_expr(expr, require_metric=query is None)
    except ExprError as e:
        col = f" (column {e.column + 1})" if e.column is not None else ""
        problems.append(doc.problem((*rpath, key), f"{e}{col}"))
        return None
    if query is not None and compiled.metrics:
        problems.append(doc.problem((*rpath, key), f"a query rule's {key} may only use value and labels"))
        return None
    return compiled


def _compile_rule(
    doc: Document,
    rpath: tuple,
    group: str,
    group_source: str | None,
    r: RuleOptions,
    sources: dict[str, plugins.SourceOptions | None],
    problems: list[Problem],
) -> Rule | None:
    ok = True
    source = r.source or group_source
    if source is None:
        problems.append(doc.problem(rpath, "no source: set source: on the rule or its group"))
        ok = False
    elif r.source is not None and r.source not in sources:
        problems.append(doc.problem((*rpath, "source"), f"unknown source {r.source!r}"))
        ok = False
    elif (opts := sources.get(source)) is not None and r.query is not None:
        cls = plugins.sources.get(opts.type)
        if not getattr(cls, "supports_query", False):
            problems.append(
                doc.problem((*rpath, "query"), f"source {source!r} (type {opts.type}) does not run queries")
            )
            ok = False
    compiled = _compile_expr(doc, rpath, r.expr, r.query, problems)
    if compiled is None:
        ok = False
    resolve = None
    if r.resolve_expr is not None:
        resolve = _compile_expr(doc, rpath, r.resolve_expr, r.query, problems, "resolve_expr")
        ok = ok and resolve is not None
    if r.flapping is not None and r.flapping.window <= timedelta(0):
        problems.append(doc.problem((*rpath, "flapping", "window"), "window must be positive"))
        ok = False
    templates = {}
    for name, text in r.annotations.items():
        try:
            templates[name] = CompiledTemplate(text)
        except TemplateProblem as e:
            problems.append(doc.problem((*rpath, "annotations", name), str(e)))
            ok = False
    for lname in ("alertname",):
        if lname in r.labels:
            problems.append(doc.problem((*rpath, "labels", lname), f"label {lname!r} is set by fsincident"))
            ok = False
    if not ok or compiled is None or source is None:
        return None
    labels = dict(r.labels)
    labels.setdefault("severity", r.severity.value)
    return Rule(
        group=group,
        alert=r.alert,
        source=source,
        expr=compiled,
        query=r.query,
        for_=r.for_,
        keep_firing_for=r.keep_firing_for,
        severity=r.severity,
        labels=labels,
        annotations=templates,
        file=doc.file,
        line=doc.line_of(rpath) or 0,
        nodata=r.nodata,
        on_error=r.on_error,
        resolve_expr=resolve,
        flap_window=r.flapping.window if r.flapping else timedelta(0),
        flap_changes=r.flapping.changes if r.flapping else 0,
    )


def _read(path: Path, problems: list[Problem]) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        problems.append(Problem(str(path), None, "", f"not UTF-8 text (byte {e.start})"))
    except OSError as e:
        problems.append(Problem(str(path), None, "", f"cannot read: {e.strerror or e}"))
    return None


def _check_route(
    doc: Document,
    path: tuple[Any, ...],
    raw: Any,
    known: dict[str, set[str]],
    policy_names: set[str],
    interval_names: set[str],
    problems: list[Problem],
) -> RouteOptions | None:
    """Validate one route, then each of its child routes on its own (a bad child is reported once, at its own
    path, and hides nothing of its parent or siblings); None when the route itself is invalid."""
    children = raw.get("routes") if isinstance(raw, dict) else None
    own = {k: v for k, v in raw.items() if k != "routes"} if isinstance(children, list) else raw
    try:
        route: RouteOptions | None = RouteOptions.model_validate(own)
    except ValidationError as e:
        problems.extend(pydantic_problems(doc, path, e))
        notify = raw.get("notify") if isinstance(raw, dict) else None
        if isinstance(notify, list):
            check_targets(doc, (*path, "notify"), notify, known, problems)
        route = None
    if route is not None:
        _check_route_fields(doc, path, route, known, policy_names, interval_names, problems)
    kids = [
        _check_route(doc, (*path, "routes", j), child, known, policy_names, interval_names, problems)
        for j, child in enumerate(children if isinstance(children, list) else [])
    ]
    if route is None:
        return None
    return route.model_copy(update={"routes": [k for k in kids if k is not None]})


def _check_route_fields(
    doc: Document,
    path: tuple[Any, ...],
    route: RouteOptions,
    known: dict[str, set[str]],
    policy_names: set[str],
    interval_names: set[str],
    problems: list[Problem],
) -> None:
    """The checks of one route that pydantic cannot make: targets, names, matchers, grouping, timing."""
    check_targets(doc, (*path, "notify"), route.notify or [], known, problems)
    if route.escalation_policy is not None and route.escalation_policy not in policy_names:
        problems.append(
            doc.problem((*path, "escalation_policy"), f"unknown escalation policy {route.escalation_policy!r}")
        )
    group_by = route.group_by or []
    for j, name in enumerate(group_by):
        if name != "..." and not valid_label_name(name):
            problems.append(doc.problem((*path, "group_by", j), f"invalid label name {name!r}"))
        elif name in group_by[:j]:
            problems.append(doc.problem((*path, "group_by", j), f"{name!r} is listed twice"))
    for k, v in route.match_re.items():
        try:
            Matcher.make(k, "=~", v)
        except MatcherError as e:
            problems.append(doc.problem((*path, "match_re", k), str(e)))
    for j, text in enumerate(route.matchers):
        try:
            parse_matcher_list(text)
        except MatcherError as e:
            problems.append(doc.problem((*path, "matchers", j), str(e)))
    for key in ("group_interval", "repeat_interval"):
        if getattr(route, key) == timedelta(0):
            problems.append(doc.problem((*path, key), "must not be zero"))
    for key in ("mute_time_intervals", "active_time_intervals"):
        for j, name in enumerate(getattr(route, key)):
            if name not in interval_names:
                problems.append(doc.problem((*path, key, j), f"unknown time interval {name!r}"))


@dataclass(frozen=True)
class _AlertmanagerSections:
    time_intervals: tuple[TimeIntervalOptions, ...] = ()
    inhibit_rules: tuple[InhibitRuleOptions, ...] = ()
    integrations: tuple[IntegrationOptions, ...] = ()
    interval_names: frozenset[str] = frozenset()  # every name given, valid or not: routes naming it are fine


_RANGE_KEYS = ("weekdays", "days_of_month", "months", "years")


def _numbers_as_text(spec: Any) -> Any:
    """A time interval entry with YAML numbers (``days_of_month: [1, -1]``, ``years: [2026]``) as text, as
    Alertmanager reads them; the raw entry keeps them for messages about unquoted ``17:00`` (a base-60 number)."""
    if not isinstance(spec, dict):
        return spec

    def text(v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    out = dict(spec)
    for key in _RANGE_KEYS:
        if isinstance(out.get(key), list):
            out[key] = [text(v) for v in out[key]]
    if isinstance(out.get("times"), list):
        out["times"] = [{k: text(v) for k, v in t.items()} if isinstance(t, dict) else t for t in out["times"]]
    return out


def _check_time_interval(doc: Document, i: int, raw: Any, problems: list[Problem]) -> TimeIntervalOptions | None:
    path: tuple[Any, ...] = ("time_intervals", i)
    specs = raw.get("time_intervals") if isinstance(raw, dict) else None
    data = {**raw, "time_intervals": [_numbers_as_text(s) for s in specs]} if isinstance(specs, list) else raw
    try:
        interval: TimeIntervalOptions | None = TimeIntervalOptions.model_validate(data)
    except ValidationError as e:
        problems.extend(pydantic_problems(doc, path, e))
        interval = None
    for j, spec in enumerate(specs if isinstance(specs, list) else []):
        if not isinstance(spec, dict):
            continue
        try:  # fields of the wrong shape were reported above; the others get the field checks
            TimeIntervalSpec.model_validate(_numbers_as_text(spec))
            checked = spec
        except ValidationError as e:
            bad = {err["loc"][0] for err in e.errors() if err["loc"]}
            checked = {k: v for k, v in spec.items() if k not in bad and k in TimeIntervalSpec.model_fields}
        for where, message in interval_problems(checked):
            problems.append(doc.problem((*path, "time_intervals", j, *where), message))
    return interval


def _check_inhibit_rule(doc: Document, i: int, raw: Any, problems: list[Problem]) -> InhibitRuleOptions | None:
    path: tuple[Any, ...] = ("inhibit_rules", i)
    try:
        rule = InhibitRuleOptions.model_validate(raw)
    except ValidationError as e:
        problems.extend(pydantic_problems(doc, path, e))
        return None
    for key in ("source_matchers", "target_matchers"):
        for j, text in enumerate(getattr(rule, key)):
            try:
                parse_matcher_list(text)
            except MatcherError as e:
                problems.append(doc.problem((*path, key, j), str(e)))
    for j, name in enumerate(rule.equal):
        if not valid_label_name(name):
            problems.append(doc.problem((*path, "equal", j), f"invalid label name {name!r}"))
    if not (rule.source_matchers or rule.source_match):
        problems.append(doc.problem(path, "needs source_matchers (or source_match): which alerts inhibit"))
    if not (rule.target_matchers or rule.target_match):
        problems.append(doc.problem(path, "needs target_matchers (or target_match): which alerts are inhibited"))
    return rule


def _check_alertmanager_sections(
    doc: Document, lists: dict[str, list[Any] | None], problems: list[Problem]
) -> _AlertmanagerSections:
    """``time_intervals``, ``inhibit_rules`` and ``integrations``, item by item (one bad item hides nothing):
    names unique, matchers and windows valid; every problem located."""
    intervals: list[TimeIntervalOptions] = []
    names: set[str] = set()
    for i, raw in enumerate(lists.get("time_intervals") or []):
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str) and name in names:
            problems.append(doc.problem(("time_intervals", i, "name"), f"duplicate time interval name {name!r}"))
        if isinstance(name, str):
            names.add(name)
        ti = _check_time_interval(doc, i, raw, problems)
        if ti is not None:
            intervals.append(ti)
    rules = [_check_inhibit_rule(doc, i, raw, problems) for i, raw in enumerate(lists.get("inhibit_rules") or [])]
    integrations: list[IntegrationOptions] = []
    seen: set[str] = set()
    keys: set[str] = set()
    for i, raw in enumerate(lists.get("integrations") or []):
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str) and name in seen:
            problems.append(doc.problem(("integrations", i, "name"), f"duplicate integration name {name!r}"))
        if isinstance(name, str):
            seen.add(name)
        try:
            integ = IntegrationOptions.model_validate(raw)
        except ValidationError as e:
            problems.extend(pydantic_problems(doc, ("integrations", i), e))
            continue
        if integ.routing_key in keys:  # never echo the key: it is a secret
            problems.append(doc.problem(("integrations", i, "routing_key"), "the same routing_key is used twice"))
        keys.add(integ.routing_key)
        integrations.append(integ)
    return _AlertmanagerSections(
        tuple(intervals), tuple(r for r in rules if r is not None), tuple(integrations), frozenset(names)
    )


def _check_ui(
    doc: Document, options: DaemonOptions | None, source_names: Iterable[str], problems: list[Problem]
) -> None:
    """Metric cards: a selector that parses and a known source; history tiers that nest."""
    if options is None:
        return
    names = set(source_names)
    for i, card in enumerate(options.ui.cards):
        try:
            parse_selector(card.series)
        except MatcherError as e:
            problems.append(doc.problem(("ui", "cards", i, "series"), str(e)))
        if card.source is not None and card.source not in names:
            problems.append(doc.problem(("ui", "cards", i, "source"), f"unknown source {card.source!r}"))
    h = options.history
    if h.step < timedelta(seconds=1):
        problems.append(doc.problem(("history", "step"), "must be at least 1s"))
    elif h.coarse_step < h.step or h.coarse_step % h.step:
        problems.append(doc.problem(("history", "coarse_step"), "must be a whole multiple of history.step"))
    if h.keep < h.step:
        problems.append(doc.problem(("history", "keep"), "must be at least history.step"))
    if h.coarse_keep < h.coarse_step:
        problems.append(doc.problem(("history", "coarse_keep"), "must be at least history.coarse_step"))


def report_period(text: str) -> str | timedelta:
    """A report's ``period``: ``day``/``week``/``month``, or a duration of at least a minute; raises ValueError."""
    t = text.strip().lower()
    if t in REPORT_PERIODS:
        return t
    try:
        d = parse_duration(t)
    except ValueError:
        raise ValueError(f"invalid period {text!r}: write day, week, month or a duration such as 7d") from None
    if d < timedelta(minutes=1) or d > timedelta(days=400):
        raise ValueError("period must be between 1m and 400d")
    return d


def cron_trigger(expr: str, timezone: str) -> Any:
    """The apscheduler trigger of a crontab line (5 fields or a macro such as ``@daily``) in ``timezone``, with
    crontab's meaning (see :mod:`fsincident.cron`); raises ValueError naming the problem."""
    try:
        trigger = cron.cron_trigger(expr, timezone)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f'invalid schedule {expr!r}: {e} (e.g. "0 8 * * mon": 08:00 every Monday)') from None
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise ValueError(f"schedule {expr!r} never fires")
    return trigger


REPORT_GROUPS = ("severity", "rule", "route")
"""What reports may group by besides a label name."""


def _group_by_problem(value: str | None) -> str | None:
    if value is None or value in REPORT_GROUPS or valid_label_name(value):
        return None
    return f"invalid group_by {value!r}: write a label name, severity, rule or route"


def _check_analytics(
    doc: Document,
    options: DaemonOptions | None,
    raw_reports: list[Any],
    source_names: Iterable[str],
    known: dict[str, set[str]],
    problems: list[Problem],
) -> list[ReportOptions]:
    """Services (matchers and series that parse, known sources) and reports (cron, period, known targets)."""
    names = set(source_names)
    if options is not None:
        msg = _group_by_problem(options.analytics.group_by)
        if msg:
            problems.append(doc.problem(("analytics", "group_by"), msg))
        seen: set[str] = set()
        for i, svc in enumerate(options.analytics.services):
            where = ("analytics", "services", i)
            if svc.name in seen:
                problems.append(doc.problem((*where, "name"), f"duplicate service name {svc.name!r}"))
            seen.add(svc.name)
            for j, m in enumerate(svc.matchers):
                try:
                    parse_matcher_list(m)
                except MatcherError as e:
                    problems.append(doc.problem((*where, "matchers", j), str(e)))
            if svc.series is not None:
                try:
                    parse_selector(svc.series)
                except MatcherError as e:
                    problems.append(doc.problem((*where, "series"), str(e)))
            if svc.source is not None and svc.source not in names:
                problems.append(doc.problem((*where, "source"), f"unknown source {svc.source!r}"))
            if svc.source is not None and svc.series is None:
                problems.append(
                    doc.problem((*where, "source"), "a source needs a series (probe_success-style, 1 = up)")
                )
    out: list[ReportOptions] = []
    seen_reports: set[str] = set()
    for i, raw in enumerate(raw_reports):
        try:
            r = ReportOptions.model_validate(raw)
        except ValidationError as e:
            problems.extend(pydantic_problems(doc, ("reports", i), e))
            continue
        ok = True
        if r.name in seen_reports:
            problems.append(doc.problem(("reports", i, "name"), f"duplicate report name {r.name!r}"))
            ok = False
        seen_reports.add(r.name)
        try:
            cron_trigger(r.schedule, r.timezone)
        except ValueError as e:
            problems.append(doc.problem(("reports", i, "schedule"), str(e)))
            ok = False
        msg = _group_by_problem(r.group_by)
        if msg:
            problems.append(doc.problem(("reports", i, "group_by"), msg))
            ok = False
        try:
            report_period(r.period)
        except ValueError as e:
            problems.append(doc.problem(("reports", i, "period"), str(e)))
            ok = False
        before = len(problems)
        check_targets(doc, ("reports", i, "to"), r.to, known, problems)
        if ok and len(problems) == before:
            out.append(r)
    return out


def _check_delivery(
    doc: Document,
    options: DaemonOptions | None,
    channels: list[plugins.ChannelOptions],
    known: dict[str, set[str]],
    problems: list[Problem],
) -> None:
    """Fallback targets must exist; a lease must outlast the send timeout (or a slow send is sent twice)."""

    def dangling(target: str) -> str | None:
        kind, _, name = target.partition(":")
        if name not in known.get(kind, set()):
            return f"unknown {kind} {name!r}"
        return None

    if options is not None:
        d = options.delivery
        if d.fallback and (msg := dangling(d.fallback)):
            problems.append(doc.problem(("delivery", "fallback"), msg))
        if d.lease <= d.timeout:
            problems.append(doc.problem(("delivery", "lease"), "must be longer than delivery.timeout"))
    raw_channels = doc.data.get("channels") if isinstance(doc.data, dict) else None
    for ch in channels:
        idx = next(
            (i for i, r in enumerate(raw_channels or []) if isinstance(r, dict) and r.get("name") == ch.name), None
        )
        if ch.fallback and idx is not None:
            if msg := dangling(ch.fallback):
                problems.append(doc.problem(("channels", idx, "fallback"), msg))
            elif ch.fallback == f"channel:{ch.name}":
                problems.append(doc.problem(("channels", idx, "fallback"), "a channel cannot be its own fallback"))


def load(directory: str | os.PathLike[str], *, environ: dict[str, str] | None = None) -> Config:
    """Load and validate ``DIR/fsincident.yaml`` and ``DIR/rules.d/*.yaml``; raises ConfigError with all problems."""
    root = Path(directory)
    problems: list[Problem] = []
    main = root / MAIN_FILE
    if not root.is_dir():
        raise ConfigError([Problem(str(root), None, "", "config directory does not exist")])
    files = []
    if main.exists():
        text = _read(main, problems)
        doc = None if text is None else load_yaml(str(main), text, expand_env=True, environ=environ, problems=problems)
        files.append(str(main))
    else:
        doc = Document(str(main), {}, {(): 1})
    options = None
    am = _AlertmanagerSections()
    users: list[UserOptions] = []
    schedules: list[Schedule] = []
    policies: list[EscalationPolicy] = []
    routes: list[RouteOptions] = []
    sources: list[plugins.SourceOptions] = []
    channels: list[plugins.ChannelOptions] = []
    source_names: set[str] = set()
    reports: list[ReportOptions] = []
    if doc is not None:
        if not isinstance(doc.data, dict):
            problems.append(doc.problem((), "must be a mapping of settings"))
        else:
            # Settings and each item of the list sections are validated separately: one bad item hides nothing.
            data, lists = dict(doc.data), {}
            for section in (
                *("sources", "channels", "users", "schedules", "escalation_policies", "routes"),
                *("time_intervals", "inhibit_rules", "integrations", "reports"),
            ):
                data, lists[section] = _split(data, section)
            try:
                options = DaemonOptions.model_validate(data)
            except ValidationError as e:
                problems.extend(pydantic_problems(doc, (), e))
            sources = _kind_options(
                doc, "sources", plugins.sources, lists["sources"] or [], problems, None, source_names
            )
            channel_names: set[str] = set()
            channels = _kind_options(
                doc, "channels", plugins.notifiers, lists["channels"] or [], problems, "apprise", channel_names
            )
            user_names: set[str] = set()
            seen_users: set[str] = set()
            for i, raw in enumerate(lists["users"] or []):
                if isinstance(raw, dict) and isinstance(raw.get("name"), str):
                    user_names.add(raw["name"])  # known even when invalid: routes to it are not "unknown"
                try:
                    u = UserOptions.model_validate(raw)
                except ValidationError as e:
                    problems.extend(pydantic_problems(doc, ("users", i), e))
                    u = None
                _check_contacts(doc, i, raw.get("contacts") if isinstance(raw, dict) else None, problems)
                if u is None:
                    continue
                if u.name in seen_users:
                    problems.append(doc.problem(("users", i, "name"), f"duplicate user name {u.name!r}"))
                seen_users.add(u.name)
                users.append(u)
            schedule_names: set[str] = set()
            schedules = load_schedules(doc, lists["schedules"] or [], user_names, schedule_names, problems)
            known = {"channel": channel_names, "user": user_names, "schedule": schedule_names}
            policy_names: set[str] = set()
            policies = load_policies(doc, lists["escalation_policies"] or [], known, policy_names, problems)
            am = _check_alertmanager_sections(doc, lists, problems)
            _check_delivery(doc, options, channels, known, problems)
            _check_ui(doc, options, source_names, problems)
            reports = _check_analytics(doc, options, lists["reports"] or [], source_names, known, problems)
            interval_names = set(am.interval_names)
            for i, raw in enumerate(lists["routes"] or []):
                route = _check_route(doc, ("routes", i), raw, known, policy_names, interval_names, problems)
                if route is not None:
                    routes.append(route)
    source_map: dict[str, plugins.SourceOptions | None] = dict.fromkeys(source_names)
    source_map.update({s.name: s for s in sources})
    groups: list[RuleGroup] = []
    slos: list[Slo] = []
    seen_groups: dict[str, tuple[str, str]] = {}
    rules_dir = root / "rules.d"
    if rules_dir.is_dir():
        for path in sorted(rules_dir.glob("*.y*ml")):
            files.append(str(path))
            rtext = _read(path, problems)
            rdoc = None if rtext is None else load_yaml(str(path), rtext, problems=problems)
            if rdoc is None:
                continue
            if not isinstance(rdoc.data, dict):
                problems.append(rdoc.problem((), "must be a mapping with a groups: list"))
                continue
            file_groups, file_slos = _load_rules(rdoc, source_map, problems, seen_groups)
            groups.extend(file_groups)
            slos.extend(file_slos)
    templates: dict[str, CompiledTemplate] = {}
    tdir = root / "templates"
    if tdir.is_dir():
        for path in sorted(tdir.glob("*.j2")):
            files.append(str(path))
            if path.stem not in TEMPLATE_NAMES:
                problems.append(
                    Problem(str(path), None, "", f"unknown template name (known: {', '.join(TEMPLATE_NAMES)})")
                )
                continue
            ttext = _read(path, problems)
            if ttext is None:
                continue
            try:
                templates[path.stem] = CompiledTemplate(ttext, autoescape=path.stem.endswith(".html"))
            except TemplateProblem as e:
                problems.append(Problem(str(path), e.line, "", str(e)))
    if problems:
        if doc is not None and doc.env_failed:
            # A value whose ${NAME} is unset fails its other checks only because of that: say it once.
            env_msg = "environment variable "
            problems = [
                p
                for p in problems
                if not (p.file == doc.file and p.key in doc.env_failed and not p.message.startswith(env_msg))
            ]
        raise ConfigError(problems)
    assert options is not None
    external = options.external_url or f"http://{options.listen}"
    return Config(
        directory=root,
        listen=options.listen,
        database=options.database or default_database(),
        external_url=external.rstrip("/"),
        log_level=options.log_level,
        delivery=options.delivery,
        sources=tuple(sources),
        channels=tuple(channels),
        users=tuple(users),
        routes=tuple(routes),
        groups=tuple(groups),
        templates=templates,
        files=tuple(files),
        slos=tuple(slos),
        schedules=tuple(schedules),
        escalation_policies=tuple(policies),
        time_intervals=am.time_intervals,
        inhibit_rules=am.inhibit_rules,
        integrations=am.integrations,
        alertmanager=options.alertmanager,
        silences=options.silences,
        links=options.links,
        chatops=options.chatops,
        ui=options.ui,
        history=options.history,
        analytics=options.analytics,
        reports=tuple(reports),
    )


def load_rule_files(
    paths: Iterable[str | os.PathLike[str]], *, placeholder_source: str = "replay"
) -> tuple[RuleGroup, ...]:
    """Load rule files on their own (``fsincident test``/``backtest``) with the daemon's validation; every source
    name is accepted and groups/SLOs without one get ``placeholder_source``. Raises ConfigError, every problem located.
    """

    problems: list[Problem] = []
    groups: list[RuleGroup] = []
    seen_groups: dict[str, tuple[str, str]] = {}
    for p in paths:
        path = str(p)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            problems.append(Problem(path, None, "", f"not UTF-8 text (byte {e.start})"))
            continue
        except OSError as e:
            problems.append(Problem(path, None, "", f"cannot read: {e.strerror or e}"))
            continue
        doc = load_yaml(path, text, problems=problems)
        if doc is None:
            continue
        if not isinstance(doc.data, dict):
            problems.append(doc.problem((), "must be a mapping with a groups: list"))
            continue
        # Replays have one source: give groups and SLOs without one a placeholder, and accept every named source.
        names = {placeholder_source}
        for section in ("groups", "slos"):
            items = doc.data.get(section)
            for item in items if isinstance(items, list) else []:
                if not isinstance(item, dict):
                    continue
                if isinstance(item.get("source"), str):
                    names.add(item["source"])
                else:
                    item.setdefault("source", placeholder_source)
                rules = item.get("rules") if section == "groups" else None
                for r in rules if isinstance(rules, list) else []:
                    if isinstance(r, dict) and isinstance(r.get("source"), str):
                        names.add(r["source"])
        file_groups, _slos = _load_rules(doc, dict.fromkeys(names), problems, seen_groups)
        groups.extend(file_groups)
    if problems:
        raise ConfigError(problems)
    return tuple(groups)
