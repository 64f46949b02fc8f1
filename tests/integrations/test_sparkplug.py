"""The Sparkplug B edge node core (the site; a device per system): births, data by exception,
nulls, seq and bdSeq rules, device deaths, rebirth; every payload decoded again with the
generated protobuf classes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.integrations.sparkplug import (
    BD_SEQ,
    CELLS_WAIT_S,
    PACK_METRICS,
    PROTOC,
    REBIRTH,
    SITE_METRICS,
    CommandError,
    EdgeNode,
    death_payload,
    next_bd_seq,
)
from services.integrations.sparkplug_b_pb2 import DataType, Payload
from shared.deploy import acl
from shared.messages import CellLocation, CellSnapshot, ModuleCells, PackState
from shared.topics import (
    BROKER_MESSAGE_SIZE_LIMIT,
    INTEGRATIONS,
    SPARKPLUG_DEVICE,
    SPARKPLUG_GROUP,
    SPARKPLUG_NODE,
    THIRD_PARTY,
    spec_for,
)
from tests.factories import pack_state, site_state

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


def born(bd_seq: int = 0, systems: tuple[str, ...] = ("s1",)) -> tuple[EdgeNode, Msgs]:
    node = EdgeNode("bms", "site")
    for system in systems:
        node.pack(system, state(), T0)
        node.cells(system, snapshot(), T0)
    node.session(bd_seq)
    return node, decode(node.birth(T0 + 0.5))


Msgs = list[tuple[str, Payload]]


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


# --- the site's own metrics on the node (BMS_SITE) ------------------------------------------
def site_node(**kw: Any) -> tuple[EdgeNode, Msgs]:
    node = EdgeNode("bms", "site1", site=True, **kw)
    node.session(0)
    return node, decode(node.birth(T0))


def node_values(msgs: Msgs, names: dict[int, str]) -> dict[str, Any]:
    return {m.name or names[m.alias]: value(m) for _t, p in msgs for m in p.metrics}


def test_the_site_metrics_are_born_with_the_node_null_until_the_first_site_state() -> None:
    node, msgs = site_node()
    ((topic, nbirth),) = msgs
    assert topic == "spBv1.0/bms/NBIRTH/site1"
    metrics = by_name(nbirth)
    for d in SITE_METRICS:
        m = metrics[d.name]
        assert m.datatype == d.datatype and m.alias > 0 and m.is_null, d.name
    assert metrics["Site/SOC"].properties.values[0].string_value == "%"
    names = {m.alias: m.name for m in nbirth.metrics}
    out = decode(node.site_state(site_state().model_copy(update={"ts": T0 + 1}), T0 + 1.1))
    assert [t for t, _p in out] == ["spBv1.0/bms/NDATA/site1"] and out[0][1].seq == 1
    shown = node_values(out, names)
    assert shown["Site/SOC"] == 41.5 and shown["Site/Bus voltage"] == 26.2
    assert shown["Site/Strings joined"] == 2 and shown["Site/Strings total"] == 3
    assert shown["Site/Limits/Charge current (CCL)"] == 75.5
    assert shown["Site/Codes/Alarms"] == "cell_ov" and shown["Site/Codes/Alarm active"] is True
    assert shown["Site/Operation"] == "connect" and shown["Site/Full charge requested"] is False
    assert shown["Site/SOC uncertainty"] == 2.5 and shown["Site/Since SOC anchor"] == 3600.0
    # the sample's time, not the send's
    assert {m.timestamp for m in out[0][1].metrics} == {round((T0 + 1) * 1000)}
    assert "Systems/Known" not in shown  # unchanged


def test_site_metrics_go_by_exception_null_while_unknown_and_null_when_gone() -> None:
    node, msgs = site_node()
    names = {m.alias: m.name for m in msgs[0][1].metrics}
    node.site_state(site_state(), T0)
    same = node.site_state(site_state(soc=41.52, current_a=None), T0 + 0.1)  # within 0.05 %
    assert node_values(decode(same), names) == {"Site/Current": None}
    assert node.site_state(site_state(soc=41.52, current_a=None), T0 + 0.2) == []
    gone = node_values(decode(node.site_gone(T0 + 20)), names)
    assert set(gone) == {d.name for d in SITE_METRICS} - {"Site/Current"}
    assert set(gone.values()) == {None}  # null, never 0 or false
    assert node.site_gone(T0 + 21) == []  # once
    back = node_values(decode(node.site_state(site_state(), T0 + 30)), names)
    assert back["Site/SOC"] == 41.5
    # a rebirth carries the latest site values
    reborn = decode(node.command("spBv1.0/bms/NCMD/site1", rebirth_request(), T0 + 31))
    assert value(by_name(reborn[0][1])["Site/SOC"]) == 41.5


def test_the_site_values_before_the_birth_are_kept_for_it_and_none_without_a_site() -> None:
    node = EdgeNode("bms", "site1", site=True)
    assert node.site_state(site_state(soc=12.0), T0) == []
    node.session(0)
    assert value(by_name(decode(node.birth(T0))[0][1])["Site/SOC"]) == 12.0
    plain, msgs = born()
    assert not any(m.name.startswith("Site/") for m in msgs[0][1].metrics)
    assert plain.site_state(site_state(), T0) == [] and plain.site_gone(T0) == []


def test_site_and_device_aliases_are_unique_over_the_node() -> None:
    node = EdgeNode("bms", "site1", site=True)
    node.pack("s1", state(), T0)
    node.cells("s1", snapshot(), T0)
    node.session(0)
    msgs = decode(node.birth(T0))
    aliases = [m.alias for _t, p in msgs for m in p.metrics if m.name != BD_SEQ]
    assert len(aliases) == len(set(aliases))


# --- births ---------------------------------------------------------------------------------
def test_nbirth_names_the_node_metrics_and_a_dbirth_per_system_names_the_pack() -> None:
    _node, msgs = born(bd_seq=7, systems=("s1", "s2"))
    assert [t for t, _p in msgs] == [
        "spBv1.0/bms/NBIRTH/site", "spBv1.0/bms/DBIRTH/site/s1", "spBv1.0/bms/DBIRTH/site/s2",
    ]  # fmt: skip
    nbirth = msgs[0][1]
    assert nbirth.seq == 0 and nbirth.timestamp == round((T0 + 0.5) * 1000)
    metrics = by_name(nbirth)
    assert metrics[BD_SEQ].datatype == DataType.Int64 and metrics[BD_SEQ].long_value == 7
    assert metrics[REBIRTH].datatype == DataType.Boolean and metrics[REBIRTH].boolean_value is False
    assert value(metrics["Systems/Known"]) == 2 and value(metrics["Systems/Online"]) == 2
    assert [p.seq for _t, p in msgs] == [0, 1, 2]
    dbirth = by_name(msgs[1][1])
    for d in PACK_METRICS:
        m = dbirth[d.name]
        assert m.datatype == d.datatype and m.alias > 0, d.name
        assert m.timestamp == round(T0 * 1000), d.name  # the sample's time, not the send's
    assert value(dbirth["Pack/SOC"]) == 50.0 and value(dbirth["Pack/Contactors"]) == "closed"
    unit = dbirth["Pack/Voltage"].properties
    assert list(unit.keys) == ["engUnit"] and unit.values[0].string_value == "V"
    assert value(dbirth["Module 02/Cell 03/Voltage"]) == pytest.approx(3.3)
    assert value(dbirth["Module 01/Fresh"]) is True
    assert value(dbirth["Module 01/Temperature 01"]) == 25.0
    assert "Module 03/Fresh" not in dbirth and "Module 01/Cell 04/Voltage" not in dbirth


def test_aliases_are_unique_over_the_node_and_all_its_devices() -> None:
    _node, msgs = born(systems=("s1", "s2", "s3"))
    aliases = [m.alias for _t, p in msgs for m in p.metrics if m.name != BD_SEQ]
    assert len(aliases) == len(set(aliases)) and min(aliases) >= 1


def test_no_module_folders_unless_asked() -> None:
    node = EdgeNode("bms", "site", modules=False)
    node.pack("s1", state(), T0)
    assert node.cells("s1", snapshot(), T0) == []
    node.session(0)
    msgs = decode(node.birth(T0))
    assert not any(m.name.startswith("Module ") for m in msgs[1][1].metrics)


def test_ids_must_be_sparkplug_ids() -> None:
    for bad in ("a/b", "a+", "#", ""):
        with pytest.raises(ValueError):
            EdgeNode("bms", bad)
    with pytest.raises(ValueError):
        EdgeNode("bms", "site").pack("s/1", state(), T0)


def test_where_the_extremes_sit_is_numbered_from_one_as_the_folders_are() -> None:
    node = EdgeNode("bms", "site")
    extremes = {"cell_v_max_at": CellLocation(module=1, index=3),
                "cell_v_min_at": CellLocation(module=0, index=0),
                "temp_max_at": CellLocation(module=0, index=1)}  # fmt: skip
    node.pack("s1", state(**extremes), T0)
    node.cells("s1", snapshot(), T0)
    node.session(0)
    dbirth = by_name(decode(node.birth(T0))[1][1])
    assert value(dbirth["Cells/Voltage max at"]) == "M2 · C4"
    assert value(dbirth["Cells/Voltage min at"]) == "M1 · C1"
    assert value(dbirth["Temperatures/Max at"]) == "M1 · T2"


def test_unknown_values_are_null_never_zero() -> None:
    node = EdgeNode("bms", "site")
    node.pack("s1", state(soc=None, voltage=None, current=None), T0)
    node.cells("s1", snapshot(), T0)
    node.session(0)
    msgs = decode(node.birth(T0))
    dbirth = by_name(msgs[1][1])
    for m in (dbirth["Pack/SOC"], dbirth["Pack/Voltage"], dbirth["Pack/Power"],
              dbirth["Temperatures/Min"], dbirth["Module 01/Temperature 02"]):  # fmt: skip
        assert m.is_null and m.WhichOneof("value") is None, m.name
    assert not dbirth["Pack/Current"].HasField("double_value")
    # a value going unknown is reported, as null
    (out,) = decode(node.pack("s1", state(soc=40.0, voltage=None, current=None), T0 + 1))
    assert [(m.alias, m.is_null, value(m)) for m in out[1].metrics] == [
        (dbirth["Pack/SOC"].alias, False, 40.0)
    ]
    (out,) = decode(node.pack("s1", state(soc=None, voltage=None, current=None), T0 + 2))
    assert [(m.alias, m.is_null, value(m)) for m in out[1].metrics] == [
        (dbirth["Pack/SOC"].alias, True, None)
    ]


def test_the_anchor_metrics_carry_the_values_and_null_while_unknown() -> None:
    node = EdgeNode("bms", "site")
    node.pack("s1", state(soc_std=2.5, since_anchor_s=3600.0, full_charge_requested=True,
                          current_zero_offset_a=-0.12), T0)  # fmt: skip
    node.cells("s1", snapshot(), T0)
    node.session(0)
    dbirth = by_name(decode(node.birth(T0))[1][1])
    assert value(dbirth["Pack/SOC uncertainty"]) == 2.5
    assert value(dbirth["Pack/Since SOC anchor"]) == 3600.0
    assert value(dbirth["Pack/Full charge requested"]) is True
    assert dbirth["Pack/Full charge requested"].datatype == DataType.Boolean
    assert value(dbirth["Pack/Current zero offset"]) == pytest.approx(-0.12)
    # the anchor's age grows every second: sent again only once it moved a minute
    kept = dict(soc_std=2.5, full_charge_requested=True, current_zero_offset_a=-0.12)
    assert node.pack("s1", state(since_anchor_s=3630.0, **kept), T0 + 30) == []
    (out,) = decode(node.pack("s1", state(since_anchor_s=3661.0, **kept), T0 + 61))
    assert [(m.alias, value(m)) for m in out[1].metrics] == [
        (dbirth["Pack/Since SOC anchor"].alias, 3661.0)
    ]
    # unknown: null, never 0 or false
    (out,) = decode(node.pack("s1", state(since_anchor_s=3661.0), T0 + 62))
    nulls = {m.alias for m in out[1].metrics if m.is_null and m.WhichOneof("value") is None}
    assert nulls == {dbirth[n].alias for n in ("Pack/SOC uncertainty",
                     "Pack/Full charge requested", "Pack/Current zero offset")}  # fmt: skip


# --- data by exception ----------------------------------------------------------------------
def test_ddata_carries_only_what_changed_by_alias() -> None:
    node, msgs = born(systems=("s1", "s2"))
    aliases = {m.name: m.alias for m in msgs[2][1].metrics}
    assert node.pack("s2", state(T0 + 0.1), T0 + 0.1) == []  # nothing changed: nothing sent
    (out,) = decode(node.pack("s2", state(T0 + 0.2, soc=51.0, alarms=["cell_ov"]), T0 + 0.3))
    topic, p = out
    assert topic == "spBv1.0/bms/DDATA/site/s2" and p.seq == 3  # after NBIRTH 0, DBIRTH 1, 2
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
    alias = by_name(msgs[1][1])["Pack/Voltage"].alias
    assert node.pack("s1", state(voltage=30.04), T0) == []
    assert node.pack("s1", state(voltage=30.02), T0) == []
    (out,) = decode(node.pack("s1", state(voltage=30.06), T0))
    assert [(m.alias, m.double_value) for m in out[1].metrics] == [(alias, 30.06)]
    assert node.pack("s1", state(voltage=30.02), T0) == []  # 0.04 from what was sent


def test_ddata_carries_the_cells_that_changed() -> None:
    node, msgs = born()
    alias = by_name(msgs[1][1])["Module 02/Cell 02/Voltage"].alias
    snap = snapshot()
    cells = list(snap.modules[1].cell_v)
    cells[1] = 3.31
    mod = snap.modules[1].model_copy(update={"cell_v": cells})
    snap = snap.model_copy(update={"modules": [snap.modules[0], mod]})
    (out,) = decode(node.cells("s1", snap, T0 + 1))
    assert out[0] == "spBv1.0/bms/DDATA/site/s1"
    assert [(m.alias, m.double_value) for m in out[1].metrics] == [(alias, 3.31)]


def test_a_changed_layout_kills_the_device_and_births_it_with_the_new_metrics() -> None:
    node, msgs = born()
    before = by_name(msgs[1][1])
    out = decode(node.cells("s1", snapshot(modules=2, cells=4), T0 + 1))
    assert [t.split("/")[2:] for t, _p in out] == [["DDEATH", "site", "s1"],
                                                   ["DBIRTH", "site", "s1"]]  # fmt: skip
    after = by_name(out[1][1])
    assert "Module 01/Cell 04/Voltage" in after and "Pack/SOC" in after
    assert after["Module 01/Cell 01/Voltage"].alias == before["Module 01/Cell 01/Voltage"].alias
    out = decode(node.cells("s1", snapshot(modules=1, cells=4), T0 + 2))
    assert [t.split("/")[2] for t, _p in out] == ["DDEATH", "DBIRTH"]
    assert "Module 02/Fresh" not in by_name(out[1][1])


def test_a_gone_master_kills_its_device_alone_until_it_is_back() -> None:
    node, msgs = born(systems=("s1", "s2"))
    names = {m.alias: m.name for m in msgs[0][1].metrics}
    out = decode(node.gone("s1", T0 + 20))
    assert [t for t, _p in out] == ["spBv1.0/bms/DDEATH/site/s1", "spBv1.0/bms/NDATA/site"]
    assert list(out[0][1].metrics) == [] and out[0][1].seq == 3
    assert {names[m.alias]: value(m) for m in out[1][1].metrics} == {"Systems/Online": 1}
    assert node.gone("s1", T0 + 21) == []  # once
    assert node.cells("s1", snapshot(v=3.2), T0 + 22) == []  # cells without a state: still gone
    assert len(node.pack("s2", state(soc=1.0), T0 + 22)) == 1  # the other system goes on
    # a rebirth now leaves the dead device out
    reborn = decode(node.command("spBv1.0/bms/NCMD/site", rebirth_request(), T0 + 25))
    assert [t.rsplit("/", 1)[1] for t, _p in reborn] == ["site", "s2"]
    back = decode(node.pack("s1", state(soc=42.0), T0 + 30))
    assert [t.split("/")[2] for t, _p in back] == ["DBIRTH", "NDATA"]
    dbirth = by_name(back[0][1])
    assert value(dbirth["Pack/SOC"]) == 42.0
    assert value(dbirth["Module 01/Cell 01/Voltage"]) == 3.2  # the cells that came meanwhile
    node.gone("s2", T0 + 31)
    (again, _ndata) = decode(node.pack("s2", state(), T0 + 32))
    dbirth = by_name(again[1])
    assert dbirth["Module 01/Cell 01/Voltage"].is_null  # cells from before are not current


def test_nothing_is_sent_before_the_birth_and_the_birth_has_the_latest() -> None:
    node = EdgeNode("bms", "site")
    assert node.pack("s1", state(soc=10.0), T0) == []
    assert node.cells("s1", snapshot(), T0) == []
    node.session(0)
    node.pack("s1", state(soc=11.0), T0)  # born is false until birth()
    msgs = decode(node.birth(T0))
    assert value(by_name(msgs[1][1])["Pack/SOC"]) == 11.0
    node.lost()
    assert node.pack("s1", state(soc=12.0), T0) == []


def test_a_new_system_after_the_birth_gets_its_dbirth_with_its_cells() -> None:
    node, msgs = born()
    names = {m.alias: m.name for m in msgs[0][1].metrics}
    out = decode(node.pack("s2", state(), T0 + 1))  # its DBIRTH waits for its cells
    assert [t for t, _p in out] == ["spBv1.0/bms/NDATA/site"]
    assert {names[m.alias]: value(m) for m in out[0][1].metrics} == {
        "Systems/Known": 2, "Systems/Online": 2,
    }  # fmt: skip
    assert node.pack("s2", state(), T0 + 1 + CELLS_WAIT_S / 2) == []
    ((topic, p),) = decode(node.cells("s2", snapshot(), T0 + 2))
    assert topic == "spBv1.0/bms/DBIRTH/site/s2" and "Module 01/Fresh" in by_name(p)


def test_a_birth_leaves_out_a_system_still_waiting_for_its_cells() -> None:
    node = EdgeNode("bms", "site")
    node.pack("s1", state(), T0)
    node.session(0)
    assert [t for t, _p in node.birth(T0 + 1)] == ["spBv1.0/bms/NBIRTH/site"]
    (dbirth,) = node.cells("s1", snapshot(), T0 + 1.5)
    assert dbirth[0] == "spBv1.0/bms/DBIRTH/site/s1"


def test_a_system_without_cells_is_born_without_module_folders_after_the_wait() -> None:
    node, _msgs = born()
    assert len(node.pack("s2", state(), T0 + 1)) == 1  # NDATA
    ((topic, p),) = decode(node.pack("s2", state(), T0 + 1 + CELLS_WAIT_S))
    assert topic == "spBv1.0/bms/DBIRTH/site/s2"
    assert not any(n.startswith("Module ") for n in by_name(p))
    out = decode(node.cells("s2", snapshot(), T0 + 10))  # late cells: a new metric set
    assert [t.split("/")[2] for t, _p in out] == ["DDEATH", "DBIRTH"]


# --- seq and bdSeq --------------------------------------------------------------------------
STEP = st.tuples(st.sampled_from(["pack", "cells", "rebirth", "gone", "relayout"]),
                 st.sampled_from(["s1", "s2", "s3"]))  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=400))
def test_seq_counts_every_message_of_every_device_after_nbirth_and_wraps(
    steps: list[tuple[str, str]],
) -> None:
    """Sequence rules as a host checks them: one seq over the node and its devices, DBIRTH
    before any DDATA of a device (and again after its DDEATH), nothing for a dead device."""
    node, msgs = born(systems=("s1", "s2"))
    seqs = [p.seq for _t, p in msgs]
    alive = {t.rsplit("/", 1)[1] for t, _p in msgs[1:]}
    soc, v = 50.0, 3.3
    for i, (step, system) in enumerate(steps):
        now = T0 + i
        if step == "pack":
            soc = 100.0 - soc
            out = node.pack(system, state(now, soc=soc), now)
        elif step == "cells":
            v = 3.3 if v != 3.3 else 3.4
            out = node.cells(system, snapshot(ts=now, v=v), now)
        elif step == "relayout":
            out = node.cells(system, snapshot(modules=1 + i % 3, ts=now), now)
        elif step == "gone":
            out = node.gone(system, now)
        else:
            out = node.command("spBv1.0/bms/NCMD/site", rebirth_request(), now)
        for topic, p in decode(out):
            kind = topic.split("/")[2]
            device = topic.split("/")[4] if kind.startswith("D") else ""
            if kind == "NBIRTH":
                assert p.seq == 0
                seqs, alive = [0], set()
                continue
            assert p.HasField("seq") and 0 <= p.seq <= 255
            assert p.seq == (seqs[-1] + 1) % 256, (topic, seqs[-3:])
            seqs.append(p.seq)
            if kind == "DBIRTH":
                assert device not in alive
                alive.add(device)
            elif kind in ("DDATA", "DDEATH"):
                assert device in alive, (topic, alive)
                if kind == "DDEATH":
                    alive.discard(device)


def test_seq_wraps_from_255_to_0() -> None:
    node, _msgs = born()
    seqs = []
    for i in range(300):
        (out,) = decode(node.pack("s1", state(soc=float(i % 2) * 10), T0 + i))
        seqs.append(out[1].seq)
    assert seqs[253:257] == [255, 0, 1, 2] and seqs[0] == 2


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
    node, msgs = born(bd_seq=5, systems=("s1", "s2"))
    node.pack("s1", state(soc=70.0), T0 + 1)
    out = decode(node.command("spBv1.0/bms/NCMD/site", rebirth_request(), T0 + 2))
    assert [t.split("/")[2] for t, _p in out] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert [p.seq for _t, p in out] == [0, 1, 2]
    nbirth = by_name(out[0][1])
    assert nbirth[BD_SEQ].long_value == 5 and value(by_name(out[1][1])["Pack/SOC"]) == 70.0
    # same aliases as the first birth
    assert [{m.name: m.alias for m in p.metrics} for _t, p in out] == [
        {m.name: m.alias for m in p.metrics} for _t, p in msgs
    ]
    alias = nbirth[REBIRTH].alias
    again = node.command("spBv1.0/bms/NCMD/site", rebirth_request(alias=alias), T0)
    assert [t for t, _p in again][:1] == ["spBv1.0/bms/NBIRTH/site"]


def test_other_commands_change_nothing() -> None:
    node, _msgs = born()
    assert node.command("spBv1.0/bms/NCMD/site", rebirth_request(False), T0) == []
    assert node.command("spBv1.0/bms/DCMD/site/s1", rebirth_request(), T0) == []
    assert node.command("spBv1.0/bms/NCMD/other", rebirth_request(), T0) == []
    with pytest.raises(CommandError):
        node.command("spBv1.0/bms/NCMD/site", b"\xff\xff\xff", T0)


def test_a_full_system_dbirth_fits_the_broker_limit() -> None:
    """196 cells in 14 modules with 4 sensors each: the largest DBIRTH stays below the broker's
    `message_size_limit` (the broker would drop it silently)."""
    node = EdgeNode("bms", "site")
    node.pack("s1", state(), T0)
    snap = CellSnapshot(modules=[
        ModuleCells(module=m, fresh=True, cell_v=[3.3] * 14, cell_flags=[0] * 14,
                    balancing=[False] * 14, temp_c=[25.0] * 4, temp_flags=[0] * 4)
        for m in range(14)
    ])  # fmt: skip
    node.cells("s1", snap, T0)
    node.session(0)
    (_t, dbirth) = node.birth(T0)[1]
    assert len(dbirth) < BROKER_MESSAGE_SIZE_LIMIT / 4, len(dbirth)


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


# --- registry and ACL -----------------------------------------------------------------------
def test_every_topic_of_the_edge_node_is_in_the_registry_and_granted_by_the_acl() -> None:
    """What the edge node publishes and subscribes matches `OUTSIDE_TOPICS`, and the ACL of
    the deployed system lets the bridge do exactly that, a third party read it, and nobody
    touch another system's device."""
    node = EdgeNode(SPARKPLUG_GROUP, "site")
    node.pack("demo", state(), T0)
    node.cells("demo", snapshot(), T0)
    node.session(0)
    sent = [t for t, _p in node.birth(T0)]
    sent += [t for t, _p in node.pack("demo", state(soc=1.0), T0)]
    sent += [t for t, _p in node.gone("demo", T0)] + [node.topic("NDEATH")]
    assert {t.split("/")[2] for t in sent} == {"NBIRTH", "DBIRTH", "DDATA", "DDEATH", "NDATA",
                                               "NDEATH"}  # fmt: skip
    for topic in sent:
        spec = SPARKPLUG_DEVICE if topic.count("/") == 4 else SPARKPLUG_NODE
        assert re.fullmatch(re.sub(r"\\{\w+\\}", "[^/]+", re.escape(spec.address)), topic)
        assert acl.may(INTEGRATIONS, "write", topic, system="demo"), topic
        assert acl.may(THIRD_PARTY, "read", topic, system="demo"), topic
        assert not acl.may(THIRD_PARTY, "write", topic, system="demo"), topic
        assert spec_for(topic) is None  # the bus never decodes it as msgpack
    ncmd, dcmd = node.command_filters
    assert acl.may(INTEGRATIONS, "read", ncmd, system="demo")
    assert acl.may(INTEGRATIONS, "read", dcmd.replace("+", "demo"), system="demo")
    assert not acl.may(INTEGRATIONS, "write", node.topic("DDATA", "other"), system="demo")
    assert not acl.may(THIRD_PARTY, "read", node.topic("DDATA", "other"), system="demo")
    # pinned to its edge node (the credentials step's BMS_SPARKPLUG_EDGE_NODE): the same
    # topics and commands, and nothing of another site's edge node
    pinned = {"system": "demo", "edge_node": "site"}
    for topic in sent:
        assert acl.may(INTEGRATIONS, "write", topic, **pinned), topic
    assert all(acl.may(INTEGRATIONS, "read", f.replace("+", "demo"), **pinned)
               for f in node.command_filters)  # fmt: skip
    other = EdgeNode(SPARKPLUG_GROUP, "other-site")
    for topic in (other.topic("NBIRTH"), other.topic("DBIRTH", "demo")):
        assert not acl.may(INTEGRATIONS, "write", topic, **pinned), topic
    assert not acl.may(INTEGRATIONS, "read", other.command_filters[0], **pinned)
