"""The event log: every raise and clear, mode change, command and configuration change."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from shared.messages.envelope import Message, Timestamp

EventLevel = Literal["info", "warning", "alarm", "fault"]
EventKind = Literal["raise", "clear", "mode", "command", "config", "info"]
EVENT_TEXT_MAX = 500
EVENT_VALUES_MAX = 32
EventText = Annotated[str, StringConstraints(max_length=EVENT_TEXT_MAX)]
EventValue = float | int | EventText | bool | None
EventKey = Annotated[str, StringConstraints(max_length=64)]


class Event(Message):
    """One event on `events/{source}`.

    Sequence: within one `seq_epoch` of one source, the envelope's `seq` counts up by one per
    event, so a consumer that sees a jump knows what it missed. The master's `seq` is the row
    id of its SQLite event log and its `seq_epoch` the time that log was created: durable
    across restarts, and a gap is fetched with `events_query` (`after_id`). Any other source
    counts from 0 per process and its `seq_epoch` is the process start time; a new epoch starts
    a new count (what was lost of the old one's tail cannot be known). The master keeps the
    events it receives from the other sources, so their gaps are fetched the same way (with
    `source` and `seq_epoch`).
    """

    seq_epoch: Timestamp | None = None
    level: EventLevel
    kind: EventKind
    code: str = Field(max_length=64, pattern=r"^[a-z0-9_]{1,64}$")
    text: str = Field("", max_length=EVENT_TEXT_MAX)
    values: dict[EventKey, EventValue] = Field(default_factory=dict, max_length=EVENT_VALUES_MAX)
