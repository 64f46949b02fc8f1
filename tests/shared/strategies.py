"""Hypothesis strategies for valid payloads of every topic."""

from __future__ import annotations

from hypothesis import strategies as st

from shared.messages import (
    CellTelemetry,
    CommandReply,
    CommandRequest,
    Event,
    Limits,
    PackState,
)

finite = st.floats(allow_nan=False, allow_infinity=False)
ts = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@st.composite
def cell_telemetry(draw: st.DrawFn) -> CellTelemetry:
    cells = draw(st.integers(1, 196))
    temps = draw(st.integers(0, 64))
    return CellTelemetry(
        module=draw(st.integers(0, 195)),
        mode=draw(st.sampled_from(["working", "standby"])),
        sample_ts=draw(ts),
        cell_mv=draw(st.lists(st.integers(0, 6000), min_size=cells, max_size=cells)),
        cell_flags=draw(st.lists(st.integers(0, 7), min_size=cells, max_size=cells)),
        balancing=draw(st.lists(st.booleans(), min_size=cells, max_size=cells)),
        temp_c=draw(st.lists(st.floats(-60, 200), min_size=temps, max_size=temps)),
        temp_flags=draw(st.lists(st.integers(0, 7), min_size=temps, max_size=temps)),
        overruns=draw(st.integers(0, 2**31)),
    )


codes = st.lists(st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True), max_size=5)


@st.composite
def pack_state(draw: st.DrawFn) -> PackState:
    v_min = draw(st.floats(0, 6))
    v_max = draw(st.floats(v_min, 6))
    return PackState(
        soc=draw(st.floats(0, 100)),
        soh=draw(st.floats(0, 100)),
        voltage=draw(st.floats(0, 1200)),
        current=draw(st.floats(-1000, 1000)),
        contactors=draw(st.sampled_from(["standby", "precharge", "closed", "opening", "fault"])),
        mode=draw(st.sampled_from(["working", "standby"])),
        cell_v_min=v_min,
        cell_v_max=v_max,
        cell_v_avg=draw(st.floats(v_min, v_max)),
        limits=Limits(
            charge_voltage_v=draw(st.floats(0, 1200)),
            discharge_voltage_v=draw(st.floats(0, 1200)),
            charge_current_a=draw(st.floats(0, 1000)),
            discharge_current_a=draw(st.floats(0, 1000)),
        ),
        faults=draw(codes),
        alarms=draw(codes),
        warnings=draw(codes),
    )


@st.composite
def event(draw: st.DrawFn) -> Event:
    return Event(
        level=draw(st.sampled_from(["info", "warning", "alarm", "fault"])),
        kind=draw(st.sampled_from(["raise", "clear", "mode", "command", "config", "info"])),
        code=draw(st.from_regex(r"[a-z0-9_]{1,30}", fullmatch=True)),
        text=draw(st.text(max_size=100)),
        values=draw(
            st.dictionaries(
                st.text(max_size=10),
                st.one_of(
                    st.none(),
                    st.booleans(),
                    st.integers(-(2**31), 2**31),
                    finite,
                    st.text(max_size=10),
                ),
                max_size=5,
            )
        ),
    )


@st.composite
def command_request(draw: st.DrawFn) -> CommandRequest:
    return CommandRequest(
        command=draw(st.sampled_from(["contactors", "reset_faults", "set_mode", "heartbeat"])),
        correlation_id=draw(st.text(min_size=1, max_size=64)),
        reply_to="bms/v1/demo/reply/config_ui/x",
        expires_at=draw(ts),
        args=draw(
            st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**64 - 1), max_size=3)
        ),
    )


@st.composite
def command_reply(draw: st.DrawFn) -> CommandReply:
    return CommandReply(
        command=draw(st.sampled_from(["contactors", "reset_faults"])),
        correlation_id=draw(st.text(min_size=1, max_size=64)),
        status=draw(st.sampled_from(["accepted", "refused"])),
        reason=draw(st.text(max_size=50)),
    )


any_message = st.one_of(cell_telemetry(), pack_state(), event(), command_request(), command_reply())
