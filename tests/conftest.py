"""Broker fixtures for integration tests; the helpers themselves live in shared/broker.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol

import pytest

from shared.broker import EmbeddedBroker, MosquittoBroker, find_mosquitto
from shared.netfault import TcpFaultProxy
from shared.rabbitmq import RabbitCluster, find_rabbitmq

_NO_MOSQUITTO_ENV = "BMS_TEST_ALLOW_NO_MOSQUITTO"


class BrokerAddress(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tag by fixture so `-m "not broker"` works without hand-written marks.
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"mosquitto", "restartable_mosquitto"}:
            item.add_marker(pytest.mark.broker)
        if "embedded_broker" in names:
            item.add_marker(pytest.mark.embedded_broker)


def _require_mosquitto() -> None:
    if find_mosquitto() is not None:
        return
    msg = (
        "mosquitto is required for broker tests: install it with `apt-get install mosquitto` "
        f"(or set {_NO_MOSQUITTO_ENV}=1 to skip these tests)"
    )
    if os.environ.get(_NO_MOSQUITTO_ENV) == "1":
        pytest.skip(msg)
    pytest.fail(msg, pytrace=False)


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoBroker]:
    """One real mosquitto per session; isolate tests by topic (see `system_id`)."""
    _require_mosquitto()
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture
def restartable_mosquitto() -> Iterator[MosquittoBroker]:
    """A private mosquitto that the test may kill() and start() again on the same port."""
    _require_mosquitto()
    with MosquittoBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def embedded_broker() -> Iterator[EmbeddedBroker]:
    """The amqtt fallback broker (MQTT 3.1.1 only)."""
    pytest.importorskip("amqtt", reason="amqtt missing: install the `broker` extra")
    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[BrokerAddress], TcpFaultProxy]]:
    """Factory: `fault_proxy(broker)` returns a TcpFaultProxy in front of that broker."""
    proxies: list[TcpFaultProxy] = []

    def make(broker: BrokerAddress) -> TcpFaultProxy:
        proxy = TcpFaultProxy(broker.host, broker.port)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def system_id() -> str:
    """Unique per test, so tests sharing the session broker never see each other's retained data."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """Three RabbitMQ nodes on loopback, clustered, the MQTT plugin on each (shared/rabbitmq.py).

    About 40 s to start on two cores. Skipped where the Debian package is missing."""
    if find_rabbitmq() is None:
        pytest.skip("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    with RabbitCluster(3, base=tmp_path_factory.mktemp("rabbit")) as cluster:
        yield cluster
