"""The plant service loop: configuration and faults from MQTT, one physics step per period.

Wiring only: the physics is `PlantCore` (pure, clock passed in), the wire protocols are the
devices of `registry.py`. The first configuration on `config` builds the core and opens the
devices; a later one reconfigures the core in place and reopens the devices only when what they
serve changed (topology, relay addresses), so a threshold change never drops a contactor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import can

from services.plant.core import PlantCore, PlantParams
from services.plant.load_profiles import LoadProfile, parse_profile
from services.plant.registry import DEVICE_FACTORIES, DeviceContext, PlantDevice
from services.plant.settings import PlantSettings
from services.slave_agent.driver import DriverError
from shared.bus import BusCore, Delivery
from shared.config import SystemConfig
from shared.messages import ConfigMessage, GroundTruth, PlantControl
from shared.topics import CONFIG, PLANT_CONTROL, SIM_TRUTH

log = logging.getLogger("plant")

STATUS_PERIOD_S = 5.0
CONFIG_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Back-off between attempts to apply a configuration whose devices did not open (a port still
held, a CAN bus not there yet): the plant retries by itself, not only on a republish."""
STEP_ERROR_LOG_EVERY = 1000
InverterFactory = Callable[[LoadProfile, DeviceContext], LoadProfile]
"""Builds the inverter (a current demand within the BMS limits it reads) around its load
profile, where the context's configuration puts it (`registry.CanInverter`: on
`interfaces.can`). When what it returns is also a `PlantDevice` (`tick(now_s, state)`,
`close()`), it is ticked after the devices every step and closed when it is replaced (a new
`interfaces.can`) or the plant stops."""


def wiring(config: SystemConfig) -> tuple[object, ...]:
    """What the devices serve and where: a change reopens them."""
    return (
        config.topology,
        config.contactors.io,
        config.current_sensor.can,
        config.insulation_monitor,
    )


def params_of(settings: PlantSettings) -> PlantParams:
    return PlantParams(
        seed=settings.seed,
        initial_soc_pct=settings.initial_soc_pct,
        ambient_c=settings.ambient_c,
        cell_period_s=settings.cell_period_s,
        current_offset_a=settings.current_offset_a,
        current_noise_a=settings.current_noise_a,
        insulation_ohm=settings.insulation_ohm,
        u3_v=settings.u3_v,
        sensor_temperature_c=settings.ivt_temperature_c,
    )


class PlantService:
    def __init__(
        self,
        settings: PlantSettings,
        bus: BusCore,
        *,
        inverter: InverterFactory | None = None,
        open_can: Callable[[str, str], can.BusABC] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.inverter = inverter
        self.open_can = open_can
        self.monotonic = monotonic
        self.wall = wall
        self.core: PlantCore | None = None
        self.context: DeviceContext | None = None
        self.devices: dict[str, PlantDevice] = {}
        self._next_s = monotonic()
        self._last_truth_s = 0.0
        self._last_status_s = monotonic()
        self._pending: SystemConfig | None = None
        self._retry_at_s = 0.0
        self._retries = 0
        bus.subscribe(CONFIG, self._on_config)
        bus.subscribe(PLANT_CONTROL, self._on_control)

    # --- configuration ----------------------------------------------------------------------
    def _on_config(self, d: Delivery[ConfigMessage]) -> None:
        config = d.message.config
        if self.core is not None and self.core.config == config:
            return  # the same configuration again (a publisher's reconnect)
        self._retries = 0
        self._try_config(config)

    def _try_config(self, config: SystemConfig) -> None:
        try:
            self.apply_config(config)
        except (OSError, ValueError, DriverError, can.CanError) as exc:
            self.bus.counters["config_errors"] += 1
            delay_s = CONFIG_RETRY_S[min(self._retries, len(CONFIG_RETRY_S) - 1)]
            self._retries += 1
            self._pending, self._retry_at_s = config, self.monotonic() + delay_s
            log.error("configuration %d not applied: %s; retrying in %.0f s",
                      config.config_version, exc, delay_s)  # fmt: skip
        else:
            self._pending = None

    def retry_pending(self, now_s: float) -> None:
        """Applies again a configuration that failed, once its back-off has passed."""
        if self._pending is not None and now_s >= self._retry_at_s:
            self._try_config(self._pending)

    def apply_config(self, config: SystemConfig) -> None:
        now = self.monotonic()
        old = self.core
        if old is None:
            profile = parse_profile(self.settings.load_profile)
            core = PlantCore(config, params_of(self.settings), profile, start_s=now)
            reopen = new_inverter = True
        else:
            reopen = wiring(config) != wiring(old.config)
            new_inverter = config.interfaces.can != old.config.interfaces.can
            if old.configure(config):
                log.warning("cell physics changed: the simulated cells start again")
            core = old
        if reopen:
            self.close_devices()
            self.core = core
            try:
                self.open_devices(config)
            except BaseException:
                # Without its devices the plant serves nothing: the same configuration
                # published again retries from scratch.
                self.close_inverter()
                self.core = None
                raise
        else:
            self.core = core
            if self.context is not None:
                self.context.config = config
        if new_inverter:
            try:
                self.open_inverter()
            except BaseException:
                self.close_devices()
                self.core = None
                raise
        self._next_s = now
        log.info("configured: %d modules, devices %s", len(core.modules), ", ".join(self.devices))

    def open_inverter(self) -> None:
        """The inverter (if the plant has one) where the configuration puts it."""
        self.close_inverter()
        if self.inverter is None or self.core is None or self.context is None:
            return
        self.core.demand = self.inverter(self.core.profile, self.context)

    def close_inverter(self) -> None:
        if self.core is None:
            return
        demand, self.core.demand = self.core.demand, None
        if isinstance(demand, PlantDevice):
            try:
                demand.close()
            except Exception:
                log.exception("closing the inverter failed")

    def open_devices(self, config: SystemConfig) -> None:
        assert self.core is not None
        ctx = DeviceContext(self.core, self.settings, config, clock=self.monotonic)
        if self.open_can is not None:
            ctx.open_can = self.open_can
        self.context = ctx
        try:
            for name in self.settings.device_list():
                self.devices[name] = DEVICE_FACTORIES[name](ctx)
        except BaseException:
            self.close_devices()
            raise

    def close_devices(self) -> None:
        for name, device in list(self.devices.items()):
            try:
                device.close()
            except Exception:
                log.exception("closing %s failed", name)
        self.devices.clear()
        if self.context is not None:
            self.context.close()
            self.context = None

    # --- faults -----------------------------------------------------------------------------
    def _on_control(self, d: Delivery[PlantControl]) -> None:
        ctrl = d.message
        if ctrl.expires_at is not None and self.wall() > ctrl.expires_at:
            log.warning("fault injection %s refused: expired", ctrl.fault)
            return
        if self.core is None:
            log.warning("fault injection %s refused: no configuration yet", ctrl.fault)
            return
        try:
            done = self.core.inject(ctrl)
        except ValueError as exc:
            self.bus.counters["plant_control_refused"] += 1
            log.warning("fault injection %s refused: %s", ctrl.fault, exc)
            return
        self.bus.counters["plant_control_applied"] += 1
        log.warning("fault injection: %s", done)

    # --- the loop ---------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool]) -> None:
        period = self.settings.step_period_s
        while not should_stop():
            self.retry_pending(self.monotonic())
            wait = self._next_s - self.monotonic()
            if self.core is None or wait > 0:
                self.bus.process(timeout_s=min(max(wait, 0.0), 0.2) if self.core else 0.2)
                continue
            self.bus.process()
            try:
                self.tick(self.monotonic())
            except Exception:  # one bad step must not stop the plant
                self.bus.counters["step_errors"] += 1
                n = self.bus.counters["step_errors"]
                if n == 1 or n % STEP_ERROR_LOG_EVERY == 0:  # e.g. a device gone: 100 a second
                    log.exception("plant step failed (%d so far)", n)
            self._next_s += period
            if self._next_s < self.monotonic() - period:
                self.bus.counters["overruns"] += 1
                self._next_s = self.monotonic()

    def tick(self, now_s: float) -> None:
        """One step: physics to `now_s`, then every device serves the new state."""
        core = self.core
        assert core is not None
        core.step(now_s)
        state = core.state()
        for device in self.devices.values():
            device.tick(now_s, state)
        if isinstance(core.demand, PlantDevice):
            core.demand.tick(now_s, state)
        if now_s - self._last_truth_s >= self.settings.truth_period_s:
            self._last_truth_s = now_s
            self._publish_truth(core)
        if now_s - self._last_status_s >= STATUS_PERIOD_S:
            self._last_status_s = now_s
            self.bus.publish_status()

    def _publish_truth(self, core: PlantCore) -> None:
        wall = self.wall()
        for m in core.modules:
            t = core.truth(m)
            self.bus.publish(
                SIM_TRUTH,
                GroundTruth(
                    module=m,
                    sample_ts=wall,
                    soc_pct=t.soc_pct.tolist(),
                    cell_v=[min(max(v, 0.0), 6.0) for v in t.cell_v.tolist()],
                    temp_c=t.temp_c.tolist(),
                    current_a=float(t.current_a),
                ),
                module=m,
            )

    def stop(self) -> None:
        self.close_inverter()
        self.close_devices()
