"""Commands to the master (operator): mode, contactors, fault reset, with the master's reply."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from services.config_ui.api.deps import Ctx, Operator
from services.config_ui.context import UiContext
from shared.messages import (
    CommandArgs,
    ContactorsArgs,
    ResetFaultsArgs,
    SetModeArgs,
)

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
