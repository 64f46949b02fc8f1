"""The integrations bridge: JSON mirror, Home Assistant discovery and Prometheus metrics.

One process for every system on the broker. It reads what a third party may read, publishes
only under its own prefixes (`bms/v1/{system}/json/`, Home Assistant's discovery prefix) and is
never on the protection path: nothing waits for it, and it sends no command.
"""
