"""``type: logs`` — tail log files (and optionally the systemd journal) and count regex matches per label set.

Files are read incrementally on every collection, in a worker thread, at most ``max_read_bytes``
per collection. A file is followed across rename rotation (the old file is read to its end, then
the new one from its start) and copy-truncate (a file shorter than the offset is read again from
0). The file identities, byte offsets, journal cursor and every counter are saved together, as one
JSON value in the source's durable state, so a restart resumes where the saved snapshot left off.
"""

from __future__ import annotations

import asyncio
import fnmatch
import glob
import json
import math
import os
import re
import shutil
import signal
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any, ClassVar

from pydantic import Field, field_validator

from fsincident.core import Labels, Sample, SourceError, SystemClock, valid_label_name
from fsincident.expr import RESERVED
from fsincident.obs import get_logger
from fsincident.plugins import Duration, LabelMap, Options, SourceContext, SourceOptions, StateStore

log = get_logger("fsincident.sources.logs")

STATE_KEY = "tail"
STATE_VERSION = 1
CHUNK = 1024 * 1024
MAX_FILES = 256
"""Files a source follows at once (all ``path``/``paths`` matches together)."""
MAX_RETIRED = 1024
JOURNAL_BATCH = 50_000
"""Journal entries matched per collection; the rest wait (journalctl is paused meanwhile)."""
JOURNAL_MAX_LINE = 1024 * 1024

BUILTIN_SERIES = (
    "log_lines_total",
    "log_bytes_read_total",
    "log_file_rotations_total",
    "log_series_dropped_total",
    "log_value_errors_total",
)
_METRIC = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

Ident = tuple[int, int]


class PatternOptions(Options):
    metric: str = Field(max_length=200)
    regex: str = Field(min_length=1, max_length=10_000)
    labels: LabelMap = Field(default_factory=dict)
    value: str | None = None
    """A named group whose number is added to the counter instead of 1 (e.g. a byte count)."""

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if not _METRIC.match(v):
            raise ValueError(f"invalid metric name {v!r}: use letters, digits and '_', not starting with a digit")
        if v in RESERVED or v in BUILTIN_SERIES or v == "up":
            raise ValueError(f"metric name {v!r} is reserved")
        return v

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"invalid regular expression: {e}") from None
        return v


class JournalOptions(Options):
    units: list[str] = Field(default_factory=list)
    """Only entries of these systemd units (``journalctl -u``; several are or-ed)."""
    identifiers: list[str] = Field(default_factory=list)
    """Only entries with these syslog identifiers (``journalctl -t``, e.g. ``sshd``)."""
    journalctl: str = "journalctl"
    """The journalctl binary (looked up on PATH when it has no slash)."""
    directory: str | None = None
    """Read the journal files in this folder (``journalctl --directory``), e.g. a container's or a remote host's."""
    files: list[str] = Field(default_factory=list)
    """Read these journal files or globs (``journalctl --file``); a glob is expanded when journalctl starts."""


class LogsOptions(SourceOptions):
    path: str | None = None
    """One file, taken literally."""
    paths: list[str] = Field(default_factory=list)
    """Glob patterns (``/var/log/nginx/*.log``); each file they match is followed on its own."""
    journal: JournalOptions | None = None
    patterns: list[PatternOptions] = Field(min_length=1)
    from_start: bool = False
    """Read files seen for the first time from their start (default: from their end)."""
    labels: LabelMap = Field(default_factory=dict)
    max_line_bytes: int = Field(16 * 1024, ge=64, le=1024 * 1024)
    max_read_bytes: int = Field(16 * 1024 * 1024, ge=1024 * 1024, le=1024 * 1024 * 1024)
    max_series: int = Field(10_000, ge=1, le=1_000_000)
    save_interval: Duration = timedelta(seconds=5)


@dataclass
class _Pattern:
    metric: str
    regex: re.Pattern[str]
    static: dict[str, str]
    groups: tuple[str, ...]
    value: str | None


@dataclass
class _Tail:
    """One followed path and the file currently open for it (which may since have been renamed or deleted)."""

    path: str
    entry: str
    fh: IO[bytes] | None = None
    ident: Ident | None = None
    offset: int = 0
    skipping: bool = False


@dataclass
class _Totals:
    lines: int = 0
    bytes: int = 0
    rotations: int = 0
    dropped: int = 0
    value_errors: int = 0


@dataclass
class _Scan:
    errors: list[str] = field(default_factory=list)


def _ident(st: os.stat_result) -> Ident:
    return (st.st_dev, st.st_ino)


def _still_names(path: str, ident: Ident) -> bool:
    try:
        return _ident(os.stat(path)) == ident
    except OSError:
        return False


def _find_by_ident(path: str, ident: Ident) -> str | None:
    """A file in ``path``'s directory with identity ``ident`` (the file ``path`` was renamed to), if any."""
    folder = os.path.dirname(path) or "."
    try:
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    if entry.inode() == ident[1] and entry.is_file() and _ident(entry.stat()) == ident:
                        return entry.path
                except OSError:
                    continue
    except OSError:
        return None
    return None


class _Journal:
    """A ``journalctl -o json -f`` subprocess whose entries wait in a bounded buffer until collected."""

    def __init__(self, options: JournalOptions, cursor: str | None):
        self.options = options
        self.cursor = cursor
        self.pending: list[tuple[str | None, str | None]] = []
        self._room = asyncio.Event()
        self._room.set()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr: asyncio.Task[bytes] | None = None
        self._got_any = False
        self._dir_fd: int | None = None
        """The journal directory journalctl was started on, held open so that its inode number is not reused."""

    def argv(self) -> list[str]:
        argv = [self.options.journalctl, "-o", "json", "-f", "--no-pager"]
        # --cursor, not --after-cursor: that one skips the entry after where the cursor leads unseen, even when
        # the cursor's own entry is not there (rotated away, another boot filtered out); _read skips it instead.
        argv += [f"--cursor={self.cursor}"] if self.cursor else ["-n", "0"]
        for unit in self.options.units:
            argv += ["-u", unit]
        for ident in self.options.identifiers:
            argv += ["-t", ident]
        if self.options.directory is not None:
            argv.append(f"--directory={self.options.directory}")
        argv += [f"--file={pattern}" for pattern in self.options.files]
        if self.options.directory is not None or self.options.files:
            # Without --merge (or -b), -f shows only the latest boot in these files: entries of a boot
            # after a cursor's are skipped, and a host that reboots while followed goes silent.
            argv.append("--merge")
        return argv

    async def ensure_running(self) -> str | None:
        """Start journalctl if it is not running; returns why it stopped, raises SourceError if it cannot start."""
        why = None
        directory = self.options.directory
        if self.proc is not None and self.proc.returncode is None:
            if directory is None or not await asyncio.to_thread(_dir_replaced, directory, self._dir_fd):
                return None
            # journalctl keeps following a removed folder (and never sees one made again under its name).
            why = f"journal directory {directory} was removed or replaced; journalctl is restarted"
            await self.stop()
            self.pending.clear()
            self._room.set()
        elif self.proc is not None:
            err = b""
            if self._stderr is not None:
                try:
                    async with asyncio.timeout(1):
                        err = await self._stderr
                except (TimeoutError, asyncio.CancelledError):
                    pass
            text = err.decode("utf-8", errors="replace").strip()
            detail = text.splitlines()
            code = self.proc.returncode
            why = f"journalctl exited with {code}" if code >= 0 else f"journalctl was killed by {_signal_name(-code)}"
            why += f": {detail[-1][:300]}" if detail else ""
            await self.stop()
            # Entries still waiting are read again from the cursor; a cursor journalctl refused is dropped
            # (not when it failed for another reason, such as a journal directory that is not there yet).
            self.pending.clear()
            self._room.set()
            if code != 0 and not self._got_any and self.cursor is not None and "cursor" in text.lower():
                why += " (its saved cursor is dropped: reading from now on)"
                self.cursor = None
        binary = self.options.journalctl
        if shutil.which(binary) is None:
            raise SourceError(f"journal: {binary} not found; is systemd's journalctl installed and on PATH?")
        if directory is not None:
            self._dir_fd = await asyncio.to_thread(_open_dir, directory)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise SourceError(f"journal: {binary} could not start: {e.strerror or e}") from None
        self._got_any = False
        self._reader = asyncio.create_task(self._read(self.proc, self.cursor))
        self._stderr = asyncio.create_task(self._read_stderr(self.proc))
        return why

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> bytes:
        assert proc.stderr is not None
        tail = b""
        while chunk := await proc.stderr.read(4096):
            tail = (tail + chunk)[-4096:]
        return tail

    async def _read(self, proc: asyncio.subprocess.Process, start: str | None) -> None:
        """Queue each entry journalctl prints, except a first one at ``start`` (the cursor it began from)."""
        assert proc.stdout is not None
        buf = b""
        skipping = False
        first = True
        while True:
            await self._room.wait()
            chunk = await proc.stdout.read(65536)
            if not chunk:
                return
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > JOURNAL_MAX_LINE:
                        buf, skipping = b"", True
                    break
                line, buf = buf[:nl], buf[nl + 1 :]
                was_first, first = first, False
                if skipping:
                    skipping = False
                    continue
                self._got_any = True
                got = _journal_entry(line)
                if was_first and start is not None and got[0] == start:
                    continue  # already counted
                self.pending.append(got)
            if len(self.pending) >= JOURNAL_BATCH * 2:
                self._room.clear()

    def take(self) -> list[tuple[str | None, str | None]]:
        batch, self.pending = self.pending[:JOURNAL_BATCH], self.pending[JOURNAL_BATCH:]
        if len(self.pending) < JOURNAL_BATCH * 2:
            self._room.set()
        return batch

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                async with asyncio.timeout(5):
                    await self.proc.wait()
            except TimeoutError:
                pass
        for task in (self._reader, self._stderr):
            if task is not None and not task.done():
                task.cancel()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
        self.proc, self._reader, self._stderr, self._dir_fd = None, None, None, None


def _open_dir(path: str) -> int | None:
    """A descriptor of the folder ``path`` names, None when there is none (never raises)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def _dir_replaced(path: str, fd: int | None) -> bool:
    """Whether the folder held open as ``fd`` was removed, or ``path`` names another one now (never raises)."""
    if fd is None:
        return os.path.isdir(path)  # it was missing when journalctl started (which then fails on its own)
    try:
        held = os.fstat(fd)
        return held.st_nlink == 0 or _ident(os.stat(path)) != _ident(held)
    except OSError:
        return True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _journal_entry(line: bytes) -> tuple[str | None, str | None]:
    """(cursor, message) of one ``journalctl -o json`` line; message None when it has none or is not JSON."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    cursor = doc.get("__CURSOR") if isinstance(doc.get("__CURSOR"), str) else None
    msg = doc.get("MESSAGE")
    if isinstance(msg, list):  # binary-safe form: a list of byte values
        try:
            msg = bytes(msg).decode("utf-8", errors="replace")
        except (TypeError, ValueError):
            msg = None
    return cursor, msg if isinstance(msg, str) else None


class LogsSource:
    """Counts pattern matches in followed files and the journal; counters and offsets survive restarts."""

    Options: ClassVar[type[SourceOptions]] = LogsOptions

    def __init__(self, options: LogsOptions, context: SourceContext | None = None, **_: Any):
        self.options = options
        self.state: StateStore | None = context.state if context is not None else None
        self.clock = context.clock if context is not None else SystemClock()
        self._base = {"job": options.name, **options.labels}
        self._patterns = [
            _Pattern(
                p.metric,
                re.compile(p.regex),
                dict(p.labels),
                tuple(g for g in re.compile(p.regex).groupindex if g != p.value),
                p.value,
            )
            for p in options.patterns
        ]
        self._metrics = {p.metric for p in self._patterns}
        self._counters: dict[tuple[str, Labels], float] = {}
        for p in self._patterns:
            if not p.groups:  # a known label set: the counter exists from the start, at 0
                self._counters.setdefault((p.metric, Labels(p.static)), 0.0)
        self._totals = _Totals()
        self._tails: dict[str, _Tail] = {}
        self._retired: OrderedDict[Ident, tuple[int, int]] = OrderedDict()  # ident -> (offset, scans since)
        self._saved_files: dict[str, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._restored = False
        self._first_scan = True
        self._last_save: float | None = None
        self._saved_blob: dict[str, Any] | None = None
        self._journal: _Journal | None = None
        self._journal_cursor: str | None = None
        self._closing = False
        self._dropped_warned = False
        self._closed = False

    @staticmethod
    def validate_options(options: LogsOptions) -> list[tuple[tuple[Any, ...], str]]:
        """Load-time checks the model cannot express (group names as labels, the value group); never raises."""
        out: list[tuple[tuple[Any, ...], str]] = []
        if options.path is None and not options.paths and options.journal is None:
            out.append(((), "give 'path', 'paths' or 'journal'"))
        if options.path is not None and not options.path.strip():
            out.append((("path",), "the path must not be empty"))
        for i, p in enumerate(options.paths):
            if not p.strip():
                out.append((("paths", i), "the pattern must not be empty"))
        if "job" in options.labels:
            out.append((("labels", "job"), "'job' is set to the source name and cannot be given here"))
        journal = options.journal
        if journal is not None:
            if journal.directory is not None and journal.files:
                out.append((("journal", "files"), "give 'directory' or 'files', not both"))
            if journal.directory is not None and not journal.directory.strip():
                out.append((("journal", "directory"), "the directory must not be empty"))
            for i, p in enumerate(journal.files):
                if not p.strip():
                    out.append((("journal", "files", i), "the file pattern must not be empty"))
        for i, pat in enumerate(options.patterns):
            groups = list(re.compile(pat.regex).groupindex)
            if pat.value is not None and pat.value not in groups:
                out.append((("patterns", i, "value"), f"the regex has no named group {pat.value!r}"))
            if "job" in pat.labels:
                out.append((("patterns", i, "labels", "job"), "'job' is set to the source name"))
            for g in groups:
                if g == pat.value:
                    continue
                if not valid_label_name(g) or g.startswith("__"):
                    out.append((("patterns", i, "regex"), f"group name {g!r} is not a valid label name"))
                elif g == "job":
                    out.append((("patterns", i, "regex"), "group name 'job' is reserved for the source name"))
                elif g in pat.labels or g in options.labels:
                    out.append((("patterns", i, "regex"), f"group name {g!r} is also a static label"))
        return out

    # ------------------------------------------------------------------ collection

    async def collect(self, now: datetime) -> list[Sample]:
        """Read what is new and return every counter; raises SourceError naming each file or journal problem."""
        if not self._restored:
            await self._restore()
        entries: list[tuple[str | None, str | None]] = []
        if self.options.journal is not None:
            if self._journal is None:
                self._journal = _Journal(self.options.journal, self._journal_cursor)
            entries = self._journal.take()
        scan = await asyncio.to_thread(self._work, entries)
        journal_error = None
        if self._journal is not None and not self._closing:
            try:  # after the entries taken were counted, so that a restart continues after them
                journal_error = await self._journal.ensure_running()
            except SourceError as e:
                journal_error = str(e)
        await self._maybe_save()
        errors = scan.errors + ([journal_error] if journal_error else [])
        if errors:
            raise SourceError("; ".join(errors))
        return self._samples()

    async def _restore(self) -> None:
        data = None
        if self.state is not None:
            try:
                data = await self.state.get(STATE_KEY)
            except Exception as e:
                raise SourceError(f"cannot read the saved log positions: {type(e).__name__}: {e}") from None
        if isinstance(data, dict) and data.get("version") == STATE_VERSION:
            try:
                self._load(data)
            except (TypeError, ValueError, AttributeError) as e:  # unreadable: start afresh rather than stop
                log.warning("log_state_unreadable", source=self.options.name, error=f"{type(e).__name__}: {e}")
        self._restored = True

    def _load(self, data: dict[str, Any]) -> None:
        counters: dict[tuple[str, Labels], float] = {}
        for metric, labels, value in data.get("counters", []):
            if metric in self._metrics and isinstance(value, int | float) and isinstance(labels, dict):
                counters[(metric, Labels(labels))] = float(value)
        t = data.get("totals", {})
        totals = _Totals(**{k: int(t.get(k, 0)) for k in _Totals.__dataclass_fields__})
        files = data.get("files")
        saved = {
            path: f
            for path, f in (files.items() if isinstance(files, dict) else ())
            if isinstance(f, dict)
            and (f.get("new") is True or all(isinstance(f.get(k), int) for k in ("dev", "ino", "offset")))
        }
        cursor = data.get("journal_cursor")
        with self._lock:
            self._counters.update(counters)
            self._totals = totals
            self._saved_files = saved
            self._journal_cursor = cursor if isinstance(cursor, str) else None

    def _samples(self) -> list[Sample]:
        base = self._base
        with self._lock:
            out = [Sample(m, Labels({**base, **lab}), v) for (m, lab), v in self._counters.items()]
            t = self._totals
        lab = Labels(base)
        out += [
            Sample("log_lines_total", lab, float(t.lines)),
            Sample("log_bytes_read_total", lab, float(t.bytes)),
            Sample("log_file_rotations_total", lab, float(t.rotations)),
            Sample("log_series_dropped_total", lab, float(t.dropped)),
            Sample("log_value_errors_total", lab, float(t.value_errors)),
        ]
        return out

    def _work(self, entries: list[tuple[str | None, str | None]]) -> _Scan:
        with self._lock:
            if self._closed:
                return _Scan()
            scan = _Scan()
            self._scan(scan)
            budget = self.options.max_read_bytes
            for tail in list(self._tails.values()):
                if budget <= 0:
                    break
                budget -= self._poll(tail, budget, scan)
            for cursor, msg in entries:
                if msg is not None:
                    self._totals.bytes += len(msg.encode("utf-8", errors="replace"))
                    self._line(msg)
                if cursor is not None:
                    self._journal_cursor = cursor
            if self._journal is not None and entries:
                self._journal.cursor = self._journal_cursor
            return scan

    # ------------------------------------------------------------------ files

    def _entries(self) -> list[tuple[str, list[str]]]:
        out = []
        if self.options.path is not None:
            p = self.options.path
            out.append((p, [p] if os.path.exists(p) else []))
        for pattern in self.options.paths:
            out.append((pattern, sorted(glob.glob(pattern))))
        return out

    def _scan(self, scan: _Scan) -> None:
        entries = self._entries()
        found: dict[str, str] = {}
        for entry, matches in entries:
            for m in matches:
                if not os.path.isdir(m):
                    found.setdefault(m, entry)
        for path, entry in found.items():
            if path not in self._tails:
                if len(self._tails) >= MAX_FILES:
                    scan.errors.append(f"more than {MAX_FILES} files match; {path} and others are not followed")
                    break
                self._add(path, entry, scan)
        if self._first_scan and self._saved_files:
            self._resume_vanished(entries, found)
        for path in [p for p, t in self._tails.items() if p not in found and t.fh is None]:
            del self._tails[path]
        for entry, _ in entries:
            if not any(t.entry == entry for t in self._tails.values()):
                if entry != self.options.path:
                    what = "matches no file"
                else:
                    what = "is a directory" if os.path.isdir(entry) else "does not exist"
                scan.errors.append(f"{entry} {what}")
        self._first_scan = False
        self._saved_files = None
        for ident, (offset, age) in list(self._retired.items()):
            # Only the next scans may find a retired file under a new name; later, its inode may be reused.
            if age >= 2:
                del self._retired[ident]
            else:
                self._retired[ident] = (offset, age + 1)

    def _resume_vanished(self, entries: list[tuple[str, list[str]]], found: dict[str, str]) -> None:
        # At start, a saved path that no longer exists was rotated while we were stopped: finish its old file.
        for path, saved in (self._saved_files or {}).items():
            if path in self._tails or path in found or saved.get("new"):
                continue
            entry = next((e for e, _ in entries if e == path or fnmatch.fnmatchcase(path, e)), None)
            if entry is None:
                continue
            offset = int(saved["offset"])
            old = _find_by_ident(path, (saved["dev"], saved["ino"]))
            if old is None:
                continue
            try:
                fh = open(old, "rb")
            except OSError:
                continue
            st = os.fstat(fh.fileno())
            if st.st_size < offset:
                fh.close()
                continue
            self._tails[path] = _Tail(path, entry, fh, _ident(st), offset, bool(saved.get("skip")))

    def _open_tails(self) -> dict[Ident, _Tail]:
        return {t.ident: t for t in self._tails.values() if t.fh is not None and t.ident is not None}

    def _add(self, path: str, entry: str, scan: _Scan) -> None:
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            return
        except OSError as e:
            scan.errors.append(f"cannot read {path}: {e.strerror or e}")
            return
        st = os.fstat(fh.fileno())
        ident = _ident(st)
        tail = _Tail(path, entry, fh, ident)
        moved = self._open_tails().get(ident)
        saved = (self._saved_files or {}).get(path) if self._first_scan else None
        if moved is not None and _still_names(moved.path, ident):
            fh.close()  # another name of a file already followed (a symlink or hard link): follow it once
            return
        if moved is not None:
            # The file another tail follows was renamed to this path (a rotation the glob also matches):
            # its reader moves with it, and the old path starts over with whatever file it names now.
            fh.close()
            tail.fh, tail.offset, tail.skipping = moved.fh, moved.offset, moved.skipping
            moved.fh, moved.ident, moved.offset, moved.skipping = None, None, 0, False
            self._totals.rotations += 1
        elif ident in self._retired and st.st_size >= self._retired[ident][0]:
            tail.offset = self._retired.pop(ident)[0]
        elif saved is not None and saved.get("new"):
            pass  # created after the rotation we saw last: from its start
        elif saved is not None:
            saved_ident = (saved["dev"], saved["ino"])
            offset = int(saved["offset"])
            if saved_ident == ident:
                if st.st_size < offset:
                    self._totals.rotations += 1  # truncated while we were stopped
                else:
                    tail.offset, tail.skipping = offset, bool(saved.get("skip"))
            else:
                self._totals.rotations += 1
                old = _find_by_ident(path, saved_ident)
                if old is not None and os.stat(old).st_size >= offset:
                    # Rotated while we were stopped: finish the old file first (the poll then switches to this one).
                    try:
                        old_fh = open(old, "rb")
                    except OSError:
                        old_fh = None
                    if old_fh is not None:
                        fh.close()
                        self._totals.rotations -= 1  # counted when the poll switches files
                        tail.fh, tail.ident = old_fh, saved_ident
                        tail.offset, tail.skipping = offset, bool(saved.get("skip"))
        elif self._first_scan and not self.options.from_start:
            tail.offset = st.st_size
        self._tails[path] = tail

    def _poll(self, t: _Tail, budget: int, scan: _Scan) -> int:
        """Read what is new in ``t`` within ``budget`` bytes, following a rotation; returns bytes read."""
        if t.fh is None:
            try:
                t.fh = open(t.path, "rb")
            except FileNotFoundError:
                return 0
            except OSError as e:
                scan.errors.append(f"cannot read {t.path}: {e.strerror or e}")
                return 0
            t.ident, t.offset, t.skipping = _ident(os.fstat(t.fh.fileno())), 0, False
        try:
            if os.fstat(t.fh.fileno()).st_size < t.offset:  # copy-truncate
                t.offset, t.skipping = 0, False
                self._totals.rotations += 1
            used, eof = self._read(t, budget)
            if not eof:
                return used
            try:
                current: Ident | None = _ident(os.stat(t.path))
            except FileNotFoundError:
                current = None
            if current == t.ident:
                return used
            # The path names another file now (or none): read what was written to the old one meanwhile,
            # including a last line without a newline, then switch.
            more, eof = self._read(t, budget - used, final=True)
            used += more
            if not eof:
                return used
            self._retire(t)
            self._totals.rotations += 1
            if current is None or budget - used <= 0:
                return used
            return used + self._poll(t, budget - used, scan)
        except OSError as e:
            scan.errors.append(f"cannot read {t.path}: {e.strerror or e}")
            return 0

    def _retire(self, t: _Tail) -> None:
        if t.fh is not None:
            t.fh.close()
        if t.ident is not None:
            self._retired[t.ident] = (t.offset, 0)
            while len(self._retired) > MAX_RETIRED:
                self._retired.popitem(last=False)
        t.fh, t.ident, t.offset, t.skipping = None, None, 0, False

    def _read(self, t: _Tail, budget: int, final: bool = False) -> tuple[int, bool]:
        """Process the complete lines after ``t.offset`` (at most ``budget`` bytes); returns (bytes read, at EOF)."""
        assert t.fh is not None
        max_line = self.options.max_line_bytes
        t.fh.seek(t.offset)
        start_offset = t.offset
        carry = b""
        used = 0
        eof = False
        while used < budget:
            data = t.fh.read(min(CHUNK, budget - used))
            if not data:
                eof = True
                break
            used += len(data)
            buf = carry + data
            pos = 0
            if t.skipping:  # the rest of an over-long line
                nl = buf.find(b"\n")
                if nl < 0:
                    t.offset += len(buf)
                    carry = b""
                    continue
                t.offset += nl + 1
                pos = nl + 1
                t.skipping = False
            last = buf.rfind(b"\n", pos)
            if last >= 0:
                for line in buf[pos:last].split(b"\n"):
                    self._line(line[:max_line].decode("utf-8", errors="replace").rstrip("\r"))
                t.offset += last + 1 - pos
                carry = buf[last + 1 :]
            else:
                carry = buf[pos:]
            if len(carry) >= max_line:
                self._line(carry[:max_line].decode("utf-8", errors="replace"))
                t.offset += len(carry)
                t.skipping = True
                carry = b""
        if final and eof and carry:
            self._line(carry.decode("utf-8", errors="replace").rstrip("\r"))
            t.offset += len(carry)
        self._totals.bytes += t.offset - start_offset
        return used, eof

    # ------------------------------------------------------------------ matching

    def _line(self, text: str) -> None:
        self._totals.lines += 1
        for p in self._patterns:
            m = p.regex.search(text)
            if m is None:
                continue
            amount = 1.0
            if p.value is not None:
                raw = m.group(p.value)
                try:
                    amount = float(raw) if raw is not None else math.nan
                except ValueError:
                    amount = math.nan
                if not math.isfinite(amount) or amount < 0:
                    self._totals.value_errors += 1
                    continue
            labels = dict(p.static)
            for g in p.groups:
                labels[g] = m.group(g) or ""
            key = (p.metric, Labels(labels))
            cur = self._counters.get(key)
            if cur is None:
                if len(self._counters) >= self.options.max_series:
                    self._totals.dropped += 1
                    if not self._dropped_warned:
                        self._dropped_warned = True
                        log.warning("log_series_limit", source=self.options.name, max_series=self.options.max_series)
                    continue
                cur = 0.0
            self._counters[key] = cur + amount

    # ------------------------------------------------------------------ state

    def _state_blob(self) -> dict[str, Any]:
        with self._lock:
            # A path between two files (rotated, the new one not there yet) is saved as "new": read it from 0.
            files = {
                t.path: {"dev": t.ident[0], "ino": t.ident[1], "offset": t.offset, "skip": t.skipping}
                if t.fh is not None and t.ident is not None
                else {"new": True}
                for t in self._tails.values()
            }
            return {
                "version": STATE_VERSION,
                "files": files,
                "journal_cursor": self._journal_cursor,
                "counters": [[m, lab.as_dict(), v] for (m, lab), v in self._counters.items()],
                "totals": dict(self._totals.__dict__),
            }

    async def _maybe_save(self, force: bool = False) -> None:
        if self.state is None or not self._restored or (self._closing and not force):
            return
        now = self.clock.monotonic()
        interval = self.options.save_interval.total_seconds()
        if not force and self._last_save is not None and now - self._last_save < interval:
            return
        blob = await asyncio.to_thread(self._state_blob)
        if blob == self._saved_blob:
            self._last_save = now
            return
        try:
            await self.state.set(STATE_KEY, blob)
        except Exception as e:  # the next collection tries again; counting goes on meanwhile
            log.warning("log_state_save_failed", source=self.options.name, error=f"{type(e).__name__}: {e}")
            return
        self._saved_blob, self._last_save = blob, now

    async def close(self) -> None:
        """Save the positions and counters, close the files and stop journalctl; never raises for a failed save."""
        self._closing = True
        if self._journal is not None:
            await self._journal.stop()
        await self._maybe_save(force=True)

        def _close_files() -> None:
            with self._lock:
                self._closed = True
                for t in self._tails.values():
                    if t.fh is not None:
                        t.fh.close()
                        t.fh = None
                self._tails.clear()

        await asyncio.to_thread(_close_files)
