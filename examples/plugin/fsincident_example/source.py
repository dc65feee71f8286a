"""``type: random_walk`` — a bounded random walk per walker, kept across restarts.

Everything a source kind needs, and nothing more: an ``Options`` model, a constructor taking the
options and a ``SourceContext``, ``start`` (optional), ``collect`` and ``close``, plus an optional
``validate_options`` for checks that span several keys.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from fsincident.core import Labels, Sample, SourceError
from fsincident.plugins import LabelMap, SourceContext, SourceOptions


class RandomWalkOptions(SourceOptions):
    """Keys of ``type: random_walk``; ``name``, ``type``, ``interval``, ``timeout`` etc. come from the base."""

    walkers: int = Field(1, ge=1, le=1000)
    """How many independent series to walk."""
    step: float = Field(1.0, gt=0)
    """Largest change per collection."""
    low: float = 0.0
    high: float = 100.0
    seed: int | None = None
    """Fixes the sequence (tests); default: a different walk every run."""
    labels: LabelMap = Field(default_factory=dict)


class RandomWalkSource:
    """Moves each walker by at most ``step`` per collection, staying within ``[low, high]``."""

    Options: ClassVar[type[SourceOptions]] = RandomWalkOptions

    def __init__(self, options: RandomWalkOptions, context: SourceContext, **_: Any):
        self.options = options
        self.context = context
        self._rng = random.Random(options.seed)
        self._positions: list[float] = [options.low] * options.walkers
        self._steps = 0
        self._base = {"job": options.name, **options.labels}

    @staticmethod
    def validate_options(options: RandomWalkOptions) -> list[tuple[tuple[Any, ...], str]]:
        """Checks beyond single keys; each problem is (key path, message) and stops `check` and start-up."""
        if options.low >= options.high:
            return [(("high",), f"must be greater than low ({options.low:g})")]
        return []

    async def start(self) -> None:
        """Resume the walk where the last run left it (durable state survives restarts)."""
        saved = await self.context.state.get("positions")
        if isinstance(saved, list) and len(saved) == self.options.walkers:
            self._positions = [min(max(float(p), self.options.low), self.options.high) for p in saved]
        self._steps = int(await self.context.state.get("steps") or 0)

    async def collect(self, now: datetime) -> list[Sample]:
        """One step of every walker; raises SourceError if the walk cannot be saved."""
        o = self.options
        self._positions = [min(max(p + self._rng.uniform(-o.step, o.step), o.low), o.high) for p in self._positions]
        self._steps += 1
        try:
            await self.context.state.set("positions", self._positions)
            await self.context.state.set("steps", self._steps)
        except Exception as e:  # report a failure as a SourceError: the daemon turns it into up == 0
            raise SourceError(f"cannot save the walk: {e}") from e
        out = [
            Sample("random_walk_value", Labels({**self._base, "walker": str(i)}), p)
            for i, p in enumerate(self._positions)
        ]
        out.append(Sample("random_walk_steps_total", Labels(self._base), float(self._steps)))
        return out

    async def close(self) -> None:
        """Nothing to release here (a kind holding a session or connection closes it)."""
