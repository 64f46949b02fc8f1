"""The agent's fast way (`telemetry_fields` in a `fast_rack_telemetry` message) gives the bytes
of the model's way, or None where the model would not take the values as they are."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.slave_agent.telemetry import fast_rack_telemetry, telemetry_fields
from shared.codec import EncodeError, encode
from shared.messages import CellTelemetry, RackTelemetry
from shared.messages.slave import MAX_CELLS_PER_MODULE, MAX_TEMPS_PER_MODULE

SOURCE = "slave_agent"
RACK_SEQ, RACK_TS = 41, 1_765_000_000.5


def model_bytes(*samples: dict[str, Any]) -> bytes | None:
    """The model's way: each sample's model in a rack message the bus stamps; None when the
    model refuses."""
    try:
        rack = RackTelemetry(samples=[CellTelemetry(**kw) for kw in samples])
        return encode(rack, source=SOURCE, seq=RACK_SEQ, ts=RACK_TS)
    except (ValidationError, EncodeError):
        return None


def fast_telemetry(**kw: Any) -> bytes | None:
    """The agent's way for one module's sample."""
    fields = telemetry_fields(**kw)
    if fields is None:
        return None
    return fast_rack_telemetry(source=SOURCE, seq=RACK_SEQ, ts=RACK_TS, samples=[fields])


def plain(n: int = 14, sensors: int = 2) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "seq": 7,
        "ts": 1_765_000_000.25,
        "module": 3,
        "mode": "working",
        "sample_ts": 1_765_000_000.125,
        "cell_mv": [3650 + i for i in range(n)],
        "cell_flags": [0] * n,
        "balancing": [i % 3 == 0 for i in range(n)],
        "temp_c": [25.5 + i for i in range(sensors)],
        "temp_flags": [0] * sensors,
        "overruns": 0,
        "boot_id": "0123456789abcdef0123456789abcdef",
    }


def test_the_usual_sample_is_the_models_bytes() -> None:
    kw = plain()
    fast = fast_telemetry(**kw)
    assert fast is not None
    assert fast == model_bytes(kw)


def test_every_field_of_the_contract_is_written() -> None:
    # a field added to CellTelemetry must be added here too (its default would be left out)
    import msgpack

    fast = fast_telemetry(**plain())
    assert fast is not None
    rack = msgpack.unpackb(fast)
    assert list(rack) == list(RackTelemetry.model_fields)
    assert list(rack["samples"][0]) == list(CellTelemetry.model_fields)


def test_a_rack_of_modules_is_the_models_bytes() -> None:
    samples = []
    for m in (0, 1, 5):
        kw = plain()
        kw["module"], kw["seq"] = m, 100 + m
        samples.append(kw)
    fields = [telemetry_fields(**kw) for kw in samples]
    assert all(f is not None for f in fields)
    fast = fast_rack_telemetry(source=SOURCE, seq=RACK_SEQ, ts=RACK_TS, samples=fields)  # type: ignore[arg-type]
    assert fast == model_bytes(*samples)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cell_mv", [6001] + [3600] * 13),
        ("cell_mv", [-1] + [3600] * 13),
        ("cell_mv", [3600.0] * 14),
        ("cell_mv", [True] * 14),
        ("cell_mv", []),
        ("cell_mv", tuple([3600] * 14)),
        ("cell_flags", [8] + [0] * 13),
        ("cell_flags", [0] * 13),
        ("balancing", [0] * 14),
        ("temp_c", [float("nan"), 25.0]),
        ("temp_c", [float("inf"), 25.0]),
        ("temp_c", [200.5, 25.0]),
        ("temp_c", [25, 25.0]),
        ("temp_flags", [0]),
        ("module", 196),
        ("module", -1),
        ("mode", "sleeping"),
        ("sample_ts", -1.0),
        ("sample_ts", 1),
        ("sample_ts", 1.0e10 + 1.0),
        ("sample_ts", float("inf")),
        ("ts", 1),
        ("overruns", -1),
        ("seq", 2**63),
        ("boot_id", "XYZ"),
        ("boot_id", "0123"),
    ],
)
def test_values_the_model_refuses_or_converts_go_the_models_way(field: str, value: Any) -> None:
    kw = plain()
    kw[field] = value
    assert fast_telemetry(**kw) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cell_mv", [0] * 14),
        ("cell_mv", [6000] * 14),
        ("cell_flags", [7] * 14),
        ("temp_c", [-60.0, 200.0]),
        ("temp_c", [-0.0, 0.1]),
        ("temp_flags", [7, 0]),
        ("module", 0),
        ("module", 195),
        ("mode", "standby"),
        ("sample_ts", 0.0),
        ("sample_ts", 1e10),
        ("overruns", 2**63 - 1),
        ("seq", 0),
        ("seq", 2**63 - 1),
        ("boot_id", "01234567"),
    ],
)
def test_values_at_the_contracts_bounds_go_the_fast_way(field: str, value: Any) -> None:
    kw = plain()
    kw[field] = value
    fast = fast_telemetry(**kw)
    assert fast is not None
    assert fast == model_bytes(kw)


@pytest.mark.parametrize(
    ("cells", "sensors"), [(1, 0), (14, 2), (MAX_CELLS_PER_MODULE, MAX_TEMPS_PER_MODULE)]
)
def test_sizes_of_modules_go_the_fast_way(cells: int, sensors: int) -> None:
    kw = plain(cells, sensors)
    fast = fast_telemetry(**kw)
    assert fast is not None
    assert fast == model_bytes(kw)


def edge_ints(lo: int, hi: int) -> st.SearchStrategy[Any]:
    """Integers at and just past the contract's bounds, and the odd bool or float."""
    near = st.sampled_from([lo - 1, lo, hi, hi + 1])
    return near | st.integers(lo - 2, hi + 2) | st.booleans() | st.just(float(lo))


def edge_floats(lo: float, hi: float) -> st.SearchStrategy[Any]:
    """Floats at and just past the bounds, non-finite ones, and ints."""
    past = [math.nextafter(lo, -math.inf), lo, hi, math.nextafter(hi, math.inf)]
    odd = [math.nan, math.inf, -math.inf, int(hi), int(lo)]
    return st.sampled_from(past + odd) | st.floats(lo - 1, hi + 1)


@settings(max_examples=300)
@given(n=st.integers(1, 20), sensors=st.integers(0, 10), data=st.data())
def test_fast_bytes_are_the_models_or_none(n: int, sensors: int, data: st.DataObject) -> None:
    """Valid values everywhere but (mostly) one field, which may be anything."""
    valid = {
        "cell_mv": st.lists(st.integers(0, 6000), min_size=n, max_size=n),
        "cell_flags": st.lists(st.integers(0, 7), min_size=n, max_size=n),
        "balancing": st.lists(st.booleans(), min_size=n, max_size=n),
        "temp_c": st.lists(st.floats(-60, 200), min_size=sensors, max_size=sensors),
        "temp_flags": st.lists(st.integers(0, 7), min_size=sensors, max_size=sensors),
        "module": st.integers(0, 195),
        "sample_ts": st.floats(0, 1e10),
        "overruns": st.integers(0, 2**63 - 1),
        "seq": st.integers(0, 2**63 - 1),
    }
    wild = {
        # the right lengths (wrong ones are cases above): the values are what is tried
        "cell_mv": st.lists(edge_ints(0, 6000), min_size=n, max_size=n),
        "cell_flags": st.lists(edge_ints(0, 7), min_size=n, max_size=n),
        "balancing": st.lists(st.booleans() | st.integers(0, 1), min_size=n, max_size=n),
        "temp_c": st.lists(edge_floats(-60.0, 200.0), min_size=sensors, max_size=sensors),
        "temp_flags": st.lists(edge_ints(0, 7), min_size=sensors, max_size=sensors),
        "module": edge_ints(0, 195),
        "sample_ts": edge_floats(0.0, 1e10),
        "overruns": edge_ints(0, 2**63 - 1),
        "seq": edge_ints(0, 2**63 - 1),
    }
    odd = data.draw(st.sampled_from([None, *wild]))
    kw = plain(n, sensors)
    for name, strategy in valid.items():
        kw[name] = data.draw(wild[name] if name == odd else strategy)
    fast = fast_telemetry(**kw)
    model = model_bytes(kw)
    assert fast == model or (fast is None and odd is not None)
