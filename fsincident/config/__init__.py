"""load(dir) -> Config, or ConfigError listing every problem as ``file:line: key: message``.

``check``, ``run`` and the SIGHUP reload all go through :func:`load`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fsincident import plugins
from fsincident.appriseurl import check_apprise_url
from fsincident.config.model import (
    DaemonOptions,
    DeliveryOptions,
    RouteOptions,
    RuleFileOptions,
    RuleOptions,
    UserOptions,
)
from fsincident.config.yamlmarks import Document, load_yaml, pydantic_problems
from fsincident.core import ConfigError, Problem, Severity
from fsincident.expr import CompiledExpr, ExprError, compile_expr
from fsincident.sandbox import CompiledTemplate, TemplateProblem

MAIN_FILE = "fsincident.yaml"
DEFAULT_INTERVAL = timedelta(seconds=15)
TEMPLATE_NAMES = ("title", "message")

__all__ = ["Config", "ConfigError", "Rule", "RuleGroup", "default_database", "load"]


@dataclass(frozen=True)
class Rule:
    """A rule ready to evaluate: compiled expression and annotation templates, resolved source."""

    group: str
    alert: str
    source: str
    expr: CompiledExpr
    query: str | None
    for_: timedelta
    keep_firing_for: timedelta
    severity: Severity
    labels: dict[str, str]
    annotations: dict[str, CompiledTemplate]
    file: str
    line: int

    @property
    def key(self) -> str:
        """Stable identity across reloads: ``group/alert``."""
        return f"{self.group}/{self.alert}"


@dataclass(frozen=True)
class RuleGroup:
    name: str
    interval: timedelta
    source: str | None
    rules: tuple[Rule, ...]
    file: str


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
) -> list[Any]:
    out = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        path = (section, i)
        if not isinstance(item, dict):
            problems.append(doc.problem(path, "must be a mapping"))
            continue
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
        extra = getattr(cls, "validate_options", None)
        if extra is not None:
            for key, msg in extra(opts):
                problems.append(doc.problem((*path, *key), msg))
        if opts.name in seen:
            problems.append(doc.problem((*path, "name"), f"duplicate {section[:-1]} name {opts.name!r}"))
        seen[opts.name] = i
        out.append(opts)
    return out


def _check_targets(
    doc: Document, path: tuple, targets: list[str], channels: set[str], users: set[str], problems: list[Problem]
) -> None:
    for j, t in enumerate(targets):
        kind, _, name = t.partition(":")
        known = {"channel": channels, "user": users}.get(kind)
        if known is None:
            problems.append(doc.problem((*path, j), f"{kind} targets are not supported yet"))
        elif name not in known:
            problems.append(doc.problem((*path, j), f"unknown {kind} {name!r}"))


def _load_rules(
    doc: Document, sources: dict[str, plugins.SourceOptions], problems: list[Problem], seen_groups: dict[str, str]
) -> list[RuleGroup]:
    try:
        model = RuleFileOptions.model_validate(doc.data if doc.data is not None else {})
    except ValidationError as e:
        problems.extend(pydantic_problems(doc, (), e))
        return []
    groups = []
    for gi, g in enumerate(model.groups):
        gpath = ("groups", gi)
        if g.name in seen_groups:
            problems.append(
                doc.problem((*gpath, "name"), f"duplicate group name {g.name!r} (also in {seen_groups[g.name]})")
            )
        seen_groups[g.name] = doc.file
        if g.interval is not None and g.interval <= timedelta(0):
            problems.append(doc.problem((*gpath, "interval"), "interval must be positive"))
        if g.source is not None and g.source not in sources:
            problems.append(doc.problem((*gpath, "source"), f"unknown source {g.source!r}"))
        rules = []
        alerts: set[str] = set()
        for ri, r in enumerate(g.rules):
            rpath = (*gpath, "rules", ri)
            rule = _compile_rule(doc, rpath, g.name, g.source, r, sources, problems)
            if r.alert in alerts:
                problems.append(doc.problem((*rpath, "alert"), f"duplicate alert {r.alert!r} in group {g.name!r}"))
            alerts.add(r.alert)
            if rule is not None:
                rules.append(rule)
        groups.append(RuleGroup(g.name, g.interval or DEFAULT_INTERVAL, g.source, tuple(rules), doc.file))
    return groups


def _compile_rule(
    doc: Document,
    rpath: tuple,
    group: str,
    group_source: str | None,
    r: RuleOptions,
    sources: dict[str, plugins.SourceOptions],
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
    elif source in sources and r.query is not None:
        cls = plugins.sources.get(sources[source].type)
        if not getattr(cls, "supports_query", False):
            problems.append(
                doc.problem((*rpath, "query"), f"source {source!r} (type {sources[source].type}) does not run queries")
            )
            ok = False
    compiled = None
    try:
        compiled = compile_expr(r.expr, require_metric=r.query is None)
    except ExprError as e:
        col = f" (column {e.column + 1})" if e.column is not None else ""
        problems.append(doc.problem((*rpath, "expr"), f"{e}{col}"))
        ok = False
    if r.query is not None and compiled is not None and compiled.metrics:
        problems.append(doc.problem((*rpath, "expr"), "a query rule's expr may only use value and labels"))
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
    )


def load(directory: str | os.PathLike[str], *, environ: dict[str, str] | None = None) -> Config:
    """Load and validate ``DIR/fsincident.yaml`` and ``DIR/rules.d/*.yaml``; raises ConfigError with all problems."""
    root = Path(directory)
    problems: list[Problem] = []
    main = root / MAIN_FILE
    if not root.is_dir():
        raise ConfigError([Problem(str(root), None, "", "config directory does not exist")])
    files = []
    if main.exists():
        text = main.read_text(encoding="utf-8")
        doc = load_yaml(str(main), text, expand_env=True, environ=environ, problems=problems)
        files.append(str(main))
    else:
        doc = Document(str(main), {}, {(): 1})
    options = None
    if doc is not None:
        if not isinstance(doc.data, dict):
            problems.append(doc.problem((), "must be a mapping of settings"))
        else:
            try:
                options = DaemonOptions.model_validate(doc.data)
            except ValidationError as e:
                problems.extend(pydantic_problems(doc, (), e))
    sources: list[plugins.SourceOptions] = []
    channels: list[plugins.ChannelOptions] = []
    if options is not None and doc is not None:
        sources = _kind_options(doc, "sources", plugins.sources, options.sources, problems)
        for i, s in enumerate(sources):
            if s.interval <= timedelta(0):
                problems.append(doc.problem(("sources", i, "interval"), "interval must be positive"))
        channels = _kind_options(doc, "channels", plugins.notifiers, options.channels, problems, "apprise")
        channel_names = {c.name for c in channels}
        user_names: set[str] = set()
        for i, u in enumerate(options.users):
            if u.name in user_names:
                problems.append(doc.problem(("users", i, "name"), f"duplicate user name {u.name!r}"))
            user_names.add(u.name)
            for j, url in enumerate(u.contacts):
                msg = check_apprise_url(url)
                if msg:
                    problems.append(doc.problem(("users", i, "contacts", j), msg))
        for i, route in enumerate(options.routes):
            _check_targets(doc, ("routes", i, "notify"), route.notify, channel_names, user_names, problems)
            for j, name in enumerate(route.group_by or []):
                if name != "..." and not name.isidentifier():
                    problems.append(doc.problem(("routes", i, "group_by", j), f"invalid label name {name!r}"))
    source_map = {s.name: s for s in sources}
    groups: list[RuleGroup] = []
    seen_groups: dict[str, str] = {}
    rules_dir = root / "rules.d"
    if rules_dir.is_dir():
        for path in sorted(rules_dir.glob("*.y*ml")):
            files.append(str(path))
            rdoc = load_yaml(str(path), path.read_text(encoding="utf-8"), problems=problems)
            if rdoc is None:
                continue
            if not isinstance(rdoc.data, dict):
                problems.append(rdoc.problem((), "must be a mapping with a groups: list"))
                continue
            groups.extend(_load_rules(rdoc, source_map, problems, seen_groups))
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
            try:
                templates[path.stem] = CompiledTemplate(path.read_text(encoding="utf-8"))
            except TemplateProblem as e:
                problems.append(Problem(str(path), e.line, "", str(e)))
    if problems:
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
        users=tuple(options.users),
        routes=tuple(options.routes),
        groups=tuple(groups),
        templates=templates,
        files=tuple(files),
    )
