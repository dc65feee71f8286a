"""``type: host`` — this machine's CPU, load, memory, disk and network figures (psutil)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from datetime import datetime
from typing import Any, ClassVar

import psutil
from pydantic import Field

from fsincident.core import Labels, Sample
from fsincident.plugins import LabelMap, SourceOptions

# Pseudo and container file systems that say nothing about real disks.
_SKIP_FSTYPES = {
    "tmpfs",
    "devtmpfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "overlay",
    "squashfs",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "autofs",
    "fusectl",
    "configfs",
    "hugetlbfs",
    "nsfs",
    "ramfs",
    "binfmt_misc",
    "rpc_pipefs",
    "efivarfs",
}


class HostOptions(SourceOptions):
    mounts: list[str] | None = None
    """Only these mount points (default: every real file system)."""
    interfaces: list[str] | None = None
    """Only these network interfaces (default: all but loopback)."""
    labels: LabelMap = Field(default_factory=dict)


class HostSource:
    """Reads psutil in a worker thread; rates (iops, bytes/s, packets/s) are computed between collections."""

    Options: ClassVar[type[SourceOptions]] = HostOptions

    def __init__(self, options: HostOptions, **_: Any):
        self.options = options
        self._base = {"instance": socket.gethostname(), "job": options.name, **options.labels}
        self._prev: dict[tuple[str, Labels], float] = {}
        self._prev_t: float | None = None
        psutil.cpu_percent(percpu=True)  # prime the CPU counters

    async def collect(self, now: datetime) -> list[Sample]:
        return await asyncio.to_thread(self._collect)

    def _labels(self, **extra: str) -> Labels:
        return Labels({**self._base, **extra})

    def _collect(self) -> list[Sample]:
        out: list[Sample] = []
        add = out.append
        t = time.monotonic()
        per_core = psutil.cpu_percent(percpu=True)
        if per_core:
            add(Sample("cpu_usage_percent", self._labels(), sum(per_core) / len(per_core)))
        for i, pct in enumerate(per_core):
            add(Sample("cpu_core_usage_percent", self._labels(core=str(i)), pct))
        add(Sample("cpu_count", self._labels(), float(len(per_core) or os.cpu_count() or 1)))
        l1, l5, l15 = os.getloadavg()
        add(Sample("load1", self._labels(), l1))
        add(Sample("load5", self._labels(), l5))
        add(Sample("load15", self._labels(), l15))
        vm = psutil.virtual_memory()
        mem = {
            "memory_total_bytes": vm.total,
            "memory_used_bytes": vm.used,
            "memory_available_bytes": vm.available,
            "memory_cached_bytes": getattr(vm, "cached", 0),
            "memory_buffers_bytes": getattr(vm, "buffers", 0),
            "memory_usage_percent": vm.percent,
        }
        for name, v in mem.items():
            add(Sample(name, self._labels(), float(v)))
        sw = psutil.swap_memory()
        add(Sample("swap_used_bytes", self._labels(), float(sw.used)))
        add(Sample("swap_total_bytes", self._labels(), float(sw.total)))

        wanted_mounts = set(self.options.mounts) if self.options.mounts else None
        seen_mounts: set[str] = set()
        for part in psutil.disk_partitions(all=False):
            if wanted_mounts is not None:
                if part.mountpoint not in wanted_mounts:
                    continue
            elif part.fstype in _SKIP_FSTYPES or part.mountpoint in seen_mounts:
                continue
            seen_mounts.add(part.mountpoint)
            try:
                u = psutil.disk_usage(part.mountpoint)
            except OSError:
                continue
            lab = self._labels(mount=part.mountpoint, device=part.device, fstype=part.fstype)
            add(Sample("disk_total_bytes", lab, float(u.total)))
            add(Sample("disk_used_bytes", lab, float(u.used)))
            add(Sample("disk_free_bytes", lab, float(u.free)))
            add(Sample("disk_usage_percent", lab, float(u.percent)))

        counters: dict[tuple[str, Labels], float] = {}
        try:
            io = psutil.disk_io_counters(perdisk=True) or {}
        except (OSError, RuntimeError):
            io = {}
        for dev, c in io.items():
            if dev.startswith(("loop", "ram")):
                continue
            lab = self._labels(device=dev)
            counters[("disk_reads", lab)] = c.read_count
            counters[("disk_writes", lab)] = c.write_count
            counters[("disk_read_bytes", lab)] = c.read_bytes
            counters[("disk_written_bytes", lab)] = c.write_bytes
        wanted_if = set(self.options.interfaces) if self.options.interfaces else None
        for nic, c in (psutil.net_io_counters(pernic=True) or {}).items():
            if wanted_if is not None and nic not in wanted_if:
                continue
            if wanted_if is None and nic == "lo":
                continue
            lab = self._labels(interface=nic)
            counters[("network_receive_bytes", lab)] = c.bytes_recv
            counters[("network_transmit_bytes", lab)] = c.bytes_sent
            counters[("network_receive_packets", lab)] = c.packets_recv
            counters[("network_transmit_packets", lab)] = c.packets_sent
            counters[("network_receive_errors", lab)] = c.errin
            counters[("network_transmit_errors", lab)] = c.errout
        rate_names = {
            "disk_reads": "disk_read_iops",
            "disk_writes": "disk_write_iops",
            "disk_read_bytes": "disk_read_bytes_per_second",
            "disk_written_bytes": "disk_write_bytes_per_second",
            "network_receive_bytes": "network_receive_bytes_per_second",
            "network_transmit_bytes": "network_transmit_bytes_per_second",
            "network_receive_packets": "network_receive_packets_per_second",
            "network_transmit_packets": "network_transmit_packets_per_second",
            "network_receive_errors": "network_receive_errors_per_second",
            "network_transmit_errors": "network_transmit_errors_per_second",
        }
        elapsed = t - self._prev_t if self._prev_t is not None else None
        for (name, lab), v in counters.items():
            add(Sample(name + "_total", lab, float(v)))
            prev = self._prev.get((name, lab))
            if elapsed and elapsed > 0 and prev is not None and v >= prev:
                add(Sample(rate_names[name], lab, (v - prev) / elapsed))
        self._prev = counters
        self._prev_t = t
        return out

    async def close(self) -> None:
        return None
