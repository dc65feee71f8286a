"""Label matchers (``=``, ``!=``, ``=~``, ``!~``) and PromQL-style series selectors ``metric{a="b", c=~"x.*"}``.

Shared by rule selectors, the rule test runner, and later by routes, silences and inhibition. Regular
expressions are fully anchored, as in Prometheus: ``job=~"api"`` matches ``api`` only, not ``api2``. They use
RE2 (google-re2), the engine Prometheus uses: matching is linear in the input, so no pattern (``(a+)+b``) can
hang the evaluator; backreferences and lookarounds are refused like in Prometheus; ``.`` matches newlines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import re2

from fsincident.core import FsIncidentError

OPS = ("=~", "!~", "!=", "=")
MAX_SELECTOR = 4096

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors are reported to the user, not to stderr
_RE2_OPTIONS.dot_nl = True  # like Prometheus' (?s)
_RE2_OPTIONS.max_mem = 8 << 20  # a huge pattern fails to compile instead of taking memory

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class MatcherError(FsIncidentError):
    """A selector or matcher is malformed; the message names what and where (0-based column)."""

    def __init__(self, message: str, *, column: int | None = None):
        super().__init__(message if column is None else f"{message} (at character {column + 1})")
        self.column = column


@dataclass(frozen=True)
class Matcher:
    """One label matcher; a missing label matches as the empty string (Prometheus semantics)."""

    name: str
    op: str
    value: str
    _re: re2._Regexp | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, name: str, op: str, value: str) -> Matcher:
        """Build a matcher; raises MatcherError for an unknown operator or an invalid regular expression."""
        if op not in OPS:
            raise MatcherError(f"unknown matcher operator {op!r} (use = != =~ !~)")
        rx = None
        if op in ("=~", "!~"):
            try:
                rx = re2.compile(value, _RE2_OPTIONS)
            except re2.error as e:
                reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
                raise MatcherError(f"invalid regular expression {value!r} for label {name!r}: {reason}") from None
        return cls(name, op, value, rx)

    def matches(self, value: str) -> bool:
        """Whether a label value (``''`` when absent) satisfies the matcher."""
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        hit = self._re.fullmatch(value) is not None  # type: ignore[union-attr]
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'


@dataclass(frozen=True)
class Selector:
    """A metric name (or None) with label matchers."""

    metric: str | None
    matchers: tuple[Matcher, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a label set (without the metric name) satisfies every matcher."""
        return all(m.matches(labels.get(m.name, "")) for m in self.matchers)

    def equalities(self) -> dict[str, str]:
        """The labels fixed by ``=`` matchers (what ``absent()`` reports)."""
        return {m.name: m.value for m in self.matchers if m.op == "=" and m.name != "__name__"}

    def __str__(self) -> str:
        inner = ", ".join(str(m) for m in self.matchers)
        return f"{self.metric or ''}{{{inner}}}" if inner or not self.metric else self.metric


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _string(text: str, i: int) -> tuple[str, int]:
    quote = text[i]
    out: list[str] = []
    i += 1
    escapes = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "r": "\r"}
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(escapes.get(nxt, "\\" + nxt))
            i += 2
            continue
        if c == quote:
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise MatcherError("unterminated string", column=i)


def parse_matchers(text: str, start: int = 0) -> tuple[tuple[Matcher, ...], int]:
    """Parse ``{a="b", c!~"x"}`` starting at ``text[start] == '{'``; returns matchers and the index after '}'."""
    i = _skip_ws(text, start)
    if i >= len(text) or text[i] != "{":
        raise MatcherError("expected '{'", column=i)
    i += 1
    matchers: list[Matcher] = []
    while True:
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == "}":
            return tuple(matchers), i + 1
        m = _LABEL.match(text, i)
        if not m:
            raise MatcherError("expected a label name", column=i)
        name = m.group()
        i = _skip_ws(text, m.end())
        op = next((o for o in OPS if text.startswith(o, i)), None)
        if op is None:
            raise MatcherError(f"expected one of = != =~ !~ after {name!r}", column=i)
        i = _skip_ws(text, i + len(op))
        if i >= len(text) or text[i] not in "\"'":
            raise MatcherError(f"expected a quoted value for {name!r}", column=i)
        value, i = _string(text, i)
        matchers.append(Matcher.make(name, op, value))
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        if i < len(text) and text[i] == "}":
            return tuple(matchers), i + 1
        raise MatcherError("expected ',' or '}'", column=i)


def parse_selector(text: str) -> Selector:
    """Parse ``metric``, ``metric{...}`` or ``{__name__="metric", ...}``; raises MatcherError saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise MatcherError("selector is empty")
    if len(text) > MAX_SELECTOR:
        raise MatcherError(f"selector is longer than {MAX_SELECTOR} characters")
    i = _skip_ws(text, 0)
    metric = None
    m = _NAME.match(text, i)
    if m:
        metric = m.group()
        i = _skip_ws(text, m.end())
    matchers: tuple[Matcher, ...] = ()
    if i < len(text) and text[i] == "{":
        matchers, i = parse_matchers(text, i)
    i = _skip_ws(text, i)
    if i != len(text):
        raise MatcherError(f"unexpected {text[i]!r}", column=i)
    names = [x for x in matchers if x.name == "__name__"]
    if names:
        if metric is not None or len(names) > 1 or names[0].op != "=":
            raise MatcherError('give the metric name once: metric{...} or {__name__="metric", ...}')
        metric = names[0].value
        matchers = tuple(x for x in matchers if x.name != "__name__")
    if metric is None:
        raise MatcherError("a selector needs a metric name")
    return Selector(metric, matchers)


_AM_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|=|!=|!~)\s*(.*?)\s*", re.DOTALL)


def parse_matcher_list(text: str) -> tuple[Matcher, ...]:
    """Alertmanager's matcher list (routes, inhibit rules, amtool): ``a="b"``, ``a=~b`` (value unquoted),
    ``a=b, c!="d"`` or ``{a="b", c!~"x"}``; a comma inside double quotes belongs to the value, ``\\"``
    ``\\\\`` and ``\\n`` are escapes. Raises MatcherError naming the bad matcher."""
    t = text.strip()
    t = t[1:] if t.startswith("{") else t
    t = t[:-1] if t.endswith("}") else t
    tokens: list[str] = []
    token: list[str] = []
    quoted = escaped = False
    for c in t:
        if c == "," and not quoted:
            tokens.append("".join(token))
            token = []
            continue
        if c == '"' and not escaped:
            quoted = not quoted
        escaped = c == "\\" and not escaped
        token.append(c)
    if "".join(token).strip():
        tokens.append("".join(token))  # a trailing comma is allowed
    if not tokens:
        raise MatcherError("empty matcher")
    return tuple(_am_matcher(tok) for tok in tokens)


def _am_matcher(token: str) -> Matcher:
    m = _AM_MATCHER.fullmatch(token)
    if not m:
        raise MatcherError(f'bad matcher {token.strip()!r}: write name="value" (or != =~ !~)')
    name, op, raw = m.groups()
    quoted = raw.startswith('"')
    if quoted:
        raw = raw[1:]
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        if c == '"':
            if not quoted or i != len(raw) - 1:
                raise MatcherError(f"unescaped double quote in the value of {token.strip()!r}")
            quoted = False
        else:
            out.append(c)
        i += 1
    if quoted:
        raise MatcherError(f"unterminated string in {token.strip()!r}")
    return Matcher.make(name, op, "".join(out))
