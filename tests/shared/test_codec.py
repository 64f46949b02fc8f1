"""Contract round trips and malformed input: decoding only ever raises PayloadError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.codec import MAX_PAYLOAD_BYTES, PayloadError, decode, encode, unpack
from shared.messages import CellSnapshot, CellTelemetry, Message, PackState
from shared.topics import TOPICS

from .strategies import any_message, cell_telemetry

TOPIC = "bms/v1/demo/slave/0/telemetry"


def valid_telemetry_dict() -> dict[str, object]:
    msg = CellTelemetry(
        module=2, mode="working", sample_ts=1.7e9, cell_mv=[3300, 3301, 3302],
        cell_flags=[0, 0, 0], balancing=[False, True, False], temp_c=[25.0], temp_flags=[0],
    )  # fmt: skip
    return msg.stamped(source="slave_agent", seq=7, ts=1.7e9)


@given(any_message)
@settings(max_examples=300)
def test_every_payload_survives_a_round_trip(message: Message) -> None:
    raw = encode(message, source="svc", seq=42, ts=123.5)
    back = decode(type(message), "bms/v1/demo/x", raw)
    assert back.source == "svc" and back.seq == 42 and back.ts == 123.5
    assert back.model_dump(exclude=Message.ENVELOPE_FIELDS) == message.model_dump(
        exclude=Message.ENVELOPE_FIELDS
    )


@given(cell_telemetry())
def test_envelope_set_by_the_publisher_is_kept(message: CellTelemetry) -> None:
    fixed = message.model_copy(update={"seq": 9, "source": "rack1"})
    back = decode(CellTelemetry, TOPIC, encode(fixed, source="other", seq=1, ts=1.0))
    assert (back.seq, back.source) == (9, "rack1")


@given(st.binary(max_size=2000))
@settings(max_examples=500)
def test_random_bytes_raise_only_payload_error(raw: bytes) -> None:
    for spec in TOPICS:
        try:
            decode(spec.payload, TOPIC, raw)
        except PayloadError as err:
            assert err.topic == TOPIC and err.field


@given(cell_telemetry(), st.data())
def test_truncated_msgpack_is_refused(message: CellTelemetry, data: st.DataObject) -> None:
    raw = encode(message, source="s", seq=0, ts=1.0)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(PayloadError) as exc:
        decode(CellTelemetry, TOPIC, raw[:cut])
    assert exc.value.field == "<payload>"


def refuse(data: object) -> PayloadError:
    with pytest.raises(PayloadError) as exc:
        decode(CellTelemetry, TOPIC, msgpack.packb(data, use_bin_type=True))
    return exc.value


def test_a_valid_payload_is_accepted() -> None:
    msg = decode(CellTelemetry, TOPIC, msgpack.packb(valid_telemetry_dict()))
    assert msg.cell_mv == [3300, 3301, 3302] and msg.seq == 7


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"cell_mv": [3300, "3301", 3302]}, "cell_mv.1", "integer"),
        ({"cell_mv": [3300, 7000, 3302]}, "cell_mv.1", "less than or equal to 6000"),
        ({"cell_mv": [3300, 3.3, 3302]}, "cell_mv.1", "integer"),
        ({"module": True}, "module", "integer"),
        ({"module": 196}, "module", "less than 196"),
        ({"mode": "sleeping"}, "mode", "working"),
        ({"temp_c": [float("nan")]}, "temp_c.0", "finite"),
        ({"balancing": [False]}, "<payload>", "one entry per cell"),
        ({"schema_version": 1}, "schema_version", "unsupported schema version 1"),
        ({"seq": -1}, "seq", "greater than or equal to 0"),
        ({"seq": None}, "envelope", "required"),
    ],
)
def test_bad_fields_are_named(change: dict[str, object], field: str, words: str) -> None:
    err = refuse(valid_telemetry_dict() | change)
    assert err.field == field
    assert words in err.reason
    assert str(err).startswith(f"{TOPIC}: {field}: ")


def test_missing_schema_version_is_refused() -> None:
    data = valid_telemetry_dict()
    del data["schema_version"]
    assert refuse(data).field == "schema_version"


@pytest.mark.parametrize("data", [[1, 2, 3], "text", 12, None, {1: "int key"}])
def test_payload_must_be_a_map_with_string_keys(data: object) -> None:
    assert refuse(data).field == "<payload>"


def test_oversized_payload_is_refused_before_unpacking() -> None:
    with pytest.raises(PayloadError, match="exceeds"):
        unpack(TOPIC, b"\x00" * (MAX_PAYLOAD_BYTES + 1))


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    msg = decode(CellTelemetry, TOPIC, msgpack.packb(valid_telemetry_dict() | {"new_field": 1}))
    assert not hasattr(msg, "new_field")


def test_pack_state_of_wrong_type_is_refused() -> None:
    with pytest.raises(PayloadError) as exc:
        decode(PackState, "bms/v1/demo/pack/state", msgpack.packb(valid_telemetry_dict()))
    assert exc.value.field in {"soc", "soh", "voltage"}


def test_unencodable_message_raises_encode_error_and_the_bus_counts_it() -> None:
    from shared.bus import InMemoryBroker, InMemoryBus
    from shared.codec import EncodeError
    from shared.messages import CommandRequest
    from shared.topics import COMMAND

    req = CommandRequest(
        command="heartbeat", correlation_id="c", reply_to="r", expires_at=1.0, args={"n": 2**70}
    )
    with pytest.raises(EncodeError, match="CommandRequest"):
        encode(req, source="s", seq=0, ts=0.0)
    bus = InMemoryBus(InMemoryBroker(), system="demo", service="s", kind="k")
    bus.publish(COMMAND, req, command="heartbeat")
    assert bus.counters["publish_errors"] == 1 and bus.sent == []


@pytest.mark.parametrize("chemistry", ["LFP", "NMC", "NCA", "LCO", "LTO", "NA_ION"])
def test_configuration_of_every_preset_survives_the_bus(chemistry: str) -> None:
    from shared.config import SystemConfig
    from shared.messages import ConfigMessage

    config = SystemConfig.from_preset(chemistry, modules=4, cells_per_module=12)
    raw = encode(ConfigMessage(config=config), source="config_ui", seq=0, ts=1.0)
    assert decode(ConfigMessage, "bms/v1/demo/config", raw).config == config


def test_invalid_configuration_is_refused_with_the_reason() -> None:
    from shared.config import demo_config
    from shared.messages import ConfigMessage

    data = ConfigMessage(config=demo_config()).stamped(source="ui", seq=0, ts=1.0)
    data["config"]["balancing"]["current_ma"] = 600.0
    with pytest.raises(PayloadError) as exc:
        decode(ConfigMessage, "bms/v1/demo/config", msgpack.packb(data))
    assert exc.value.field == "config.balancing.current_ma"
    assert "below the hardware limit" in exc.value.reason


def _module(m: int, **change: object) -> dict[str, object]:
    base: dict[str, object] = {"module": m, "fresh": True, "cell_v": [3.3, None],
                               "cell_flags": [0, 1], "balancing": [False, True],
                               "temp_c": [None, 21.0], "temp_flags": [4, 0]}  # fmt: skip
    return base | change


@pytest.mark.parametrize(
    "modules, words",
    [
        ([_module(0, balancing=[False])], "one entry per cell"),
        ([_module(0, cell_flags=[0])], "one entry per cell"),
        ([_module(0, temp_flags=[0, 0, 0])], "one entry per sensor"),
        ([_module(0), _module(2)], "in order"),
        ([_module(0, module=10**9)], "less than 196"),
        ([_module(m, cell_v=[3.3] * 20, cell_flags=[0] * 20, balancing=[False] * 20)
          for m in range(10)], "exceed the 196 cells"),
    ],
)  # fmt: skip
def test_cell_snapshot_lists_must_line_up(modules: list[dict[str, object]], words: str) -> None:
    data = CellSnapshot(modules=[]).stamped(source="m", seq=1, ts=1.7e9) | {"modules": modules}
    with pytest.raises(PayloadError) as exc:
        decode(CellSnapshot, "bms/v1/demo/pack/cells", msgpack.packb(data))
    assert words in str(exc.value)


def test_cell_snapshot_keeps_every_channel_in_its_place() -> None:
    """An unknown channel is None at its own position; later channels do not move."""
    data = CellSnapshot(modules=[]).stamped(source="m", seq=1, ts=1.7e9)
    data["modules"] = [_module(0), _module(1, fresh=False, cell_v=[None, None],
                       cell_flags=[0, 0], temp_c=[None, None], temp_flags=[0, 0])]  # fmt: skip
    snap = decode(CellSnapshot, "bms/v1/demo/pack/cells", msgpack.packb(data))
    cells = [(c.series_index, c.module, c.index, c.voltage_v, c.flags) for c in snap.cells()]
    assert cells == [(0, 0, 0, 3.3, 0), (1, 0, 1, None, 1), (2, 1, 0, None, 0), (3, 1, 1, None, 0)]
    temps = [(t.sensor_index, t.module, t.index, t.temp_c) for t in snap.temperatures()]
    assert temps == [(0, 0, 0, None), (1, 0, 1, 21.0), (2, 1, 0, None), (3, 1, 1, None)]
