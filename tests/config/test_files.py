"""Whole-file problems: YAML syntax, duplicate keys, unreadable files, templates/, and every problem at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fsincident.config import load
from fsincident.core import ConfigError

from .conftest import BASE, ConfDir

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ("listen: 127.0.0.1:9095", "sources:", "  - {name: a, type: host", "routes: []"),
            "4: invalid YAML: expected ',' or '}', but got ':'",
        ),
        (
            ("sources:", "\t- {name: a, type: host}"),
            "2: invalid YAML: found character '\\t' that cannot start any token",
        ),
        (("listen: '127.0.0.1:9095",), "2: invalid YAML: found unexpected end of stream"),
        (("a: b: c",), "1: invalid YAML: mapping values are not allowed here"),
        (("listen: 1", "---", "listen: 2"), "2: invalid YAML: but found another document"),
        (
            ("# ok", "listen: !!python/name:os.system x"),
            "2: invalid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'",
        ),
        (("listen: *nowhere",), "1: invalid YAML: found undefined alias 'nowhere'"),
        (
            ("# ok", "listen: 1\x00"),
            "2: invalid YAML: unacceptable character #x0000: special characters are not allowed",
        ),
    ],
)
def test_invalid_yaml_is_located(conf: ConfDir, lines: tuple[str, ...], expected: str):
    conf.write("fsincident.yaml", *lines)
    assert conf.problems() == [f"{conf.main}:{expected}"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2001-02-30", "cannot read '2001-02-30' as timestamp (quote it if it is text)"),
        ("!!int abc", "cannot read 'abc' as int (quote it if it is text)"),
        ("!!float x", "cannot read 'x' as float (quote it if it is text)"),
        ("!!bool maybe", "cannot read 'maybe' as bool (quote it if it is text)"),
        ("!!timestamp soon", "cannot read 'soon' as timestamp (quote it if it is text)"),
    ],
)
def test_scalar_yaml_cannot_construct(conf: ConfDir, value: str, message: str):
    conf.write("fsincident.yaml", "# settings", f"external_url: {value}")
    assert conf.problems() == [f"{conf.main}:2: invalid YAML: {message}"]


def test_invalid_yaml_in_a_rule_file_does_not_hide_other_files(conf: ConfDir):
    conf.write("fsincident.yaml", *BASE)
    a = conf.write("rules.d/a.yaml", "groups:", "  - name: g", "    rules: [", "")
    b = conf.write("rules.d/b.yaml", "groups:", "  - {name: h, source: nope, rules: []}")
    assert conf.problems() == [
        f"{a}:5: invalid YAML: expected the node content, but found '<stream end>'",
        f"{b}:2: groups[0].source: unknown source 'nope'",
    ]


def test_duplicate_keys(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "listen: 127.0.0.1:9095",  # 1
        "sources:",  # 2
        "  - name: a",  # 3
        "    type: host",  # 4
        "    name: b",  # 5
        "listen: 127.0.0.1:9096",  # 6
    )
    f = conf.write(
        "rules.d/r.yaml",
        "groups:",  # 1
        "  - name: g",  # 2
        "    source: a",  # 3
        "    rules:",  # 4
        "      - alert: A",  # 5
        "        expr: x > 1",  # 6
        "        expr: x > 2",  # 7
    )
    assert conf.problems() == [
        f"{conf.main}:5: sources[0].name: duplicate key",
        f"{conf.main}:6: listen: duplicate key",
        f"{f}:7: groups[0].rules[0].expr: duplicate key",
    ]


def test_keys_must_be_strings(conf: ConfDir):
    conf.write("fsincident.yaml", "delivery:", "  ? [a, b]", "  : 1", "? {x: 1}", ": 2", "~: 3")
    assert conf.problems() == [
        f"{conf.main}:2: delivery: keys must be strings",
        f"{conf.main}:4: keys must be strings",
        f"{conf.main}:6: keys must be strings",
    ]


def test_numbers_and_booleans_as_keys_are_unknown_keys(conf: ConfDir):
    conf.write("fsincident.yaml", "1: a", "true: b")
    assert conf.problems() == [f"{conf.main}:1: 1: unknown key", f"{conf.main}:2: True: unknown key"]


def test_aliases_and_merge_keys_work(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "sources:",
        "  - &base {name: a, type: host, interval: 30s}",
        "  - {<<: *base, name: b}",
    )
    cfg = conf.load()
    assert [(s.name, s.interval.total_seconds()) for s in cfg.sources] == [("a", 30.0), ("b", 30.0)]


def test_merge_key_override_and_own_duplicates(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "sources:",  # 1
        "  - &base {name: a, type: host, interval: 30s}",  # 2
        "  - <<: *base",  # 3
        "    name: c",  # 4  overrides the merged name: fine
        "    interval: 10s",  # 5
        "    name: d",  # 6  the same own key twice: a mistake
    )
    assert conf.problems() == [f"{conf.main}:6: sources[1].name: duplicate key"]


def test_alias_of_a_merging_mapping(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "sources:",  # 1
        "  - &m {<<: {type: host, name: x}, name: a}",  # 2
        "  - *m",  # 3
    )
    # The alias is the very same node: no "duplicate key", but a duplicate source, at the anchor's line.
    assert conf.problems() == [f"{conf.main}:2: sources[1].name: duplicate source name 'a'"]


def test_recursive_alias(conf: ConfDir):
    conf.write("fsincident.yaml", "# loop", "delivery: &d {x: *d}")
    assert conf.problems() == [f"{conf.main}:2: invalid YAML: an alias refers to a value that contains it"]


def test_alias_bomb_is_refused_quickly(conf: ConfDir):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    conf.write("fsincident.yaml", *lines)
    assert conf.problems() == [f"{conf.main}: invalid YAML: more than 200000 values (alias expansion?)"]


def test_deep_nesting(conf: ConfDir):
    conf.write("fsincident.yaml", "delivery: " + "[" * 250 + "]" * 250)
    assert conf.problems() == [f"{conf.main}:1: invalid YAML: nested too deeply"]
    conf.write("fsincident.yaml", "delivery: " + "[" * 1000 + "]" * 1000)
    assert conf.problems() == [f"{conf.main}: invalid YAML: nested too deeply"]


def test_unreadable_files(conf: ConfDir):
    (conf.root / "fsincident.yaml").write_bytes(b"listen: \xff\xfe\n")
    (conf.root / "rules.d" / "dir.yaml").mkdir(parents=True)
    (conf.root / "templates").mkdir()
    (conf.root / "templates" / "title.j2").write_bytes(b"\xc3(")
    assert conf.problems() == [
        f"{conf.main}: not UTF-8 text (byte 8)",
        f"{conf.root}/rules.d/dir.yaml: cannot read: Is a directory",
        f"{conf.root}/templates/title.j2: not UTF-8 text (byte 0)",
    ]


def test_config_directory_missing(tmp_path: Path):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path / "nope")
    assert [str(p) for p in exc.value.problems] == [f"{tmp_path}/nope: config directory does not exist"]


def test_rule_file_needs_a_main_file_source(conf: ConfDir):
    f = conf.write("rules.d/r.yaml", "groups:", "  - name: g", "    rules:", "      - {alert: A, expr: x > 1}")
    assert conf.problems() == [f"{f}:4: groups[0].rules[0]: no source: set source: on the rule or its group"]


def test_unknown_template_name(conf: ConfDir):
    f = conf.write("templates/footer.j2", "bye")
    conf.write("templates/title.j2", "{{ incident.title }}")
    conf.write("templates/title.txt", "not a template: ignored")
    assert conf.problems() == [
        f"{f}: unknown template name (known: title, message, chat, email_subject, email.html, email.txt, digest, "
        "report_subject, report.html, report.txt, shift.html, shift.txt)"
    ]


def test_template_syntax_errors_are_located(conf: ConfDir):
    t = conf.write("templates/title.j2", "{# title #}", "[{{ incident.severity }}]", "{{ incident.title ")
    m = conf.write("templates/message.j2", "{% for a in alerts %}", "{{ a }}", "{% endif %}")
    assert conf.problems() == [
        f"{m}:3: template error: Encountered unknown tag 'endif'. Jinja was looking for the following tags: "
        "'endfor' or 'else'. The innermost block that needs to be closed is 'for'.",
        f"{t}:3: template error: unexpected end of template, expected 'end of print statement'.",
    ]


def test_template_nested_too_deeply(conf: ConfDir):
    t = conf.write("templates/title.j2", "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}")
    assert conf.problems() == [f"{t}: template is nested too deeply"]


# A directory with independent problems in both files and in templates/.
MAIN = (
    "listen: 127.0.0.1:9095",  # 1
    "lissten: 127.0.0.1:9096",  # 2  unknown key
    "sources:",  # 3
    "  - {name: local, type: host, interval: 5x}",  # 4  bad duration
    "  - {name: web, type: scrape, url: 'http://127.0.0.1:9100/metrics'}",  # 5
    "channels:",  # 6
    "  - {name: ops, urls: ['foo://bot:topsecret@chat']}",  # 7  invalid apprise URL
    "routes:",  # 8
    "  - {notify: ['channel:ops', 'user:nobody']}",  # 9  dangling reference
)
RULES = (
    "groups:",  # 1
    "  - name: web",  # 2
    "    source: web",  # 3
    "    rules:",  # 4
    "      - alert: Down",  # 5
    "        expr: up == ",  # 6  syntax error
    "      - alert: Slow",  # 7
    "        expr: latency ** 2 > 1",  # 8  '**'
    "        for: yes",  # 9  wrong type
    "      - alert: Other",  # 10
    "        source: nope",  # 11  dangling reference
    "        expr: x > 1",  # 12
)


def _all_problems(conf: ConfDir) -> list[str]:
    conf.write("fsincident.yaml", *MAIN)
    r = conf.write("rules.d/web.yaml", *RULES)
    a = conf.write("rules.d/00-first.yaml", "groups:", "  - name: web", "    source: local", "    rules: []")
    t = conf.write("templates/title.j2", "{% if %}")
    m = conf.main
    return [
        m + ":2: lissten: unknown key",
        m + ":4: sources[0].interval: invalid duration '5x' (use e.g. 30s, 5m, 1h30m, 1d)",
        m + ":7: channels[0].urls[0]: not a valid apprise URL for scheme 'foo'",
        m + ":9: routes[0].notify[1]: unknown user 'nobody'",
        r + ":2: groups[0].name: duplicate group name 'web' (also in " + a + ")",
        r + ":6: groups[0].rules[0].expr: syntax error: invalid syntax (column 6)",
        r + ":8: groups[0].rules[1].expr: '**' is not allowed (unbounded); use multiplication (column 1)",
        r + ":9: groups[0].rules[1].for: invalid duration True",
        r + ":11: groups[0].rules[2].source: unknown source 'nope'",
        t + ":1: template error: Expected an expression, got 'end of statement block'",
    ]


def test_all_problems_reported_together_sorted(conf: ConfDir):
    expected = _all_problems(conf)
    problems = conf.problems()
    assert problems == expected
    assert "topsecret" not in "\n".join(problems)


def test_check_cli_prints_every_problem_and_exits_1(conf: ConfDir):
    expected = _all_problems(conf)
    env = {k: v for k, v in os.environ.items() if k != "FSINCIDENT_CONFIG"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "fsincident", "check", "--config", str(conf.root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [*expected, f"{len(expected)} problems found"]
    assert "topsecret" not in proc.stderr


def test_check_cli_reads_config_dir_from_environment(conf: ConfDir):
    conf.write("fsincident.yaml", "listen: nowhere")
    env = {**os.environ, "FSINCIDENT_CONFIG": str(conf.root), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "fsincident", "check"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"{conf.main}:1: listen: invalid listen address 'nowhere': write HOST:PORT, e.g. 127.0.0.1:9095",
        "1 problem found",
    ]
