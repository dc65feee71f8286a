"""The hardened jinja2 sandbox used for annotations and notification templates."""

from __future__ import annotations

import operator
import re
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from fsincident.core import FsIncidentError

MAX_REPEAT_LEN = 100_000
MAX_POW_EXPONENT = 64
MAX_POW_BASE = 10**12
MAX_OUTPUT = 64_000


class TemplateProblem(FsIncidentError):
    """A template failed to compile or render; the message says where and why."""

    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(message)
        self.line = line


class _CappedEnvironment(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment whose ``*`` and ``**`` refuse results that would not fit."""

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if not isinstance(left, int | float) or not isinstance(right, int | float):
                raise SecurityError("'**' needs numbers")
            if abs(right) > MAX_POW_EXPONENT or abs(left) > MAX_POW_BASE:
                raise SecurityError(f"'**' is limited to exponents up to {MAX_POW_EXPONENT}")
            return operator.pow(left, right)
        if operator_ == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and n > 0:
                    # Count nested items too: ["a" * 100000] * 100000 renders ten gigabytes.
                    if _size(seq, MAX_REPEAT_LEN // n + 1) * n > MAX_REPEAT_LEN:
                        raise SecurityError(f"repeating would exceed {MAX_REPEAT_LEN} items")
        if operator_ == "%" and isinstance(left, str):
            _check_widths(left)
        return super().call_binop(context, operator_, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map"):
            _check_widths(owner)
        return super().wrap_str_format(value)


MAX_WIDTH = 10_000
_WIDE_SPEC = re.compile(r"(%[-#0 +]*\d{5,})|(%[-#0 +]*\d*\.\d{5,})|(\{[^}]*:[^}]*\d{5,}[^}]*\})")


def _check_widths(fmt: str) -> None:
    """Refuse printf/format specs with widths or precisions of 10,000 and more (they build huge strings)."""
    if _WIDE_SPEC.search(fmt):
        raise SecurityError(f"format widths are limited to {MAX_WIDTH - 1}")


def _capped_filter(fn: Any, *positions: int) -> Any:
    """Wrap a width-taking filter so that numeric arguments above MAX_WIDTH are refused."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        for v in list(args[1:]) + list(kwargs.values()):
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_WIDTH:
                raise SecurityError(f"widths are limited to {MAX_WIDTH}")
        if fn.__name__ in ("do_format",) and args and isinstance(args[0], str):
            _check_widths(args[0])
        return fn(*args, **kwargs)

    wrapped.__name__ = getattr(fn, "__name__", "filter")
    for attr in ("jinja_pass_arg",):
        if hasattr(fn, attr):
            setattr(wrapped, attr, getattr(fn, attr))
    return wrapped


def _size(obj: Any, limit: int) -> int:
    """Items and characters in ``obj``, nested sequences included; stops counting once past ``limit``."""
    total, stack = 0, [obj]
    while stack and total <= limit:
        x = stack.pop()
        if isinstance(x, str):
            total += len(x)
        elif isinstance(x, list | tuple):
            total += len(x)
            stack.extend(c for c in x[: limit + 1] if isinstance(c, str | list | tuple))
    return total


def _round(value: Any, precision: int = 0) -> Any:
    try:
        if int(precision) <= 0:
            return int(round(float(value), int(precision)))
        return round(float(value), int(precision))
    except (TypeError, ValueError):
        return value


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")
_MD_LEADING = re.compile(r"^([#+\-=]|\d+[.)])")


_MENTION = re.compile(r"@(?=\w)")


def no_mentions(value: Any) -> str:
    """``value`` with every ``@word`` defused by a zero-width space after the ``@``: an alert's text must not ping
    a whole chat channel (``@channel``, ``@here``, Discord's ``@everyone``, which apprise turns into a ping)."""
    return _MENTION.sub("@\u200b", str(value))


def markdown_escape(value: Any) -> str:
    """``value`` as one line of literal CommonMark text: punctuation that would format is backslash-escaped, and
    @-mentions are defused (see :func:`no_mentions`)."""
    text = _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
    m = _MD_LEADING.match(text)  # a heading, list or rule marker only counts at the start of a line
    text = text if m is None else text[: m.end() - 1] + "\\" + text[m.end() - 1 :]
    return no_mentions(text)


def markdown_code(value: Any) -> str:
    """``value`` made safe inside a CommonMark code span: one line, backticks replaced by a quote, @-mentions
    defused (apprise looks for pings in code spans too)."""
    return no_mentions(" ".join(str(value).split()).replace("`", "'"))


def make_environment(*, autoescape: bool = False) -> ImmutableSandboxedEnvironment:
    """A fresh sandbox: StrictUndefined, capped arithmetic, no constant folding of operators; ``autoescape``
    HTML-escapes every ``{{ }}`` output (for HTML templates)."""
    env = _CappedEnvironment(undefined=StrictUndefined, autoescape=autoescape, keep_trailing_newline=False)
    # Sandboxed binary operators go through call_binop at render time instead of being folded
    # at compile time, where an unbounded '**' would hang inside from_string().
    env.intercepted_binops = frozenset({"*", "**", "+", "//", "%", "/", "-"})
    env.filters["round"] = _round
    env.filters["md"] = markdown_escape
    env.filters["mdcode"] = markdown_code
    for name in ("center", "indent", "format", "wordwrap", "truncate", "filesizeformat"):
        if name in env.filters:
            env.filters[name] = _capped_filter(env.filters[name])
    return env


_ENV = make_environment()
_HTML_ENV = make_environment(autoescape=True)


class CompiledTemplate:
    """A template compiled once at load; ``render`` raises TemplateProblem, never hangs on arithmetic.

    ``autoescape=True`` compiles it for HTML output: every ``{{ }}`` is escaped unless marked ``| safe``."""

    def __init__(self, source: str, *, env: ImmutableSandboxedEnvironment | None = None, autoescape: bool = False):
        self.source = source
        self.autoescape = autoescape
        env = env or (_HTML_ENV if autoescape else _ENV)
        try:
            self._template = env.from_string(source)
        except TemplateError as e:
            raise TemplateProblem(f"template error: {e}", line=getattr(e, "lineno", None)) from None
        except SecurityError as e:
            raise TemplateProblem(f"template refused: {e}") from None
        except RecursionError:
            raise TemplateProblem("template is nested too deeply") from None

    def render(self, **context: Any) -> str:
        try:
            out = self._template.render(**context)
        except SecurityError as e:
            raise TemplateProblem(f"template refused: {e}") from None
        except TemplateError as e:
            raise TemplateProblem(f"template error: {e}", line=getattr(e, "lineno", None)) from None
        except (ArithmeticError, TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:
            raise TemplateProblem(f"template error: {type(e).__name__}: {e}") from None
        if len(out) > MAX_OUTPUT:
            out = out[:MAX_OUTPUT] + "…"
        return out
