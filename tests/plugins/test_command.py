"""``type: command``: scripts written here and the real Debian monitoring-plugins, run as real processes."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fsincident.config import load
from fsincident.core import ConfigError, SourceError
from fsincident.sources.command import CommandOptions, CommandSource, parse_output, parse_perfdata
from tests.helpers import DaemonProcess, Receiver, free_port, write_config

PLUGINS = Path("/usr/lib/nagios/plugins")
NOW = datetime(2026, 1, 1, tzinfo=UTC)

needs_plugins = pytest.mark.skipif(
    not (PLUGINS / "check_tcp").exists(), reason="Debian monitoring-plugins are not installed"
)


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def source(*argv: str, timeout: str = "10s", **kw) -> CommandSource:
    return CommandSource(CommandOptions(name="chk", type="command", command=list(argv), timeout=timeout, **kw))


def by_name(samples) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for s in samples:
        out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def perf(samples, metric: str = "check_perfdata") -> dict[str, float]:
    return {s.labels["label"]: s.value for s in samples if s.name == metric}


# ----------------------------------------------------------------------------- parsing


def test_first_line_long_text_and_perfdata_continued_on_later_lines():
    out = parse_output(
        "DISK WARNING - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n"
        "/ 15272 MB (77%);\n"
        "/boot 68 MB (69%); | /boot=68MB;88;93;0;98\n"
        "/home=69357MB;253404;253409;0;253414\n"
    )
    assert out.text == "DISK WARNING - free space: / 3326 MB (56%);"
    assert out.long_text == "/ 15272 MB (77%);\n/boot 68 MB (69%);"
    assert [p.label for p in out.perfdata] == ["/", "/boot", "/home"]
    home = out.perfdata[2]
    assert home.value == 69357 * 1024**2 and home.uom == "B" and home.max == 253414 * 1024**2
    assert out.invalid == ()


def test_quoted_labels_with_spaces_and_escaped_quotes():
    items, invalid = parse_perfdata("'free space'=5GB 'it''s'=1 '='=2 'a=b'=3;4")
    assert [(p.label, p.value) for p in items] == [
        ("free space", 5 * 1024**3),
        ("it's", 1.0),
        ("=", 2.0),
        ("a=b", 3.0),
    ]
    assert items[3].warn == 4.0 and invalid == []


def test_units_are_normalised_to_seconds_and_bytes():
    items, _ = parse_perfdata("a=1500ms;1000;2000 b=250us c=2s d=3KB e=1TB f=50% g=7c h=4 i=2.5Mbps j=1e3B")
    got = {p.label: (p.value, p.uom) for p in items}
    assert got["a"] == (1.5, "s") and items[0].warn == 1.0 and items[0].crit == 2.0
    assert got["b"] == (pytest.approx(0.00025), "s")
    assert got["c"] == (2.0, "s")
    assert got["d"] == (3072.0, "B")
    assert got["e"] == (1024.0**4, "B")
    assert got["f"] == (50.0, "%")
    assert got["g"] == (7.0, "c")
    assert got["h"] == (4.0, "")
    assert got["i"] == (2.5, "Mbps")  # an unknown unit is kept as written, the value unscaled
    assert got["j"] == (1000.0, "B")


def test_missing_fields_ranges_and_undetermined_values():
    items, invalid = parse_perfdata("a=1;;;0; b=2;10:;@5:8;; c=U;1;2 d=3;~:4;5;-1;10")
    a, b, c, d = items
    assert (a.value, a.warn, a.crit, a.min, a.max) == (1.0, None, None, 0.0, None)
    assert (b.warn, b.crit) == (None, None)  # ranges are not single thresholds
    assert c.value is None and c.warn == 1.0 and c.crit == 2.0
    assert (d.warn, d.crit, d.min, d.max) == (None, 5.0, -1.0, 10.0)
    assert invalid == []


def test_garbage_items_are_skipped_and_reported_without_losing_the_rest():
    items, invalid = parse_perfdata("ok=1 garbage =5 x=abc 'unterminated=3 y=nan z=2;3")
    assert [p.label for p in items] == ["ok", "z"]
    assert invalid == ["garbage", "=5", "x=abc", "'unterminated=3", "y=nan"]
    assert parse_output("").text == "" and parse_output("no perfdata at all\n").perfdata == ()


# ----------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("code,state", [(0, 0), (1, 1), (2, 2), (3, 3)])
async def test_exit_codes_are_states(tmp_path, code, state):
    path = script(tmp_path, "c.sh", f"echo 'STATE {code} | t=5ms;10;20;0'\nexit {code}\n")
    samples = await source(path, labels={"team": "infra"}).collect(NOW)
    got = by_name(samples)
    assert got["check_state"] == {(("job", "chk"), ("team", "infra")): float(state)}
    assert perf(samples) == {"t": 0.005}
    assert perf(samples, "check_perfdata_warn") == {"t": 0.01}
    assert perf(samples, "check_perfdata_crit") == {"t": 0.02}
    assert perf(samples, "check_perfdata_min") == {"t": 0.0}
    assert perf(samples, "check_perfdata_max") == {}
    (p,) = [s for s in samples if s.name == "check_perfdata"]
    assert dict(p.labels) == {"job": "chk", "team": "infra", "label": "t", "uom": "s"}
    (d,) = got["check_duration_seconds"].values()
    assert 0 < d < 10


async def test_multiline_output_and_garbage_through_a_script(tmp_path):
    path = script(
        tmp_path,
        "c.sh",
        "printf 'WARN - 2 of 3 | \\047disk a\\047=1GB;2;3\\n'\n"
        "printf 'long text line\\nmore | \\047it\\047\\047s\\047=2s rubbish\\nthird=50%%;80;90;0;100\\n'\n"
        "exit 1\n",
    )
    src = source(path)
    samples = await src.collect(NOW)
    assert by_name(samples)["check_state"] == {(("job", "chk"),): 1.0}
    assert perf(samples) == {"disk a": 1024.0**3, "it's": 2.0, "third": 50.0}
    assert by_name(samples)["check_perfdata_invalid_items"] == {(("job", "chk"),): 1.0}
    assert src.last_output == "WARN - 2 of 3"


async def test_environment_is_minimal_plus_env_option(tmp_path, monkeypatch):
    monkeypatch.setenv("FSI_TEST_SECRET", "hunter2")
    path = script(tmp_path, "c.sh", 'echo "OK | secret=${#FSI_TEST_SECRET} extra=$EXTRA"\n')
    samples = await source(path, env={"EXTRA": "42"}).collect(NOW)
    assert perf(samples) == {"secret": 0.0, "extra": 42.0}  # the daemon's environment does not leak


async def test_timeout_kills_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    path = script(tmp_path, "slow.sh", f"sleep 60 &\necho $! > {pids}\necho $$ >> {pids}\nsleep 60\n")
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"timed out after 0\.5s; its process group was killed"):
        await source(path, timeout="500ms").collect(NOW)
    assert time.monotonic() - started < 5
    ids = [int(x) for x in pids.read_text().split()]
    assert len(ids) == 2
    for _ in range(100):
        if not any(_alive(p) for p in ids):
            break
        await asyncio.sleep(0.05)
    assert not any(_alive(p) for p in ids), "a process of the timed-out check survived"


async def test_background_child_holding_the_output_is_killed_and_not_waited_for(tmp_path):
    pids = tmp_path / "pids"
    path = script(tmp_path, "bg.sh", f"sleep 60 &\necho $! > {pids}\necho 'OK | x=1'\nexit 0\n")
    samples = await source(path, timeout="5s").collect(NOW)
    assert perf(samples) == {"x": 1.0}
    (child,) = [int(x) for x in pids.read_text().split()]
    for _ in range(100):
        if not _alive(child):
            break
        await asyncio.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead already; it only waits for its parent (here: init, or this test) to reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


async def test_missing_and_non_executable_binaries_are_source_errors(tmp_path):
    with pytest.raises(SourceError, match="command not found: /nonexistent/check_x"):
        await source("/nonexistent/check_x").collect(NOW)
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\necho OK\n")
    with pytest.raises(SourceError, match="command not executable"):
        await source(str(plain)).collect(NOW)


async def test_other_exit_codes_and_signals_are_source_errors_with_the_output(tmp_path):
    path = script(tmp_path, "c.sh", "echo 'boom: something broke' >&2\nexit 7\n")
    with pytest.raises(SourceError, match=r"exited with 7 \(not a plugin state 0-3\): boom: something broke"):
        await source(path).collect(NOW)
    path = script(tmp_path, "k.sh", "echo 'about to die'\nkill -TERM $$\n")
    with pytest.raises(SourceError, match="killed by SIGTERM: about to die"):
        await source(path).collect(NOW)


async def test_huge_output_is_bounded(tmp_path):
    path = script(tmp_path, "big.sh", "echo 'OK | a=1'\nhead -c 5000000 /dev/zero | tr '\\0' 'x'\nexit 0\n")
    samples = await source(path).collect(NOW)
    assert by_name(samples)["check_state"] == {(("job", "chk"),): 0.0}
    assert perf(samples) == {"a": 1.0}


def test_config_errors_are_located(tmp_path):
    write_config(
        tmp_path,
        """\
        sources:
          - name: c
            type: command
            command: []
          - name: d
            type: command
            command: [/bin/true]
            shell: true
          - name: e
            type: command
            command: [/bin/true]
            labels: {job: x}
        """,
    )
    with pytest.raises(ConfigError) as e:
        load(tmp_path)
    text = str(e.value)
    main = tmp_path / "fsincident.yaml"
    assert f"{main}:4: sources[0].command: List should have at least 1 item" in text
    assert f"{main}:8: sources[1].shell: unknown key" in text
    assert f"{main}:12: sources[2].labels.job: 'job' is set by the source" in text


# ----------------------------------------------------------------------------- Debian monitoring-plugins


@needs_plugins
async def test_check_disk_on_root():
    samples = await source(str(PLUGINS / "check_disk"), "-w", "1%", "-c", "0%", "-p", "/").collect(NOW)
    got = by_name(samples)
    assert list(got["check_state"].values()) in ([0.0], [1.0], [2.0])
    values = perf(samples)
    assert set(values) == {"/"}
    total = perf(samples, "check_perfdata_max")["/"]
    st = os.statvfs("/")
    assert total == pytest.approx(st.f_blocks * st.f_frsize, rel=0.01)  # bytes, not MB
    assert 0 < values["/"] <= total
    (p,) = [s for s in samples if s.name == "check_perfdata"]
    assert p.labels["uom"] == "B"


@needs_plugins
async def test_check_load_reports_three_averages():
    samples = await source(str(PLUGINS / "check_load"), "-w", "100,100,100", "-c", "200,200,200").collect(NOW)
    assert by_name(samples)["check_state"] == {(("job", "chk"),): 0.0}
    values = perf(samples)
    assert set(values) == {"load1", "load5", "load15"}
    assert values["load1"] == pytest.approx(os.getloadavg()[0], abs=2.0)
    assert perf(samples, "check_perfdata_warn") == {"load1": 100.0, "load5": 100.0, "load15": 100.0}
    assert perf(samples, "check_perfdata_crit") == {"load1": 200.0, "load5": 200.0, "load15": 200.0}


@needs_plugins
async def test_check_tcp_open_and_closed_port():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        samples = await source(str(PLUGINS / "check_tcp"), "-H", "127.0.0.1", "-p", str(port)).collect(NOW)
    finally:
        server.close()
        await server.wait_closed()
    assert by_name(samples)["check_state"] == {(("job", "chk"),): 0.0}
    assert set(perf(samples)) == {"time"}
    (t,) = [s for s in samples if s.name == "check_perfdata"]
    assert t.labels["uom"] == "s" and 0 <= t.value < 10
    assert perf(samples, "check_perfdata_max") == {"time": 10.0}  # check_tcp's default timeout

    closed = _closed_port()
    samples = await source(str(PLUGINS / "check_tcp"), "-H", "127.0.0.1", "-p", str(closed)).collect(NOW)
    assert by_name(samples)["check_state"] == {(("job", "chk"),): 2.0}


def _closed_port() -> int:
    # A port that was just free and has nobody listening: connecting is refused at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_plugins
@pytest.mark.slow
def test_daemon_fires_for_check_tcp_on_a_closed_port(tmp_path):
    rcv = Receiver().start()
    port = free_port()
    closed = _closed_port()
    cfg = write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp_path}/state.db
        sources:
          - name: tcp
            type: command
            command: ["{PLUGINS}/check_tcp", "-H", "127.0.0.1", "-p", "{closed}"]
            interval: 1s
            timeout: 5s
        channels:
          - {{name: ops, urls: ["{rcv.apprise_url("ops")}"]}}
        routes:
          - {{notify: ["channel:ops"]}}
        """,
        {
            "tcp.yaml": """
            groups:
              - name: tcp
                interval: 1s
                source: tcp
                rules:
                  - alert: TcpCheckCritical
                    expr: check_state >= 2
                    severity: critical
                    annotations:
                      summary: "check {{ labels.job }} is in state {{ value }}"
            """
        },
    )
    d = DaemonProcess(cfg, port).start()
    try:
        d.token = d.create_token("read")
        msgs = rcv.wait_for(lambda m: len(m) >= 1)
        assert "TRIGGERED" in msgs[0]["title"]
        assert "check tcp is in state 2" in msgs[0]["message"] + msgs[0]["title"]
        incs = d.wait_incidents(lambda i: len(i) == 1)
        assert incs[0]["labels"]["alertname"] == "TcpCheckCritical"
        assert incs[0]["labels"]["job"] == "tcp"
    finally:
        assert d.stop() == 0
        rcv.stop()
