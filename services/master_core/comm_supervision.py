"""Communication supervision of the slave modules (pure: time is passed in, no I/O).

Decides on every cycle which modules are stale, which of them are lost, and whether the loss
must open the contactors. It owns every timing rule about module telemetry; the caller only
reports samples, mode switches and configuration applies, and carries out the decision.

Terms (`CommSupervisionConfig`, all from the system configuration):

* `period(mode)`: `timing.sample_period_working_s` or `timing.sample_period_standby_s`.
* `timeout_periods`: `protection.module_timeout_periods`.
* `mode_grace_s` = (`timeout_periods` + 1) x the slower period: the longest a mode switch is
  allowed to take, from the command to a sample in the new mode.

Rules, for each module of the configured layout:

1. **Stale**: no sample since the last layout change, or the last sample is older than
   `timeout_periods` x the module's judging period. A stale module's data stays out of the
   pack picture (the snapshot's stale list is this decision).
2. **Judging period**: the period of the commanded mode. After a mode switch the slaves retime
   only when the command reaches them, so until a module delivers a sample tagged with the new
   mode it is judged against the slowest period commanded since it last sampled in the current
   mode, for at most `mode_grace_s` after the switch; a second switch while the first is still
   pending ends only with that bound (a sample in the new mode may predate the first switch).
   After a configuration apply that changes a sample period, every module is judged against
   the slowest old or new period for `mode_grace_s` (the slaves sample on the old periods
   until they have the configuration, and may switch mode meanwhile); no sample can end that
   early: samples carry no version.
3. **Layout change**: a configuration with a new layout (module count, cells or sensors per
   module; the first configuration too) forgets every module's samples. A module not heard
   since is "not yet seen": it is waited for, however long it takes (slave racks on other
   machines boot long after the master, which has the retained configuration at once). It is
   stale (no data: the pack is incomplete, limits are 0 A) but never lost: nothing was ever
   supervised, so there is nothing to lose. The master never closes the contactors while any
   module is stale (a new layout starts a new contactor sequence, open, and a close is refused
   until every module has reported), so a module not yet seen exists only with the contactors
   open. A configuration with the same layout keeps every module's history. A mode grace
   still running carries over.
4. **Lost**: every stale module that has been seen since the last layout change. A module
   that was seen and then stops is lost after its timeout: at most `timeout_periods` x the
   slower period after its last sample, and on its own mode's period once no mode grace runs.
   Every grace is bounded: `mode_grace_s` after a switch or a period change.
5. **Ride-through** (`comm_loss`): with any module lost, `open_immediately` opens the
   contactors at once; `ride_through` opens them once the loss has lasted `ride_through_s`,
   or at once when the last values were not safe (an alarm was active). Once a loss episode
   decides to open it keeps saying so until no module is lost, so the contactors cannot chatter.

Properties (tests/master_core/test_comm_supervision.py): a module that delivers on its mode's
period is never lost (no false latch); a module not seen since the last layout change is never
lost; a seen module silent longer than its timeout plus the applicable grace is always lost (no
missed loss); every grace is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.config import SystemConfig, Topology
from shared.messages.slave import SlaveMode

__all__ = [
    "CommSupervision",
    "CommSupervisionConfig",
    "ModuleLayout",
    "ModuleStatus",
    "module_layout",
]

ModuleLayout = tuple[tuple[int, int], ...]
"""Per module: (cells, temperature sensors). Samples of one layout fit no other."""


def module_layout(topology: Topology) -> ModuleLayout:
    counts = topology.module_cell_counts or (topology.cells_per_module,) * topology.modules
    return tuple((cells, topology.temp_sensors_per_module) for cells in counts)


@dataclass(frozen=True, slots=True)
class CommSupervisionConfig:
    """The timing of communication supervision, derived from one system configuration."""

    layout: ModuleLayout
    timeout_periods: int
    """Samples a module may miss before it is stale (`protection.module_timeout_periods`)."""
    working_period_s: float
    standby_period_s: float
    ride_through_s: float | None
    """`comm_loss.ride_through_s` under `ride_through`; None under `open_immediately`."""

    @classmethod
    def from_system(cls, config: SystemConfig) -> CommSupervisionConfig:
        timing = config.timing
        policy = config.comm_loss
        return cls(
            layout=module_layout(config.topology),
            timeout_periods=config.protection.module_timeout_periods,
            working_period_s=timing.sample_period_working_s,
            standby_period_s=timing.sample_period_standby_s,
            ride_through_s=policy.ride_through_s if policy.action == "ride_through" else None,
        )

    def period_s(self, mode: SlaveMode) -> float:
        return self.standby_period_s if mode == "standby" else self.working_period_s

    @property
    def periods_s(self) -> tuple[float, float]:
        return (self.working_period_s, self.standby_period_s)

    @property
    def slower_period_s(self) -> float:
        return max(self.working_period_s, self.standby_period_s)

    @property
    def mode_grace_s(self) -> float:
        return (self.timeout_periods + 1) * self.slower_period_s


@dataclass(frozen=True, slots=True)
class ModuleStatus:
    stale_modules: tuple[int, ...]
    """Modules whose data is not current: left out of the pack picture, in module order."""
    lost_modules: frozenset[int]
    """Stale modules that count as lost (`communication_loss`): seen, then silent."""


@dataclass
class _Module:
    last_sample_s: float | None = None
    """Since the last layout change; None: not yet seen."""
    slow_period_s: float | None = None
    """Judged against at least this period until `slow_until_s` or a sample in `slow_mode`."""
    slow_until_s: float = 0.0
    slow_mode: SlaveMode | None = None


@dataclass
class CommSupervision:
    """Module freshness, grace after transitions and ride-through for one system."""

    mode: SlaveMode = "working"
    config: CommSupervisionConfig | None = None
    _modules: list[_Module] = field(default_factory=list)
    _lost_since_s: float | None = None
    _opening: bool = False

    def configure(self, config: CommSupervisionConfig, now_s: float) -> bool:
        """Apply a configuration; True when the layout is unchanged (history kept)."""
        old = self.config
        kept = old is not None and old.layout == config.layout
        if not kept:
            # slaves of a kept position may sample on in their old mode until they retime
            pending = [
                _Module(None, m.slow_period_s, m.slow_until_s, m.slow_mode) for m in self._modules
            ]
            pending += [_Module() for _ in range(len(config.layout) - len(pending))]
            self._modules = pending[: len(config.layout)]
        if old is not None and old.periods_s != config.periods_s:
            # the slaves sample on the old periods until they have the configuration (and may
            # switch mode meanwhile)
            slow = max(old.slower_period_s, config.slower_period_s)
            until = now_s + max(old.mode_grace_s, config.mode_grace_s)
            for m in self._modules:
                self._slow_down(m, slow, until, None, now_s)
        self.config = config
        return kept

    def on_mode(self, mode: SlaveMode, now_s: float) -> None:
        """The commanded mode (call it when the mode command is sent)."""
        if mode == self.mode:
            return
        if self.config is not None:
            slow = max(self.config.period_s(self.mode), self.config.period_s(mode))
            for m in self._modules:
                self._slow_down(m, slow, now_s + self.config.mode_grace_s, mode, now_s)
        self.mode = mode

    def on_sample(self, module: int, mode: SlaveMode, now_s: float) -> None:
        """A sample the pack aggregation accepted, tagged with the mode the slave was in."""
        if not 0 <= module < len(self._modules):
            return
        m = self._modules[module]
        m.last_sample_s = now_s
        if m.slow_mode is not None and mode == m.slow_mode:
            m.slow_period_s, m.slow_mode = None, None

    def status(self, now_s: float) -> ModuleStatus:
        """Which modules are stale and which of them are lost, now."""
        config = self.config
        if config is None:
            return ModuleStatus((), frozenset())
        stale = tuple(i for i, m in enumerate(self._modules) if self._stale(config, m, now_s))
        # a module not yet seen is waited for: never supervised, so never lost
        lost = frozenset(i for i in stale if self._modules[i].last_sample_s is not None)
        return ModuleStatus(stale, lost)

    def should_open(self, status: ModuleStatus, now_s: float, *, last_values_safe: bool) -> bool:
        """Whether the loss in `status` must open the contactors now (rule 5); `last_values_safe`
        is False while an alarm is active. Call it once per cycle."""
        if not status.lost_modules or self.config is None:
            self._lost_since_s, self._opening = None, False
            return False
        if self._lost_since_s is None:
            self._lost_since_s = now_s
        ride = self.config.ride_through_s
        expired = ride is None or now_s - self._lost_since_s >= ride
        self._opening = self._opening or expired or not last_values_safe
        return self._opening

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _slow_down(
        m: _Module, period_s: float, until_s: float, mode: SlaveMode | None, now_s: float
    ) -> None:
        active = m.slow_period_s is not None and now_s < m.slow_until_s
        m.slow_period_s = max(period_s, m.slow_period_s or 0.0) if active else period_s
        m.slow_until_s = max(until_s, m.slow_until_s) if active else until_s
        # While an earlier switch or a configuration change is still pending, a sample tagged
        # with the new mode may predate it (working -> standby -> working): samples no longer
        # tell the end, so the slow judging lasts until `slow_until_s` (still bounded).
        m.slow_mode = None if active else mode

    def _stale(self, config: CommSupervisionConfig, m: _Module, now_s: float) -> bool:
        if m.last_sample_s is None:
            return True
        period = config.period_s(self.mode)
        if m.slow_period_s is not None and now_s < m.slow_until_s:
            period = max(period, m.slow_period_s)
        return now_s - m.last_sample_s > config.timeout_periods * period
