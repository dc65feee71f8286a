"""YAML loading that remembers the line of every key and item, and expands ${ENV} in strings."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import yaml

from fsincident.core import Problem

Path = tuple[str | int, ...]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def format_key(path: Path) -> str:
    """``('sources', 0, 'interval')`` -> ``sources[0].interval``."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


class Document:
    """A parsed YAML file: plain data plus a line for every path in it."""

    def __init__(self, file: str, data: Any, lines: dict[Path, int]):
        self.file = file
        self.data = data
        self.lines = lines

    def line_of(self, path: Path) -> int | None:
        """The line of the longest prefix of ``path`` that exists in the file."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), 1)

    def problem(self, path: Path, message: str) -> Problem:
        return Problem(self.file, self.line_of(path), format_key(path), message)


def _expand_env(value: str, environ: dict[str, str]) -> tuple[str, str | None]:
    missing: list[str] = []

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    out = _ENV_REF.sub(repl, value)
    if missing:
        return out, f"environment variable {missing[0]} is not set (write ${{{missing[0]}:-default}} for a default)"
    return out, None


def load_yaml(
    file: str,
    text: str,
    *,
    expand_env: bool = False,
    environ: dict[str, str] | None = None,
    problems: list[Problem],
) -> Document | None:
    """Parse ``text``; on failure append located problems and return None."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problems.append(Problem(file, line, "", f"invalid YAML: {e.problem or e.context}"))
        return None
    lines: dict[Path, int] = {}
    env = dict(os.environ) if environ is None else environ
    ctor = yaml.SafeLoader("")

    def build(node: yaml.Node, path: Path) -> Any:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            ctor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                key = ctor.construct_object(knode, deep=True)
                if not isinstance(key, str | int | float | bool) or key is None:
                    problems.append(Problem(file, knode.start_mark.line + 1, format_key(path), "keys must be strings"))
                    continue
                key = str(key) if not isinstance(key, str) else key
                if key in out:
                    problems.append(Problem(file, knode.start_mark.line + 1, format_key((*path, key)), "duplicate key"))
                    continue
                out[key] = build(vnode, (*path, key))
                lines[(*path, key)] = knode.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(node.value)]
        value = ctor.construct_object(node, deep=True)
        if expand_env and isinstance(value, str) and "${" in value:
            value, err = _expand_env(value, env)
            if err:
                problems.append(Problem(file, node.start_mark.line + 1, format_key(path), err))
        return value

    if root is None:
        return Document(file, {}, {(): 1})
    try:
        data = build(root, ())
    except yaml.YAMLError as e:
        problems.append(Problem(file, None, "", f"invalid YAML: {e}"))
        return None
    return Document(file, data, lines)


def pydantic_problems(
    doc: Document, prefix: Path, exc: Any, rename: Callable[[str], str] | None = None
) -> list[Problem]:
    """Turn a pydantic ValidationError into located problems under ``prefix``."""
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = (*prefix, *loc)
        out.append(doc.problem(path, _message(err)))
    return out


def _message(err: dict[str, Any]) -> str:
    t = err["type"]
    if t == "extra_forbidden":
        return "unknown key"
    if t == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if t == "string_pattern_mismatch":
        return f"invalid name {err.get('input')!r}: use letters, digits, '_', '.', '-'"
    if t == "literal_error":
        return f"{msg}, got {err.get('input')!r}"
    return msg
