"""SCADA operates the whole site over Modbus: a real pymodbus client writes the bank's SetOp.

Two strings, each a simulated slave agent and a real master (without auto-close), the real
site controller and the site's own Modbus gateway process, on a real mosquitto. SetOp 2
(DISCONNECT) is answered once the site controller accepted it: every string goes to standby
and stays out, the reason in words, and the bank reads DISCONNECTED (read with pysunspec2);
SetOp 1 (CONNECT) lets them join again by the controller's rules, the bank reads CONNECTED.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from services.modbus_gateway.site_map import site_map
from shared.broker import MosquittoBroker, free_port, wait_for_port

from .agents import ServiceProcess, wait_until
from .test_site_controller import Rig, StringSpec, rigs_on
from .test_site_transitions import Scada

SET_OP = site_map(()).by_key["battery.SetOp"].address
STATE_DISCONNECTED, STATE_CONNECTED = 1, 3


@pytest.fixture
def site_rig(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    yield from rigs_on(mosquitto, tmp_path)


def _write_set_op(port: int, value: int) -> int | None:
    """The exception code of a SetOp write (None: accepted)."""
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=10)
    assert client.connect()
    try:
        reply = client.write_register(SET_OP, value, device_id=1)
        return int(reply.exception_code) if reply.isError() else None
    finally:
        client.close()


def test_scada_disconnects_the_site_with_setop_and_connects_it_again(
    site_rig: Callable[..., Rig], tmp_path: Path
) -> None:
    port = free_port()
    rig = site_rig(
        [StringSpec("a", 50.0, 100.0), StringSpec("b", 50.0, 100.0)],
        cells=4, capacity_ah=10.0, load="constant:0", join_window_v=2.0, modbus_port=port,
    )  # fmt: skip
    rig.procs.append(ServiceProcess("modbus_gateway", rig.url, rig.site, tmp_path,
                                    site=rig.site, stale_after_s="3"))  # fmt: skip
    wait_for_port("127.0.0.1", port, 30)
    scada = Scada(port)

    def joined(n: int) -> bool:
        s = rig.latest()
        return s is not None and s.strings_joined == n

    assert wait_until(lambda: joined(2), 90), rig.story()
    assert wait_until(lambda: scada.read() and scada.bank.State.value == STATE_CONNECTED, 20), (
        rig.story()
    )
    assert scada.bank.SetOp.value == 1

    # DISCONNECT: answered once the site controller accepted it
    assert _write_set_op(port, 2) is None, rig.story()

    def all_out() -> bool:
        s = rig.latest()
        return s is not None and s.operation == "disconnect" and all(
            x.membership == "out" and x.mode == "standby" and x.contactors == "standby"
            for x in s.strings
        )  # fmt: skip

    assert wait_until(all_out, 30), rig.story()
    latest = rig.latest()
    assert latest is not None and latest.strings_joined == 0
    assert all(
        x.reason == "disconnected by SCADA: stays out until the site is connected again"
        for x in latest.strings
    ), latest.strings
    assert wait_until(lambda: scada.read() and scada.bank.State.value == STATE_DISCONNECTED, 20), (
        rig.story()
    )
    assert scada.bank.SetOp.value == 2 and scada.joined() == [False, False]
    codes = [e.code for e in rig.events]
    assert "site_disconnected" in codes, rig.story()
    # it stays disconnected: nobody is asked to work meanwhile
    seen = len(rig.states)
    assert wait_until(lambda: len(rig.states) >= seen + 30, 20)
    with rig.lock:
        later = rig.states[seen:]
    assert all_out() and not any(s.strings_joined for s in later), rig.story()

    # CONNECT: the strings join again by the controller's rules
    assert _write_set_op(port, 1) is None, rig.story()
    assert wait_until(lambda: joined(2), 60), rig.story()
    latest = rig.latest()
    assert latest is not None and latest.operation == "connect"
    assert wait_until(lambda: scada.read() and scada.bank.State.value == STATE_CONNECTED, 20), (
        rig.story()
    )
    assert scada.bank.SetOp.value == 1 and scada.joined() == [True, True]
    assert "site_connected" in [e.code for e in rig.events], rig.story()
