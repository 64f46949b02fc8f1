"""The envelope every bus message carries."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from shared import SCHEMA_VERSION

TopicLevel = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
"""An identifier that is safe as one MQTT topic level (no '/', '+', '#')."""

Timestamp = Annotated[float, Field(ge=0.0, le=1.0e10, allow_inf_nan=False)]
"""Seconds since the Unix epoch (UTC)."""


class Message(BaseModel):
    """Base of every payload: schema version, source, sequence number and time stamp.

    `source`, `seq` and `ts` are stamped by the bus when left unset, so services only fill in
    the payload fields. Unknown keys are ignored, so that a newer publisher with extra fields
    does not break an older subscriber of the same schema version.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    schema_version: int = SCHEMA_VERSION
    source: str = Field("", max_length=128)
    seq: int | None = Field(None, ge=0, le=2**63 - 1)
    ts: Timestamp | None = None

    ENVELOPE_FIELDS: ClassVar[frozenset[str]] = frozenset({"schema_version", "source", "seq", "ts"})

    def stamped(self, *, source: str, seq: int, ts: float) -> dict[str, Any]:
        """The payload as a plain dict with the envelope filled in where it was left unset."""
        data = self.model_dump(mode="python")
        data["source"] = self.source or source
        data["seq"] = seq if self.seq is None else self.seq
        data["ts"] = ts if self.ts is None else self.ts
        return data
