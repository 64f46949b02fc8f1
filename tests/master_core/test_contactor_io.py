"""The contactor I/O driver: pure parts with hypothesis, then over Modbus TCP and RTU (socat pty)
against a simulated relay module."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.master_core.contactors import CONTACTORS, ContactorFeedback, ContactorOutputs
from services.master_core.drivers.contactor_io import (
    ContactorIo,
    ContactorIoFeedback,
    ModbusContactorIo,
    Span,
    bits_at,
    fresh_feedback,
    span_of,
)
from services.plant.devices.relay import RelayModule
from shared.config import ContactorIoConfig, SystemConfig, demo_config
from shared.ports import free_port
from tests.slave_agent.test_modbus_driver import SOCAT, SocatLink

FOLLOW_S = 0.03
BAUD = 115200

# --- pure parts ----------------------------------------------------------------------------


@given(
    addresses=st.lists(st.integers(0, 65535), min_size=3, max_size=3, unique=True).filter(
        lambda a: max(a) - min(a) < 2000
    ),
    data=st.data(),
)
def test_each_contactor_reads_its_own_bit(addresses: list[int], data: st.DataObject) -> None:
    span = span_of(addresses)
    assert span.address == min(addresses)
    assert span.address + span.count - 1 == max(addresses)
    bits = data.draw(st.lists(st.booleans(), min_size=span.count, max_size=span.count))
    named = dict(zip(CONTACTORS, addresses, strict=True))
    picked = bits_at(span, bits, named)
    assert picked == {n: bits[a - span.address] for n, a in named.items()}


def test_a_short_reply_is_refused() -> None:
    with pytest.raises(ValueError, match="2 bits returned for 3 asked"):
        bits_at(Span(0, 3), [True, False], {"precharge": 2})


@given(
    contacts=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    sampled_at_s=st.floats(0.0, 1e6),
    age_s=st.floats(-10.0, 10.0),
    max_age_s=st.floats(0.001, 5.0),
)
def test_feedback_is_the_sample_while_fresh_and_unknown_after(
    contacts: tuple[bool, bool, bool], sampled_at_s: float, age_s: float, max_age_s: float
) -> None:
    now_s = sampled_at_s + age_s
    sample = dict(zip(CONTACTORS, contacts, strict=True))
    feedback = fresh_feedback(sample, sampled_at_s, now_s, max_age_s, ("e",))
    assert feedback.errors == ("e",)
    if 0.0 <= now_s - sampled_at_s <= max_age_s:
        assert not feedback.stale
        assert feedback.to_feedback() == ContactorFeedback(*contacts)
    else:
        assert feedback.stale
        assert [feedback.contact(n) for n in CONTACTORS] == [None, None, None]
        assert feedback.to_feedback() is None


def test_never_read_is_stale() -> None:
    feedback = fresh_feedback(None, None, 5.0, 1.0, ())
    assert feedback.stale and feedback.to_feedback() is None


def test_defaults_keep_existing_configurations_valid() -> None:
    assert demo_config().contactors.io == ContactorIoConfig()
    SystemConfig.model_validate(demo_config().model_dump(mode="json"))


@pytest.mark.parametrize("kind", ["coil", "input"])
def test_two_contactors_on_one_address_are_refused(kind: str) -> None:
    with pytest.raises(ValidationError, match=f"two contactors share one {kind} address"):
        ContactorIoConfig.model_validate({f"{kind}_precharge": 0})


def test_addresses_out_of_range_are_refused() -> None:
    with pytest.raises(ValidationError):
        ContactorIoConfig(coil_precharge=65536)
    with pytest.raises(ValidationError):
        ContactorIoConfig(unit_id=0)


# --- over the wire -------------------------------------------------------------------------


def outputs(positive: bool, negative: bool, precharge: bool) -> ContactorOutputs:
    return ContactorOutputs(positive, negative, precharge, state="precharge", reason="test")


MakeIo = Callable[..., ModbusContactorIo]


@pytest.fixture(params=["tcp", "rtu"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RelayModule, MakeIo]]:
    module = RelayModule(follow_delay_s=FOLLOW_S)
    link: SocatLink | None = None
    drivers: list[ModbusContactorIo] = []
    base: dict[str, object]
    try:
        if request.param == "tcp":
            port = free_port()
            module.start_tcp(port)
            base = {"transport": "tcp", "tcp_port": port}
        else:
            if SOCAT is None:
                pytest.skip("socat is needed for a pty pair")
            link = SocatLink(tmp_path)
            link.start()
            module.start_rtu(link.board, BAUD)
            # A pty takes no parity setting.
            base = {"transport": "rtu", "serial_port": link.agent, "baudrate": BAUD, "parity": "N"}
    except BaseException:
        module.stop()
        if link is not None:
            link.stop()
        raise

    def make(**overrides: object) -> ModbusContactorIo:
        io = ModbusContactorIo(ContactorIoConfig.model_validate(base | overrides))
        drivers.append(io)
        return io

    try:
        yield module, make
    finally:
        for io in drivers:
            io.close()
        module.stop()
        if link is not None:
            link.stop()


def settle(io: ContactorIo, until: Callable[[ContactorIoFeedback], bool]) -> ContactorIoFeedback:
    deadline = time.monotonic() + 2.0
    while True:
        feedback = io.read(time.monotonic())
        if until(feedback) or time.monotonic() > deadline:
            return feedback
        time.sleep(0.01)


def test_coil_writes_arrive_and_feedback_follows(rig: tuple[RelayModule, MakeIo]) -> None:
    module, make = rig
    io = make(coil_main_positive=5, coil_main_negative=3, coil_precharge=4, input_precharge=6)
    module.wiring = {5: 0, 3: 1, 4: 6}
    first = io.read(time.monotonic())
    assert first.to_feedback() == ContactorFeedback(False, False, False), first.errors
    io.write(outputs(False, True, True))
    assert module.coils()[3:6] == [True, True, False]
    assert {(c, v) for _, c, v in module.coil_writes} == {(5, False), (3, True), (4, True)}
    right_after = io.read(time.monotonic() + 1.0)  # a poll is due; contacts not moved yet
    assert right_after.to_feedback() == ContactorFeedback(False, False, False)
    feedback = settle(io, lambda f: f.main_negative is True and f.precharge is True)
    assert feedback.to_feedback() == ContactorFeedback(False, True, True)
    assert feedback.errors == ()
    assert sum(io.error_counts.values()) == 0


def test_a_sample_is_kept_within_the_poll_period_only(rig: tuple[RelayModule, MakeIo]) -> None:
    module, make = rig
    io = make(poll_period_s=0.5, timeout_s=0.2)
    t0 = time.monotonic()
    assert not io.read(t0).stale
    module.silent = True
    cached = io.read(t0 + 0.4)  # no poll due: the sample from t0 is 0.4 s old, still fresh
    assert not cached.stale and cached.errors == ()
    polled = io.read(t0 + 0.6)  # poll due, no answer
    assert polled.stale and polled.to_feedback() is None
    assert polled.errors and "no valid reply within 0.2 s" in polled.errors[0]


def test_illegal_addresses_are_named_errors_and_stale_feedback(
    rig: tuple[RelayModule, MakeIo],
) -> None:
    _, make = rig
    # a generous timeout: a pty on a loaded machine must not turn the exception into a timeout
    io = make(coil_precharge=40, input_precharge=40, timeout_s=1.0)
    io.write(outputs(False, False, True))
    feedback = io.read(time.monotonic())
    assert feedback.stale and feedback.main_positive is None
    assert len(feedback.errors) == 2
    assert "write coil 40 (precharge)" in feedback.errors[0]
    assert "read inputs (discrete inputs 0, count 41)" in feedback.errors[1]
    assert all("ILLEGAL_ADDRESS" in e for e in feedback.errors)
    assert io.error_counts["exception"] == 2
    assert io.read(time.monotonic() + 1.0).errors == feedback.errors[1:]  # reported once each


def test_a_silent_module_times_out_then_recovers(rig: tuple[RelayModule, MakeIo]) -> None:
    module, make = rig
    io = make(timeout_s=0.1, poll_period_s=0.01)
    assert not io.read(time.monotonic()).stale
    module.silent = True
    io.write(outputs(True, True, False))
    feedback = io.read(time.monotonic())
    assert feedback.stale and feedback.to_feedback() is None
    assert io.error_counts["timeout"] == 2, feedback.errors  # the write and the poll
    assert all("no valid reply within 0.1 s" in e for e in feedback.errors)
    module.silent = False
    recovered = settle(io, lambda f: not f.stale)
    assert not recovered.stale, recovered.errors


def test_a_welded_contact_stays_closed_after_opening(rig: tuple[RelayModule, MakeIo]) -> None:
    module, make = rig
    io = make()
    io.write(outputs(True, True, False))
    settle(io, lambda f: f.main_positive is True and f.main_negative is True)
    module.weld(0)
    io.write(outputs(False, False, False))
    assert module.coils()[:3] == [False, False, False]
    settle(io, lambda f: f.main_negative is False)
    time.sleep(3 * FOLLOW_S)
    feedback = io.read(time.monotonic() + 10.0)
    assert feedback.to_feedback() == ContactorFeedback(True, False, False)


def test_a_stuck_open_contact_never_confirms(rig: tuple[RelayModule, MakeIo]) -> None:
    module, make = rig
    module.stick_open(2)
    io = make()
    io.write(outputs(False, True, True))
    settle(io, lambda f: f.main_negative is True)
    time.sleep(3 * FOLLOW_S)
    assert io.read(time.monotonic() + 10.0).to_feedback() == ContactorFeedback(False, True, False)


def test_no_module_at_all_is_a_connection_error() -> None:
    io = ModbusContactorIo(ContactorIoConfig(tcp_port=free_port(), timeout_s=0.1))
    try:
        io.write(outputs(True, False, False))
        feedback = io.read(0.0)
    finally:
        io.close()
    assert feedback.stale
    assert io.error_counts["connection"] == 2, feedback.errors
    assert "link unavailable" in feedback.errors[0]


def test_a_coil_that_does_not_take_the_write_is_reported(rig: tuple[RelayModule, MakeIo]) -> None:
    module, make = rig
    module.dead_coils.add(1)
    io = make()
    io.write(outputs(False, True, True))
    assert module.coils()[:3] == [False, False, True]
    errors = io.read(time.monotonic()).errors
    assert len(errors) == 1
    assert errors[0].endswith("coils read back wrong: main_negative reads False, commanded True")
    assert io.error_counts["readback"] == 1


def test_a_failed_coil_write_still_drops_the_others_and_energises_nothing(
    rig: tuple[RelayModule, MakeIo],
) -> None:
    """Found by the fault matrix: the writes stopped at the first failure, so a trip left main
    negative on. Main positive is wired to an address the module refuses (ILLEGAL_ADDRESS)."""
    module, make = rig
    good = make()
    good.write(outputs(False, True, True))
    assert module.coils()[:3] == [False, True, True]
    good.close()  # a serial port takes one client
    broken = make(coil_main_positive=1000)  # the module has no such coil
    broken.write(outputs(False, False, False))
    assert module.coils()[1:3] == [False, False], "the other coils must drop"
    assert any("write coil" in e for e in broken.read(time.monotonic()).errors)
    broken.write(outputs(True, True, False))  # on after a failed off-write: nothing energised
    assert module.coils()[:3] == [False, False, False]
