"""pysunspec2 scans the image as a real client would (skipped when pysunspec2 is missing)."""

from __future__ import annotations

from typing import Any

import pytest

from services.modbus_gateway.register_map import build_image
from tests.modbus_gateway.test_register_map import CONFIG, IDENTITY, make_cells, make_pack

client: Any = pytest.importorskip("sunspec2.modbus.client")


def scanned(image: dict[int, int]) -> Any:
    class ImageDevice(client.SunSpecModbusClientDevice):  # type: ignore[misc]
        def read(self, addr: float, count: float, op: int = 3) -> bytes:
            addr, count = int(addr), int(count)  # pysunspec2 passes floats for groups
            if any(a not in image for a in range(addr, addr + count)):
                raise client.SunSpecModbusClientError(f"exception 02 at {addr}")
            return b"".join(image[a].to_bytes(2, "big") for a in range(addr, addr + count))

    device = ImageDevice()
    device.scan()
    return device


def test_pysunspec2_reads_the_map() -> None:
    d = scanned(build_image(CONFIG, make_pack(), make_cells(), stale=False, identity=IDENTITY))
    topo = CONFIG.topology
    assert len(d.models[1]) == 1 and len(d.models[802]) == 1 and len(d.models[804]) == 1
    assert len(d.models[805]) == topo.modules
    assert d.common[0].Mn.cvalue == "ACME"
    battery = d.battery[0]
    assert battery.SoC.cvalue == pytest.approx(55.5)
    assert battery.A.cvalue == pytest.approx(-12.3)
    assert battery.V.cvalue == pytest.approx(356.2)
    string = d.lithium_ion_string[0]
    assert len(string.lithium_ion_string_module) == topo.modules
    module = d.models[805][1]
    cells = module.groups["lithium-ion-module-cell"]
    assert len(cells) == topo.cells_per_module
    assert cells[0].CellV.cvalue == pytest.approx(3.6 + 0.001 * topo.cells_per_module)


def test_pysunspec2_reads_stale_as_missing() -> None:
    d = scanned(build_image(CONFIG, None, None, stale=True, identity=IDENTITY))
    assert d.battery[0].SoC.cvalue is None
    assert d.battery[0].V.cvalue is None
    assert d.models[805][0].groups["lithium-ion-module-cell"][0].CellV.cvalue is None


def test_pysunspec2_reads_unknown_at_start_up_as_missing() -> None:
    """Before the estimator has started and before module 2 has reported."""
    pack = make_pack(soc=None, stale_modules=[1])
    d = scanned(build_image(CONFIG, pack, make_cells(stale=frozenset({1})), stale=False,
                            identity=IDENTITY))  # fmt: skip
    battery = d.battery[0]
    assert battery.SoC.cvalue is None and battery.DoD.cvalue is None
    assert battery.Evt1.value & 1 == 1  # COMMUNICATION_ERROR
    assert battery.V.cvalue == pytest.approx(356.2)
    cells = "lithium-ion-module-cell"
    assert d.models[805][0].groups[cells][0].CellV.cvalue == pytest.approx(3.6)
    assert all(c.CellV.cvalue is None for c in d.models[805][1].groups[cells])
    assert all(c.CellTmp.cvalue is None for c in d.models[805][1].groups[cells])
    assert d.models[805][1].V.cvalue is None
