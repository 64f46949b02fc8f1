"""Presence of each service instance (retained; the last will sets it offline)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.messages.envelope import Message, Timestamp


class ServiceStatus(Message):
    service: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    state: Literal["online", "offline"]
    version: str = Field("", max_length=32)
    host: str = Field("", max_length=128)
    pid: int = Field(0, ge=0)
    started_ts: Timestamp = 0.0
    counters: dict[str, int] = Field(default_factory=dict, max_length=256)
    """Health counters of the instance (refused payloads, dropped messages, overruns, ...)."""
