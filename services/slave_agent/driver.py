"""The hardware driver interface of a slave module: read cells, drive balancing switches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class DriverError(RuntimeError):
    """A module could not be read or commanded (bus timeout, bad reply, ...)."""


@dataclass(frozen=True)
class ModuleReading:
    """One sample of a module as the hardware reports it."""

    cell_mv: list[int]
    cell_flags: list[int]
    temp_c: list[float]
    temp_flags: list[int]


class Driver(Protocol):
    def read(self, module: int) -> ModuleReading:
        """Sample every cell and temperature sensor of `module`; DriverError on failure."""
        ...

    def set_balancing(self, module: int, discharge: Sequence[bool], charge: Sequence[bool]) -> None:
        """Switch balancing per cell: one switch per cell in each list, all False turns
        balancing off. DriverError on failure or on a list of the wrong length."""
        ...

    def advance(self, dt_s: float, current_a: float) -> None:
        """Let `dt_s` pass with the string current (simulation only; real boards ignore it)."""
        ...

    def close(self) -> None: ...
