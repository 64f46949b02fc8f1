"""The retained system configuration and each service's acknowledgement of it."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

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
    errors: list[Annotated[str, StringConstraints(max_length=500)]] = Field(
        default_factory=list, max_length=50, fail_fast=True
    )
    restart_required: list[Annotated[str, StringConstraints(max_length=128)]] = Field(
        default_factory=list, max_length=200, fail_fast=True
    )
    """Accepted fields (dotted paths) this service applies only after a restart."""
