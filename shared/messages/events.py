"""The event log: every raise and clear, mode change, command and configuration change."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from shared.messages.envelope import Message

EventLevel = Literal["info", "warning", "alarm", "fault"]
EventKind = Literal["raise", "clear", "mode", "command", "config", "info"]
EVENT_TEXT_MAX = 500
EVENT_VALUES_MAX = 32
EventText = Annotated[str, StringConstraints(max_length=EVENT_TEXT_MAX)]
EventValue = float | int | EventText | bool | None
EventKey = Annotated[str, StringConstraints(max_length=64)]


class Event(Message):
    level: EventLevel
    kind: EventKind
    code: str = Field(max_length=64, pattern=r"^[a-z0-9_]{1,64}$")
    text: str = Field("", max_length=EVENT_TEXT_MAX)
    values: dict[EventKey, EventValue] = Field(default_factory=dict, max_length=EVENT_VALUES_MAX)
