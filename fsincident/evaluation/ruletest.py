"""``fsincident test``: rule unit tests in the format of Prometheus' ``promtool test rules``.

A test file names fsincident rule files (``rule_files``, relative to the test file, globs allowed) and
holds test groups: input series in promtool's expanding notation (``1+2x3``, ``_x2``, ``stale``) and
``alert_rule_test`` cases saying which alerts fire at an ``eval_time``. As in promtool, every rule is
evaluated at 0, ``evaluation_interval``, 2 × ``evaluation_interval``, … and a case is checked against the
last evaluation at or before its ``eval_time``; an alert's expected labels get ``alertname`` added, and
labels and annotations must match exactly. One difference: fsincident gives every alert a ``severity``
label (default ``warning``), so an expected alert that names no ``severity`` ignores the rule's own.
``promql_expr_test`` cases need PromQL and are skipped (a failure with ``strict``).
"""

from __future__ import annotations

import glob
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from fsincident.config import Rule, RuleGroup
from fsincident.config.yamlmarks import Document, load_yaml, pydantic_problems
from fsincident.core import ConfigError, Labels, Problem, valid_label_name
from fsincident.evaluation.replay import STALE, Replay, ReplayError, load_rule_files
from fsincident.matchers import MatcherError, parse_selector

__all__ = [
    "FileResult",
    "expand_values",
    "format_prom_duration",
    "parse_prom_duration",
    "parse_series",
    "run_file",
]

MAX_SAMPLES = 1_000_000
"""Samples per input series (``1+0x100000000`` would otherwise fill the memory)."""
MAX_STEPS = 1_000_000
"""Evaluations per test group (a ``1y`` eval_time at a 1s interval would never end)."""

# ---------------------------------------------------------------------------- durations

_PROM_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_MS = (365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1)


def parse_prom_duration(text: Any) -> int:
    """A Prometheus duration (``1h30m``, ``5m``, ``1y``, ``500ms``, ``0``) in milliseconds; raises ValueError."""
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}")
    if isinstance(text, int) and text == 0:
        return 0
    s = str(text).strip()
    if s == "0":
        return 0
    m = _PROM_DURATION.match(s)
    if not s or not m or not any(m.groups()):
        raise ValueError(f"invalid duration {text!r} (write e.g. 30s, 5m, 1h30m, 1d)")
    return sum(int(g) * unit for g, unit in zip(m.groups(), _MS, strict=True) if g)


def format_prom_duration(ms: int) -> str:
    """Milliseconds as Prometheus writes durations: ``1h30m``, ``10m``, ``0s``."""
    if ms == 0:
        return "0s"
    out = []
    for unit, size in zip(("y", "w", "d", "h", "m", "s", "ms"), _MS, strict=True):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


# ---------------------------------------------------------------------------- series notation

_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN]"
_ITEM = re.compile(rf"^(?P<a>[+-]?(?:{_NUM}))(?:(?P<op>[+-])(?P<b>{_NUM}))?(?:x(?P<n>[0-9]+))?$")
_BLANK = re.compile(r"^_(?:x(?P<n>[0-9]+))?$")


def expand_values(text: Any) -> list[Any]:
    """Expand promtool's notation (``a``, ``a+bxn``, ``a-bxn``, ``axn``, ``_``, ``_xn``, ``stale``) into samples:
    floats, None for a missing sample, STALE for a stale marker; raises ValueError naming the bad item."""
    if text is None:
        return []
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"values must be a string like '1+2x3 _ stale', got {type(text).__name__}")
    out: list[Any] = []
    for pos, item in enumerate(str(text).split(), start=1):
        m = _BLANK.match(item)
        if m:
            n = int(m.group("n")) if m.group("n") is not None else 1
            _check_size(len(out) + n)
            out.extend([None] * n)
            continue
        if item.lower() == "stale":
            out.append(STALE)
            continue
        m = _ITEM.match(item)
        if not m or (m.group("op") and m.group("n") is None):
            raise ValueError(f"invalid value {item!r} (item {pos}): write a number, a+bxn, a-bxn, axn, _, _xn or stale")
        a = float(m.group("a"))
        if m.group("n") is None:
            out.append(a)
            continue
        n = int(m.group("n"))
        _check_size(len(out) + n + 1)
        b = 0.0
        if m.group("op"):
            b = float(m.group("b")) * (-1 if m.group("op") == "-" else 1)
        for _ in range(n + 1):  # promtool adds b repeatedly (so float rounding matches it)
            out.append(a)
            a += b
    _check_size(len(out))
    return out


def _check_size(n: int) -> None:
    if n > MAX_SAMPLES:
        raise ValueError(f"more than {MAX_SAMPLES} samples in one series")


def parse_series(text: Any) -> tuple[str, Labels]:
    """``metric{a="b"}`` (or ``{__name__="metric", a="b"}``) -> (metric, labels); raises ValueError saying why."""
    if not isinstance(text, str):
        raise ValueError(f"series must be a string like 'up{{job=\"api\"}}', got {type(text).__name__}")
    try:
        sel = parse_selector(text)
    except MatcherError as e:
        raise ValueError(f"invalid series {text!r}: {e}") from None
    labels: dict[str, str] = {}
    for m in sel.matchers:
        if m.op != "=":
            raise ValueError(f'invalid series {text!r}: an input series has exact labels (name="value"), not {m.op}')
        if m.name in labels:
            raise ValueError(f"invalid series {text!r}: label {m.name!r} is given twice")
        if m.value != "":  # an empty label value is the same as no label (Prometheus semantics)
            labels[m.name] = m.value
    assert sel.metric is not None
    return sel.metric, Labels(labels)


# ---------------------------------------------------------------------------- file format


def _none_to(default: Callable[[], Any]) -> Any:
    return BeforeValidator(lambda v: default() if v is None else v)


def _scalar_text(v: Any) -> Any:
    """A YAML scalar as the text a label value would be (``true``, ``500``, ``''`` for null)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    return v


def _str_map(v: Any) -> Any:
    return {k: _scalar_text(x) for k, x in v.items()} if isinstance(v, dict) else v


def _scalar_str(v: Any) -> Any:
    return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


PromDuration = Annotated[int, BeforeValidator(parse_prom_duration)]
StrMap = Annotated[dict[str, str], _none_to(dict), BeforeValidator(_str_map)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeriesSpec(_Strict):
    series: str
    values: Annotated[str, _none_to(str), BeforeValidator(_scalar_str)] = ""


class ExpAlert(_Strict):
    exp_labels: StrMap = Field(default_factory=dict)
    exp_annotations: StrMap = Field(default_factory=dict)


class AlertTestCase(_Strict):
    eval_time: PromDuration = 0
    alertname: str = ""
    exp_alerts: Annotated[list[ExpAlert], _none_to(list)] = Field(default_factory=list)


class ExpSample(_Strict):
    labels: str
    value: float


class PromqlTestCase(_Strict):
    expr: str
    eval_time: PromDuration = 0
    exp_samples: Annotated[list[ExpSample], _none_to(list)] = Field(default_factory=list)


class TestGroup(_Strict):
    interval: PromDuration | None = None
    input_series: Annotated[list[SeriesSpec], _none_to(list)] = Field(default_factory=list)
    name: str = ""
    alert_rule_test: Annotated[list[AlertTestCase], _none_to(list)] = Field(default_factory=list)
    promql_expr_test: Annotated[list[PromqlTestCase], _none_to(list)] = Field(default_factory=list)
    external_labels: StrMap = Field(default_factory=dict)
    external_url: str = ""
    start_timestamp: str | float | None = None


class TestFile(_Strict):
    rule_files: Annotated[list[str], _none_to(list)] = Field(default_factory=list)
    evaluation_interval: PromDuration | None = None
    fuzzy_compare: bool = False
    group_eval_order: Annotated[list[str], _none_to(list)] = Field(default_factory=list)
    tests: Annotated[list[TestGroup], _none_to(list)] = Field(default_factory=list)


# ---------------------------------------------------------------------------- results


@dataclass
class FileResult:
    """The outcome of one test file: ``failures`` (readable blocks), ``problems`` (the file is invalid)."""

    path: str
    failures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: int = 0
    cases: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.problems


def _start_ms(v: str | float | None) -> int:
    try:
        ms = _start_ms_unchecked(v)
    except OverflowError:
        raise ValueError(f"start_timestamp {v!r} is out of range (1970 to 3000)") from None
    if not 0 <= ms < 32503680000 * 1000:
        raise ValueError(f"start_timestamp {v!r} is out of range (1970 to 3000)")
    return ms


def _start_ms_unchecked(v: str | float | None) -> int:
    if v is None:
        return 0
    if isinstance(v, int | float) and not isinstance(v, bool):
        if not math.isfinite(v):
            raise ValueError(f"invalid start_timestamp {v!r}")
        return round(v * 1000)
    s = str(v).strip()
    try:
        return round(float(s) * 1000)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        raise ValueError(f"invalid start_timestamp {v!r}: write Unix seconds or RFC 3339") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


@dataclass
class _Group:
    """A validated test group, ready to run."""

    index: int
    spec: TestGroup
    interval: int
    start: int
    series: list[tuple[str, Labels, list[Any]]]


def _load(path: str) -> tuple[TestFile, list[_Group], list[RuleGroup], Document]:
    """Read and validate a test file and its rule files; raises ConfigError with every problem, located."""
    problems: list[Problem] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([Problem(path, None, "", f"not UTF-8 text (byte {e.start})")]) from None
    except OSError as e:
        raise ConfigError([Problem(path, None, "", f"cannot read: {e.strerror or e}")]) from None
    doc = load_yaml(path, text, problems=problems)
    if doc is None:
        raise ConfigError(problems)
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([doc.problem((), "a test file must be a mapping with rule_files: and tests:")])
    try:
        spec = TestFile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(pydantic_problems(doc, (), e)) from None
    order: set[str] = set()
    for i, g in enumerate(spec.group_eval_order):
        if g in order:
            problems.append(doc.problem(("group_eval_order", i), f"group {g!r} is repeated"))
        order.add(g)
    if spec.evaluation_interval is not None and spec.evaluation_interval <= 0:
        problems.append(doc.problem(("evaluation_interval",), "evaluation_interval must be positive"))
    eval_interval = spec.evaluation_interval or 60_000
    groups: list[_Group] = []
    for i, tg in enumerate(spec.tests):
        tpath = ("tests", i)
        interval = tg.interval if tg.interval is not None else eval_interval
        if interval <= 0:
            problems.append(doc.problem((*tpath, "interval"), "interval must be positive"))
            continue
        try:
            start = _start_ms(tg.start_timestamp)
        except ValueError as e:
            problems.append(doc.problem((*tpath, "start_timestamp"), str(e)))
            continue
        series: list[tuple[str, Labels, list[Any]]] = []
        seen: dict[tuple[str, Labels], int] = {}
        for j, s in enumerate(tg.input_series):
            spath = (*tpath, "input_series", j)
            try:
                name, labels = parse_series(s.series)
            except ValueError as e:
                problems.append(doc.problem((*spath, "series"), str(e)))
                continue
            try:
                values = expand_values(s.values)
            except ValueError as e:
                problems.append(doc.problem((*spath, "values"), str(e)))
                continue
            if (name, labels) in seen:
                problems.append(doc.problem((*spath, "series"), f"series {s.series!r} is given twice"))
                continue
            seen[(name, labels)] = j
            series.append((name, labels, values))
        for k, case in enumerate(tg.alert_rule_test):
            if not case.alertname:
                problems.append(doc.problem((*tpath, "alert_rule_test", k), "alertname is required"))
            for a, exp in enumerate(case.exp_alerts):
                for lname in exp.exp_labels:
                    if not valid_label_name(lname):
                        path_ = (*tpath, "alert_rule_test", k, "exp_alerts", a, "exp_labels", lname)
                        problems.append(doc.problem(path_, f"invalid label name {lname!r}"))
        last = max([c.eval_time for c in tg.alert_rule_test] + [c.eval_time for c in tg.promql_expr_test] + [0])
        if last // eval_interval > MAX_STEPS:
            problems.append(
                doc.problem(tpath, f"more than {MAX_STEPS} evaluations: raise evaluation_interval or lower eval_time")
            )
            continue
        groups.append(_Group(i, tg, interval, start, series))
    files: list[str] = []
    base = Path(path).parent
    for i, pattern in enumerate(spec.rule_files):
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        matched = sorted(glob.glob(full))
        if not matched:
            problems.append(doc.problem(("rule_files", i), f"no file matches {pattern!r} (relative to {base})"))
        files.extend(m for m in matched if m not in files)
    if not spec.rule_files:
        problems.append(doc.problem((), "rule_files is empty: name the fsincident rule files to test"))
    if problems:
        raise ConfigError(problems)
    rule_groups = load_rule_files(files)  # raises ConfigError with the rule files' own problems
    names = {g.name for g in rule_groups}
    for i, g in enumerate(spec.group_eval_order):
        if g not in names:
            problems.append(doc.problem(("group_eval_order", i), f"no group {g!r} in the rule files"))
    if problems:
        raise ConfigError(problems)
    return spec, groups, list(rule_groups), doc


# ---------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Got:
    """A firing alert as compared: its labels and annotations, and the rule's implicit severity."""

    labels: dict[str, str]
    annotations: dict[str, str]
    implicit_severity: str | None = None

    def labels_for(self, expected: dict[str, str]) -> dict[str, str]:
        """Labels as compared with ``expected``: the rule's own severity is left out unless it names one."""
        if "severity" not in expected and self.implicit_severity is not None:
            if self.labels.get("severity") == self.implicit_severity:
                return {k: v for k, v in self.labels.items() if k != "severity"}
        return self.labels


@dataclass(frozen=True)
class Expected:
    labels: dict[str, str]
    annotations: dict[str, str]


def _fmt_labels(labels: dict[str, str]) -> str:
    shown = {k: v for k, v in sorted(labels.items()) if k != "alertname"}
    return "{" + ", ".join(f"{k}={_q(v)}" for k, v in shown.items()) + "}"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def compare_alerts(expected: list[Expected], got: list[Got], pending: Sequence[tuple[Got, str]] = ()) -> list[str]:
    """Lines describing how ``got`` differs from ``expected`` (empty when they match, in any order);
    ``pending`` (alert, note) explain an expected alert that is still pending."""
    left_got = list(range(len(got)))
    unmatched_exp: list[int] = []
    for i, e in enumerate(expected):  # exact matches first
        j = next(
            (j for j in left_got if got[j].labels_for(e.labels) == e.labels and got[j].annotations == e.annotations),
            None,
        )
        if j is None:
            unmatched_exp.append(i)
        else:
            left_got.remove(j)
    lines: list[str] = []
    missing: list[int] = []
    for i in unmatched_exp:  # same labels, other annotations: show the annotations that differ
        e = expected[i]
        j = next((j for j in left_got if got[j].labels_for(e.labels) == e.labels), None)
        if j is None:
            missing.append(i)
            continue
        left_got.remove(j)
        lines.append(f"~ annotations differ for {_fmt_labels(e.labels)}:")
        g = got[j]
        for key in sorted(set(e.annotations) | set(g.annotations)):
            ev, gv = e.annotations.get(key), g.annotations.get(key)
            if ev == gv:
                continue
            lines.append(f"    {key}:")
            lines.append(f"      expected: {_q(ev) if ev is not None else '(none)'}")
            lines.append(f"      got:      {_q(gv) if gv is not None else '(none)'}")
    for i in missing:
        e = expected[i]
        note = next((n for p, n in pending if p.labels_for(e.labels) == e.labels), None)
        lines.append(f"- missing:    {_fmt_labels(e.labels)}" + (f" ({note})" if note else ""))
        if e.annotations:
            lines.append(f"      annotations: {_fmt_labels(e.annotations)}")
    for j in left_got:
        g = got[j]
        lines.append(f"+ unexpected: {_fmt_labels(g.labels)}")
        if g.annotations:
            lines.append(f"      annotations: {_fmt_labels(g.annotations)}")
    return lines


# ---------------------------------------------------------------------------- running


def _ordered_rules(groups: list[RuleGroup], order: list[str]) -> list[Rule]:
    rank = {name: i for i, name in enumerate(order)}
    ordered = sorted(groups, key=lambda g: rank.get(g.name, len(rank)))  # stable: unlisted groups keep file order
    return [r for g in ordered for r in g.rules]


def _run_group(g: _Group, spec: TestFile, rules: list[Rule]) -> tuple[list[str], int, int]:
    """Run one test group; returns (failure blocks, alert cases checked, cases skipped)."""
    tg = g.spec
    title = f"test {tg.name!r} (tests[{g.index}])" if tg.name else f"tests[{g.index}]"
    eval_interval = spec.evaluation_interval or 60_000
    failures: list[str] = []
    skipped = len(tg.promql_expr_test)
    known = {r.alert for r in rules}
    cases: dict[int, list[AlertTestCase]] = {}
    for case in tg.alert_rule_test:
        if case.alertname not in known:
            failures.append(
                f"{title}, alertname {case.alertname}, eval_time {format_prom_duration(case.eval_time)}:\n"
                f"    no rule in the rule files has alert: {case.alertname}"
            )
            continue
        cases.setdefault(case.eval_time // eval_interval, []).append(case)
    try:
        replay = Replay(rules, interval=eval_interval / 1000)
    except ReplayError as e:
        return [f"{title}: {e}"], 0, skipped
    last = max([c.eval_time for c in tg.alert_rule_test] + [c.eval_time for c in tg.promql_expr_test] + [0])
    steps = last // eval_interval
    longest = max((len(v) for _, _, v in g.series), default=0)
    k = 0  # next sample index to feed
    checked = 0
    for n in range(steps + 1):
        ts = n * eval_interval
        while k < longest and k * g.interval <= ts:
            metrics: dict[str, dict[Labels, Any]] = {}
            for name, labels, values in g.series:
                if k < len(values) and values[k] is not None:
                    metrics.setdefault(name, {})[labels] = values[k]
            replay.feed((g.start + k * g.interval) / 1000, metrics)
            k += 1
        replay.step((g.start + ts) / 1000)
        if replay.errors:
            shown = "\n".join(f"    {e}" for e in dict.fromkeys(replay.errors))
            failures.append(f"{title}, time {format_prom_duration(ts)}: rule evaluation failed:\n{shown}")
            return failures, checked, skipped
        for case in cases.get(n, []):
            checked += 1
            expected = [
                Expected({**e.exp_labels, "alertname": case.alertname}, dict(e.exp_annotations))
                for e in case.exp_alerts
            ]
            got, pending = [], []
            for a in replay.alerts(case.alertname, pending=True):
                item = Got(a.labels.as_dict(), dict(a.annotations), a.rule.severity.value)
                if a.firing:
                    got.append(item)
                else:
                    since = round(a.state.active_since.timestamp() * 1000) - g.start
                    pending.append(
                        (
                            item,
                            f"pending since {format_prom_duration(max(since, 0))}, "
                            f"for: {format_prom_duration(int(a.rule.for_.total_seconds() * 1000))}",
                        )
                    )
            diff = compare_alerts(expected, got, pending)
            if diff:
                head = (
                    f"{title}, alertname {case.alertname}, eval_time {format_prom_duration(case.eval_time)}: "
                    f"expected {_count(len(expected))}, got {_count(len(got))} firing"
                )
                failures.append(head + "\n" + "\n".join(f"    {line}" for line in diff))
    return failures, checked, skipped


def _count(n: int) -> str:
    return f"{n} alert{'' if n == 1 else 's'}"


def run_file(path: str, *, strict: bool = False) -> FileResult:
    """Run every test of one test file; never raises for a bad file (its problems are in the result)."""
    res = FileResult(path)
    try:
        spec, groups, rule_groups, _doc = _load(path)
    except ConfigError as e:
        res.problems = [str(p) for p in e.problems]
        return res
    rules = _ordered_rules(rule_groups, spec.group_eval_order)
    for g in groups:
        failures, checked, skipped = _run_group(g, spec, rules)
        res.failures.extend(failures)
        res.cases += checked
        res.skipped += skipped
        if skipped and strict:
            title = f"test {g.spec.name!r} (tests[{g.index}])" if g.spec.name else f"tests[{g.index}]"
            exprs = ", ".join(repr(c.expr) for c in g.spec.promql_expr_test)
            res.failures.append(f"{title}: promql_expr_test cannot run (PromQL is not supported): {exprs}")
    return res
