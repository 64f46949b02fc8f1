"""Presence of each service instance (retained; the last will sets it offline)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from shared.messages.envelope import Message, Timestamp

COUNTERS_MAX = 256
COUNTER_NAME_MAX = 128


class ServiceStatus(Message):
    service: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    state: Literal["online", "offline"]
    version: str = Field("", max_length=32)
    host: str = Field("", max_length=128)
    pid: int = Field(0, ge=0)
    started_ts: Timestamp = 0.0
    counters: dict[Annotated[str, StringConstraints(max_length=COUNTER_NAME_MAX)], int] = Field(
        default_factory=dict, max_length=COUNTERS_MAX
    )
    """Health counters of the instance (refused payloads, dropped messages, overruns, ...)."""
