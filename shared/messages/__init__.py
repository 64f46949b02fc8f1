"""Payload models of every topic (pydantic v2, sent as msgpack maps with string keys)."""

from shared.messages.commands import (
    COMMAND_ARGS,
    CommandArgs,
    CommandHeader,
    CommandReply,
    CommandRequest,
    ContactorsArgs,
    EventsQueryArgs,
    HeartbeatArgs,
    OcvCaptureArgs,
    ResetFaultsArgs,
    ServiceOverride,
    ServiceResetArgs,
    SetModeArgs,
    SiteOperationArgs,
    SiteStringArgs,
)
from shared.messages.config import ConfigAck, ConfigMessage, FieldInUse
from shared.messages.envelope import Message
from shared.messages.events import Event
from shared.messages.integrations import HaCommand
from shared.messages.pack import (
    CellLocation,
    CellPoint,
    CellSnapshot,
    Limits,
    ModuleCells,
    PackState,
    TempPoint,
)
from shared.messages.service import ServiceStatus
from shared.messages.sim import GroundTruth, PlantControl, SimControl
from shared.messages.site import (
    SiteConfigMessage,
    SiteLimits,
    SiteState,
    SiteSummary,
    StringState,
)
from shared.messages.slave import (
    BalanceCommand,
    CellTelemetry,
    ChannelFlag,
    RackTelemetry,
    SlaveModeCommand,
    SlaveStatus,
)

__all__ = [
    "COMMAND_ARGS",
    "BalanceCommand",
    "CellLocation",
    "CellPoint",
    "CellSnapshot",
    "CellTelemetry",
    "ChannelFlag",
    "CommandArgs",
    "CommandHeader",
    "CommandReply",
    "CommandRequest",
    "ConfigAck",
    "ConfigMessage",
    "ContactorsArgs",
    "Event",
    "EventsQueryArgs",
    "FieldInUse",
    "GroundTruth",
    "HaCommand",
    "HeartbeatArgs",
    "Limits",
    "Message",
    "ModuleCells",
    "OcvCaptureArgs",
    "PackState",
    "PlantControl",
    "RackTelemetry",
    "ResetFaultsArgs",
    "ServiceOverride",
    "ServiceResetArgs",
    "ServiceStatus",
    "SetModeArgs",
    "SimControl",
    "SiteConfigMessage",
    "SiteLimits",
    "SiteOperationArgs",
    "SiteState",
    "SiteStringArgs",
    "SiteSummary",
    "SlaveModeCommand",
    "SlaveStatus",
    "StringState",
    "TempPoint",
]
