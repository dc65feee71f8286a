"""SLOs from ``slos:`` in rules.d files: validated, and turned into multiwindow multi-burn-rate alert rules.

Burn rate = error ratio / error budget, where the error budget is ``1 - objective``. An alert of a
(long, short, factor) pair fires when the error ratio over *both* windows exceeds ``factor × budget``:
the long window proves the burn is significant, the short one that it is still going on (so the alert
resolves minutes after the problem stops). The default pairs are those of the Google SRE workbook
("Alerting on SLOs", recommended for a 30-day 99.9% SLO) plus the 1d/2h ticket pair that fills the gap
between 6h and 3d: 1h/5m 14.4× and 6h/30m 6× page (2% and 5% of a 30-day budget spent), 1d/2h 3× and
3d/6h 1× open tickets (10% spent).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from fsincident.config.model import SloOptions
from fsincident.config.rule import Rule, RuleGroup
from fsincident.config.yamlmarks import Document, pydantic_problems
from fsincident.core import Problem, Severity, format_duration
from fsincident.expr import CompiledExpr, ExprError, compile_expr
from fsincident.sandbox import CompiledTemplate, TemplateProblem

__all__ = ["DEFAULT_BURN_ALERTS", "BurnAlert", "Slo", "duration_text", "load_slos"]

WINDOW = "{window}"
"""Where the window duration goes in an ``error_ratio`` template."""

INDICATORS = ("good", "errors", "error_ratio")
MAX_WINDOW = timedelta(days=366)
RESERVED_LABELS = ("alertname", "slo", "severity", "long_window", "short_window")

DEFAULT_BURN_ALERTS: tuple[tuple[timedelta, timedelta, float, Severity], ...] = (
    (timedelta(hours=1), timedelta(minutes=5), 14.4, Severity.CRITICAL),
    (timedelta(hours=6), timedelta(minutes=30), 6.0, Severity.CRITICAL),
    (timedelta(days=1), timedelta(hours=2), 3.0, Severity.WARNING),
    (timedelta(days=3), timedelta(hours=6), 1.0, Severity.WARNING),
)
"""(long window, short window, burn-rate factor, severity) used when an SLO has no ``alerts:``."""

_UNITS = (("d", timedelta(days=1)), ("h", timedelta(hours=1)), ("m", timedelta(minutes=1)), ("s", timedelta(seconds=1)))
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def duration_text(td: timedelta) -> str:
    """A positive whole-second duration in its largest exact unit (``90m``, ``1d``); raises ValueError otherwise."""
    if td <= timedelta(0):
        raise ValueError("must be positive")
    for unit, size in _UNITS:
        if td % size == timedelta(0):
            return f"{td // size}{unit}"
    raise ValueError(f"{format_duration(td)} is not a whole number of seconds")


@dataclass(frozen=True)
class BurnAlert:
    """One generated burn-rate alert: fires when the error ratio over both windows exceeds ``threshold``."""

    alert: str
    long: timedelta
    short: timedelta
    factor: float
    severity: Severity
    threshold: float
    """``factor × (1 - objective)``: the error ratio both windows must exceed."""


@dataclass(frozen=True)
class Slo:
    """A validated SLO: its objective, the keys of its generated rules and its error-budget expression."""

    name: str
    objective: float
    """The objective as a fraction: 99.9 in YAML is 0.999 here."""
    window: timedelta
    source: str
    interval: timedelta
    labels: dict[str, str]
    by: tuple[str, ...]
    indicator: str
    """``good/total``, ``errors/total`` or ``error_ratio``."""
    ratio_template: str
    """The error-ratio expression with ``{window}`` where the window duration goes."""
    alerts: tuple[BurnAlert, ...]
    rules: tuple[str, ...]
    """Keys (``group/alert``) of the generated burn-rate rules; the group is named after the SLO."""
    budget_expr: CompiledExpr
    """``1 - ratio(window) / (1 - objective)``: the share of the error budget left (negative once overspent)."""
    file: str
    line: int

    @property
    def error_budget(self) -> float:
        """The allowed error ratio, ``1 - objective``."""
        return 1 - self.objective

    def ratio_expr(self, window: timedelta) -> str:
        """The error-ratio expression over ``window``; raises ValueError for a window that is not whole seconds."""
        return self.ratio_template.replace(WINDOW, duration_text(window))


def _num(d: Decimal) -> str:
    """A decimal as an expression literal: ``0.0144``, ``6``; exponent notation below 1e-12."""
    d = d.normalize()
    if d and d.adjusted() < -12:
        return repr(float(d))
    return format(d, "f")


def _piece(doc: Document, path: tuple, text: str, problems: list[Problem]) -> str | None:
    """A ``good``/``errors``/``total`` value as the first argument of ``increase``: a name or ``select('...')``."""
    stripped = text.strip()
    literal = stripped.startswith("select(")
    piece = stripped if _IDENT.match(stripped) or literal else f"select({stripped!r})"
    shape_msg = (
        "must be a counter's metric name or a selector such as 'http_requests_total{code=~\"5..\"}' "
        "or select('http_requests_total{code=~\"5..\"}')"
    )
    if not stripped:
        problems.append(doc.problem(path, shape_msg))
        return None
    try:
        node = ast.parse(piece, mode="eval").body
    except SyntaxError:
        node = None
    if literal and not (
        isinstance(node, ast.Call)
        and len(node.args) == 1
        and not node.keywords
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        problems.append(doc.problem(path, shape_msg))
        return None
    try:
        compile_expr(piece)
    except ExprError as e:
        # Columns only mean something when the text is compiled as written.
        col = f" (column {e.column + 1 + len(text) - len(text.lstrip())})" if literal and e.column is not None else ""
        problems.append(doc.problem(path, f"{e}{col}"))
        return None
    return piece


def _template_column(template: str, window: str, column: int) -> int:
    """Map a column of ``template`` with ``{window}`` replaced by ``window`` back to a column of ``template``."""
    out, shift, start = column, 0, 0
    while (i := template.find(WINDOW, start)) >= 0:
        if column < i + shift:
            break
        if column < i + shift + len(window):
            return i
        shift += len(window) - len(WINDOW)
        out = column - shift
        start = i + len(WINDOW)
    return out


def _ratio_template(doc: Document, path: tuple, o: SloOptions, problems: list[Problem]) -> tuple[str, str] | None:
    """The SLO's error-ratio template (``{window}`` where the window goes) and its indicator kind, or None."""
    given = [k for k in INDICATORS if getattr(o, k) is not None]
    if not given:
        problems.append(doc.problem(path, "no indicator: set good + total, errors + total, or error_ratio"))
        return None
    ok = True
    for extra in given[1:]:
        msg = f"only one indicator: good + total, errors + total, or error_ratio (also given: {given[0]})"
        problems.append(doc.problem((*path, extra), msg))
        ok = False
    kind = given[0]
    if kind == "error_ratio":
        if o.total is not None:
            problems.append(doc.problem((*path, "total"), "not used with error_ratio (write it into error_ratio)"))
            ok = False
        if o.by:
            problems.append(doc.problem((*path, "by"), "not used with error_ratio (aggregate inside error_ratio)"))
            ok = False
        text = str(o.error_ratio).strip()
        if WINDOW not in text:
            problems.append(
                doc.problem(
                    (*path, "error_ratio"),
                    "must contain {window} where the window goes, e.g. "
                    'sum(rate(errors_total, "{window}")) / sum(rate(requests_total, "{window}"))',
                )
            )
            return None
        sample = "1h"
        try:
            compile_expr(text.replace(WINDOW, sample))
        except ExprError as e:
            lead = len(str(o.error_ratio)) - len(str(o.error_ratio).lstrip())
            col = "" if e.column is None else f" (column {_template_column(text, sample, e.column) + lead + 1})"
            problems.append(doc.problem((*path, "error_ratio"), f"{e}{col}"))
            return None
        return (f"({text})", "error_ratio") if ok else None
    if o.total is None:
        problems.append(doc.problem((*path, "total"), f"required with {kind}"))
        ok = False
    num = _piece(doc, (*path, kind), str(getattr(o, kind)), problems)
    den = _piece(doc, (*path, "total"), o.total, problems) if o.total is not None else None
    if not ok or num is None or den is None:
        return None
    by = f', by="{",".join(o.by)}"' if o.by else ""
    ratio = f'sum(increase({num}, "{WINDOW}"){by}) / sum(increase({den}, "{WINDOW}"){by})'
    if kind == "good":
        return f"(1 - {ratio})", "good/total"
    return f"({ratio})", "errors/total"


def _annotations(name: str, a: BurnAlert, threshold: Decimal, objective: Decimal, window: timedelta) -> dict[str, str]:
    """Summary and description templates that explain the burn rate and what it does to the budget."""
    budget = (100 - objective) / 100
    long, short = duration_text(a.long), duration_text(a.short)
    spent = Decimal(repr(a.factor)) * Decimal(a.long // timedelta(seconds=1)) / Decimal(window // timedelta(seconds=1))
    seconds = window.total_seconds() / a.factor
    exhausted = format_duration(timedelta(seconds=round(seconds))) if seconds < 1e9 else f"{seconds / 86400:.3g} days"
    rate = f"{{{{ (value / {_num(budget)}) | round(1) if value is not none else '?' }}}}"
    ratio = "{{ (value * 100) | round(4) if value is not none else '?' }}"
    return {
        "summary": f"SLO {name}: error budget burning {rate}x as fast as sustainable over the last {long} "
        f"(alert above {_num(Decimal(repr(a.factor)))}x)",
        "description": (
            f"The error ratio of SLO {name} is {ratio}% over the last {long}, and above {_num(threshold * 100)}% "
            f"over the last {short} too. The objective of {_num(objective)}% over {duration_text(window)} "
            f"allows {_num(budget * 100)}% errors (the error budget); burning it "
            f"{_num(Decimal(repr(a.factor)))}x as fast as sustainable spends {float(spent * 100):.3g}% of it "
            f"per {long} and all of it in {exhausted}."
        ),
    }


def _windows(doc: Document, path: tuple, td: timedelta, what: str, problems: list[Problem]) -> str | None:
    try:
        return duration_text(td)
    except ValueError as e:
        problems.append(doc.problem(path, f"{what} {e}"))
        return None


def _burn_alerts(
    doc: Document, path: tuple, o: SloOptions, budget: Decimal, problems: list[Problem]
) -> list[tuple[BurnAlert, Decimal]]:
    """The SLO's burn-rate alerts with their exact thresholds; reports every problem with them."""
    out: list[tuple[BurnAlert, Decimal]] = []
    window = o.window
    if o.alerts is None:
        fitting = [d for d in DEFAULT_BURN_ALERTS if d[0] <= window]
        if not fitting:
            problems.append(
                doc.problem(
                    (*path, "window"),
                    f"window {format_duration(window)} is shorter than every default burn-rate window "
                    f"(the shortest is {duration_text(DEFAULT_BURN_ALERTS[0][0])}): set alerts:",
                )
            )
        for long, short, factor, severity in fitting:
            threshold = Decimal(repr(factor)) * budget
            if threshold >= 1:
                problems.append(
                    doc.problem(
                        (*path, "objective"),
                        f"the default {duration_text(long)}/{duration_text(short)} alert fires above "
                        f"{_num(Decimal(repr(factor)))} x error budget {_num(budget)} = {_num(threshold)}, "
                        "an error ratio that cannot happen: set alerts: for an objective this low",
                    )
                )
                return []
            alert = BurnAlert(f"SLOBurnRate{duration_text(long)}", long, short, factor, severity, float(threshold))
            out.append((alert, threshold))
        return out
    if not o.alerts:
        msg = "must list at least one alert (leave alerts: out for the defaults)"
        problems.append(doc.problem((*path, "alerts"), msg))
        return []
    names: set[str] = set()
    for j, a in enumerate(o.alerts):
        apath = (*path, "alerts", j)
        long = _windows(doc, (*apath, "long"), a.long, "long window", problems)
        short = _windows(doc, (*apath, "short"), a.short, "short window", problems)
        if long is None or short is None:
            continue
        ok = True
        if a.short >= a.long:
            msg = f"short window {short} must be shorter than long window {long}"
            problems.append(doc.problem((*apath, "short"), msg))
            ok = False
        if a.long > window:
            msg = f"long window {long} is longer than the SLO window {format_duration(window)}"
            problems.append(doc.problem((*apath, "long"), msg))
            ok = False
        threshold = Decimal(repr(a.factor)) * budget
        if threshold >= 1:
            problems.append(
                doc.problem(
                    (*apath, "factor"),
                    f"factor {_num(Decimal(repr(a.factor)))} x error budget {_num(budget)} = {_num(threshold)}: "
                    "the error ratio can never exceed that",
                )
            )
            ok = False
        name = a.alert or f"SLOBurnRate{long}"
        if name in names:
            hint = "" if a.alert else ": set alert: to tell them apart"
            problems.append(doc.problem((*apath, "alert" if a.alert else "long"), f"duplicate alert {name!r}{hint}"))
            ok = False
        names.add(name)
        if ok:
            out.append((BurnAlert(name, a.long, a.short, a.factor, a.severity, float(threshold)), threshold))
    return out


def _source(doc: Document, path: tuple, o: SloOptions, sources: dict[str, Any], problems: list[Problem]) -> str | None:
    if o.source is not None:
        if o.source not in sources:
            problems.append(doc.problem((*path, "source"), f"unknown source {o.source!r}"))
            return None
        return o.source
    if len(sources) == 1:
        return next(iter(sources))
    problems.append(doc.problem(path, "no source: set source: (it defaults to the only source when there is one)"))
    return None


def _generated(doc: Document, path: tuple, problems: list[Problem], text: str) -> CompiledExpr | None:
    try:
        return compile_expr(text)
    except ExprError as e:  # the parts compiled on their own; only limits (length, depth) are left
        problems.append(doc.problem(path, f"generated expression: {e}"))
        return None


def load_slos(
    doc: Document,
    items: list[Any],
    sources: dict[str, Any],
    problems: list[Problem],
    seen: dict[str, tuple[str, str]],
) -> tuple[list[Slo], list[RuleGroup]]:
    """Validate the ``slos:`` items of one rules file and generate one rule group per SLO.

    Every problem is appended to ``problems`` (located ``file:line: slos[i].key: message``); an SLO with a
    problem generates nothing. ``seen`` maps group and SLO names to (kind, file) across files.
    """
    slos: list[Slo] = []
    groups: list[RuleGroup] = []
    for i, raw in enumerate(items):
        path = ("slos", i)
        try:
            o = SloOptions.model_validate(raw)
        except ValidationError as e:
            problems.extend(pydantic_problems(doc, path, e))
            if isinstance(raw, dict) and isinstance(raw.get("name"), str):
                seen.setdefault(raw["name"], ("SLO", doc.file))
            continue
        n = len(problems)
        if o.name in seen:
            kind, file = seen[o.name]
            msg = (
                f"duplicate SLO name {o.name!r} (also in {file})"
                if kind == "SLO"
                else f"SLO name {o.name!r} is taken by a group (in {file}); its alerts form a group of that name"
            )
            problems.append(doc.problem((*path, "name"), msg))
        seen.setdefault(o.name, ("SLO", doc.file))
        source = _source(doc, path, o, sources, problems)
        _windows(doc, (*path, "window"), o.window, "window", problems)
        if o.window > MAX_WINDOW:
            msg = f"window must be at most {duration_text(MAX_WINDOW)} (its counters are kept in memory that long)"
            problems.append(doc.problem((*path, "window"), msg))
        if o.interval <= timedelta(0):
            problems.append(doc.problem((*path, "interval"), "interval must be positive"))
        for j, label in enumerate(o.by):
            if label in o.by[:j]:
                problems.append(doc.problem((*path, "by", j), f"duplicate label name {label!r}"))
        for lname in RESERVED_LABELS:
            if lname in o.labels:
                problems.append(doc.problem((*path, "labels", lname), f"label {lname!r} is set by fsincident"))
        extra: dict[str, CompiledTemplate] = {}
        for aname, text in o.annotations.items():
            try:
                extra[aname] = CompiledTemplate(text)
            except TemplateProblem as e:
                problems.append(doc.problem((*path, "annotations", aname), str(e)))
        objective = Decimal(repr(o.objective))
        budget = (100 - objective) / 100
        ratio = _ratio_template(doc, path, o, problems)
        alerts = _burn_alerts(doc, path, o, budget, problems) if o.window > timedelta(0) else []
        if len(problems) > n or ratio is None or source is None:
            continue
        template, kind = ratio
        key = {"good/total": "good", "errors/total": "errors"}.get(kind, kind)
        line = doc.line_of(path) or 0

        rules = []
        for a, threshold in alerts:
            lw, sw = duration_text(a.long), duration_text(a.short)
            thr = _num(threshold)
            text = f"{template.replace(WINDOW, lw)} > {thr} and {template.replace(WINDOW, sw)} > {thr}"
            compiled = _generated(doc, (*path, key), problems, text)
            if compiled is None:
                continue
            labels = {**o.labels, "slo": o.name, "severity": a.severity.value, "long_window": lw, "short_window": sw}
            annotations = {
                k: CompiledTemplate(v) for k, v in _annotations(o.name, a, threshold, objective, o.window).items()
            }
            rules.append(
                Rule(
                    group=o.name,
                    alert=a.alert,
                    source=source,
                    expr=compiled,
                    query=None,
                    for_=timedelta(0),
                    keep_firing_for=timedelta(0),
                    severity=a.severity,
                    labels=labels,
                    annotations={**annotations, **extra},
                    file=doc.file,
                    line=line,
                    slo=o.name,
                )
            )
        budget_text = f"1 - {template.replace(WINDOW, duration_text(o.window))} / {_num(budget)}"
        budget_expr = _generated(doc, (*path, key), problems, budget_text)
        if budget_expr is None or len(rules) != len(alerts):
            continue
        slos.append(
            Slo(
                name=o.name,
                objective=float(objective / 100),
                window=o.window,
                source=source,
                interval=o.interval,
                labels=dict(o.labels),
                by=tuple(o.by),
                indicator=kind,
                ratio_template=template,
                alerts=tuple(a for a, _ in alerts),
                rules=tuple(r.key for r in rules),
                budget_expr=budget_expr,
                file=doc.file,
                line=line,
            )
        )
        groups.append(RuleGroup(o.name, o.interval, source, tuple(rules), doc.file))
    return slos, groups
