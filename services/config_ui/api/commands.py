"""Commands to the master (operator): mode, contactors, fault reset, with the master's reply;
the service reset (admin, with a reason) for latches a normal reset must not clear."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from services.config_ui.api.deps import Admin, Ctx, Operator
from services.config_ui.context import UiContext
from shared.messages import (
    CommandArgs,
    ContactorsArgs,
    ResetFaultsArgs,
    ServiceOverride,
    ServiceResetArgs,
    SetModeArgs,
)
from shared.messages.commands import OverrideReason

log = logging.getLogger("config_ui.commands")

router = APIRouter()


class CommandResult(BaseModel):
    command: str
    status: Literal["accepted", "refused", "no_reply"]
    reason: str = ""
    result: dict[str, Any] = {}


async def run_command(ctx: UiContext, name: str, args: CommandArgs) -> CommandResult:
    reply = await ctx.bridge.command(name, args)
    if reply is None:
        return CommandResult(
            command=name, status="no_reply", reason="the master did not answer in time"
        )
    return CommandResult(
        command=name, status=reply.status, reason=reply.reason, result=reply.result
    )


@router.post("/commands/set_mode", tags=["commands"])
async def set_mode(body: SetModeArgs, _: Operator, ctx: Ctx) -> CommandResult:
    """Standby or working; returns the master's reply."""
    return await run_command(ctx, "set_mode", body)


@router.post("/commands/contactors", tags=["commands"])
async def contactors(body: ContactorsArgs, _: Operator, ctx: Ctx) -> CommandResult:
    """Close (through precharge) or open the main contactors."""
    return await run_command(ctx, "contactors", body)


@router.post("/commands/reset_faults", tags=["commands"])
async def reset_faults(_: Operator, ctx: Ctx) -> CommandResult:
    """Clear latched faults whose cause has gone."""
    return await run_command(ctx, "reset_faults", ResetFaultsArgs())


class ServiceResetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: OverrideReason


@router.post("/commands/service_reset", tags=["commands"])
async def service_reset(body: ServiceResetBody, session: Admin, ctx: Ctx) -> CommandResult:
    """Reset with a service override (admin): also clears latches whose reset needs service,
    such as a deep discharge, once their condition has released. The master logs it with
    your user name and the reason."""
    override = ServiceOverride(user=session.username, reason=body.reason)
    log.warning("service reset by %s: %s", session.username, body.reason)
    return await run_command(ctx, "service_reset", ServiceResetArgs(service_override=override))
