"""The Pylontech profiles through commissioning transitions, on the live stack of
`test_transitions` (the plant, slave agents on its boards, the master on its devices, Modbus
gateway, CAN gateway on an slcan link over a socat pty, web application, a real mosquitto;
faults injected into the plant), read by an independent inverter: python-can on the far
end of the pty, every frame decoded by cantools from the profile's DBC.

- `pylon_v12` sends its frames once a second; `pylon_hv` answers the 0x4200 requests that the
  test sends as an inverter would.
- Cold start, before any slave: no measurement goes out as a number, limits are 0 A.
- All modules reporting, contactors closed: every decoded value equals one pack state seen on
  MQTT within half a step of its DBC signal (nothing clamped, nothing stale).
- One open-wire cell: the profile's bit from `shared.protection_codes` is set, limits are 0 A;
  after clear and reset the contactors close by themselves and the bit clears.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import can
import pytest

from services.can_gateway.codec import load_dbc
from shared.config import SystemConfig
from shared.messages import PackState
from shared.protection_codes import spec_of

from .agents import wait_until
from .test_transitions import (
    CELLS,
    STEADY_S,
    Stack,
    closed,
    no_fault_raised,
    reset_until_accepted,
    stack,
    system_config,
)

__all__ = ["stack"]  # the fixture, imported for pytest

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

PROFILES = ("pylon_v12", "pylon_hv")
MATCH_WINDOW_S = 1.5
"""A frame carries a pack state the gateway received at most this long before the frame."""
OPEN_WIRE = spec_of("open_wire")
assert OPEN_WIRE is not None and OPEN_WIRE.pylon_0x359 is not None
V12_FAULT_BIT = OPEN_WIRE.pylon_0x359[0]
HV_FAULT_BIT = OPEN_WIRE.pylon_hv_error
assert HV_FAULT_BIT is not None

HV_REQUEST_ID = 0x4200
HV_LAST_ANSWER_ID = 0x4290
HV_MEASUREMENTS = (0x4210, 0x4230, 0x4240, 0x4260, 0x4270)
HV_FORBIDDEN = 0xAA

Frames = dict[int, list[tuple[float, dict[str, Any]]]]
"""frame id -> (wall-clock receive time, decoded values), oldest first."""
Expect = Callable[[PackState], dict[str, float | None]]


# --- the inverter's view ------------------------------------------------------------------


def frames_since(stack: Stack, profile: str, t0: float) -> Frames:
    """Every frame received since monotonic `t0`, decoded by the profile's DBC."""
    db = load_dbc(profile)
    to_wall = time.time() - time.monotonic()
    with stack.inverter.lock:
        raw = {fid: [(t, d) for t, d in v if t >= t0] for fid, v in stack.inverter.frames.items()}
    out: Frames = {}
    for fid, seen in raw.items():
        if not seen:
            continue
        message = db.get_message_by_frame_id(fid)  # a frame outside the DBC fails here
        out[fid] = [(t + to_wall, dict(message.decode(d, decode_choices=False))) for t, d in seen]
    return out


def read(stack: Stack, profile: str) -> Frames:
    """One look: pylon_v12 every cyclic frame at least twice; pylon_hv one 0x4200 answer."""
    t0 = time.monotonic()
    if profile == "pylon_v12":
        time.sleep(2.2)
        return frames_since(stack, profile, t0)
    request = can.Message(arbitration_id=HV_REQUEST_ID, data=bytes(8), is_extended_id=True)
    stack.inverter.bus.send(request)  # byte 0 = 0x00: ensemble information
    answered = wait_until(lambda: HV_LAST_ANSWER_ID in frames_since(stack, profile, t0), 3)
    assert answered, f"no answer to 0x4200 within 3 s\n{stack.logs()}"
    time.sleep(0.1)  # a stray late frame would show as a second answer
    frames = frames_since(stack, profile, t0)
    twice = [hex(fid) for fid, seen in frames.items() if len(seen) != 1]
    assert not twice, f"one request, several answers: {twice}"
    return frames


def gateway_up(stack: Stack, profile: str) -> bool:
    """The gateway sends (pylon_v12) or answers (pylon_hv: asked here) on the link."""
    t0 = time.monotonic() - 1.0
    if profile == "pylon_hv":
        stack.inverter.bus.send(
            can.Message(arbitration_id=HV_REQUEST_ID, data=bytes(8), is_extended_id=True)
        )
        time.sleep(0.3)
    return bool(frames_since(stack, profile, t0))


def latest(frames: Frames, frame_id: int) -> dict[str, Any]:
    assert frame_id in frames, f"0x{frame_id:X} missing; got {sorted(map(hex, frames))}"
    return frames[frame_id][-1][1]


def tolerance(profile: str, frame_id: int, signal: str) -> float:
    """Half a step of the signal's DBC scaling: what encoding may round away."""
    sig = load_dbc(profile).get_message_by_frame_id(frame_id).get_signal_by_name(signal)
    return abs(sig.scale) / 2 + 1e-6


def assert_from_a_pack_state(
    stack: Stack, profile: str, frames: Frames, frame_id: int, expect: Expect
) -> PackState:
    """Each `frame_id` frame carries, in every signal `expect` names, the values of one pack
    state published on MQTT shortly before it (within its DBC scaling). A value that no state
    holds (clamped, invented, or sent while unknown) fails. Returns the state of the last."""
    with stack.watch.lock:
        states = list(stack.watch.states)
    found: PackState | None = None
    for t_frame, values in frames.get(frame_id, []):
        window = [s for s in states if t_frame - MATCH_WINDOW_S <= (s.ts or 0) <= t_frame]
        misses = []
        found = None
        for state in reversed(window):
            expected = expect(state)
            if any(v is None for v in expected.values()):
                misses.append(f"unknown in the state: {expected}")
                continue
            off = {
                name: (values[name], want)
                for name, want in expected.items()
                if abs(values[name] - want) > tolerance(profile, frame_id, name)  # type: ignore[operator]
            }
            if not off:
                found = state
                break
            misses.append(f"(sent, state): {off}")
        assert found is not None, (
            f"0x{frame_id:X} {values} is no pack state of the last {MATCH_WINDOW_S} s "
            f"({len(window)} states): {misses[:3]}"
        )
    return found  # type: ignore[return-value]


def v12_soc(s: PackState) -> dict[str, float | None]:
    return {"StateOfCharge": s.soc, "StateOfHealth": s.soh}


def v12_measurements(s: PackState) -> dict[str, float | None]:
    return {"BatteryVoltage": s.voltage, "BatteryCurrent": s.current}


def v12_limits(s: PackState) -> dict[str, float | None]:
    lim = s.limits
    return {
        "ChargeVoltageLimit": lim.charge_voltage_v,
        "DischargeVoltageLimit": lim.discharge_voltage_v,
        "ChargeCurrentLimit": lim.charge_current_a,
        "DischargeCurrentLimit": lim.discharge_current_a,
    }


def hv_ensemble(s: PackState) -> dict[str, float | None]:
    return {"PileVoltage": s.voltage, "PileCurrent": s.current, "StateOfCharge": s.soc,
            "StateOfHealth": s.soh}  # fmt: skip


def hv_limits(s: PackState) -> dict[str, float | None]:
    lim = s.limits
    return {
        "ChargeCutoffVoltage": lim.charge_voltage_v,
        "DischargeCutoffVoltage": lim.discharge_voltage_v,
        "MaxChargeCurrent": lim.charge_current_a,
        "MaxDischargeCurrent": -lim.discharge_current_a,  # default sign: sent as a negative current
    }


def hv_cells(s: PackState) -> dict[str, float | None]:
    def number(at: Any) -> float | None:  # 1-based place in the string
        return None if at is None else float(at.module * CELLS + at.index + 1)

    return {
        "MaxCellVoltage": s.cell_v_max,
        "MinCellVoltage": s.cell_v_min,
        "MaxCellVoltageNumber": number(s.cell_v_max_at),
        "MinCellVoltageNumber": number(s.cell_v_min_at),
    }


# --- what each profile must show ----------------------------------------------------------


def assert_fail_safe(stack: Stack, profile: str, config: SystemConfig, frames: Frames) -> None:
    """Nothing measured goes out as a number; charge and discharge stop."""
    if profile == "pylon_v12":
        assert 0x355 not in frames, f"0x355 sent SOC {latest(frames, 0x355)} while unknown"
        # 0x356 only where a state knew voltage and current (it fails on an invented one)
        assert_from_a_pack_state(stack, profile, frames, 0x356, v12_measurements)
        limits = latest(frames, 0x351)
        assert (limits["ChargeCurrentLimit"], limits["DischargeCurrentLimit"]) == (0, 0)
        assert limits["ChargeVoltageLimit"] == pytest.approx(config.charge_pack_voltage_v,
                                                             abs=0.05)  # fmt: skip
        flags = latest(frames, 0x359)
        assert flags["ProtectSystemError"] == flags["AlarmInternalComm"] == 1, flags
        enable = latest(frames, 0x35C)
        assert enable["ChargeEnable"] == enable["DischargeEnable"] == 0, enable
        return
    sent = sorted(hex(fid) for fid in HV_MEASUREMENTS if fid in frames)
    assert not sent, f"measurement answers while nothing is measured: {sent}"
    limits = latest(frames, 0x4220)
    assert limits["MaxChargeCurrent"] == pytest.approx(0, abs=1e-6), limits
    assert limits["MaxDischargeCurrent"] == pytest.approx(0, abs=1e-6), limits
    assert limits["ChargeCutoffVoltage"] == pytest.approx(config.charge_pack_voltage_v, abs=0.05)
    status = latest(frames, 0x4250)
    assert status["CyclePeriod"] == 0xFFFF, "cycles unknown: the DBC's not-available raw"
    assert status["InternalCommError"] == status["OtherError"] == 1, status
    assert status["BasicStatus"] == 0, status
    forbidden = latest(frames, 0x4280)
    assert forbidden == {"ChargeForbidden": HV_FORBIDDEN, "DischargeForbidden": HV_FORBIDDEN}


def assert_live_values(stack: Stack, profile: str, frames: Frames, *, released: bool) -> None:
    """Contactors closed, no fault: every value is a pack state's, the fault bit is clear.

    `released`: the master's limits have left 0 A (they hold 10 s after a close, then ramp),
    so charge and discharge are allowed."""
    if profile == "pylon_v12":
        for fid, expect in ((0x355, v12_soc), (0x356, v12_measurements), (0x351, v12_limits)):
            assert fid in frames, f"0x{fid:X} missing although known"
            state = assert_from_a_pack_state(stack, profile, frames, fid, expect)
            assert not state.faults and state.contactors == "closed", state
        flags = latest(frames, 0x359)
        assert flags[V12_FAULT_BIT] == flags["AlarmInternalComm"] == 0, flags
        limits, enable = latest(frames, 0x351), latest(frames, 0x35C)
        allowed = (limits["ChargeCurrentLimit"] > 0, limits["DischargeCurrentLimit"] > 0)
        assert (enable["ChargeEnable"] == 1, enable["DischargeEnable"] == 1) == allowed
        assert not released or allowed == (True, True), limits
        return
    for fid, expect in ((0x4210, hv_ensemble), (0x4220, hv_limits), (0x4230, hv_cells)):
        assert fid in frames, f"0x{fid:X} missing although known"
        state = assert_from_a_pack_state(stack, profile, frames, fid, expect)
        assert not state.faults and state.contactors == "closed", state
    status = latest(frames, 0x4250)
    assert status[HV_FAULT_BIT] == status["InternalCommError"] == status["OtherError"] == 0
    limits, forbidden = latest(frames, 0x4220), latest(frames, 0x4280)
    allowed = (limits["MaxChargeCurrent"] > 0, limits["MaxDischargeCurrent"] < 0)
    sent = (forbidden["ChargeForbidden"] == 0, forbidden["DischargeForbidden"] == 0)
    assert sent == allowed, (limits, forbidden)
    assert not released or allowed == (True, True), limits
    if 0x4260 not in frames:  # the cell snapshot (2 Hz) may trail the pack state: ask again
        time.sleep(1.0)
        frames = read(stack, profile)
    assert 0x4260 in frames, "every cell known: the module voltages go out"


def faulted(expect: Expect) -> Expect:
    """`expect`, but only a state with the open-wire fault can match."""

    def only_faulted(s: PackState) -> dict[str, float | None]:
        values = expect(s)
        return values if "open_wire" in s.faults else dict.fromkeys(values)

    return only_faulted


def assert_open_wire_shown(stack: Stack, profile: str, frames: Frames) -> None:
    """The fault's own bit is set from a known pack (not the fail-safe), limits are 0 A."""
    if profile == "pylon_v12":
        assert 0x356 in frames, "the pack stays known while one wire is open"
        assert_from_a_pack_state(stack, profile, frames, 0x356, faulted(v12_measurements))
        flags = latest(frames, 0x359)
        assert flags[V12_FAULT_BIT] == 1, flags
        limits, enable = latest(frames, 0x351), latest(frames, 0x35C)
        assert (limits["ChargeCurrentLimit"], limits["DischargeCurrentLimit"]) == (0, 0)
        assert enable["ChargeEnable"] == enable["DischargeEnable"] == 0, enable
        return
    assert 0x4230 in frames, "the pack stays known while one wire is open"
    assert_from_a_pack_state(stack, profile, frames, 0x4230, faulted(hv_cells))
    status = latest(frames, 0x4250)
    assert status[HV_FAULT_BIT] == 1, status
    assert status["InternalCommError"] == 0, "a known pack, not the fail-safe"
    limits = latest(frames, 0x4220)
    assert limits["MaxChargeCurrent"] == pytest.approx(0, abs=1e-6), limits
    assert limits["MaxDischargeCurrent"] == pytest.approx(0, abs=1e-6), limits
    assert latest(frames, 0x4280) == {"ChargeForbidden": HV_FORBIDDEN,
                                      "DischargeForbidden": HV_FORBIDDEN}  # fmt: skip
    assert 0x4260 not in frames, "a module with an unknown cell has no module voltage"


def released(stack: Stack) -> bool:
    s = stack.watch.latest()
    return s is not None and s.limits.charge_current_a > 0 and s.limits.discharge_current_a > 0


# --- the transitions ----------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_pylon_cold_start_live_values_and_open_wire(stack: Stack, profile: str) -> None:
    started = time.monotonic()
    data = system_config(stack.system, can_profiles=(profile,))
    config = SystemConfig.model_validate(data)
    for name in ("master_core", "modbus_gateway", "can_gateway"):
        stack.start(name)
    t0 = time.time()
    stack.apply(data)
    assert wait_until(lambda: stack.watch.latest() is not None, 20), stack.logs()

    # (a) cold start, no slave yet: nothing measured, nothing sent as a number
    assert wait_until(lambda: gateway_up(stack, profile), 20, step_s=0.5), stack.logs()
    time.sleep(0.5)  # answers to requests buffered before the channel opened are all in
    assert stack.watch.latest().soc is None  # type: ignore[union-attr]
    assert_fail_safe(stack, profile, config, read(stack, profile))

    # (b) every module reporting, contactors closed: the values of the pack state
    stack.start("slave_agent")
    assert wait_until(lambda: closed(stack), STEADY_S), stack.logs()
    assert wait_until(lambda: released(stack), 20), stack.watch.latest()
    assert_live_values(stack, profile, read(stack, profile), released=True)
    no_fault_raised(stack, t0)

    # (c) one open sense wire: the profile's own fault bit; clear and reset: closed again
    stack.inject("open_wire", "--module", "2", "--channel", "3")
    assert wait_until(lambda: "open_wire" in stack.watch.latest().faults, 10), stack.logs()  # type: ignore[union-attr]
    time.sleep(0.5)  # the gateway has the faulted state, too
    assert_open_wire_shown(stack, profile, read(stack, profile))
    stack.inject("clear")
    assert wait_until(lambda: stack.watch.telemetry[1].cell_flags[2] == 0, 5)
    reset_until_accepted(stack, 10)
    assert wait_until(lambda: closed(stack), STEADY_S), stack.logs()
    assert_live_values(stack, profile, read(stack, profile), released=False)
    assert stack.watch.faults_raised_since(t0) == {"open_wire"}
    assert time.monotonic() - started < 90, "the matrix step took too long"
