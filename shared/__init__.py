"""Contracts and common code shared by every BMS service.

The topic tree and payload models (`shared.topics`, `shared.messages`), the msgpack codec
(`shared.codec`), the bus adapters (`shared.bus`), request/reply commands (`shared.commands`),
service settings (`shared.settings`) and the system configuration model (`shared.config`).
"""

SCHEMA_VERSION = 1
"""Version of the payload schemas on `bms/v1/...`; decoding refuses any other."""
