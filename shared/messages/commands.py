"""Request/reply commands carried on `cmd/{command}` with the reply topic in the payload.

Correlation id, reply topic and expiry live in the payload, so commands work on MQTT 3.1.1
brokers as well as MQTT 5.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.messages.envelope import Message, Timestamp, TopicLevel
from shared.messages.events import EventKind, EventLevel
from shared.messages.slave import SlaveMode


class CommandArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ContactorsArgs(CommandArgs):
    action: Literal["close", "open"]


OverrideReason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=200),
    Field(description="why the latch may be cleared (e.g. the cell was checked or replaced)"),
]


class ServiceOverride(CommandArgs):
    """A service engineer's authority to clear latches whose reset needs "service" (see
    `shared/protection_codes.py`), e.g. a deep discharge after the cell has been checked. Logged
    with the user and the reason."""

    user: str = Field(min_length=1, max_length=64, description="who authorised the reset")
    reason: OverrideReason


class ResetFaultsArgs(CommandArgs):
    """Clear latched faults whose condition has released.

    `service_override` is accepted only on `cmd/service_reset`, which the broker lets only the
    web application publish (for its admin role); on `cmd/reset_faults` it is refused."""

    service_override: ServiceOverride | None = None


class ServiceResetArgs(ResetFaultsArgs):
    """`reset_faults` with the override it needs, on its own topic `cmd/service_reset`."""

    service_override: ServiceOverride


class SetModeArgs(CommandArgs):
    mode: SlaveMode


class HeartbeatArgs(CommandArgs):
    """Controller heartbeat: the master falls back to safe limits when it stops."""

    counter: int = Field(ge=0, le=2**32 - 1)


class EventsQueryArgs(CommandArgs):
    """A filter on the master's event log; the newest `limit` matches come back, newest first.

    With `after_id`, the oldest `limit` matches after that id come back, oldest first: a
    consumer that saw a jump in the master's event `seq` (the log's row id) fetches the gap
    with `after_id` = the last `seq` it had, and pages on with the last id it got. For another
    `source` with its `seq_epoch`, the master answers from the events of that source it
    received (ids are then that source's `seq`; the other filters do not apply).
    """

    since_ts: Timestamp = 0.0
    until_ts: Timestamp | None = None
    min_level: EventLevel = "info"
    kind: EventKind | None = None
    code: str | None = Field(
        None, max_length=64, pattern=r"^[a-z0-9_]{1,64}$", description="part of the code"
    )
    text: str | None = Field(None, min_length=1, max_length=100, description="part of the text")
    limit: int = Field(100, ge=1, le=1000)
    after_id: int | None = Field(
        None, ge=-1, le=2**63 - 1, description="rows after this id (-1: from a count's start)"
    )
    source: TopicLevel | None = Field(None, description="only events of this source")
    seq_epoch: Timestamp | None = Field(None, description="with `source`: its epoch")


class SiteStringArgs(CommandArgs):
    """`site_string`, to a site controller under the site id: an operator holds a string out
    of the site's bus ("out": its master is put in standby and kept there) or asks a held
    string to join again ("join": it joins by the controller's rules, within the window)."""

    system: str = Field(max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    action: Literal["join", "out"]


class SiteOperationArgs(CommandArgs):
    """`site_operation`, to a site controller under the site id: SCADA (802 `SetOp`, through
    the Modbus gateway) or an operator disconnects the whole site ("disconnect": every string's
    master is put in standby and kept there, none joins until "connect") or connects it again
    ("connect": the strings the disconnect held join by the controller's rules; a string an
    operator holds out, or out of service in the site configuration, stays out). `by` says who
    asked, in the strings' reason ("disconnected by SCADA")."""

    action: Literal["connect", "disconnect"]
    by: Literal["scada", "operator"] = "operator"


class OcvCaptureArgs(CommandArgs):
    """`ocv_capture`: start, abort or ask about the master's capture of a slow (C/20) cycle
    from which it derives the OCV branches (services/master_core/estimation/ocv_capture.py).
    "start" drops any capture running or done and waits for the start anchor ("full_first":
    a full charge, then a slow discharge to empty and a slow charge to full; "empty_first":
    the other way round); the inverter (or the operator) drives the currents. Every reply's
    `result` carries the status; once done also the CSV the wizard imports (`csv`) and the
    measured capacity and cell spread (`summary`). The capture outlives a restart of the
    master: a finished one is offered again; a running one resumes within its 30 s gap rule,
    else it is aborted with `gap`."""

    action: Literal["start", "abort", "status"]
    order: Literal["full_first", "empty_first"] = "full_first"
    max_c_rate: float = Field(0.05, gt=0.0, le=0.2, description="the slow rate (C/20: 0.05)")


COMMAND_ARGS: dict[str, type[CommandArgs]] = {
    "contactors": ContactorsArgs,
    "reset_faults": ResetFaultsArgs,
    "service_reset": ServiceResetArgs,
    "set_mode": SetModeArgs,
    "heartbeat": HeartbeatArgs,
    "events_query": EventsQueryArgs,
    "site_string": SiteStringArgs,
    "site_operation": SiteOperationArgs,
    "ocv_capture": OcvCaptureArgs,
}
"""Every command with its arguments: the master's, and `site_string` and `site_operation`, the
site controller's (under the site id)."""


ARG_TEXT_MAX = 256
"""Longest text argument (the override reason, 200 characters, with surrounding blanks)."""
ArgName = Annotated[str, StringConstraints(max_length=32)]
ArgScalar = bool | int | float | Annotated[str, StringConstraints(max_length=ARG_TEXT_MAX)] | None
ArgValue = ArgScalar | Annotated[dict[ArgName, ArgScalar], Field(max_length=4)]
"""An argument: a scalar, or one level of named scalars (`service_override`)."""
ARGS_MAX = max(len(model.model_fields) for model in COMMAND_ARGS.values())
"""Arguments of one command: as many as the largest command takes (events_query)."""
RESULT_MAX = 16


class CommandRequest(Message):
    command: str = Field(max_length=32, pattern=r"^[a-z_]{1,32}$")
    correlation_id: str = Field(min_length=1, max_length=64)
    reply_to: str = Field(min_length=1, max_length=256)
    expires_at: Timestamp
    args: dict[ArgName, ArgValue] = Field(default_factory=dict, max_length=ARGS_MAX)
    """Checked against the command's model in `COMMAND_ARGS` by the server."""


class CommandHeader(BaseModel):
    """What a request that failed validation still says about where to reply: read only to
    refuse it in words (a client otherwise waits for its expiry). Nothing else is trusted."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    command: str = Field(max_length=32, pattern=r"^[a-z_]{1,32}$")
    correlation_id: str = Field(min_length=1, max_length=64)
    reply_to: str = Field(min_length=1, max_length=256)
    expires_at: Timestamp


class CommandReply(Message):
    """The reply to one command: accepted, or refused with the reason.

    `result` is open (an events query returns rows of the event log), so the reply topic's
    byte limit is set in `shared/topics.py`, not derived from this model."""

    command: str = Field(max_length=32, pattern=r"^[a-z_]{1,32}$")
    correlation_id: str = Field(min_length=1, max_length=64)
    status: Literal["accepted", "refused"]
    reason: str = Field("", max_length=500)
    result: dict[str, Any] = Field(default_factory=dict, max_length=RESULT_MAX)
