"""The served image across a topology change: never the old layout with new values, nor the
new layout with old values."""

from __future__ import annotations

from services.modbus_gateway.register_map import read_raw, register_map
from services.modbus_gateway.server import GatewayData
from shared.config.system import SystemConfig
from tests.modbus_gateway.test_register_map import CONFIG, IDENTITY, make_cells, make_pack

BIGGER = SystemConfig.from_preset(
    "NMC", system_id="demo", modules=CONFIG.topology.modules + 1,
    cells_per_module=CONFIG.topology.cells_per_module, config_version=2,
)  # fmt: skip


def native(data: GatewayData, name: str) -> int | str | None:
    rmap = register_map(data.config)
    return read_raw(data.image(), rmap.by_key[f"native.{name}"])


def test_a_topology_change_serves_nothing_old_until_the_new_layout_is_reported() -> None:
    now = [0.0]
    data = GatewayData(CONFIG, IDENTITY, 3.0, monotonic=lambda: now[0])
    data.update_pack(make_pack())
    data.update_cells(make_cells())
    assert native(data, "Stale") == 0 and native(data, "V") is not None

    data.replace_config(BIGGER, IDENTITY)
    assert native(data, "NCell") == BIGGER.topology.total_cells  # the new layout at once
    assert native(data, "Stale") == 1 and native(data, "V") is None
    # The master still on the old topology: neither its pack nor its cells are served.
    data.update_pack(make_pack())
    data.update_cells(make_cells())
    assert native(data, "Stale") == 1 and native(data, "CellV1") is None
    assert data.counters["cell_snapshots_of_another_layout"] == 1
    # The master reports the new layout: its data is served.
    data.update_cells(make_cells(BIGGER))
    data.update_pack(make_pack())
    assert native(data, "Stale") == 0
    assert native(data, f"CellV{BIGGER.topology.total_cells}") is not None


def test_a_configuration_with_the_same_topology_keeps_the_data() -> None:
    now = [0.0]
    data = GatewayData(CONFIG, IDENTITY, 3.0, monotonic=lambda: now[0])
    data.update_pack(make_pack())
    data.update_cells(make_cells())
    data.replace_config(CONFIG.model_copy(update={"config_version": 2}), IDENTITY)
    assert native(data, "Stale") == 0 and native(data, "CellV1") is not None
