"""Pure pieces of the series history: bucket accumulators, the chunk byte format, and the downsampler.

A chunk packs consecutive buckets of one series as little-endian float32 triples ``(avg, min, max)``; an empty
bucket is three NaNs, and a chunk's bytes stop after its last written bucket (shorter chunks are padded with
empty buckets when read).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

TRIPLE = struct.Struct("<fff")
BUCKET_BYTES = TRIPLE.size  # 12
NAN = float("nan")
EMPTY = TRIPLE.pack(NAN, NAN, NAN)

FINE_PER_CHUNK = 60
"""Fine buckets per chunk row (with the default 1m step: one row per series and hour, 720 bytes)."""
COARSE_PER_CHUNK = 96
"""Coarse buckets per chunk row (with the default 15m coarse step: one row per series and day, 1152 bytes)."""


@dataclass
class Acc:
    """Samples of one bucket being filled: count, sum, min and max."""

    start: float
    n: float = 0.0
    total: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def add(self, value: float, weight: float = 1.0) -> None:
        self.n += weight
        self.total += value * weight
        if value < self.lo:
            self.lo = value
        if value > self.hi:
            self.hi = value

    def add_bucket(self, avg: float, lo: float, hi: float, weight: float = 1.0) -> None:
        """Fold a whole bucket (its average counted ``weight`` times, its min and max as they are)."""
        self.n += weight
        self.total += avg * weight
        self.lo = min(self.lo, lo)
        self.hi = max(self.hi, hi)

    def triple(self) -> tuple[float, float, float] | None:
        """``(avg, min, max)``, or None when the bucket got no sample."""
        if self.n <= 0:
            return None
        return (self.total / self.n, self.lo, self.hi)


def floor_to(t: float, step: int) -> float:
    """``t`` rounded down to a multiple of ``step`` seconds since the epoch."""
    return math.floor(t / step) * step


def put(chunk: bytearray, index: int, triple: tuple[float, float, float]) -> None:
    """Write bucket ``index`` of ``chunk`` (growing it with empty buckets as needed); values beyond float32
    saturate to +-inf."""
    end = (index + 1) * BUCKET_BYTES
    if len(chunk) < end:
        chunk.extend(EMPTY * ((end - len(chunk)) // BUCKET_BYTES))
    TRIPLE.pack_into(chunk, index * BUCKET_BYTES, *(_f32(v) for v in triple))


def get(chunk: bytes | bytearray, index: int) -> tuple[float, float, float] | None:
    """Bucket ``index`` of ``chunk``, or None when it is empty or beyond the chunk's end."""
    if (index + 1) * BUCKET_BYTES > len(chunk):
        return None
    avg, lo, hi = TRIPLE.unpack_from(chunk, index * BUCKET_BYTES)
    return None if math.isnan(avg) else (avg, lo, hi)


def decode(chunk: bytes, start: float, step: int) -> Iterator[tuple[float, float, float, float]]:
    """The non-empty buckets of ``chunk`` as ``(t, avg, min, max)`` with ``t`` the bucket's start; a trailing
    partial triple (a corrupt row) is ignored."""
    for i, (avg, lo, hi) in enumerate(TRIPLE.iter_unpack(chunk[: len(chunk) // BUCKET_BYTES * BUCKET_BYTES])):
        if not math.isnan(avg):
            yield (start + i * step, avg, lo, hi)


def decode_array(chunk: bytes, start: float, step: int) -> np.ndarray:
    """The non-empty buckets of ``chunk`` as an ``(n, 4)`` float64 array of ``t, avg, min, max`` (what
    :func:`decode` yields, vectorised); a trailing partial triple is ignored."""
    n = len(chunk) // BUCKET_BYTES
    out = np.empty((n, 4), dtype=np.float64)
    if n:
        out[:, 1:] = np.frombuffer(chunk, dtype="<f4", count=n * 3).reshape(n, 3)
        out[:, 0] = start + np.arange(n, dtype=np.float64) * step
    return out[~np.isnan(out[:, 1])]


def downsample_array(a: np.ndarray, width: float, origin: float = 0.0) -> list[Point]:
    """:func:`downsample` of chronological ``(n, 4)`` rows ``t, avg, min, max`` that each weigh 1, vectorised."""
    if not len(a):
        return []
    slots = origin + np.floor((a[:, 0] - origin) / width) * width
    starts = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]])
    counts = np.diff(np.r_[starts, len(a)]).astype(np.float64)
    means = np.add.reduceat(a[:, 1], starts) / counts
    lows = np.minimum.reduceat(a[:, 2], starts)
    highs = np.maximum.reduceat(a[:, 3], starts)
    return list(
        zip(slots[starts].tolist(), means.tolist(), lows.tolist(), highs.tolist(), counts.tolist(), strict=True)
    )


def _f32(v: float) -> float:
    if math.isnan(v) or math.isinf(v):
        return v
    if abs(v) > 3.4028234663852886e38:
        return math.copysign(math.inf, v)
    return v


Point = tuple[float, float, float, float, float]
"""``(t, avg, min, max, weight)``: a bucket with the number of buckets (or samples) it stands for."""


def downsample(points: Iterable[Point], width: float, origin: float = 0.0) -> list[Point]:
    """Merge chronological ``points`` into slots of ``width`` seconds aligned to ``origin``: each slot's point sits
    at the slot's start with the weighted mean of the averages, the min of the mins, the max of the maxes and the
    summed weight. Never fails for finite input."""
    out: list[Point] = []
    cur: list[float] | None = None
    for t, avg, lo, hi, w in points:
        slot = origin + math.floor((t - origin) / width) * width
        if cur is None or slot != cur[0]:
            if cur is not None:
                out.append(_point(cur))
            cur = [slot, 0.0, math.inf, -math.inf, 0.0]
        cur[1] += avg * w
        cur[2] = min(cur[2], lo)
        cur[3] = max(cur[3], hi)
        cur[4] += w
    if cur is not None:
        out.append(_point(cur))
    return out


def _point(cur: list[float]) -> Point:
    return (cur[0], cur[1] / cur[4] if cur[4] else NAN, cur[2], cur[3], cur[4])


def with_gaps(points: Sequence[Point], width: float) -> list[tuple[float, float, float, float]]:
    """``(t, avg, min, max)`` points with one NaN point in the first empty slot of every gap (charts break the
    line there)."""
    out: list[tuple[float, float, float, float]] = []
    prev: float | None = None
    for t, avg, lo, hi, _ in points:
        if prev is not None and t - prev > width * 1.5:
            out.append((prev + width, NAN, NAN, NAN))
        out.append((t, avg, lo, hi))
        prev = t
    return out


def slot_width(start: float, end: float, step: int, max_points: int) -> int:
    """The slot width (a multiple of ``step``) that keeps ``[start, end]`` within ``max_points`` slots (at least 3)
    counting the partial slots at both ends."""
    k = max(1, math.ceil((end - start) / step / max(1, max_points - 2)))
    return k * step
