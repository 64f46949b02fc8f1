"""The retained system configuration and each service's acknowledgement of it."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from shared.config import SystemConfig
from shared.messages.envelope import Message


class ConfigMessage(Message):
    # The configuration carries its own validation; strict typing would refuse msgpack lists
    # where the model keeps tuples.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=False)

    config: SystemConfig


class ConfigAck(Message):
    service: str = Field(max_length=64)
    config_version: int = Field(ge=0)
    accepted: bool
    errors: list[str] = Field(default_factory=list, max_length=50)
    restart_required: list[str] = Field(default_factory=list, max_length=200)
    """Accepted fields (dotted paths) this service applies only after a restart."""
