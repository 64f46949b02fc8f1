"""`StuckChannels` as it was before it counted on arrays (a Python loop over every channel):
the reference the array version must agree with (test_plausibility.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from services.master_core.protection_inputs import ChannelPosition

Reading = float | None


def _known(value: Reading) -> float | None:
    return None if value is None or math.isnan(value) else value


class ReferenceStuckChannels:
    def __init__(self, *, samples: int, current_a: float) -> None:
        self.samples = samples
        self.current_a = current_a
        self._last: list[list[float | None]] = []
        self._runs: list[list[int]] = []
        self._stuck: frozenset[ChannelPosition] = frozenset()

    def update(
        self, by_module: Sequence[Sequence[Reading]], current_a: Reading
    ) -> frozenset[ChannelPosition]:
        values = [[_known(v) for v in m] for m in by_module]
        if [len(m) for m in values] != [len(m) for m in self._last]:
            self._last = values
            self._runs = [[0] * len(m) for m in values]
            self._stuck = frozenset()
            return self._stuck
        current = _known(current_a)
        loaded = current is not None and abs(current) > self.current_a
        for now, last, runs in zip(values, self._last, self._runs, strict=True):
            changed = [
                v is not None and prev is not None and v != prev
                for v, prev in zip(now, last, strict=True)
            ]
            live = any(changed)
            for i, (v, prev) in enumerate(zip(now, last, strict=True)):
                if v is None or prev is None or changed[i]:
                    runs[i] = 0
                elif loaded and live:
                    runs[i] += 1
        self._last = values
        self._stuck = frozenset(
            (module, index)
            for module, runs in enumerate(self._runs)
            for index, run in enumerate(runs)
            if run >= self.samples
        )
        return self._stuck
