"""Host settings that stand in for configuration fields, and what a service reports of them.

A gateway's flags and BMS_* variables may name the device on its host (a serial port, a CAN
channel) or override a configured protocol value (a port, a unit id, a bit rate). Each gateway
lists them in one table of `HostSetting`s; `in_use` compares the values set on the host with a
configuration and yields the fields that run with another value, for the acknowledgement
(`ConfigAck.in_use`), so the web application shows what the gateways actually use.

Pure: no I/O; the host name is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared.messages import FieldInUse
from shared.messages.config import IN_USE_MAX

ENV_PREFIX = "BMS_"
"""`shared.settings.ServiceSettings` reads every setting from a variable with this prefix."""


@dataclass(frozen=True)
class HostSetting:
    """One setting of a service that stands in for one configuration field."""

    setting: str
    """The settings field (variable BMS_<SETTING>, flag --<setting-with-dashes>)."""
    path: str
    """The configuration field it stands in for (dotted path into `SystemConfig`)."""
    device: bool = False
    """It names the device on this host rather than changing the protocol."""

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.setting.upper()


def shown(value: object) -> str:
    """A value as the UI shows it: `true`/`false` for a switch, the text of anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def value_at(config: BaseModel, path: str) -> Any:
    """The field of `config` at the dotted `path` (AttributeError when there is none)."""
    node: Any = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


def in_use(
    table: Iterable[HostSetting],
    values: Mapping[str, object],
    config: BaseModel,
    host: str,
) -> dict[str, FieldInUse]:
    """The fields of `config` that run with another value because of a host setting.

    `values`: the settings by name, None (or absent) where not set. A setting equal to the
    configured value changes nothing and is left out. At most `IN_USE_MAX` fields, by path.
    """
    out: dict[str, FieldInUse] = {}
    for row in sorted(table, key=lambda r: r.path):
        value = values.get(row.setting)
        if value is None or value == value_at(config, row.path):
            continue
        out[row.path] = FieldInUse(
            value=shown(value)[:128], source=row.variable[:64], host=host[:128], device=row.device
        )
        if len(out) == IN_USE_MAX:
            break
    return out
