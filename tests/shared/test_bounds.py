"""Every list of every payload has a bound, and the byte limits derived from them hold."""

from __future__ import annotations

import itertools
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from shared import SCHEMA_VERSION
from shared.bounds import UnboundedFieldError, max_encoded_bytes
from shared.broker import MosquittoBroker
from shared.codec import encode
from shared.config import ChemistryOverrides, ChemistryPreset, SiteConfig, get_preset
from shared.config.interfaces import CanConfig
from shared.config.limits import (
    CELLS_IN_SERIES_MAX,
    OCV_TABLE_POINTS_MAX,
    OCV_TEMPERATURES_MAX,
    SITE_STRINGS_MAX,
    TEMP_SENSORS_PER_MODULE_MAX,
)
from shared.config.system import Topology
from shared.messages import (
    COMMAND_ARGS,
    BalanceCommand,
    CellSnapshot,
    CellTelemetry,
    CommandReply,
    CommandRequest,
    ConfigAck,
    Event,
    GroundTruth,
    Message,
    ModuleCells,
    PackState,
    RackTelemetry,
    ServiceStatus,
    SiteState,
)
from shared.messages.commands import ARGS_MAX
from shared.messages.config import IN_USE_MAX
from shared.topics import BROKER_MESSAGE_SIZE_LIMIT, COMMAND_REPLY, TOPICS

from .strategies import any_message

ROOT = Path(__file__).resolve().parents[2]
ENVELOPE = {"schema_version": SCHEMA_VERSION, "source": "s", "seq": 0, "ts": 1.0}
N, T = CELLS_IN_SERIES_MAX, TEMP_SENSORS_PER_MODULE_MAX
SITE_MAX = SITE_STRINGS_MAX


def _ocv_points() -> tuple[list[float], list[float]]:
    """The NMC table resampled at every percent of SOC: the longest table allowed."""
    nmc = get_preset("NMC")
    soc = [float(i) for i in range(OCV_TABLE_POINTS_MAX)]
    pairs = list(zip(nmc.ocv_table_soc_pct, nmc.ocv_table_v, strict=True))

    def at(s: float) -> float:
        for (s0, v0), (s1, v1) in itertools.pairwise(pairs):
            if s0 <= s <= s1:
                return round(v0 + (v1 - v0) * (s - s0) / (s1 - s0), 4)
        raise AssertionError(s)

    return soc, [at(s) for s in soc]


OCV_SOC, OCV_V = _ocv_points()
# Branches at every temperature allowed, 10 mV either side of the table, 1 mV lower per block.
OCV_TEMPS = [float(10 * k - 20) for k in range(OCV_TEMPERATURES_MAX)]
_REF = min(range(len(OCV_TEMPS)), key=lambda k: abs(OCV_TEMPS[k] - 25.0))
OCV_BRANCHES = {
    "ocv_charge_v": [
        round(v + 0.01 - 0.001 * (k - _REF), 4) for k in range(len(OCV_TEMPS)) for v in OCV_V
    ],
    "ocv_discharge_v": [
        round(v - 0.01 - 0.001 * (k - _REF), 4) for k in range(len(OCV_TEMPS)) for v in OCV_V
    ],
    "ocv_temperatures_c": OCV_TEMPS,
    "capacity_temperature_pct": [100.0] * len(OCV_TEMPS),
}
MODULE_CELLS_ONE = {
    "module": 0, "fresh": True, "cell_v": [3.3], "cell_flags": [0], "balancing": [False],
    "temp_c": [25.0] * T, "temp_flags": [0] * T,
}  # fmt: skip
TELEMETRY_ONE = {
    **ENVELOPE, "module": 0, "mode": "working", "sample_ts": 1.0, "cell_mv": [3300],
    "cell_flags": [7], "balancing": [True], "temp_c": [25.0] * T, "temp_flags": [7] * T,
    "boot_id": "0123456789abcdef0123456789abcdef",
}  # fmt: skip

LARGEST: dict[type[BaseModel], dict[str, Any]] = {
    CellTelemetry: {
        **ENVELOPE, "module": 195, "mode": "working", "sample_ts": 1.0, "cell_mv": [3300] * N,
        "cell_flags": [7] * N, "balancing": [True] * N, "temp_c": [25.0] * T,
        "temp_flags": [7] * T,
    },
    BalanceCommand: {
        **ENVELOPE, "module": 0, "expires_at": 2.0, "discharge": [True] * N,
        "charge": [False] * N,
    },
    PackState: {
        **ENVELOPE, "soc": None, "soh": None, "voltage": None, "current": None,
        "contactors": "standby", "mode": "working", "cell_v_min": None, "cell_v_max": None,
        "cell_v_avg": None,
        "limits": {"charge_voltage_v": 0.0, "discharge_voltage_v": 0.0,
                   "charge_current_a": 0.0, "discharge_current_a": 0.0},
        "faults": ["f"] * 64, "alarms": ["a"] * 64, "warnings": ["w"] * 64,
        "stale_modules": list(range(N)),
    },
    ModuleCells: {
        "module": 0, "fresh": True, "cell_v": [None] * N, "cell_flags": [1] * N,
        "balancing": [False] * N, "temp_c": [None] * T, "temp_flags": [4] * T,
    },
    CellSnapshot: {**ENVELOPE, "modules": [{**MODULE_CELLS_ONE, "module": i} for i in range(N)]},
    RackTelemetry: {**ENVELOPE, "samples": [{**TELEMETRY_ONE, "module": i} for i in range(N)]},
    GroundTruth: {
        **ENVELOPE, "module": 0, "sample_ts": 1.0, "soc_pct": [50.0] * N, "cell_v": [3.3] * N,
        "temp_c": [25.0] * T, "current_a": 0.0,
    },
    ConfigAck: {
        **ENVELOPE, "service": "x", "config_version": 1, "accepted": False,
        "errors": ["e" * 500] * 50, "restart_required": ["a.b"] * 200,
        "in_use": {
            f"{i:03d}" + "p" * 125: {"value": "v" * 128, "source": "s" * 64, "host": "h" * 128,
                                     "device": True}
            for i in range(IN_USE_MAX)
        },
    },
    Event: {
        **ENVELOPE, "level": "info", "kind": "info", "code": "c",
        "values": {f"k{i}": "v" * 500 for i in range(32)},
    },
    ServiceStatus: {
        **ENVELOPE, "service": "s", "kind": "k", "state": "online",
        "counters": {f"c{i}": i for i in range(256)},
    },
    CommandRequest: {
        **ENVELOPE, "command": "events_query", "correlation_id": "c", "reply_to": "r",
        "expires_at": 2.0, "args": {f"a{i}": {"x": 1, "y": "z" * 256} for i in range(ARGS_MAX)},
    },
    CommandReply: {
        **ENVELOPE, "command": "x", "correlation_id": "c", "status": "accepted",
        "result": {f"r{i}": i for i in range(16)},
    },
    Topology: {"modules": N, "cells_per_module": 1, "module_cell_counts": [1] * N},
    ChemistryPreset: {
        **get_preset("NMC").model_dump(), "ocv_table_soc_pct": OCV_SOC, "ocv_table_v": OCV_V,
        **OCV_BRANCHES,
    },
    ChemistryOverrides: {"ocv_table_soc_pct": OCV_SOC, "ocv_table_v": OCV_V, **OCV_BRANCHES},
    CanConfig: {"profiles": ["victron_0x35x", "pylon_hv", "native"]},
    SiteConfig: {"site": "site", "strings": [{"system": f"s{i}"} for i in range(SITE_MAX)]},
    SiteState: {
        **ENVELOPE, "site": "site", "strings_total": SITE_MAX, "strings_joined": 0,
        "limits": {"charge_voltage_v": None, "discharge_voltage_v": None,
                   "charge_current_a": 0.0, "discharge_current_a": 0.0},
        "faults": ["f"] * 64, "alarms": ["a"] * 64, "warnings": ["w"] * 64,
        "strings": [{"system": f"s{i}", "membership": "out"} for i in range(SITE_MAX)],
    },
}  # fmt: skip
"""The largest valid instance of every model with a bounded collection: each at its bound."""


def _max_length(info: Any) -> int | None:
    found = [m.max_length for m in info.metadata if isinstance(m, annotated_types.MaxLen)]
    return found[0] if found else None


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models(arg)


def _collections(annotation: Any) -> bool:
    origins = {typing.get_origin(a) for a in (annotation, *typing.get_args(annotation))}
    return bool(origins & {list, tuple, dict})


def bounded_fields() -> dict[tuple[type[BaseModel], str], int]:
    """(model, field) -> bound of every list, tuple and map field reachable from a payload."""
    out: dict[tuple[type[BaseModel], str], int] = {}
    # overrides are validated as a whole preset (ChemistryOverrides.apply)
    todo = [s.payload for s in TOPICS] + [*COMMAND_ARGS.values(), ChemistryPreset]
    seen: set[type[BaseModel]] = set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            if _collections(info.annotation):
                bound = _max_length(info)
                assert bound is not None, f"{model.__name__}.{name} has no length bound"
                out[(model, name)] = bound
            todo.extend(_models(info.annotation))
    return out


BOUNDED = bounded_fields()
CASES = sorted(BOUNDED, key=lambda k: (k[0].__name__, k[1]))


def test_every_bounded_field_has_its_largest_instance() -> None:
    assert {model for model, _ in BOUNDED} == set(LARGEST)
    for (model, name), bound in BOUNDED.items():
        assert len(LARGEST[model][name]) == bound, f"{model.__name__}.{name}"


def _grown(value: Any, length: int) -> Any:
    if isinstance(value, dict):
        extra = {f"extra{i}": next(iter(value.values())) for i in range(length - len(value))}
        return {**value, **extra}
    return list(value) + [value[-1]] * (length - len(value))


def _too_long_at(exc: ValidationError, name: str) -> bool:
    return any(e["type"] == "too_long" and e["loc"][:1] == (name,) for e in exc.errors())


@pytest.mark.parametrize("model", list(LARGEST), ids=lambda m: m.__name__)
def test_the_largest_instance_is_accepted(model: type[BaseModel]) -> None:
    model.model_validate(LARGEST[model])


@given(st.sampled_from(CASES), st.integers(1, 5000))
@settings(max_examples=200, deadline=None)
def test_a_list_longer_than_its_bound_is_refused(
    case: tuple[type[BaseModel], str], extra: int
) -> None:
    model, name = case
    data = dict(LARGEST[model])
    data[name] = _grown(data[name], BOUNDED[case] + extra)
    with pytest.raises(ValidationError) as exc:
        model.model_validate(data)
    assert _too_long_at(exc.value, name), exc.value.errors()[:3]


@given(st.sampled_from(CASES))
@settings(max_examples=50, deadline=None)
def test_a_list_at_its_bound_is_not_refused_for_its_length(
    case: tuple[type[BaseModel], str],
) -> None:
    model, name = case
    data = dict(LARGEST[model])
    assert len(data[name]) == BOUNDED[case]
    model.model_validate(data)


def test_every_payload_has_a_finite_size() -> None:
    for spec in TOPICS:
        if spec is COMMAND_REPLY:  # its result is open: the limit is set, not derived
            with pytest.raises(UnboundedFieldError, match="result"):
                max_encoded_bytes(spec.payload)
            continue
        largest = spec.payload_bytes or max_encoded_bytes(spec.payload)
        assert largest < spec.byte_limit


@pytest.mark.parametrize(
    "model",
    [m for m in LARGEST if issubclass(m, tuple(s.payload for s in TOPICS))],
    ids=lambda m: m.__name__,
)
def test_the_largest_payload_fits_its_topic(model: type[BaseModel]) -> None:
    spec = next(s for s in TOPICS if s.payload is model)
    raw = msgpack.packb(LARGEST[model], use_bin_type=True)
    assert len(raw) <= spec.byte_limit
    if spec.payload_bytes is None:
        assert len(raw) <= max_encoded_bytes(model)


def test_the_snapshot_bound_counts_cells_of_the_whole_system() -> None:
    raw = msgpack.packb(LARGEST[CellSnapshot], use_bin_type=True)
    assert len(raw) <= CellSnapshot.max_encoded_bytes() < max_encoded_bytes(CellSnapshot)


def test_the_rack_bound_counts_cells_of_the_whole_system() -> None:
    raw = msgpack.packb(LARGEST[RackTelemetry], use_bin_type=True)
    assert len(raw) <= RackTelemetry.max_encoded_bytes() < max_encoded_bytes(RackTelemetry)


def test_the_brokers_drop_payloads_over_the_largest_topic_limit() -> None:
    assert max(s.byte_limit for s in TOPICS) <= BROKER_MESSAGE_SIZE_LIMIT
    assert BROKER_MESSAGE_SIZE_LIMIT < 1024 * 1024  # far below the 900 KB of the issue
    line = f"message_size_limit {BROKER_MESSAGE_SIZE_LIMIT}"
    deployed = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text().splitlines()
    assert line in deployed
    broker = MosquittoBroker.__new__(MosquittoBroker)  # the rendered config only, no process
    broker._port, broker._host, broker._persistence_dir = 1883, "127.0.0.1", None
    assert line in broker._render_config("").splitlines()


@given(any_message)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_valid_payload_exceeds_its_derived_size(message: Message) -> None:
    spec = next(s for s in TOPICS if s.payload is type(message))
    raw = encode(message, source="s" * 128, seq=2**63 - 1, ts=1.0e10)
    assert len(raw) <= spec.byte_limit
    if spec.payload_bytes is None:
        assert len(raw) <= max_encoded_bytes(spec.payload)
