"""``type: command`` — run a Nagios/monitoring-plugins check and turn its exit code and perfdata into series.

The command is an argv list run without a shell, in its own session (process group), with a
minimal environment. Exit codes 0/1/2/3 are the plugin's verdict (``check_state``); a command
that cannot be started, times out, dies from a signal or exits with another code is a source
failure (``up 0``, ``SourceDown``), because then there is no verdict to report.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from fsincident.core import Labels, Sample, SourceError
from fsincident.obs import get_logger
from fsincident.plugins import LabelMap, SourceOptions

log = get_logger("fsincident.sources.command")

MAX_OUTPUT = 1024 * 1024
"""Bytes of standard output (and, separately, standard error) kept; the rest is read and discarded."""

STATES = {0: "ok", 1: "warning", 2: "critical", 3: "unknown"}

# Units of measure, normalised to base units: (factor, unit label). Byte multiples are binary (1024),
# as monitoring-plugins computes them (check_disk -u MB divides by 1024*1024).
_UOM: dict[str, tuple[float, str]] = {
    "": (1.0, ""),
    "s": (1.0, "s"),
    "ms": (1e-3, "s"),
    "us": (1e-6, "s"),
    "%": (1.0, "%"),
    "B": (1.0, "B"),
    "KB": (1024.0, "B"),
    "kB": (1024.0, "B"),
    "KiB": (1024.0, "B"),
    "MB": (1024.0**2, "B"),
    "MiB": (1024.0**2, "B"),
    "GB": (1024.0**3, "B"),
    "GiB": (1024.0**3, "B"),
    "TB": (1024.0**4, "B"),
    "TiB": (1024.0**4, "B"),
    "c": (1.0, "c"),
}

_VALUE = re.compile(r"^([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)([^\d;]*)$")
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")


class CommandOptions(SourceOptions):
    command: list[str] = Field(min_length=1)
    """The argv list; ``command[0]`` is looked up on ``PATH`` when it has no slash. No shell."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables (the command otherwise gets only PATH, HOME, TZ and LC_ALL=C)."""
    labels: LabelMap = Field(default_factory=dict)


@dataclass(frozen=True)
class PerfData:
    """One perfdata item, already in base units; thresholds are set only when written as plain numbers."""

    label: str
    uom: str
    value: float | None
    warn: float | None = None
    crit: float | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class PluginOutput:
    """A plugin's parsed output: the first text line, the long text, the perfdata and the unparseable items."""

    text: str
    long_text: str
    perfdata: tuple[PerfData, ...]
    invalid: tuple[str, ...]


def parse_output(output: str) -> PluginOutput:
    """Parse plugin output: ``TEXT | perf``, long text, perfdata continued after a later ``|``; never fails."""
    lines = output.replace("\r\n", "\n").split("\n")
    first, _, perf = lines[0].partition("|")
    long_lines: list[str] = []
    perf_parts = [perf]
    in_perf = False
    for line in lines[1:]:
        if in_perf:
            perf_parts.append(line)
        elif "|" in line:
            text, _, p = line.partition("|")
            long_lines.append(text)
            perf_parts.append(p)
            in_perf = True
        else:
            long_lines.append(line)
    items, invalid = parse_perfdata(" ".join(perf_parts))
    return PluginOutput(first.strip(), "\n".join(long_lines).strip(), tuple(items), tuple(invalid))


def _tokens(text: str) -> list[tuple[str | None, str]]:
    """Split perfdata into (label, rest) pairs; label None marks an item that is garbage as a whole."""
    out: list[tuple[str | None, str]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] == "'":
            # Quoted label: '' is a literal quote; the label ends at a quote not followed by another.
            j = i + 1
            buf: list[str] = []
            closed = False
            while j < n:
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    closed = True
                    j += 1
                    break
                buf.append(text[j])
                j += 1
            if not closed:  # an unterminated quote: only this word is garbage
                j = i
            end = j
            while end < n and not text[end].isspace():
                end += 1
            rest = text[j:end]
            if not closed or not rest.startswith("="):
                out.append((None, text[i:end]))
            else:
                out.append(("".join(buf), rest[1:]))
            i = end
            continue
        end = i
        while end < n and not text[end].isspace():
            end += 1
        tok = text[i:end]
        label, eq, rest = tok.partition("=")
        out.append((label, rest) if eq and label else (None, tok))
        i = end
    return out


def _threshold(s: str, factor: float) -> float | None:
    # Only a plain number is a single threshold; ranges (10:, ~:10, 10:20, @...) are not exported.
    s = s.strip()
    if not _NUMBER.match(s):
        return None
    v = float(s) * factor
    return v if math.isfinite(v) else None


def parse_perfdata(text: str) -> tuple[list[PerfData], list[str]]:
    """Parse ``'label'=value[UOM];[warn];[crit];[min];[max]`` items; returns the items and the invalid ones."""
    items: list[PerfData] = []
    invalid: list[str] = []
    for label, rest in _tokens(text):
        if label is None or not label:
            invalid.append(rest)
            continue
        fields = rest.split(";")
        raw = fields[0].strip()
        if raw == "U":  # "undetermined": the plugin could not measure it
            value: float | None = None
            factor, uom = 1.0, ""
        else:
            m = _VALUE.match(raw)
            if not m:
                invalid.append(f"{label}={rest}")
                continue
            factor, uom = _UOM.get(m.group(2), (1.0, m.group(2)))
            value = float(m.group(1)) * factor
            if not math.isfinite(value):
                invalid.append(f"{label}={rest}")
                continue
        extra = [_threshold(f, factor) for f in fields[1:5]] + [None] * 4
        items.append(PerfData(label, uom, value, *extra[:4]))
    return items, invalid


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LC_ALL": "C"}
    for key in ("HOME", "TZ"):
        if key in os.environ:
            env[key] = os.environ[key]
    env.update(extra)
    return env


class _Sink:
    """Collects up to ``cap`` bytes of a stream and discards the rest, so the writer never blocks."""

    def __init__(self, cap: int):
        self.cap = cap
        self.data = bytearray()

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                return
            room = self.cap - len(self.data)
            if room > 0:
                self.data += chunk[:room]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class RunResult:
    """What one run of the command produced."""

    returncode: int
    stdout: str
    stderr: str
    duration: float


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The stream protocol plus an ``exited`` future that resolves when the process exits.

    ``Process.wait()`` also waits for the pipes to close, which a left-behind child can delay forever.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def run_command(argv: list[str], env: dict[str, str], timeout: float) -> RunResult:
    """Run ``argv`` in its own session; raises SourceError when it cannot start or outlives ``timeout``.

    On timeout the whole process group is killed. After a normal exit, processes it left behind in
    its group are killed too, and output they still hold open is not waited for.
    """
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(loop),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise SourceError(f"command not found: {argv[0]}") from None
    except PermissionError:
        raise SourceError(f"command not executable: {argv[0]}") from None
    except OSError as e:
        raise SourceError(f"command {argv[0]} could not start: {e.strerror or e}") from None
    pid = transport.get_pid()
    out, err = _Sink(MAX_OUTPUT), _Sink(MAX_OUTPUT)
    readers = asyncio.gather(out.drain(protocol.stdout), err.drain(protocol.stderr))
    try:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(protocol.exited)
        except TimeoutError:
            _kill_group(pid)
            try:
                async with asyncio.timeout(2):
                    await asyncio.shield(protocol.exited)
            except TimeoutError:
                pass
            raise SourceError(f"command {argv[0]} timed out after {timeout:g}s; its process group was killed") from None
        rc = transport.get_returncode()
        assert rc is not None
        _kill_group(pid)  # stragglers of the check, if any
        try:
            # What is in the pipes is still readable; only a writer that left the group can hold them open.
            async with asyncio.timeout(1):
                await asyncio.shield(readers)
        except TimeoutError:
            pass
    finally:
        if transport.get_returncode() is None:  # cancelled from outside: leave nothing running
            _kill_group(pid)
        readers.cancel()
        try:
            await readers
        except (asyncio.CancelledError, Exception):
            pass
        transport.close()
    return RunResult(rc, out.text(), err.text(), time.monotonic() - started)


def _first_line(*texts: str) -> str:
    for t in texts:
        for line in t.splitlines():
            if line.strip():
                return line.strip()[:500]
    return "(no output)"


class CommandSource:
    """Runs the check on every collection; exit 0-3 and its perfdata become samples, anything else a SourceError."""

    Options: ClassVar[type[SourceOptions]] = CommandOptions

    def __init__(self, options: CommandOptions, **_: Any):
        self.options = options
        self._base = {"job": options.name, **options.labels}
        self._env = _environment(options.env)
        self.last_output: str | None = None
        """The first line of the latest output (logged when the state changes)."""
        self._last_state: int | None = None

    @staticmethod
    def validate_options(options: CommandOptions) -> list[tuple[tuple[Any, ...], str]]:
        """Load-time checks of the argv, environment and labels; never raises."""
        out: list[tuple[tuple[Any, ...], str]] = []
        if not options.command[0]:
            out.append((("command", 0), "the command must not be empty"))
        for i, arg in enumerate(options.command):
            if "\x00" in arg:
                out.append((("command", i), "arguments cannot contain NUL characters"))
        for key in options.env:
            if not key or "=" in key or "\x00" in key or "\x00" in options.env[key]:
                out.append((("env", key), "invalid environment variable name or value"))
        for key in ("job", "label", "uom"):
            if key in options.labels:
                out.append((("labels", key), f"{key!r} is set by the source and cannot be given here"))
        return out

    def _labels(self, **extra: str) -> Labels:
        return Labels({**self._base, **extra})

    async def collect(self, now: datetime) -> list[Sample]:
        """Run the check once; raises SourceError when it cannot run, times out or gives no plugin state."""
        res = await run_command(self.options.command, self._env, self.options.timeout.total_seconds())
        if res.returncode < 0:
            sig = -res.returncode
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            raise SourceError(
                f"command {self.options.command[0]} was killed by {name}: {_first_line(res.stdout, res.stderr)}"
            )
        if res.returncode not in STATES:
            raise SourceError(
                f"command {self.options.command[0]} exited with {res.returncode} (not a plugin state 0-3): "
                f"{_first_line(res.stdout, res.stderr)}"
            )
        parsed = parse_output(res.stdout)
        text = parsed.text or _first_line(res.stderr)
        self.last_output = text
        if res.returncode != self._last_state:
            log.info(
                "check_state_changed",
                source=self.options.name,
                state=STATES[res.returncode],
                previous=STATES.get(self._last_state) if self._last_state is not None else None,
                output=text,
            )
            self._last_state = res.returncode
        else:
            log.debug("check_ran", source=self.options.name, state=STATES[res.returncode], output=text)
        out = [
            Sample("check_state", self._labels(), float(res.returncode)),
            Sample("check_duration_seconds", self._labels(), res.duration),
            Sample("check_perfdata_invalid_items", self._labels(), float(len(parsed.invalid))),
        ]
        for p in parsed.perfdata:
            lab = self._labels(label=p.label, uom=p.uom)
            for suffix, v in (
                ("", p.value),
                ("_warn", p.warn),
                ("_crit", p.crit),
                ("_min", p.min),
                ("_max", p.max),
            ):
                if v is not None:
                    out.append(Sample("check_perfdata" + suffix, lab, v))
        return out

    async def close(self) -> None:
        """Nothing to release: every run's processes are gone when ``collect`` returns."""
        return None


__all__ = [
    "CommandOptions",
    "CommandSource",
    "PerfData",
    "PluginOutput",
    "parse_output",
    "parse_perfdata",
    "run_command",
]
