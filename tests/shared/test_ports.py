"""A port picked for a listener is one no outgoing connection can take in the meantime."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from shared import ports
from shared.broker import free_port

RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    if not RANGE_FILE.exists():
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range: not Linux")
    return int(RANGE_FILE.read_text().split()[0])


def test_a_picked_port_is_below_the_range_outgoing_connections_use() -> None:
    # a CI run lost the web application's port to an MQTT client's local port: picked by
    # bind(0), released, then handed to a connect() before uvicorn bound it
    low = _ephemeral_low()
    picked = [free_port() for _ in range(200)]
    assert all(ports.LISTEN_PORT_FLOOR <= p < low for p in picked), picked


def test_picks_in_one_process_differ_until_the_pool_is_spent() -> None:
    # two ports asked for in a row (the UI's and the Modbus gateway's) are both still free
    picked = [free_port() for _ in range(500)]
    assert len(set(picked)) == len(picked)


def test_a_picked_port_can_be_listened_on() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()


def test_a_port_someone_listens_on_is_not_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    low = _ephemeral_low()
    held = free_port()
    monkeypatch.setattr(ports, "_given", set())  # only the bind check may pass it over
    # the first picks all land on the held port
    picks = iter([held, held, held])
    real = ports._candidate
    monkeypatch.setattr(ports, "_candidate", lambda lo, hi: next(picks, None) or real(lo, hi))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", held))
        listener.listen()
        got = free_port()
    assert got != held
    assert ports.LISTEN_PORT_FLOOR <= got < low


def test_without_room_below_the_range_the_os_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (ports.LISTEN_PORT_FLOOR + 10, 65535))
    port = free_port()
    assert port >= ports.LISTEN_PORT_FLOOR + 10


def test_the_range_is_read_from_the_kernel() -> None:
    low = _ephemeral_low()
    got = ports.ephemeral_range()
    assert got is not None and got[0] == low
