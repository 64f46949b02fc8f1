"""Every configuration field is read by a service, tagged live or restart, and its changes are
reported in the acknowledgement."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.bus import InMemoryBroker, InMemoryBus
from shared.config import CHEMISTRY_NAMES, SystemConfig, demo_config
from shared.config.fields import (
    CAN,
    FIELD_USES,
    MASTER,
    MODBUS,
    SITE_FIELD_USES,
    UNREAD,
    Reader,
    changed_fields,
    leaf_paths,
    restart_required,
    site_field_description,
    site_leaf_paths,
    site_use_of,
    use_of,
)
from shared.config_ack import acknowledge_config
from shared.messages import ConfigAck
from shared.topics import CONFIG_ACK

ROOT = Path(__file__).resolve().parents[2]
LEAVES = list(leaf_paths())

KNOWN_UNREAD: set[str] = set()
"""Fields nothing reads today. A new field nobody reads fails the test; so does a field on this
list that a service starts reading (take it off the list and declare the reader)."""


def reader_problems(path: str, reader: Reader) -> list[str]:
    """What the source of `reader` lacks to read `path`: each token as `.token` or "token"."""
    file = ROOT / reader.module
    if not file.is_file():
        return [f"{path}: {reader.module} does not exist"]
    text = file.read_text()
    tokens = reader.tokens or (path.rsplit(".", 1)[-1],)
    return [
        f"{path}: {reader.module} does not read {token}"
        for token in tokens
        if not re.search(rf"\.{token}\b|\"{token}\"", text)
    ]


def test_every_leaf_has_an_entry_and_every_entry_a_leaf() -> None:
    assert len(LEAVES) > 150
    firsts = {use_of(path).pattern for path in LEAVES}
    dead = [u.pattern for u in FIELD_USES if u.pattern not in firsts]
    assert dead == [], f"entries that match no field (or only after an earlier entry): {dead}"


def test_no_field_is_read_by_no_service() -> None:
    unread = set(UNREAD)
    assert unread - KNOWN_UNREAD == set(), "fields no service reads"
    assert KNOWN_UNREAD - unread == set(), "now read: take them off KNOWN_UNREAD"


@pytest.mark.parametrize("path", LEAVES)
def test_each_declared_reader_reads_the_field(path: str) -> None:
    problems = [p for r in use_of(path).readers for p in reader_problems(path, r)]
    assert problems == []


def test_the_reader_check_catches_a_module_that_does_not_read() -> None:
    assert reader_problems("timing.x", Reader(MASTER, "services/master_core/pack.py", "live"))
    assert reader_problems("timing.x", Reader(MASTER, "services/master_core/nope.py", "live"))
    ok = Reader(MASTER, "services/master_core/comm_supervision.py", "live")
    assert reader_problems("timing.sample_period_working_s", ok) == []


def test_tags() -> None:
    assert use_of("interfaces.can.channel").apply == "live"  # the gateway reopens the bus
    assert use_of("protection.cell_overvoltage.fault.threshold").apply == "live"
    assert use_of("topology.modules").apply == "live"  # the Modbus gateway rebuilds its map
    assert use_of("interfaces.modbus.rtu_parity").apply == "live"


# --- changes --------------------------------------------------------------------------------

DEMO = demo_config()


def test_the_same_configuration_changes_nothing() -> None:
    assert changed_fields(DEMO, demo_config()) == []


def test_a_first_configuration_changes_every_field_and_needs_no_restart() -> None:
    assert [c.path for c in changed_fields(None, DEMO)] == LEAVES
    assert restart_required(CAN, None, DEMO) == []


def test_a_can_channel_change_is_applied_live() -> None:
    data = DEMO.model_dump(mode="json")
    data["interfaces"]["can"]["channel"] = "can1"
    data["interfaces"]["can"]["bitrate"] = 250_000
    new = SystemConfig.model_validate(data)
    changed = changed_fields(DEMO, new)
    assert [c.path for c in changed] == ["interfaces.can.channel", "interfaces.can.bitrate"]
    assert changed[0].old == "can0" and changed[0].new == "can1"
    assert restart_required(CAN, DEMO, new) == []  # the gateway reopens the bus
    assert restart_required(MASTER, DEMO, new) == []


def test_a_threshold_change_is_live() -> None:
    data = DEMO.model_dump(mode="json")
    data["protection"]["insulation_warning_ohm"] = 800_000.0
    new = SystemConfig.model_validate(data)
    assert [c.path for c in changed_fields(DEMO, new)] == ["protection.insulation_warning_ohm"]
    assert all(restart_required(s, DEMO, new) == [] for s in (MASTER, CAN, MODBUS))


def test_a_new_module_count_needs_no_restart() -> None:
    new = SystemConfig.from_preset("NMC", modules=6, cells_per_module=14)
    assert "topology.modules" in [c.path for c in changed_fields(DEMO, new)]
    assert all(restart_required(s, DEMO, new) == [] for s in (MASTER, CAN, MODBUS))


def test_modbus_interface_parameters_are_read_by_the_gateway_and_live() -> None:
    data = DEMO.model_dump(mode="json")
    data["interfaces"]["modbus"] |= {"tcp_port": 1502, "rtu_parity": "O", "unit_id": 7}
    new = SystemConfig.model_validate(data)
    changed = changed_fields(DEMO, new)
    assert {c.path for c in changed} == {
        "interfaces.modbus.tcp_port",
        "interfaces.modbus.rtu_parity",
        "interfaces.modbus.unit_id",
    }
    assert all(MODBUS in {r.service for r in c.use.readers} for c in changed)
    assert restart_required(MODBUS, DEMO, new) == []


def test_the_acknowledgement_lists_the_fields_that_need_a_restart() -> None:
    broker = InMemoryBroker()
    gateway = InMemoryBus(broker, system="demo", service="can_gateway", kind="can_gateway")
    ui = InMemoryBus(broker, system="demo", service="config_ui", kind="test")
    seen: list[ConfigAck] = []
    ui.subscribe(CONFIG_ACK, lambda d: seen.append(d.message))
    gateway.start()
    ui.start()
    acknowledge_config(gateway, 7, restart_required=["interfaces.can.channel"])
    acknowledge_config(gateway, 8, ["bad"], restart_required=["interfaces.can.channel"])
    acknowledge_config(gateway, 9)
    ui.process()
    assert [(a.config_version, a.accepted, a.restart_required) for a in seen] == [
        (7, True, ["interfaces.can.channel"]),
        (8, False, []),
        (9, True, []),
    ]


configs = st.builds(
    SystemConfig.from_preset,
    st.sampled_from(CHEMISTRY_NAMES),
    modules=st.integers(1, 8),
    cells_per_module=st.integers(4, 16),
    temp_sensors_per_module=st.integers(1, 4),
    cell_capacity_ah=st.sampled_from((50.0, 100.0)),
)


@settings(max_examples=60, deadline=None)
@given(configs, configs)
def test_changed_fields_are_exactly_the_differing_leaves(a: SystemConfig, b: SystemConfig) -> None:
    changed = changed_fields(a, b)
    assert (changed == []) == (a == b)
    dumped_a, dumped_b = a.model_dump(), b.model_dump()
    for c in changed:
        assert c.old != c.new
        node_a, node_b = dumped_a, dumped_b
        for part in c.path.split("."):
            node_a = node_a[part] if isinstance(node_a, dict) else None
            node_b = node_b[part] if isinstance(node_b, dict) else None
        assert (node_a, node_b) == (c.old, c.new)
    # applying the changes to a gives b
    data = a.model_dump()
    for c in changed:
        *parents, last = c.path.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = c.new
    assert SystemConfig.model_validate(data) == b


# --- the site configuration ----------------------------------------------------------------
SITE_LEAVES = list(site_leaf_paths())


def test_every_site_leaf_has_an_entry_a_reader_and_words() -> None:
    assert "strings.*.system" in SITE_LEAVES and "join_window_v" in SITE_LEAVES
    firsts = {site_use_of(path).pattern for path in SITE_LEAVES}
    assert [u.pattern for u in SITE_FIELD_USES if u.pattern not in firsts] == []
    for path in SITE_LEAVES:
        use = site_use_of(path)
        assert use.readers, f"{path}: no reader"
        assert [p for r in use.readers for p in reader_problems(path, r)] == []
        assert site_field_description(path)[0], f"{path}: no docstring in shared/config/site.py"


def test_the_site_fields_are_in_the_generated_doc() -> None:
    text = (ROOT / "docs" / "configuration-fields.md").read_text()
    assert "## Site configuration" in text
    for path in SITE_LEAVES:
        assert f"| `{path}` |" in text
