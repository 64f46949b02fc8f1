"""The event log: every raise and clear, mode change, command and configuration change."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.messages.envelope import Message

EventLevel = Literal["info", "warning", "alarm", "fault"]
EventKind = Literal["raise", "clear", "mode", "command", "config", "info"]
EventValue = float | int | str | bool | None


class Event(Message):
    level: EventLevel
    kind: EventKind
    code: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    text: str = Field("", max_length=500)
    values: dict[str, EventValue] = Field(default_factory=dict, max_length=32)
