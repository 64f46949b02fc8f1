"""The retained system configuration and each service's acknowledgement of it."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.config import SystemConfig
from shared.messages.envelope import Message


class ConfigMessage(Message):
    # The configuration carries its own validation; strict typing would refuse msgpack lists
    # where the model keeps tuples.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)

    config: SystemConfig


IN_USE_MAX = 32
"""At most this many fields in use per acknowledgement (a gateway has at most nine such
settings); bounded so the ack stays below the largest topic limit (`shared.topics`)."""


class FieldInUse(BaseModel):
    """A configuration field that this service instance runs with another value, set on its
    host (a flag or a BMS_* variable) rather than in the system configuration."""

    model_config = ConfigDict(frozen=True, strict=True)

    value: str = Field(max_length=128)
    """The value in use, as text (`true`/`false` for a switch)."""
    source: str = Field(max_length=64)
    """The setting that sets it, by its variable (`BMS_TCP_PORT`; the flag `--tcp-port` is the
    same setting)."""
    host: str = Field("", max_length=128)
    """The host the instance runs on (as in its `ServiceStatus`)."""
    device: bool = False
    """The setting names the device on that host (a serial port, a listen address, a CAN
    channel) rather than changing the protocol: expected to differ between hosts."""


class ConfigAck(Message):
    service: str = Field(max_length=64)
    config_version: int = Field(ge=0)
    accepted: bool
    errors: list[Annotated[str, StringConstraints(max_length=500)]] = Field(
        default_factory=list, max_length=50, fail_fast=True
    )
    restart_required: list[Annotated[str, StringConstraints(max_length=128)]] = Field(
        default_factory=list, max_length=200, fail_fast=True
    )
    """Accepted fields (dotted paths) this service applies only after a restart."""
    in_use: dict[Annotated[str, StringConstraints(max_length=128)], FieldInUse] = Field(
        default_factory=dict, max_length=IN_USE_MAX
    )
    """The fields (dotted paths) of this configuration that this instance runs with another
    value, set on its host, and where that value comes from."""
