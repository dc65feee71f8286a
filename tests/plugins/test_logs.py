"""``type: logs``: files written by the test (append, rotation, truncation, restart), journalctl, the daemon."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import struct
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fsincident.config import load
from fsincident.core import ConfigError, SourceError, SystemClock
from fsincident.plugins import SourceContext
from fsincident.sources.logs import STATE_KEY, LogsOptions, LogsSource
from fsincident.store import SqlStateStore, Store
from tests.helpers import DaemonProcess, Receiver, free_port, write_config

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SSH = {"metric": "ssh_failed_logins_total", "regex": r"Failed password for .* from (?P<ip>\S+)"}


def failed(ip: str, user: str = "root") -> str:
    return f"Jan  1 00:00:00 host sshd[1]: Failed password for {user} from {ip} port 22 ssh2\n"


def ok_line() -> str:
    return "Jan  1 00:00:00 host sshd[1]: Accepted publickey for alice from 10.0.0.1 port 22 ssh2\n"


def truncate(path: Path) -> None:
    with open(path, "r+") as f:
        f.truncate(0)


def append(path: Path, *lines: str) -> None:
    with open(path, "a") as f:
        f.write("".join(lines))


@pytest.fixture
async def store(sqlite_url) -> AsyncIterator[Store]:
    st = Store(sqlite_url)
    await st.upgrade()
    yield st
    await st.close()


@pytest.fixture
async def make(store):
    """``make(**options)`` builds a LogsSource named ``auth`` on the real SQL state store; closes them after."""
    made: list[LogsSource] = []

    def build(**kw) -> LogsSource:
        kw.setdefault("patterns", [SSH])
        opts = LogsOptions.model_validate({"name": "auth", "type": "logs", **kw})
        ctx = SourceContext(clock=SystemClock(), state=SqlStateStore(store, "auth", SystemClock()))
        src = LogsSource(opts, context=ctx)
        made.append(src)
        return src

    yield build
    for src in made:
        if not src._closing:
            await src.close()


async def collect(src: LogsSource) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in await src.collect(NOW)}


def count(got: dict, metric: str = "ssh_failed_logins_total", **labels: str) -> float | None:
    key = (metric, tuple(sorted({"job": "auth", **labels}.items())))
    return got.get(key)


def total(got: dict, metric: str) -> float:
    return got[(metric, (("job", "auth"),))]


# ----------------------------------------------------------------------------- reading


async def test_matching_lines_are_counted_per_label_set_and_grow(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text(failed("1.2.3.4") + ok_line() + failed("1.2.3.4") + failed("5.6.7.8"))
    src = make(path=str(log), from_start=True)
    got = await collect(src)
    assert count(got, ip="1.2.3.4") == 2
    assert count(got, ip="5.6.7.8") == 1
    assert total(got, "log_lines_total") == 4
    assert total(got, "log_bytes_read_total") == log.stat().st_size
    append(log, failed("1.2.3.4"), ok_line(), failed("9.9.9.9"))
    got = await collect(src)
    assert count(got, ip="1.2.3.4") == 3 and count(got, ip="5.6.7.8") == 1 and count(got, ip="9.9.9.9") == 1
    assert total(got, "log_lines_total") == 7
    assert total(got, "log_file_rotations_total") == 0
    await src.close()


async def test_a_new_file_starts_at_its_end_so_old_history_does_not_page(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text(failed("1.2.3.4") * 50)
    src = make(path=str(log))
    got = await collect(src)
    assert count(got, ip="1.2.3.4") is None and total(got, "log_lines_total") == 0
    append(log, failed("1.2.3.4"))
    got = await collect(src)
    assert count(got, ip="1.2.3.4") == 1
    await src.close()


async def test_a_partial_last_line_waits_for_its_newline(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text("")
    src = make(path=str(log))
    await collect(src)
    append(log, failed("1.2.3.4").rstrip("\n"))
    got = await collect(src)
    assert count(got, ip="1.2.3.4") is None and total(got, "log_lines_total") == 0
    append(log, " extra\n")
    got = await collect(src)
    assert count(got, ip="1.2.3.4") == 1 and total(got, "log_lines_total") == 1
    await src.close()


async def test_static_labels_value_groups_and_several_patterns(tmp_path, make):
    log = tmp_path / "access.log"
    log.write_text("")
    src = make(
        path=str(log),
        labels={"env": "prod"},
        patterns=[
            {"metric": "http_response_bytes_total", "regex": r'" (?P<code>\d{3}) (?P<bytes>\d+)$', "value": "bytes"},
            {"metric": "http_errors_total", "regex": r'" 5\d\d ', "labels": {"severity": "page"}},
        ],
    )
    got = await collect(src)
    err = ("http_errors_total", (("env", "prod"), ("job", "auth"), ("severity", "page")))
    assert got[err] == 0  # a pattern without groups has its series from the start
    append(
        log,
        'GET / HTTP/1.1" 200 1500\n',
        'GET /x HTTP/1.1" 200 500\n',
        'GET /y HTTP/1.1" 503 20\n',
        "garbage line\n",
    )
    got = await collect(src)
    key = ("http_response_bytes_total", (("code", "200"), ("env", "prod"), ("job", "auth")))
    assert got[key] == 2000
    assert got[("http_response_bytes_total", (("code", "503"), ("env", "prod"), ("job", "auth")))] == 20
    assert got[err] == 1
    assert got[("log_lines_total", (("env", "prod"), ("job", "auth")))] == 4
    await src.close()


async def test_over_long_lines_are_cut_and_the_rest_skipped(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text("")
    src = make(path=str(log), max_line_bytes=100)
    await collect(src)
    append(log, failed("1.2.3.4").rstrip("\n") + " " + "x" * 5000 + " from 6.6.6.6\n", failed("5.6.7.8"))
    got = await collect(src)
    assert count(got, ip="1.2.3.4") == 1  # matched within the first 100 bytes
    assert count(got, ip="6.6.6.6") is None  # the cut-off rest is not a line of its own
    assert count(got, ip="5.6.7.8") == 1
    assert total(got, "log_lines_total") == 2
    await src.close()


async def test_reading_is_bounded_per_collection_and_continues_next_time(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text("")
    src = make(path=str(log), max_read_bytes=1024 * 1024)
    await collect(src)
    line = failed("1.2.3.4")
    n = (3 * 1024 * 1024) // len(line) + 1
    append(log, line * n)
    seen = []
    for _ in range(5):
        seen.append(count(await collect(src), ip="1.2.3.4"))
    assert seen[0] is not None and 0 < seen[0] < n  # the first collection stopped at its budget
    assert seen[-1] == n  # and the next ones caught up, without counting anything twice
    await src.close()


async def test_series_limit_drops_new_label_sets_and_counts_them(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text("")
    src = make(path=str(log), max_series=3)
    await collect(src)
    append(log, *(failed(f"10.0.0.{i}") for i in range(5)), failed("10.0.0.0"))
    got = await collect(src)
    ips = [k for k in got if k[0] == "ssh_failed_logins_total"]
    assert len(ips) == 3
    assert count(got, ip="10.0.0.0") == 2  # an existing series keeps counting
    assert total(got, "log_series_dropped_total") == 2
    await src.close()


async def test_missing_file_is_a_source_error_until_it_appears_and_then_is_read_from_its_start(tmp_path, make):
    log = tmp_path / "later.log"
    src = make(path=str(log))
    with pytest.raises(SourceError, match=r"later\.log does not exist"):
        await src.collect(NOW)
    log.write_text(failed("1.2.3.4"))  # created after the source started: nothing in it is old history
    got = await collect(src)
    assert count(got, ip="1.2.3.4") == 1
    await src.close()


async def test_unreadable_file_is_a_source_error_naming_it(tmp_path, make):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    log = tmp_path / "secret.log"
    log.write_text("x\n")
    log.chmod(0)
    src = make(path=str(log))
    with pytest.raises(SourceError, match=r"cannot read .*secret\.log: Permission denied"):
        await src.collect(NOW)
    await src.close()


# ----------------------------------------------------------------------------- rotation


async def test_rename_rotation_counts_the_old_tail_and_the_new_file_exactly_once(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text(failed("1.1.1.1"))
    src = make(path=str(log), from_start=True)
    assert count(await collect(src), ip="1.1.1.1") == 1
    append(log, failed("1.1.1.1"), failed("2.2.2.2"))  # written before the rotation, not yet read
    os.rename(log, tmp_path / "auth.log.1")
    append(tmp_path / "auth.log.1", failed("2.2.2.2").rstrip("\n"))  # the writer's last line, unterminated
    log.write_text(failed("3.3.3.3") + failed("1.1.1.1"))
    got = await collect(src)
    assert count(got, ip="1.1.1.1") == 3
    assert count(got, ip="2.2.2.2") == 2
    assert count(got, ip="3.3.3.3") == 1
    assert total(got, "log_file_rotations_total") == 1
    append(log, failed("3.3.3.3"))
    got = await collect(src)
    assert count(got, ip="3.3.3.3") == 2 and count(got, ip="1.1.1.1") == 3 and count(got, ip="2.2.2.2") == 2
    assert total(got, "log_lines_total") == 7
    await src.close()


async def test_copy_truncate_starts_again_from_zero(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text(failed("1.1.1.1") * 3)
    src = make(path=str(log), from_start=True)
    assert count(await collect(src), ip="1.1.1.1") == 3
    shutil.copyfile(log, tmp_path / "auth.log.1")
    truncate(log)
    append(log, failed("2.2.2.2"))  # shorter than what was read before: the truncation is visible
    got = await collect(src)
    assert count(got, ip="1.1.1.1") == 3
    assert count(got, ip="2.2.2.2") == 1
    assert total(got, "log_file_rotations_total") == 1
    await src.close()


async def test_glob_that_matches_rotated_names_does_not_count_them_again(tmp_path, make):
    a, b = tmp_path / "app.log", tmp_path / "other.log"
    a.write_text("")
    b.write_text("")
    src = make(paths=[str(tmp_path / "*.log*")])
    await collect(src)
    append(a, failed("1.1.1.1"))
    append(b, failed("2.2.2.2"))
    got = await collect(src)
    assert count(got, ip="1.1.1.1") == 1 and count(got, ip="2.2.2.2") == 1
    append(a, failed("1.1.1.1"))
    os.rename(a, tmp_path / "app.log.1")  # still matched by the glob
    a.write_text(failed("3.3.3.3"))
    got = await collect(src)
    assert count(got, ip="1.1.1.1") == 2
    assert count(got, ip="3.3.3.3") == 1
    got = await collect(src)
    assert count(got, ip="1.1.1.1") == 2 and count(got, ip="3.3.3.3") == 1 and count(got, ip="2.2.2.2") == 1
    (tmp_path / "new.log").write_text(failed("4.4.4.4"))  # appears later: read from its start
    assert count(await collect(src), ip="4.4.4.4") == 1
    await src.close()


async def test_glob_matching_nothing_is_a_source_error(tmp_path, make):
    src = make(paths=[str(tmp_path / "*.log")])
    with pytest.raises(SourceError, match=r"\*\.log matches no file"):
        await src.collect(NOW)
    await src.close()


# ----------------------------------------------------------------------------- restarts


async def test_restart_continues_at_the_saved_offset_with_the_saved_counters(tmp_path, make, store):
    log = tmp_path / "auth.log"
    log.write_text(failed("1.1.1.1") * 2)
    first = make(path=str(log), from_start=True)
    assert count(await collect(first), ip="1.1.1.1") == 2
    await first.close()
    saved = await SqlStateStore(store, "auth", SystemClock()).get(STATE_KEY)
    assert saved["files"][str(log)]["offset"] == log.stat().st_size
    append(log, failed("1.1.1.1"), failed("2.2.2.2"))  # written while the daemon was stopped
    second = make(path=str(log), from_start=True)
    got = await collect(second)
    assert count(got, ip="1.1.1.1") == 3
    assert count(got, ip="2.2.2.2") == 1
    assert total(got, "log_lines_total") == 4
    await second.close()


async def test_restart_on_postgresql(tmp_path, pg_url):
    st = Store(pg_url)
    await st.upgrade()
    log = tmp_path / "auth.log"
    log.write_text("")
    opts = LogsOptions.model_validate({"name": "auth", "type": "logs", "path": str(log), "patterns": [SSH]})
    try:
        for n in (1, 2):
            src = LogsSource(opts, context=SourceContext(SystemClock(), SqlStateStore(st, "auth", SystemClock())))
            await src.collect(NOW)
            append(log, failed("1.1.1.1") * 2)
            got = await collect(src)
            await src.close()
            assert count(got, ip="1.1.1.1") == 2 * n
    finally:
        await st.close()


async def test_crash_after_an_unsaved_collection_recounts_nothing_twice(tmp_path, make):
    """Offsets and counters are saved as one snapshot, so lines read after it are counted once more, from it."""
    log = tmp_path / "auth.log"
    log.write_text("")
    first = make(path=str(log), save_interval="1h")
    await collect(first)  # the first collection saves at once
    append(log, failed("1.1.1.1") * 3)
    assert count(await collect(first), ip="1.1.1.1") == 3  # not saved: save_interval has not passed
    # The process dies here: no close(), so nothing more is saved.
    append(log, failed("1.1.1.1"))
    second = make(path=str(log), save_interval="1h")
    got = await collect(second)
    assert count(got, ip="1.1.1.1") == 4
    assert total(got, "log_lines_total") == 4
    await second.close()


async def test_rotation_while_stopped_finishes_the_old_file_then_reads_the_new(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text(failed("1.1.1.1"))
    first = make(path=str(log), from_start=True)
    assert count(await collect(first), ip="1.1.1.1") == 1
    await first.close()
    append(log, failed("2.2.2.2"))  # the tail of the old file, unread when it was rotated
    os.rename(log, tmp_path / "auth.log.1")
    log.write_text(failed("3.3.3.3") * 2)
    second = make(path=str(log), from_start=True)
    got = await collect(second)
    assert count(got, ip="1.1.1.1") == 1
    assert count(got, ip="2.2.2.2") == 1
    assert count(got, ip="3.3.3.3") == 2
    assert total(got, "log_file_rotations_total") == 1
    await second.close()


async def test_truncation_while_stopped_reads_from_zero(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text(failed("1.1.1.1") * 5)
    first = make(path=str(log), from_start=True)
    assert count(await collect(first), ip="1.1.1.1") == 5
    await first.close()
    truncate(log)
    append(log, failed("2.2.2.2"))
    second = make(path=str(log))
    got = await collect(second)
    assert count(got, ip="1.1.1.1") == 5 and count(got, ip="2.2.2.2") == 1
    await second.close()


async def test_counters_of_removed_patterns_are_not_restored(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text(failed("1.1.1.1"))
    first = make(path=str(log), from_start=True)
    await collect(first)
    await first.close()
    second = make(path=str(log), patterns=[{"metric": "sudo_total", "regex": "sudo"}])
    got = await collect(second)
    assert count(got, ip="1.1.1.1") is None
    assert count(got, "sudo_total") == 0
    await second.close()


# ----------------------------------------------------------------------------- config


def test_config_problems_are_located(tmp_path):
    write_config(
        tmp_path,
        r"""
        sources:
          - name: a
            type: logs
            path: /var/log/auth.log
            patterns:
              - {metric: failures_total, regex: 'Failed (unclosed'}
          - name: b
            type: logs
            path: /var/log/auth.log
            patterns:
              - {metric: bytes_total, regex: '(?P<job>\S+) (?P<n>\d+)', value: size}
              - {metric: 2bad, regex: x}
          - name: c
            type: logs
            patterns: [{metric: x_total, regex: x}]
          - name: d
            type: logs
            path: /var/log/auth.log
            patterns: [{metric: x_total, regex: '(?P<env>x)', labels: {env: prod}}]
        """,
    )
    with pytest.raises(ConfigError) as e:
        load(tmp_path)
    main = tmp_path / "fsincident.yaml"
    text = str(e.value)
    bad_regex = "invalid regular expression: missing ), unterminated subpattern"
    assert f"{main}:7: sources[0].patterns[0].regex: {bad_regex}" in text
    assert f"{main}:13: sources[1].patterns[1].metric: invalid metric name '2bad'" in text
    assert f"{main}:14: sources[2]: give 'path', 'paths' or 'journal'" in text
    # b's first pattern is valid for the model; its other problems show once its sibling is fixed:
    (tmp_path / "fsincident.yaml").write_text(
        (tmp_path / "fsincident.yaml").read_text().replace("2bad", "good_total").replace("(unclosed", "")
    )
    with pytest.raises(ConfigError) as e:
        load(tmp_path)
    text = str(e.value)
    assert f"{main}:12: sources[1].patterns[0].value: the regex has no named group 'size'" in text
    assert f"{main}:12: sources[1].patterns[0].regex: group name 'job' is reserved for the source name" in text
    assert f"{main}:20: sources[3].patterns[0].regex: group name 'env' is also a static label" in text


# ----------------------------------------------------------------------------- journal

JOURNALCTL = shutil.which("journalctl")


def cmdline(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


@pytest.mark.skipif(JOURNALCTL is None, reason="journalctl is not installed here")
async def test_real_journalctl_follows_and_stops_with_the_source(make):
    src = make(journal={"units": ["ssh.service"]})
    got = await collect(src)
    assert total(got, "log_lines_total") == 0
    proc = src._journal.proc
    assert proc is not None and proc.returncode is None
    argv = cmdline(proc.pid)
    assert [a.decode() for a in argv[1:8]] == ["-o", "json", "-f", "--no-pager", "-n", "0", "-u"]
    await collect(src)
    assert proc.returncode is None  # still following
    await src.close()
    assert proc.returncode is not None


async def test_missing_journalctl_is_a_source_error_naming_it(tmp_path, make):
    log = tmp_path / "auth.log"
    log.write_text("")
    src = make(path=str(log), journal={"journalctl": "/nonexistent/journalctl"})
    with pytest.raises(SourceError, match="journal: /nonexistent/journalctl not found"):
        await src.collect(NOW)
    append(log, failed("1.1.1.1"))  # files are still followed meanwhile
    with pytest.raises(SourceError):
        await src.collect(NOW)
    assert count({(s.name, tuple(sorted(s.labels.items()))): s.value for s in src._samples()}, ip="1.1.1.1") == 1
    await src.close()


# Real journal files: systemd-journal-remote turns journal export format into a .journal file (appending
# when the file exists), and the real journalctl follows them with --directory or --file.
JOURNAL_REMOTE = next(
    (
        p
        for p in ("/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote")
        if os.path.exists(p)
    ),
    None,
)
needs_journal_files = pytest.mark.skipif(
    JOURNAL_REMOTE is None or JOURNALCTL is None,
    reason="writing journal files needs systemd-journal-remote (Debian package systemd-journal-remote) and journalctl",
)
BOOT = "0123456789abcdef0123456789abcdef"
OTHER_BOOT = "fedcba9876543210fedcba9876543210"


def entry(message: str | bytes, ident: str = "sshd", unit: str = "ssh.service", boot: str = BOOT) -> dict:
    return {"MESSAGE": message, "SYSLOG_IDENTIFIER": ident, "_SYSTEMD_UNIT": unit, "_BOOT_ID": boot}


async def write_journal(path: Path, *entries: dict) -> None:
    """Append ``entries`` to the journal file ``path`` (created if missing); fails if journal-remote does."""
    now = time.time_ns() // 1000
    out = b""
    for i, fields in enumerate(entries):
        stamps = {"__REALTIME_TIMESTAMP": now + i, "__MONOTONIC_TIMESTAMP": now + i}
        for key, value in {**stamps, **fields}.items():
            if isinstance(value, bytes):  # the binary form: name, 64-bit little-endian length, data
                out += key.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
            else:
                out += f"{key}={value}\n".encode()
        out += b"\n"
    argv = [str(JOURNAL_REMOTE), f"--output={path}", "-"]
    done = await asyncio.to_thread(subprocess.run, argv, input=out, capture_output=True, timeout=10)
    assert done.returncode == 0, done.stderr.decode()


def samples(src: LogsSource) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in src._samples()}


async def until(src: LogsSource, check, what: str, timeout: float = 10) -> tuple[dict, list[str]]:
    """Collect every 20 ms until ``check(samples)`` holds; returns them and the collection errors met on the way."""
    errors: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = await collect(src)
        except SourceError as e:
            errors.append(str(e))
            got = samples(src)
        if check(got):
            return got, errors
        assert time.monotonic() < deadline, f"{what} did not happen: {got} {errors}"
        await asyncio.sleep(0.02)


async def following(src: LogsSource, path: Path) -> None:
    """Write marker entries to ``path`` until the source shows one: from then on journalctl sees every new entry.

    journalctl started with ``-n 0`` skips what is in the files when it gets there, so entries written
    while it starts could be missed; the markers match no pattern.
    """
    for _ in range(20):
        before = total(samples(src), "log_lines_total")
        await write_journal(path, entry("fsincident test marker"))
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            if total(await collect(src), "log_lines_total") > before:
                return
            await asyncio.sleep(0.02)
    raise AssertionError("journalctl never showed a marker entry")


@needs_journal_files
async def test_journal_directory_entries_are_matched_with_their_groups_and_filtered_by_identifier(tmp_path, make):
    folder = tmp_path / "journal"
    folder.mkdir()  # empty: journalctl waits for files to appear
    src = make(journal={"directory": str(folder), "identifiers": ["sshd"]})
    await collect(src)
    await following(src, folder / "remote.journal")
    msg = failed("7.7.7.7").rstrip("\n")
    await write_journal(
        folder / "remote.journal",
        entry(failed("9.9.9.9").rstrip("\n"), ident="not-sshd"),  # another identifier: not read
        entry(msg),
        entry(b"\x1b[31m" + msg.encode() + b"\x1b[0m"),  # colored: journalctl shows it as a list of bytes
        entry(ok_line().rstrip("\n")),
    )
    await write_journal(folder / "another.journal", entry(failed("8.8.8.8").rstrip("\n")))  # a new file
    got, errors = await until(src, lambda g: count(g, ip="8.8.8.8") == 1, "the new file's entry counted")
    assert errors == []
    assert count(got, ip="7.7.7.7") == 2
    assert count(got, ip="9.9.9.9") is None  # written before 8.8.8.8, so it would have been read by now
    await src.close()


@needs_journal_files
async def test_journal_units_are_or_ed_and_other_units_are_not_read(tmp_path, make):
    folder = tmp_path / "journal"
    folder.mkdir()
    journal = folder / "remote.journal"
    src = make(journal={"directory": str(folder), "units": ["ssh.service", "dropbear.service"]})
    await collect(src)
    await following(src, journal)
    await write_journal(
        journal,
        entry(failed("1.1.1.1").rstrip("\n")),
        entry(failed("2.2.2.2").rstrip("\n"), ident="dropbear", unit="dropbear.service"),
        entry(failed("9.9.9.9").rstrip("\n"), ident="sshd", unit="cron.service"),
        entry(failed("3.3.3.3").rstrip("\n")),
    )
    got, _ = await until(src, lambda g: count(g, ip="3.3.3.3") == 1, "the last entry counted")
    assert count(got, ip="1.1.1.1") == 1 and count(got, ip="2.2.2.2") == 1
    assert count(got, ip="9.9.9.9") is None
    await src.close()


@needs_journal_files
async def test_journal_restart_resumes_after_the_saved_cursor_even_across_a_reboot(tmp_path, make, store):
    folder = tmp_path / "journal"
    folder.mkdir()
    journal = folder / "remote.journal"
    first = make(journal={"directory": str(folder)})
    await collect(first)
    await following(first, journal)
    await write_journal(journal, entry(failed("1.1.1.1").rstrip("\n")), entry(failed("1.1.1.1").rstrip("\n")))
    await until(first, lambda g: count(g, ip="1.1.1.1") == 2, "both entries counted")
    await first.close()
    assert (await SqlStateStore(store, "auth", SystemClock()).get(STATE_KEY))["journal_cursor"].startswith("s=")
    # While the daemon is stopped, the followed host logs more, reboots and logs again (in a new file).
    await write_journal(journal, entry(failed("2.2.2.2").rstrip("\n")))
    await write_journal(
        folder / "after-reboot.journal",
        entry(failed("3.3.3.3").rstrip("\n"), boot=OTHER_BOOT),
        entry(failed("4.4.4.4").rstrip("\n"), boot=OTHER_BOOT),
    )
    second = make(journal={"directory": str(folder)})
    got, errors = await until(second, lambda g: count(g, ip="4.4.4.4") == 1, "the entries since the cursor counted")
    assert errors == []
    assert count(got, ip="1.1.1.1") == 2  # read before the restart: not counted again
    assert count(got, ip="2.2.2.2") == 1  # the rest of the old boot
    assert count(got, ip="3.3.3.3") == 1  # the new boot's first entry
    await write_journal(folder / "after-reboot.journal", entry(failed("5.5.5.5").rstrip("\n"), boot=OTHER_BOOT))
    got, _ = await until(second, lambda g: count(g, ip="5.5.5.5") == 1, "followed on")
    assert [count(got, ip=f"{n}.{n}.{n}.{n}") for n in range(1, 5)] == [2, 1, 1, 1]
    await second.close()


@needs_journal_files
async def test_killed_journalctl_is_reported_and_restarted_after_the_last_counted_entry(tmp_path, make):
    folder = tmp_path / "journal"
    folder.mkdir()
    journal = folder / "remote.journal"
    src = make(journal={"directory": str(folder)})
    await collect(src)
    await following(src, journal)
    await write_journal(journal, entry(failed("1.1.1.1").rstrip("\n")))
    await until(src, lambda g: count(g, ip="1.1.1.1") == 1, "the entry counted")
    killed = src._journal.proc
    os.kill(killed.pid, signal.SIGKILL)
    await write_journal(journal, entry(failed("2.2.2.2").rstrip("\n")))  # while no journalctl runs
    got, errors = await until(src, lambda g: count(g, ip="2.2.2.2") == 1, "the entry written meanwhile counted")
    assert errors == ["journalctl was killed by SIGKILL"]
    assert count(got, ip="1.1.1.1") == 1  # the new journalctl began after it
    assert killed.returncode == -signal.SIGKILL
    assert src._journal.proc is not killed and src._journal.proc.returncode is None
    await src.close()


@needs_journal_files
async def test_missing_journal_directory_is_reported_and_the_cursor_kept_until_it_is_back(tmp_path, make):
    folder = tmp_path / "journal"
    folder.mkdir()
    journal = folder / "remote.journal"
    first = make(journal={"directory": str(folder)})
    await collect(first)
    await following(first, journal)
    await write_journal(journal, entry(failed("1.1.1.1").rstrip("\n")))
    await until(first, lambda g: count(g, ip="1.1.1.1") == 1, "the entry counted")
    await first.close()
    os.rename(folder, tmp_path / "elsewhere")  # e.g. a mount not there yet when the daemon starts
    second = make(journal={"directory": str(folder)})
    errors = []
    for _ in range(250):
        try:
            await second.collect(NOW)
        except SourceError as e:
            errors.append(str(e))
            break
        await asyncio.sleep(0.02)
    assert errors == [f"journalctl exited with 1: Failed to open {folder}: No such file or directory"]
    os.rename(tmp_path / "elsewhere", folder)
    await write_journal(journal, entry(failed("2.2.2.2").rstrip("\n")))  # after the saved cursor
    got, _ = await until(second, lambda g: count(g, ip="2.2.2.2") == 1, "the entry after the cursor counted")
    assert count(got, ip="1.1.1.1") == 1
    await second.close()


@needs_journal_files
async def test_journal_directory_replaced_while_followed_is_reported_and_followed_again(tmp_path, make):
    folder = tmp_path / "journal"
    folder.mkdir()
    src = make(journal={"directory": str(folder)})
    await collect(src)
    await following(src, folder / "remote.journal")
    await write_journal(folder / "remote.journal", entry(failed("1.1.1.1").rstrip("\n")))
    await until(src, lambda g: count(g, ip="1.1.1.1") == 1, "the entry counted")
    shutil.rmtree(folder)  # a container recreated: a new, empty journal folder under the same name
    folder.mkdir()
    await write_journal(folder / "remote.journal", entry(failed("2.2.2.2").rstrip("\n")))
    got, errors = await until(src, lambda g: count(g, ip="2.2.2.2") == 1, "the new folder's entry counted")
    assert errors == [f"journal directory {folder} was removed or replaced; journalctl is restarted"]
    await write_journal(folder / "remote.journal", entry(failed("3.3.3.3").rstrip("\n")))
    got, _ = await until(src, lambda g: count(g, ip="3.3.3.3") == 1, "followed on")
    assert count(got, ip="1.1.1.1") == 1 and count(got, ip="2.2.2.2") == 1
    await src.close()


@needs_journal_files
async def test_journal_files_glob_follows_the_files_it_matched(tmp_path, make):
    folder = tmp_path / "journal"
    folder.mkdir()
    journal = folder / "web1.journal"
    await write_journal(journal, entry(failed("1.1.1.1").rstrip("\n")))  # old history: not read
    src = make(journal={"files": [str(folder / "web*.journal")]})
    await collect(src)
    await following(src, journal)
    await write_journal(journal, entry(failed("2.2.2.2").rstrip("\n")))
    got, errors = await until(src, lambda g: count(g, ip="2.2.2.2") == 1, "the appended entry counted")
    assert errors == [] and count(got, ip="1.1.1.1") is None
    await src.close()


def test_journal_directory_and_files_together_are_a_config_error(tmp_path):
    write_config(
        tmp_path,
        """
        sources:
          - name: a
            type: logs
            journal: {directory: /srv/journal, files: [/srv/journal/*.journal]}
            patterns: [{metric: x_total, regex: x}]
        """,
    )
    with pytest.raises(ConfigError) as e:
        load(tmp_path)
    assert f"{tmp_path / 'fsincident.yaml'}:5: sources[0].journal.files: give 'directory' or 'files', not both" in str(
        e.value
    )


# ----------------------------------------------------------------------------- the daemon


def _source_up(port: int, name: str) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return f'fsincident_source_up{{source="{name}"}} 1.0' in r.read().decode()


@pytest.mark.slow
def test_daemon_pages_for_failed_ssh_logins_from_one_ip(tmp_path):
    rcv = Receiver().start()
    port = free_port()
    log = tmp_path / "auth.log"
    log.write_text(failed("198.51.100.9") * 10)  # old history: must not page
    cfg = write_config(
        tmp_path / "cfg",
        f"""
        listen: 127.0.0.1:{port}
        database: sqlite:///{tmp_path}/state.db
        sources:
          - name: auth
            type: logs
            path: {log}
            interval: 1s
            patterns:
              - {{metric: ssh_failed_logins_total, regex: 'Failed password for .* from (?P<ip>\\S+)'}}
        channels:
          - {{name: ops, urls: ["{rcv.apprise_url("ops")}"]}}
        routes:
          - {{notify: ["channel:ops"]}}
        """,
        {
            "ssh.yaml": """
            groups:
              - name: ssh
                interval: 1s
                source: auth
                rules:
                  - alert: SshBruteForce
                    expr: ssh_failed_logins_total > 3
                    annotations:
                      summary: "{{ value }} failed logins from {{ labels.ip }}"
            """
        },
    )
    d = DaemonProcess(cfg, port).start()
    try:
        d.token = d.create_token("read")
        deadline = time.time() + 20
        while not _source_up(port, "auth"):
            assert time.time() < deadline, d.logs()[-2000:]
            time.sleep(0.1)
        append(log, failed("203.0.113.7") * 3)
        time.sleep(2.5)
        assert rcv.received == []  # three are not more than three
        append(log, failed("203.0.113.7", user="admin"))
        msgs = rcv.wait_for(lambda m: len(m) >= 1)
        assert "TRIGGERED" in msgs[0]["title"]
        assert "4.0 failed logins from 203.0.113.7" in msgs[0]["title"] + msgs[0]["message"]
        incs = d.wait_incidents(lambda i: len(i) == 1)
        assert incs[0]["labels"]["ip"] == "203.0.113.7"
        assert incs[0]["labels"]["alertname"] == "SshBruteForce"
        time.sleep(1.5)
        status, body = d.api("GET", "/api/v1/incidents")
        assert status == 200 and len(body["incidents"]) == 1  # the old history never paged
    finally:
        assert d.stop() == 0
        rcv.stop()
