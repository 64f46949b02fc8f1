"""The Sparkplug B edge node core: births, data by exception, nulls, seq and bdSeq rules,
rebirth; every payload decoded again with the generated protobuf classes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.integrations.sparkplug import (
    BD_SEQ,
    NODE_METRICS,
    PROTOC,
    REBIRTH,
    CommandError,
    EdgeNode,
    death_payload,
    next_bd_seq,
)
from services.integrations.sparkplug_b_pb2 import DataType, Payload
from shared.messages import CellSnapshot, ModuleCells, PackState
from tests.factories import pack_state

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


def state(ts: float = T0, **overrides: Any) -> PackState:
    return pack_state(**overrides).model_copy(update={"ts": ts})


def snapshot(modules: int = 2, cells: int = 3, ts: float = T0, v: float = 3.3) -> CellSnapshot:
    snap = CellSnapshot(
        modules=[
            ModuleCells(module=m, fresh=True, cell_v=[v] * cells, cell_flags=[0] * cells,
                        balancing=[False] * cells, temp_c=[25.0, None], temp_flags=[0, 1])
            for m in range(modules)
        ]
    )  # fmt: skip
    return snap.model_copy(update={"ts": ts})


def decode(msgs: list[tuple[str, bytes]]) -> list[tuple[str, Payload]]:
    return [(t, Payload.FromString(p)) for t, p in msgs]


def born(bd_seq: int = 0) -> tuple[EdgeNode, list[tuple[str, Payload]]]:
    node = EdgeNode("bms", "s1")
    node.pack(state(), True, T0)
    node.cells(snapshot(), T0)
    node.session(bd_seq)
    return node, decode(node.birth(T0 + 0.5))


def value(m: Payload.Metric) -> Any:
    field = m.WhichOneof("value")
    return None if field is None else getattr(m, field)


def by_name(p: Payload) -> dict[str, Payload.Metric]:
    return {m.name: m for m in p.metrics}


def rebirth_request(flag: bool = True, *, alias: int | None = None) -> bytes:
    p = Payload(timestamp=1)
    m = p.metrics.add(datatype=DataType.Boolean, boolean_value=flag)
    if alias is None:
        m.name = REBIRTH
    else:
        m.alias = alias
    return bytes(p.SerializeToString())


# --- births ---------------------------------------------------------------------------------
def test_nbirth_names_every_metric_with_alias_datatype_and_value() -> None:
    _node, msgs = born(bd_seq=7)
    topic, nbirth = msgs[0]
    assert topic == "spBv1.0/bms/NBIRTH/s1"
    assert nbirth.seq == 0 and nbirth.timestamp == round((T0 + 0.5) * 1000)
    metrics = by_name(nbirth)
    assert metrics[BD_SEQ].datatype == DataType.Int64 and metrics[BD_SEQ].long_value == 7
    assert metrics[REBIRTH].datatype == DataType.Boolean and metrics[REBIRTH].boolean_value is False
    for d in NODE_METRICS:
        m = metrics[d.name]
        assert m.datatype == d.datatype and m.alias > 0, d.name
        assert m.timestamp == round(T0 * 1000), d.name  # the sample's time, not the send's
    assert value(metrics["Pack/SOC"]) == 50.0 and value(metrics["Pack/Contactors"]) == "closed"
    assert value(metrics["BMS/Online"]) is True
    unit = metrics["Pack/Voltage"].properties
    assert list(unit.keys) == ["engUnit"] and unit.values[0].string_value == "V"


def test_births_declare_unique_aliases_over_the_node_and_its_devices() -> None:
    _node, msgs = born()
    kinds = [t.split("/")[2] for t, _p in msgs]
    assert kinds == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert [t.rsplit("/", 1)[1] for t, _p in msgs[1:]] == ["module_00", "module_01"]
    assert [p.seq for _t, p in msgs] == [0, 1, 2]
    aliases = [m.alias for _t, p in msgs for m in p.metrics if m.name != BD_SEQ]
    assert len(aliases) == len(set(aliases))
    dbirth = by_name(msgs[1][1])
    assert value(dbirth["Cells/02/Voltage"]) == pytest.approx(3.3)
    assert value(dbirth["Fresh"]) is True and value(dbirth["Temperatures/00"]) == 25.0


def test_unknown_values_are_null_never_zero() -> None:
    node = EdgeNode("bms", "s1")
    node.pack(state(soc=None, voltage=None, current=None), True, T0)
    node.cells(snapshot(), T0)
    node.session(0)
    msgs = decode(node.birth(T0))
    nbirth, dbirth = by_name(msgs[0][1]), by_name(msgs[1][1])
    for m in (nbirth["Pack/SOC"], nbirth["Pack/Voltage"], nbirth["Pack/Power"],
              nbirth["Temperatures/Min"], dbirth["Temperatures/01"]):  # fmt: skip
        assert m.is_null and m.WhichOneof("value") is None, m.name
    assert not nbirth["Pack/Current"].HasField("double_value")
    # a value going unknown is reported, as null
    (out,) = decode(node.pack(state(soc=40.0, voltage=None, current=None), True, T0 + 1))
    assert [(m.alias, m.is_null, value(m)) for m in out[1].metrics] == [
        (nbirth["Pack/SOC"].alias, False, 40.0)
    ]
    (out,) = decode(node.pack(state(soc=None, voltage=None, current=None), True, T0 + 2))
    assert [(m.alias, m.is_null, value(m)) for m in out[1].metrics] == [
        (nbirth["Pack/SOC"].alias, True, None)
    ]


# --- data by exception ----------------------------------------------------------------------
def test_ndata_carries_only_what_changed_by_alias() -> None:
    node, msgs = born()
    aliases = {m.name: m.alias for m in msgs[0][1].metrics}
    assert node.pack(state(T0 + 0.1), True, T0 + 0.1) == []  # nothing changed: nothing sent
    (out,) = decode(node.pack(state(T0 + 0.2, soc=51.0, alarms=["cell_ov"]), True, T0 + 0.3))
    topic, p = out
    assert topic == "spBv1.0/bms/NDATA/s1" and p.seq == 3  # after NBIRTH 0, DBIRTH 1 and 2
    got = {m.alias: value(m) for m in p.metrics}
    assert got == {
        aliases["Pack/SOC"]: 51.0,
        aliases["Codes/Alarms"]: "cell_ov",
        aliases["Codes/Alarm active"]: True,
    }
    assert all(not m.name for m in p.metrics)
    assert all(m.timestamp == round((T0 + 0.2) * 1000) for m in p.metrics)
    assert p.timestamp == round((T0 + 0.3) * 1000)


def test_numbers_within_the_deadband_are_held_until_they_move_past_it() -> None:
    node, msgs = born()
    alias = by_name(msgs[0][1])["Pack/Voltage"].alias
    assert node.pack(state(voltage=30.04), True, T0) == []
    assert node.pack(state(voltage=30.02), True, T0) == []
    (out,) = decode(node.pack(state(voltage=30.06), True, T0))
    assert [(m.alias, m.double_value) for m in out[1].metrics] == [(alias, 30.06)]
    assert node.pack(state(voltage=30.02), True, T0) == []  # 0.04 from what was sent


def test_ddata_carries_the_cells_that_changed() -> None:
    node, msgs = born()
    alias = by_name(msgs[2][1])["Cells/01/Voltage"].alias
    snap = snapshot()
    cells = list(snap.modules[1].cell_v)
    cells[1] = 3.31
    mod = snap.modules[1].model_copy(update={"cell_v": cells})
    snap = snap.model_copy(update={"modules": [snap.modules[0], mod]})
    (out,) = decode(node.cells(snap, T0 + 1))
    assert out[0] == "spBv1.0/bms/DDATA/s1/module_01"
    assert [(m.alias, m.double_value) for m in out[1].metrics] == [(alias, 3.31)]


def test_a_changed_layout_is_a_new_device_and_a_gone_module_dies() -> None:
    node, _msgs = born()
    out = decode(node.cells(snapshot(modules=2, cells=4), T0 + 1))
    assert [t.split("/")[2:] for t, _p in out] == [
        ["DDEATH", "s1", "module_00"], ["DBIRTH", "s1", "module_00"],
        ["DDEATH", "s1", "module_01"], ["DBIRTH", "s1", "module_01"],
    ]  # fmt: skip
    assert "Cells/03/Voltage" in by_name(out[1][1])
    out = decode(node.cells(snapshot(modules=1, cells=4), T0 + 2))
    assert [t.split("/")[2:] for t, _p in out] == [["DDEATH", "s1", "module_01"]]


def test_master_gone_nulls_the_pack_and_kills_the_devices_until_it_returns() -> None:
    node, msgs = born()
    names = {m.alias: m.name for m in msgs[0][1].metrics}
    (ndata,) = decode(node.pack(None, False, T0 + 20))
    metrics = {names[m.alias]: m for m in ndata[1].metrics}
    assert value(metrics["BMS/Online"]) is False
    assert all(metrics[d.name].is_null for d in NODE_METRICS if d.name in metrics)
    assert "Pack/SOC" in metrics and "Pack/DC link voltage" not in metrics  # was null already
    deaths = decode(node.all_devices_dead(T0 + 20))
    assert [t.split("/")[2] for t, _p in deaths] == ["DDEATH", "DDEATH"]
    assert node.all_devices_dead(T0 + 21) == []  # once
    back = decode(node.cells(snapshot(), T0 + 30))
    assert [t.split("/")[2] for t, _p in back] == ["DBIRTH", "DBIRTH"]


def test_nothing_is_sent_before_the_birth_and_the_birth_has_the_latest() -> None:
    node = EdgeNode("bms", "s1")
    assert node.pack(state(soc=10.0), True, T0) == []
    assert node.cells(snapshot(), T0) == []
    node.session(0)
    node.pack(state(soc=11.0), True, T0)  # born is false until birth()
    msgs = decode(node.birth(T0))
    assert value(by_name(msgs[0][1])["Pack/SOC"]) == 11.0
    node.lost()
    assert node.pack(state(soc=12.0), True, T0) == []


# --- seq and bdSeq --------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["pack", "cells", "rebirth", "gone"]), min_size=1, max_size=400))
def test_seq_counts_every_message_after_nbirth_and_wraps(steps: list[str]) -> None:
    node, msgs = born()
    seqs = [p.seq for _t, p in msgs]
    soc, v = 50.0, 3.3
    for i, step in enumerate(steps):
        now = T0 + i
        if step == "pack":
            soc = 100.0 - soc
            out = node.pack(state(now, soc=soc), True, now)
        elif step == "cells":
            v = 3.3 if v != 3.3 else 3.4
            out = node.cells(snapshot(ts=now, v=v), now)
        elif step == "gone":
            out = node.pack(None, False, now) + node.all_devices_dead(now)
        else:
            out = node.command("spBv1.0/bms/NCMD/s1", rebirth_request(), now)
        for topic, payload in decode(out):
            p = payload
            if "/NBIRTH/" in topic:
                assert p.seq == 0
                seqs = [0]
                continue
            assert p.HasField("seq")
            assert p.seq == (seqs[-1] + 1) % 256, (topic, seqs[-3:])
            assert 0 <= p.seq <= 255
            seqs.append(p.seq)


def test_seq_wraps_from_255_to_0() -> None:
    node, _msgs = born()
    seqs = []
    for i in range(300):
        (out,) = decode(node.pack(state(soc=float(i % 2) * 10), True, T0 + i))
        seqs.append(out[1].seq)
    assert seqs[252:256] == [255, 0, 1, 2] and seqs[0] == 3


def test_bd_seq_starts_at_0_counts_connects_and_wraps() -> None:
    seq, seen = -1, []
    for _ in range(258):
        seq = next_bd_seq(seq)
        seen.append(seq)
    assert seen[:3] == [0, 1, 2] and seen[255:] == [255, 0, 1]


def test_ndeath_has_only_bd_seq_and_no_seq() -> None:
    p = Payload.FromString(death_payload(42, T0))
    assert [(m.name, m.datatype, m.long_value) for m in p.metrics] == [(BD_SEQ, DataType.Int64, 42)]
    assert not p.HasField("seq") and p.timestamp == round(T0 * 1000)


# --- commands -------------------------------------------------------------------------------
def test_rebirth_request_answers_with_a_complete_birth_and_the_same_bd_seq() -> None:
    node, msgs = born(bd_seq=5)
    node.pack(state(soc=70.0), True, T0 + 1)
    out = decode(node.command("spBv1.0/bms/NCMD/s1", rebirth_request(), T0 + 2))
    assert [t.split("/")[2] for t, _p in out] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert [p.seq for _t, p in out] == [0, 1, 2]
    nbirth = by_name(out[0][1])
    assert nbirth[BD_SEQ].long_value == 5 and value(nbirth["Pack/SOC"]) == 70.0
    # same aliases as the first birth
    assert {m.name: m.alias for m in out[0][1].metrics} == {
        m.name: m.alias for m in msgs[0][1].metrics
    }
    alias = nbirth[REBIRTH].alias
    assert [t for t, _p in node.command("spBv1.0/bms/NCMD/s1", rebirth_request(alias=alias),
                                        T0)][:1] == ["spBv1.0/bms/NBIRTH/s1"]  # fmt: skip


def test_other_commands_change_nothing() -> None:
    node, _msgs = born()
    assert node.command("spBv1.0/bms/NCMD/s1", rebirth_request(False), T0) == []
    assert node.command("spBv1.0/bms/DCMD/s1/module_00", rebirth_request(), T0) == []
    with pytest.raises(CommandError):
        node.command("spBv1.0/bms/NCMD/s1", b"\xff\xff\xff", T0)


# --- the generated code ---------------------------------------------------------------------
def test_generated_protobuf_matches_the_proto(tmp_path: Path) -> None:
    """`sparkplug_b_pb2.py`/`.pyi` are what PROTOC makes of the checked-in .proto today."""
    args = PROTOC.split()[3:]  # after "python -m grpc_tools.protoc"
    args = [a.replace("services/integrations", str(tmp_path)) if "_out=" in a else a for a in args]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args], cwd=ROOT, check=True)
    for name in ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi"):
        assert (tmp_path / name).read_text() == (
            ROOT / "services/integrations" / name
        ).read_text(), f"{name} is stale: run {PROTOC}"
