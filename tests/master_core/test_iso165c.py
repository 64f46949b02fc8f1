"""The iso165C decoder/state core and the simulated device: frames follow foxBMS 2 and the
manual byte for byte, every status bit has its named effect on the value and the state, error
responses and the device-internal self-test results are reported, and nothing outlives its
timeout."""

from __future__ import annotations

import cantools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.master_core.drivers.iso165c import (
    EFFECT_STATE,
    INFO_BITS,
    INFO_ID,
    INFO_NOTES,
    STATUS_EXT_BITS,
    VALUE_KEPT,
    Command,
    FaultSide,
    HvRelay,
    InsulationState,
    Iso165cCore,
    RejectReason,
    SelfTestScenario,
    error_threshold_frame,
    hv_relay_frame,
    mean_factor_frame,
    measurement_frame,
    message,
    request_frame,
    self_test_frame,
    unlock_frame,
    warning_threshold_frame,
)
from services.plant.devices.iso165c import SimulatedIso165c

NOT_EXECUTED = {"II_VIFC_STATUS_12_ST_Overall": 1, "II_VIFC_STATUS_13_ST_ParamConfig": 1}


def info(raw_kohm: int, bits: frozenset[str] | set[str] = frozenset(), **extra: int) -> bytes:
    """An IMD_Info encoded straight from the DBC (not through the simulator)."""
    signals: dict[str, float] = {
        sig.name: 0 for sig in message(INFO_ID).signals if sig.name != "II_IMC_R_ISO"
    }
    signals.update({bit: 1 for bit in bits})
    signals.update(extra)
    signals["II_IMC_R_ISO"] = raw_kohm * 1000
    return bytes(message(INFO_ID).encode(signals, strict=True))


def measuring_sim(resistance_ohm: float = 2_000_000.0) -> SimulatedIso165c:
    return SimulatedIso165c(resistance_ohm=resistance_ohm, measuring=True, locked=False)


def test_frame_layout_matches_foxbms_and_the_manual() -> None:
    """1234 kOhm below a 2000 kOhm warning threshold, no self-test yet: R_ISO low byte first,
    D_IMC_STATUS bit 5, D_VIFC_STATUS bits 12 and 13 (foxBMS start bits 0, 21, 44, 45)."""
    sim = measuring_sim(1_234_000.0)
    sim.warning_threshold_ohm = 2_000_000.0
    assert sim.info_frame(0.0) == (0x37, bytes.fromhex("d20420000030"))
    sim.measuring = False  # bit 32: measurement deactivated, and no value
    assert sim.info_frame(0.0) == (0x37, bytes.fromhex("000000000130"))


def test_requests_follow_the_manual_bytes() -> None:
    """The manual's own example (6.3.1): unlock is 0x22, DLC 5, CA 00 00 00 00."""
    assert unlock_frame() == (0x22, bytes.fromhex("ca00000000"))
    assert measurement_frame(True) == (0x22, bytes.fromhex("cb01000000"))
    assert measurement_frame(False) == (0x22, bytes.fromhex("cb00000000"))
    assert self_test_frame() == (0x22, bytes.fromhex("2101000000"))
    assert self_test_frame(SelfTestScenario.PARAMETER_CONFIG)[1] == bytes.fromhex("2102000000")
    assert error_threshold_frame(500_000.0)[1] == bytes.fromhex("28f4010000")
    assert warning_threshold_frame(750_000.0)[1] == bytes.fromhex("29ee020000")
    assert mean_factor_frame(10)[1] == bytes.fromhex("2b0a000000")
    assert hv_relay_frame(HvRelay.POSITIVE, True)[1] == bytes.fromhex("d201000100")
    assert request_frame(Command.GET_R_ISO) == (0x22, bytes.fromhex("3500000000"))
    assert request_frame(Command.GET_HV_RELAIS, 1)[1] == bytes.fromhex("dd01000000")


@pytest.mark.parametrize(
    "frame",
    [
        lambda: error_threshold_frame(20_000.0),
        lambda: error_threshold_frame(1_500_000.0),
        lambda: warning_threshold_frame(3_000_000.0),
        lambda: mean_factor_frame(0),
        lambda: mean_factor_frame(21),
    ],
)
def test_a_setting_out_of_the_device_range_is_refused_not_clamped(frame: object) -> None:
    with pytest.raises(cantools.database.EncodeError):
        frame()  # type: ignore[operator]


@given(raw_kohm=st.integers(0, 50_000), now_s=st.floats(0, 1e6))
def test_a_resistance_round_trips_in_ohm(raw_kohm: int, now_s: float) -> None:
    core = Iso165cCore(stale_after_s=3.0)
    assert core.feed(INFO_ID, info(raw_kohm), now_s) is None
    reading = core.reading(now_s)
    assert reading.resistance_ohm == raw_kohm * 1000.0
    assert reading.state is InsulationState.MEASURING
    assert reading.errors == () and not reading.stale


@given(bits=st.sets(st.sampled_from(sorted(INFO_BITS))), note=st.booleans())
def test_every_status_bit_has_its_named_effect(bits: set[str], note: bool) -> None:
    core = Iso165cCore(stale_after_s=3.0)
    notes = set(INFO_NOTES) if note else set()
    core.feed(INFO_ID, info(420, bits | notes), 0.0)
    reading = core.reading(0.0)
    effects = [INFO_BITS[b][1] for b in bits]
    assert (reading.resistance_ohm is None) == any(e not in VALUE_KEPT for e in effects)
    if reading.resistance_ohm is not None:
        assert reading.resistance_ohm == 420_000.0
    expected = EFFECT_STATE[max(effects)] if effects else InsulationState.MEASURING
    assert reading.state is expected
    names = {INFO_BITS[b][0] for b in bits} | {INFO_NOTES[n] for n in notes}
    assert set(reading.errors) == names


def test_the_alarm_keeps_the_value_and_outranks_the_warning() -> None:
    core = Iso165cCore(stale_after_s=3.0)
    bits = {"II_IMC_STATUS_00_IsoFailure", "II_IMC_STATUS_05_IsoWarning"}
    core.feed(INFO_ID, info(80, bits), 0.0)
    reading = core.reading(0.0)
    assert reading.state is InsulationState.ALARM and reading.resistance_ohm == 80_000.0


def test_a_self_test_raising_the_fault_bit_is_a_self_test_not_an_alarm() -> None:
    core = Iso165cCore(stale_after_s=3.0)
    core.feed(INFO_ID, info(0, {"II_IMC_STATUS_04_Selftest", "II_IMC_STATUS_00_IsoFailure"}), 0)
    reading = core.reading(0.0)
    assert reading.state is InsulationState.SELF_TEST and reading.resistance_ohm is None


@pytest.mark.parametrize("raw_kohm", [50_001, 65_535])
def test_a_resistance_beyond_the_documented_range_is_no_value(raw_kohm: int) -> None:
    core = Iso165cCore(stale_after_s=3.0)
    core.feed(INFO_ID, info(raw_kohm), 0.0)
    reading = core.reading(0.0)
    assert reading.resistance_ohm is None
    assert reading.state is InsulationState.NOT_MEASURED
    assert reading.errors == ("resistance_out_of_range",)


@pytest.mark.parametrize(
    ("flags", "executed"),
    [
        (NOT_EXECUTED, False),
        ({"II_VIFC_STATUS_12_ST_Overall": 1}, True),
        ({"II_VIFC_STATUS_13_ST_ParamConfig": 1}, True),
        ({}, True),
    ],
)
def test_any_self_test_since_power_up_counts_as_executed(
    flags: dict[str, int], executed: bool
) -> None:
    core = Iso165cCore(stale_after_s=3.0)
    core.feed(INFO_ID, info(1000, set(), **flags), 0.0)
    assert core.reading(0.0).self_test_executed is executed


@given(stale_after_s=st.floats(0.01, 10), age_s=st.floats(0, 20))
def test_nothing_outlives_its_timeout(stale_after_s: float, age_s: float) -> None:
    core = Iso165cCore(stale_after_s=stale_after_s)
    core.feed(INFO_ID, info(1500, {"II_IMC_STATUS_05_IsoWarning"}), 100.0)
    reading = core.reading(100.0 + age_s)
    fresh = (100.0 + age_s) - 100.0 <= stale_after_s  # the age as the core sees it
    assert (reading.resistance_ohm is not None) == fresh
    assert reading.stale is not fresh
    assert reading.state is (InsulationState.WARNING if fresh else InsulationState.STALE)
    assert ("info:stale" in reading.errors) is not fresh


def test_a_monitor_never_heard_is_not_measured_and_stale() -> None:
    reading = Iso165cCore(stale_after_s=3.0).reading(0.0)
    assert reading.resistance_ohm is None and reading.stale
    assert reading.state is InsulationState.NOT_MEASURED
    assert reading.errors == ("info:missing",)


@pytest.mark.parametrize(
    ("frame_id", "data", "reason"),
    [
        (0x38, bytes(6), RejectReason.UNKNOWN_ID),
        (0x22, bytes(5), RejectReason.UNKNOWN_ID),  # our own request is not for the core
        (0x37, bytes(5), RejectReason.WRONG_LENGTH),
        (0x37, bytes(8), RejectReason.WRONG_LENGTH),
        (0x23, bytes(4), RejectReason.WRONG_LENGTH),
        (0x23, bytes(6), RejectReason.WRONG_LENGTH),
        (0x23, bytes.fromhex("9900000000"), RejectReason.UNKNOWN_COMMAND),
    ],
)
def test_bad_frames_are_counted_and_change_nothing(
    frame_id: int, data: bytes, reason: RejectReason
) -> None:
    core = Iso165cCore(stale_after_s=3.0)
    core.feed(INFO_ID, info(700), 0.0)
    assert core.feed(frame_id, data, 0.1) is reason
    assert core.rejected == {reason: 1}
    assert sum(core.responses.values()) == 0
    assert core.reading(0.1).resistance_ohm == 700_000.0


def test_a_self_test_runs_then_measuring_resumes() -> None:
    sim, core = measuring_sim(3_000_000.0), Iso165cCore(stale_after_s=3.0)
    sim.self_test_duration_s = 2.0
    core.feed(INFO_ID, sim.info_frame(0.0)[1], 0.0)
    assert core.reading(0.0).self_test_executed is False
    assert core.feed(*sim.command(self_test_frame()[1], 0.0), 0.0) is None
    assert core.acknowledged(Command.CTL_SELFTEST) == 1
    core.feed(*sim.info_frame(1.0), 1.0)
    reading = core.reading(1.0)
    assert reading.state is InsulationState.SELF_TEST and reading.resistance_ohm is None
    core.feed(*sim.info_frame(2.5), 2.5)
    reading = core.reading(2.5)
    assert reading.state is InsulationState.MEASURING
    assert reading.resistance_ohm == 3_000_000.0 and reading.self_test_executed


@pytest.mark.parametrize(
    ("fault", "condition"),
    [
        ("system_failure", "system_failure"),
        ("chassis_fault", "chassis_fault"),
        ("imc_connection_lost", "imc_connection_error"),
    ],
)
def test_a_device_error_gives_no_value(fault: str, condition: str) -> None:
    sim, core = measuring_sim(), Iso165cCore(stale_after_s=3.0)
    setattr(sim, fault, True)
    core.feed(*sim.info_frame(0.0), 0.0)
    reading = core.reading(0.0)
    assert reading.state is InsulationState.DEVICE_ERROR and reading.resistance_ohm is None
    assert condition in reading.errors


@given(faults=st.sets(st.sampled_from(sorted(STATUS_EXT_BITS)), min_size=1))
def test_internal_self_test_results_are_device_errors_while_fresh(faults: set[str]) -> None:
    sim, core = measuring_sim(), Iso165cCore(stale_after_s=3.0)
    core.feed(*sim.info_frame(0.0), 0.0)
    sim.status_ext_faults = faults
    core.feed(*sim.command(request_frame(Command.GET_STATUS)[1], 0.0), 0.0)
    reading = core.reading(0.0)
    assert reading.state is InsulationState.DEVICE_ERROR and reading.resistance_ohm is None
    assert {f"imc:{STATUS_EXT_BITS[f]}" for f in faults} <= set(reading.errors)
    # a newer status without faults clears them
    sim.status_ext_faults = set()
    core.feed(*sim.command(request_frame(Command.GET_STATUS)[1], 1.0), 1.0)
    core.feed(*sim.info_frame(1.0), 1.0)
    assert core.reading(1.0).state is InsulationState.MEASURING


def test_an_error_response_is_counted_and_named_while_fresh() -> None:
    sim, core = SimulatedIso165c(), Iso165cCore(stale_after_s=3.0)  # powers up locked
    core.feed(*sim.info_frame(0.0), 0.0)
    assert core.feed(*sim.command(error_threshold_frame(500_000.0)[1], 0.0), 0.0) is None
    assert core.command_errors == {0x28: 1}
    assert core.acknowledged(Command.SET_R_ISO_ERR_THR) == 0
    condition = "command_rejected:S_IMC_SET_R_ISO_ERR_THR:VIFC_CommandLocked"
    assert condition in core.reading(0.0).errors
    core.feed(*sim.info_frame(3.5), 3.5)
    assert condition not in core.reading(3.5).errors


@pytest.mark.parametrize(
    ("request_data", "code", "failed"),
    [
        (bytes.fromhex("ca01000000"), "VIFC_InvalidParameter", 0xCA),  # lock without password
        (bytes.fromhex("9900000000"), "VIFC_UnknownCommand", 0x99),
        (bytes.fromhex("cb01"), "VIFC_InvalidParameter", 0xCB),
        (bytes.fromhex("d202000100"), "VIFC_InvalidParameter", 0xD2),  # no such relay
    ],
)
def test_the_simulated_device_answers_bad_requests_with_error_responses(
    request_data: bytes, code: str, failed: int
) -> None:
    sim = SimulatedIso165c(locked=False)
    frame_id, data = sim.command(request_data, 0.0)
    decoded = message(frame_id).decode(data)
    assert isinstance(decoded, dict)
    assert decoded["IMD_Response_Command"] == "S_IMD_ERROR_FRAME"
    assert decoded["IG_IMD_ERROR_CODE"] == code
    assert decoded["IG_IMD_FAILED_CMD"] == failed


def test_the_simulated_device_unlocks_only_with_the_password_and_then_takes_settings() -> None:
    sim, core = SimulatedIso165c(), Iso165cCore(stale_after_s=3.0)
    core.feed(*sim.command(request_frame(Command.CTL_LOCK, 0, 0x1234)[1], 0.0), 0.0)
    assert sim.locked and core.command_errors == {0xCA: 1}
    for frame in (
        unlock_frame(),
        warning_threshold_frame(750_000.0),
        error_threshold_frame(500_000.0),
        mean_factor_frame(10),
        hv_relay_frame(HvRelay.NEGATIVE, True),
    ):
        assert core.feed(*sim.command(frame[1], 0.0), 0.0) is None
    assert not sim.locked and sim.mean_factor == 10
    assert (sim.warning_threshold_ohm, sim.error_threshold_ohm) == (750_000.0, 500_000.0)
    assert sim.relays_closed == {HvRelay.NEGATIVE: True, HvRelay.POSITIVE: False}
    assert core.echoed[Command.SET_R_ISO_WRN_THR] == {"IS_IMC_R_ISO_WRN_THR": 750_000.0}
    core.feed(*sim.command(request_frame(Command.GET_HV_RELAIS, 0)[1], 0.0), 0.0)
    assert core.echoed[Command.GET_HV_RELAIS]["IG_VIFC_HV_RELAIS_STATE"] == 1


@pytest.mark.parametrize("side", [FaultSide.HV_PLUS, FaultSide.HV_MINUS, None])
def test_the_fault_side_comes_from_a_fresh_resistance_response(side: FaultSide | None) -> None:
    sim, core = measuring_sim(60_000.0), Iso165cCore(stale_after_s=3.0)
    sim.fault_side = side
    core.feed(*sim.info_frame(0.0), 0.0)
    core.feed(*sim.command(request_frame(Command.GET_R_ISO)[1], 0.0), 0.0)
    assert core.echoed[Command.GET_R_ISO]["IG_IMC_R_ISO"] == 60_000.0
    assert core.reading(0.0).fault_side is side
    core.feed(*sim.info_frame(3.5), 3.5)
    assert core.reading(3.5).fault_side is None


def test_a_deactivated_measurement_reports_zero_but_reads_unknown() -> None:
    sim, core = SimulatedIso165c(resistance_ohm=1e6), Iso165cCore(stale_after_s=3.0)
    frame_id, data = sim.info_frame(0.0)
    assert data[:2] == b"\0\0"
    core.feed(frame_id, data, 0.0)
    reading = core.reading(0.0)
    assert reading.resistance_ohm is None
    assert reading.state is InsulationState.NOT_MEASURED
    assert reading.errors == ("measurement_deactivated",)


@given(resistance_ohm=st.floats(0, 1e9), warn_kohm=st.integers(40, 2000))
def test_the_simulated_thresholds_drive_warning_and_alarm(
    resistance_ohm: float, warn_kohm: int
) -> None:
    sim, core = measuring_sim(resistance_ohm), Iso165cCore(stale_after_s=3.0)
    sim.warning_threshold_ohm = warn_kohm * 1000.0
    sim.error_threshold_ohm = 30_000.0
    core.feed(*sim.info_frame(0.0), 0.0)
    reading = core.reading(0.0)
    expected = (
        InsulationState.ALARM
        if resistance_ohm < 30_000.0
        else InsulationState.WARNING
        if resistance_ohm < warn_kohm * 1000.0
        else InsulationState.MEASURING
    )
    assert reading.state is expected
    assert reading.resistance_ohm == min(round(resistance_ohm / 1000.0), 50_000) * 1000.0
