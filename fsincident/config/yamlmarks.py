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
        self.env_failed: set[str] = set()
        """Keys whose ``${NAME}`` could not be expanded; their other problems are consequences."""

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


MAX_NODES = 200_000
"""Values per file after alias expansion; more is an alias bomb, not a configuration."""


class _Refused(Exception):
    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line


def _yaml_problem(file: str, text: str, e: yaml.YAMLError) -> Problem:
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        return Problem(file, line, "", f"invalid YAML: {e.problem or e.context}")
    position = getattr(e, "position", None)  # yaml.reader.ReaderError: a bad character
    line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
    return Problem(file, line, "", f"invalid YAML: {str(e).splitlines()[0]}")


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
    except yaml.YAMLError as e:
        problems.append(_yaml_problem(file, text, e))
        return None
    except RecursionError:
        problems.append(Problem(file, None, "", "invalid YAML: nested too deeply"))
        return None
    lines: dict[Path, int] = {}
    env_failed: set[str] = set()
    env = dict(os.environ) if environ is None else environ
    ctor = yaml.SafeLoader("")
    active: set[int] = set()
    count = 0

    def construct(node: yaml.Node) -> Any:
        try:
            return ctor.construct_object(node, deep=True)
        except yaml.YAMLError:
            raise
        except Exception:  # PyYAML lets ValueError, IndexError, ... escape for ``2001-02-30``, ``!!int abc``, ``!!int``
            kind = str(node.tag).rsplit(":", 1)[-1]
            raise _Refused(
                node.start_mark.line + 1, f"cannot read {node.value!r} as {kind} (quote it if it is text)"
            ) from None

    def build(node: yaml.Node, path: Path) -> Any:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise _Refused(None, f"more than {MAX_NODES} values (alias expansion?)")
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if id(node) in active:
                raise _Refused(node.start_mark.line + 1, "an alias refers to a value that contains it")
            if len(active) > 200:
                raise _Refused(node.start_mark.line + 1, "nested too deeply")
            active.add(id(node))
            try:
                return build_collection(node, path)
            finally:
                active.discard(id(node))
        value = construct(node)
        if expand_env and isinstance(value, str) and "${" in value:
            value, err = _expand_env(value, env)
            if err:
                problems.append(Problem(file, node.start_mark.line + 1, format_key(path), err))
                env_failed.add(format_key(path))
        return value

    def build_collection(node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.MappingNode):
            ctor.flatten_mapping(node)  # merged pairs (``<<: *base``) first, then the node's own pairs
            merged = len(node.value) - own[id(node)]
            out: dict[Any, Any] = {}
            own_keys: set[str] = set()  # an own key overrides a merged one; the same own key twice is a mistake
            for i, (knode, vnode) in enumerate(node.value):
                key = construct(knode)
                if not isinstance(key, str | int | float | bool) or key is None:
                    problems.append(Problem(file, knode.start_mark.line + 1, format_key(path), "keys must be strings"))
                    continue
                key = str(key) if not isinstance(key, str) else key
                if i >= merged:
                    if key in own_keys:
                        problems.append(
                            Problem(file, knode.start_mark.line + 1, format_key((*path, key)), "duplicate key")
                        )
                        continue
                    own_keys.add(key)
                out[key] = build(vnode, (*path, key))
                lines[(*path, key)] = knode.start_mark.line + 1
            return out
        return [build(item, (*path, i)) for i, item in enumerate(node.value)]

    if root is None:
        return Document(file, {}, {(): 1})
    # Count each mapping's own pairs before flattening merges, which rewrites the (possibly shared) nodes.
    own: dict[int, int] = {}
    todo, seen = [root], set()
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            own[id(n)] = sum(1 for k, _ in n.value if k.tag != "tag:yaml.org,2002:merge")
            todo.extend(x for pair in n.value for x in pair)
        elif isinstance(n, yaml.SequenceNode):
            todo.extend(n.value)
    try:
        data = build(root, ())
    except yaml.YAMLError as e:
        problems.append(_yaml_problem(file, text, e))
        return None
    except _Refused as e:
        problems.append(Problem(file, e.line, "", f"invalid YAML: {e}"))
        return None
    doc = Document(file, data, lines)
    doc.env_failed = env_failed
    return doc


def pydantic_problems(
    doc: Document, prefix: Path, exc: Any, rename: Callable[[str], str] | None = None
) -> list[Problem]:
    """Turn a pydantic ValidationError into located problems under ``prefix``."""
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]")))
        path = (*prefix, *loc)
        out.append(doc.problem(path, _message(err)))
    return out


def _message(err: dict[str, Any]) -> str:
    t = err["type"]
    if t == "extra_forbidden":
        return "unknown key"
    if t == "missing":
        return "required key is missing"
    if t == "model_type":
        return "Input should be a valid dictionary"
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if t == "string_pattern_mismatch":
        return f"invalid name {err.get('input')!r}: use letters, digits, '_', '.', '-'"
    if t == "literal_error":
        return f"{msg}, got {err.get('input')!r}"
    return msg
