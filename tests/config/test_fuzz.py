"""load() never raises anything but ConfigError: the examples with one part replaced by something odd, and noise."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsincident.config import Config, load
from fsincident.core import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAIN = yaml.safe_load((EXAMPLES / "fsincident.yaml").read_text())
RULES = yaml.safe_load((EXAMPLES / "rules.d" / "host.yaml").read_text())

ODD = st.sampled_from(
    [
        *("5x", "0s", "-1s", "0", "${UNSET}", "${X:-}", "channel:nope", "user:", "schedule:x", "host", "scrape"),
        *("{{", "x >", "x ** 2", "sqrt(x)", "alertname", "a-b", "", " ", "foo://u:p@h", "http://[::1", "\x85", "~"),
    ]
)
KEYS = st.sampled_from(["name", "type", "url", "expr", "for", "interval", "labels", "rules", "groups", "source", "<<"])
SCALARS = st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=10) | ODD
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS | st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _paths(v, (*prefix, k))


def _replace(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return obj


def _load(root: Path) -> Config | ConfigError:
    try:
        return load(root, environ={})
    except ConfigError as e:
        files = {str(root / "fsincident.yaml"), *(str(p) for p in root.rglob("*"))}
        assert e.problems, "a ConfigError lists its problems"
        for p in e.problems:
            assert p.file in files and (p.line is None or p.line >= 1), str(p)
        return e


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_examples_with_one_part_replaced(data: st.DataObject):
    main, rules = copy.deepcopy(MAIN), copy.deepcopy(RULES)
    which = data.draw(st.sampled_from(["main", "rules"]))
    doc = main if which == "main" else rules
    path = data.draw(st.sampled_from(list(_paths(doc))))
    doc = _replace(doc, path, data.draw(VALUES))
    if which == "main":
        main = doc
    else:
        rules = doc
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "rules.d").mkdir()
        (root / "fsincident.yaml").write_text(yaml.safe_dump(main, allow_unicode=True))
        (root / "rules.d" / "host.yaml").write_text(yaml.safe_dump(rules, allow_unicode=True))
        _load(root)


@settings(max_examples=100, deadline=None)
@given(
    main=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`, \n\t?~0")), max_size=60),
    rule=st.text(max_size=40),
    template=st.text(alphabet=st.sampled_from(list("{}%#()[]x .|\n'")), max_size=30),
)
def test_noise_files(main: str, rule: str, template: str):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "rules.d").mkdir()
        (root / "templates").mkdir()
        (root / "fsincident.yaml").write_text(main)
        (root / "rules.d" / "r.yaml").write_text(rule)
        (root / "templates" / "title.j2").write_text(template)
        _load(root)


FRAGMENTS = st.sampled_from(
    [
        *("sources:", "groups:", "rules:", "listen: ", "name: a", "type: host", "expr: x > 1", "source: a", "alert: A"),
        *("!!int ", "!!float ", "!!timestamp ", "!!binary ", "!!set ", "!!omap ", "2001-02-30", "1e400", ".nan"),
        *("&a ", "*a", "<<: ", "{", "}", "[", "]", "\n", "  ", "- ", ", ", "~", ": ", "? ", "'", "${X}", "#"),
    ]
)


@settings(max_examples=100, deadline=None)
@given(main=st.lists(FRAGMENTS, max_size=25).map("".join), rule=st.lists(FRAGMENTS, max_size=25).map("".join))
def test_yaml_fragments(main: str, rule: str):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "rules.d").mkdir()
        (root / "fsincident.yaml").write_text(main)
        (root / "rules.d" / "r.yaml").write_text("sources: [{name: a, type: host}]\n" + rule)
        _load(root)
