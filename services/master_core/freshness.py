"""Which telemetry samples are new: replays and old samples never count as a live module (pure).

Found from outside: after a slave agent was killed, 50 captured messages per module replayed at
10 Hz kept the contactors closed for 20 s with 30 A flowing, and inflated the gap counter by
831,748. The master took any sample, whatever its sequence number or time stamp.

A sample carries the agent's `boot_id` (random per process start) and the envelope's `seq`
(per module, counted by the agent even for samples it could not read). A sample is admitted
only when all of these hold:

* its time stamp is within `max_age_s` of the master's wall clock, either way (an old capture,
  or a clock off by more than that: the rule asks for synchronised clocks, NTP or PTP);
* from the module's current boot, its `seq` is above the last admitted one (a lower or equal
  one is a replay or a duplicate);
* a boot id not seen before is a restarted agent: its samples are admitted from then on, and
  the previous boot ids are retired; a sample of a retired boot is a replay.

Gaps (`seq` jumps within one boot) count lost samples; refused samples are counted by kind
and never as gaps. A sample without a boot id (an older agent) is checked for age only, and
its `seq` is used for the gap count as before.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

Refusal = Literal["replayed", "too_old", "from_the_future"]
RETIRED_BOOTS: Final = 8
"""Boot ids remembered per module after a restart (a replay of an older one is a new boot)."""


@dataclass
class _Module:
    boot_id: str | None = None
    last_seq: int | None = None
    retired: deque[str] = field(default_factory=lambda: deque(maxlen=RETIRED_BOOTS))


@dataclass(frozen=True)
class Admission:
    refused: Refusal | None = None
    gap: int = 0
    """Samples lost between the last admitted sample of this boot and this one."""
    restarted: bool = False


@dataclass
class SampleGate:
    modules: int
    max_age_s: float
    _state: list[_Module] = field(init=False)

    def __post_init__(self) -> None:
        if not self.max_age_s > 0.0:
            raise ValueError(f"max_age_s must be positive, got {self.max_age_s}")
        self._state = [_Module() for _ in range(self.modules)]

    def admit(
        self, module: int, boot_id: str | None, seq: int | None, sample_ts: float, now_s: float
    ) -> Admission:
        """`now_s`: the master's wall clock, the same time base as `sample_ts`."""
        if sample_ts < now_s - self.max_age_s:
            return Admission("too_old")
        if sample_ts > now_s + self.max_age_s:
            return Admission("from_the_future")
        state = self._state[module]
        restarted = False
        if boot_id is not None and boot_id != state.boot_id:
            if boot_id in state.retired:
                return Admission("replayed")
            if state.boot_id is not None:
                state.retired.append(state.boot_id)
                restarted = True
            state.boot_id, state.last_seq = boot_id, None
        elif (
            boot_id is not None
            and seq is not None
            and state.last_seq is not None
            and seq <= state.last_seq
        ):
            return Admission("replayed")
        gap = 0
        if seq is not None:
            if state.last_seq is not None and seq > state.last_seq + 1:
                gap = seq - state.last_seq - 1
            state.last_seq = seq
        return Admission(gap=gap, restarted=restarted)
