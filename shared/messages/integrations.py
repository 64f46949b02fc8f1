"""What Home Assistant's button and select entities send to the integrations bridge (JSON)."""

from __future__ import annotations

from pydantic import ConfigDict

from shared.messages.envelope import Message
from shared.messages.slave import SlaveMode


class HaCommand(Message):
    """A press or a choice in Home Assistant, on `ha/cmd/{command}`: the bridge turns it into
    the master's command (`cmd/{command}`). Only `reset_faults` (no service override, ever)
    and `set_mode` exist; the envelope fields may be left out."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    mode: SlaveMode | None = None
    """set_mode only."""
