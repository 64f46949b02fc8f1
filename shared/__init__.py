"""Contracts and common code shared by every BMS service.

The topic tree and payload models (`shared.topics`, `shared.messages`), the msgpack codec
(`shared.codec`), the bus adapters (`shared.bus`), request/reply commands (`shared.commands`),
service settings (`shared.settings`) and the system configuration model (`shared.config`).
"""

SCHEMA_VERSION = 2
"""Version of the payload schemas on `bms/v1/...`; decoding refuses any other.

2: unknown values are None (pack state), and the cell snapshot is positional per module.
"""
