"""fsincident.yaml problems: unknown keys, wrong types, sources, channels, users, routes, settings, ${ENV}."""

from __future__ import annotations

import pytest

from fsincident import plugins

from .conftest import ConfDir

DURATION_HINT = "(use e.g. 30s, 5m, 1h30m, 1d)"
TARGET_HINT = "write channel:NAME, user:NAME or schedule:NAME"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # unknown keys, at every level
        (("listen: 127.0.0.1:9095", "listn: 1"), ["2: listn: unknown key"]),
        (("sources:", "  - {name: a, type: host, url: 'http://x/'}"), ["2: sources[0].url: unknown key"]),
        (
            ("sources:", "  - name: a", "    type: scrape", "    url: http://h/", "    hedaers: {}"),
            ["5: sources[0].hedaers: unknown key"],
        ),
        (("channels:", "  - {name: c, urls: ['json://h/'], url: x}"), ["2: channels[0].url: unknown key"]),
        (("users:", "  - {name: u, email: u@example.com}"), ["2: users[0].email: unknown key"]),
        (("routes:", "  - {matches: {a: b}}"), ["2: routes[0].matches: unknown key"]),
        (("routes:", "  - {matchers: {a: b}}"), ["2: routes[0].matchers: Input should be a valid list"]),
        (("delivery:", "  retries: 3"), ["2: delivery.retries: unknown key"]),
        # wrong types and bad durations
        (
            ("sources:", "  - {name: a, type: host, interval: [1]}"),
            [f"2: sources[0].interval: invalid duration [1] {DURATION_HINT}"],
        ),
        (
            ("sources:", "  - {name: a, type: host, interval: 5x}"),
            [f"2: sources[0].interval: invalid duration '5x' {DURATION_HINT}"],
        ),
        (("sources:", "  - {name: a, type: host, interval: yes}"), ["2: sources[0].interval: invalid duration True"]),
        (
            ("sources:", "  - {name: a, type: host, interval: 0s}"),
            ["2: sources[0].interval: interval must be positive"],
        ),
        (("sources:", "  - {name: a, type: host, interval: 0}"), ["2: sources[0].interval: interval must be positive"]),
        (
            ("sources:", "  - {name: a, type: host, interval: -5}"),
            ["2: sources[0].interval: invalid duration -5: must not be negative"],
        ),
        (
            ("sources:", "  - {name: a, type: host, timeout: 1y}"),
            [f"2: sources[0].timeout: invalid duration '1y' {DURATION_HINT}"],
        ),
        (("sources:", "  - {name: a, type: host, mounts: /}"), ["2: sources[0].mounts: Input should be a valid list"]),
        (("delivery: {timeout: soon}",), [f"1: delivery.timeout: invalid duration 'soon' {DURATION_HINT}"]),
        (("delivery: {max_attempts: 0}",), ["1: delivery.max_attempts: Input should be greater than or equal to 1"]),
        (
            ("delivery: {max_attempts: many}",),
            ["1: delivery.max_attempts: Input should be a valid integer, unable to parse string as an integer"],
        ),
        (("delivery:",), ["1: delivery: Input should be a valid dictionary"]),
        (("log_level: loud",), ["1: log_level: Input should be 'debug', 'info', 'warning' or 'error', got 'loud'"]),
        (("external_url: [a]",), ["1: external_url: Input should be a valid string"]),
        # odd shapes
        (("- listen: 127.0.0.1:9095",), ["1: must be a mapping of settings"]),
        (("just a string",), ["1: must be a mapping of settings"]),
        (("sources: 5",), ["1: sources: Input should be a valid list"]),
        (("sources:",), ["1: sources: Input should be a valid list"]),
        (("sources:", "  - local"), ["2: sources[0]: must be a mapping"]),
        (("routes:", "  -"), ["2: routes[0]: Input should be a valid dictionary"]),
        (("users: {alice: {}}",), ["1: users: Input should be a valid list"]),
        (
            ("channels:", "  - {name: c, urls: []}"),
            ["2: channels[0].urls: List should have at least 1 item after validation, not 0"],
        ),
        (("channels:", "  - {name: c, urls: 'json://h/'}"), ["2: channels[0].urls: Input should be a valid list"]),
        (("channels:", "  - {urls: ['json://h/']}"), ["2: channels[0].name: required key is missing"]),
    ],
)
def test_main_file_problem(conf: ConfDir, lines: tuple[str, ...], expected: list[str]):
    conf.write("fsincident.yaml", *lines)
    assert conf.problems() == [f"{conf.main}:{e}" for e in expected]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("localhost", "invalid listen address 'localhost': write HOST:PORT, e.g. 127.0.0.1:9095"),
        ("127.0.0.1:70000", "invalid listen address '127.0.0.1:70000': write HOST:PORT, e.g. 127.0.0.1:9095"),
        ("'::1:9095'", "invalid listen address '::1:9095': write HOST:PORT, e.g. 127.0.0.1:9095"),
        (
            "http://127.0.0.1:9095",
            "invalid listen address 'http://127.0.0.1:9095': write HOST:PORT, e.g. 127.0.0.1:9095",
        ),
        ("9095", "Input should be a valid string"),
    ],
)
def test_bad_listen(conf: ConfDir, value: str, message: str):
    conf.write("fsincident.yaml", "# daemon", f"listen: {value}")
    assert conf.problems() == [f"{conf.main}:2: listen: {message}"]


def test_good_listen_forms(conf: ConfDir):
    for value, host, port in (("'[::1]:9095'", "::1", 9095), (":9095", "0.0.0.0", 9095), ("db1.lan:80", "db1.lan", 80)):
        conf.write("fsincident.yaml", f"listen: {value}")
        cfg = conf.load()
        assert (cfg.host, cfg.port) == (host, port)


@pytest.mark.parametrize("value", ["mysql://u@h/db", "state.db", "sqlite:/x.db", "''"])
def test_bad_database(conf: ConfDir, value: str):
    conf.write("fsincident.yaml", "listen: 127.0.0.1:9095", f"database: {value}")
    assert conf.problems() == [
        f"{conf.main}:2: database: database must be sqlite:///PATH or postgresql://USER@HOST/DB",
    ]


def test_good_database_forms(conf: ConfDir):
    for url in ("sqlite:///var/lib/x.db", "sqlite+aiosqlite:///x.db", "postgresql://u@h/db", "postgres://h/db"):
        conf.write("fsincident.yaml", f"database: {url}")
        assert conf.load().database == url


def test_unknown_source_type_lists_available(conf: ConfDir):
    conf.write("fsincident.yaml", "sources:", "  - name: a", "    type: nosuchkind")
    available = ", ".join(plugins.sources.kinds())
    assert {"host", "scrape"} <= set(plugins.sources.kinds())
    assert conf.problems() == [f"{conf.main}:3: sources[0].type: unknown type 'nosuchkind' (available: {available})"]


def test_unknown_channel_type_lists_available(conf: ConfDir):
    conf.write("fsincident.yaml", "channels:", "  - {name: c, type: pigeon, urls: ['json://h/']}")
    available = ", ".join(plugins.notifiers.kinds())
    assert conf.problems() == [f"{conf.main}:2: channels[0].type: unknown type 'pigeon' (available: {available})"]


def test_missing_source_type(conf: ConfDir):
    conf.write("fsincident.yaml", "sources:", "  - {name: a, type: host}", "  - name: b", "    interval: 10s")
    assert conf.problems() == [f"{conf.main}:3: sources[1]: required key 'type' is missing"]


def test_scrape_source_url(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "sources:",  # 1
        "  - {name: a, type: scrape}",  # 2
        "  - {name: b, type: scrape, url: 'ftp://h/metrics'}",  # 3
        "  - {name: c, type: scrape, url: 'http://h/', headers: {X-Token: 5}}",  # 4
    )
    assert conf.problems() == [
        f"{conf.main}:2: sources[0].url: required key is missing",
        f"{conf.main}:3: sources[1].url: URL scheme should be 'http' or 'https'",
        f"{conf.main}:4: sources[2].headers.X-Token: Input should be a valid string",
    ]


def test_duplicate_names(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "sources:",  # 1
        "  - {name: local, type: host}",  # 2
        "  - {name: web, type: scrape, url: 'http://h/'}",  # 3
        "  - {name: local, type: scrape, url: 'http://h/'}",  # 4
        "channels:",  # 5
        "  - {name: ops, urls: ['json://h/']}",  # 6
        "  - {name: ops, urls: ['json://h/']}",  # 7
        "users:",  # 8
        "  - {name: alice}",  # 9
        "  - {name: alice}",  # 10
    )
    assert conf.problems() == [
        f"{conf.main}:4: sources[2].name: duplicate source name 'local'",
        f"{conf.main}:7: channels[1].name: duplicate channel name 'ops'",
        f"{conf.main}:10: users[1].name: duplicate user name 'alice'",
    ]


def test_route_targets(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "channels:",  # 1
        "  - {name: ops, urls: ['json://h/']}",  # 2
        "users:",  # 3
        "  - {name: alice}",  # 4
        "routes:",  # 5
        "  - match: {team: infra}",  # 6
        "    notify:",  # 7
        "      - channel:ops",  # 8
        "      - channel:nope",  # 9
        "      - user:alice",  # 10
        "      - user:nope",  # 11
        "      - schedule:x",  # 12
        "      - pager:x",  # 13
        "      - ops",  # 14
        "  - notify: [channel:nope2]",  # 15
    )
    assert conf.problems() == [
        f"{conf.main}:9: routes[0].notify[1]: unknown channel 'nope'",
        f"{conf.main}:11: routes[0].notify[3]: unknown user 'nope'",
        f"{conf.main}:12: routes[0].notify[4]: unknown schedule 'x'",
        f"{conf.main}:13: routes[0].notify[5]: invalid target 'pager:x': {TARGET_HINT}",
        f"{conf.main}:14: routes[0].notify[6]: invalid target 'ops': {TARGET_HINT}",
        f"{conf.main}:15: routes[1].notify[0]: unknown channel 'nope2'",
    ]


def test_route_match_group_by_and_auto_resolve(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "routes:",  # 1
        "  - match:",  # 2
        "      team: infra",  # 3
        "      bad-label: x",  # 4
        "      nested: {a: b}",  # 5
        "  - group_by: [alertname, 'not valid', 5]",  # 6
        "  - group_by: alertname",  # 7
        "  - auto_resolve: maybe",  # 8
    )
    assert conf.problems() == [
        f"{conf.main}:4: routes[0].match.bad-label: invalid label name 'bad-label'",
        f"{conf.main}:5: routes[0].match.nested: Input should be a valid string",
        f"{conf.main}:6: routes[1].group_by[2]: Input should be a valid string",
        f"{conf.main}:7: routes[2].group_by: Input should be a valid list",
        f"{conf.main}:8: routes[3].auto_resolve: Input should be a valid boolean, unable to interpret input",
    ]
    conf.write("fsincident.yaml", "routes:", "  - group_by: [alertname, 'not valid']")
    assert conf.problems() == [f"{conf.main}:2: routes[0].group_by[1]: invalid label name 'not valid'"]


def test_route_to_an_invalid_user_or_channel_is_not_also_unknown(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "channels:",  # 1
        "  - {name: ops, urls: ['nope']}",  # 2
        "users:",  # 3
        "  - {name: alice, timezone: Nowhere/City}",  # 4
        "sources:",  # 5
        "  - {name: local, type: host, interval: 0s}",  # 6
        "routes:",  # 7
        "  - notify: ['channel:ops', 'user:alice']",  # 8
    )
    conf.write("rules.d/r.yaml", "groups:", "  - {name: g, source: local, rules: [{alert: A, expr: x > 1}]}")
    assert conf.problems() == [
        f"{conf.main}:2: channels[0].urls[0]: not an apprise URL (expected SCHEME://...)",
        f"{conf.main}:4: users[0].timezone: unknown time zone 'Nowhere/City'",
        f"{conf.main}:6: sources[0].interval: interval must be positive",
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://user:topsecret@host", "not a valid apprise URL for scheme 'foo'"),
        ("tgram://topsecret/", "not a valid apprise URL for scheme 'tgram'"),
        ("mailto://user:topsecret@", "not a valid apprise URL for scheme 'mailto'"),
        ("topsecret", "not an apprise URL (expected SCHEME://...)"),
        ("' '", "empty notification URL"),
    ],
)
def test_invalid_apprise_urls_never_show_the_secret(conf: ConfDir, url: str, message: str):
    conf.write(
        "fsincident.yaml",
        "channels:",  # 1
        "  - name: ops",  # 2
        "    urls:",  # 3
        "      - json://127.0.0.1:9099/ok",  # 4
        f"      - {url}",  # 5
        "users:",  # 6
        "  - name: alice",  # 7
        f"    contacts: [{url}]",  # 8
    )
    problems = conf.problems()
    assert problems == [
        f"{conf.main}:5: channels[0].urls[1]: {message}",
        f"{conf.main}:8: users[0].contacts[0]: {message}",
    ]
    assert "topsecret" not in "\n".join(problems)


def test_secret_in_environment_is_not_shown(conf: ConfDir):
    conf.write("fsincident.yaml", "channels:", "  - {name: ops, urls: ['${OPS_URL}']}")
    problems = conf.problems({"OPS_URL": "foo://bot:topsecret@chat.example.com"})
    assert problems == [f"{conf.main}:2: channels[0].urls[0]: not a valid apprise URL for scheme 'foo'"]


@pytest.mark.parametrize(
    ("tz", "message"),
    [
        ("Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
        ("../../etc/passwd", "unknown time zone '../../etc/passwd'"),
        ("''", "unknown time zone ''"),
        ("5", "Input should be a valid string"),
    ],
)
def test_user_time_zone(conf: ConfDir, tz: str, message: str):
    conf.write("fsincident.yaml", "users:", "  - name: alice", f"    timezone: {tz}")
    assert conf.problems() == [f"{conf.main}:3: users[0].timezone: {message}"]


def test_missing_env_names_variable_and_key_once(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "listen: ${LISTEN}",  # 1
        "channels:",  # 2
        "  - name: ops",  # 3
        "    urls: ['${OPS_URL}', 'json://${HOOK_HOST:-127.0.0.1}/x']",  # 4
    )
    assert conf.problems() == [
        f"{conf.main}:1: listen: environment variable LISTEN is not set (write ${{LISTEN:-default}} for a default)",
        f"{conf.main}:4: channels[0].urls[0]: environment variable OPS_URL is not set "
        "(write ${OPS_URL:-default} for a default)",
    ]


def test_env_is_expanded_in_strings_only_of_the_main_file(conf: ConfDir):
    conf.write("fsincident.yaml", "sources:", "  - {name: local, type: host}")
    conf.write(
        "rules.d/r.yaml",
        "groups:",
        "  - name: g",
        "    source: local",
        "    rules:",
        "      - alert: A",
        "        expr: x > 1",
        "        annotations: {runbook: '${RUNBOOK}'}",
    )
    cfg = conf.load({"RUNBOOK": "expanded"})
    assert cfg.rules[0].annotations["runbook"].render() == "${RUNBOOK}"


def test_every_section_reports_even_when_another_fails(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "listen: nowhere",  # 1
        "database: mysql://x/y",  # 2
        "sources:",  # 3
        "  - {name: a, type: host, interval: 5x}",  # 4
        "  - {name: b, type: host, interval: 10s}",  # 5
        "channels:",  # 6
        "  - {name: ops, urls: ['json://h/'], color: red}",  # 7
        "users:",  # 8
        "  - {name: alice, timezone: Moon/Base}",  # 9
        "  - {name: bob, contacts: ['foo://u:topsecret@h']}",  # 10
        "routes:",  # 11
        "  - {notify: ['user:carol'], group_by: [a-b]}",  # 12
        "  - {notify: ['channel:ops', 'user:alice', 'user:bob']}",  # 13
        "  - {match: x}",  # 14
        "  - {notify: ['channel:nope']}",  # 15
    )
    assert conf.problems() == [
        f"{conf.main}:1: listen: invalid listen address 'nowhere': write HOST:PORT, e.g. 127.0.0.1:9095",
        f"{conf.main}:2: database: database must be sqlite:///PATH or postgresql://USER@HOST/DB",
        f"{conf.main}:4: sources[0].interval: invalid duration '5x' {DURATION_HINT}",
        f"{conf.main}:7: channels[0].color: unknown key",
        f"{conf.main}:9: users[0].timezone: unknown time zone 'Moon/Base'",
        f"{conf.main}:10: users[1].contacts[0]: not a valid apprise URL for scheme 'foo'",
        f"{conf.main}:12: routes[0].group_by[0]: invalid label name 'a-b'",
        f"{conf.main}:12: routes[0].notify[0]: unknown user 'carol'",
        f"{conf.main}:14: routes[2].match: Input should be a valid dictionary",
        f"{conf.main}:15: routes[3].notify[0]: unknown channel 'nope'",
    ]


@pytest.mark.parametrize("value", ["ftp:///x", "oncall.example.com", "http://"])
def test_bad_external_url(conf: ConfDir, value: str):
    conf.write("fsincident.yaml", "listen: 127.0.0.1:9095", f"external_url: '{value}'")
    assert conf.problems() == [
        f"{conf.main}:2: external_url: invalid external_url {value!r}: write http(s)://HOST[:PORT][/PATH]",
    ]


def test_source_labels_are_checked(conf: ConfDir):
    conf.write(
        "fsincident.yaml",
        "sources:",
        "  - name: web",
        "    type: scrape",
        "    url: http://127.0.0.1:9100/metrics",
        "    labels:",
        "      bad-name: x",
    )
    assert conf.problems() == [f"{conf.main}:6: sources[0].labels.bad-name: invalid label name 'bad-name'"]
