"""Bus adapters: `MqttBus` on a real broker, `InMemoryBus` for unit tests; same interface."""

from shared.bus.core import BusCore, Delivery, Handler
from shared.bus.memory import InMemoryBroker, InMemoryBus
from shared.bus.mqtt import MqttBus, unique_client_id

Bus = BusCore

__all__ = [
    "Bus",
    "BusCore",
    "Delivery",
    "Handler",
    "InMemoryBroker",
    "InMemoryBus",
    "MqttBus",
    "unique_client_id",
]
