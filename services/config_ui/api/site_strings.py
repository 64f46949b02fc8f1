"""An operator's say over the site (BMS_SITE): hold a string out of the site's bus, or ask a
held string to join again (the site command `site_string`), and disconnect the whole site or
connect it again (`site_operation`, as SCADA's 802 SetOp), each to the site controller."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path

from services.config_ui.api.deps import Ctx, Operator
from shared.messages import CommandReply, SiteOperationArgs, SiteStringArgs

router = APIRouter(tags=["site"])


@router.post("/site/strings/{system}/{action}")
async def site_string(
    system: Annotated[str, Path(max_length=32, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")],
    action: Literal["join", "out"],
    session: Operator,
    ctx: Ctx,
) -> dict[str, Any]:
    """`out`: the site controller puts the string in standby and keeps it out ("out", the
    reason in words) until `join`: it then joins by the controller's rules (within the join
    window). 404 without a site; 502 when the controller refuses (the reason), 504 when it
    does not answer."""
    if ctx.site is None:
        raise HTTPException(404, "this system is not a string of a site (BMS_SITE)")
    args = SiteStringArgs(system=system, action=action)
    reply = _accepted(await ctx.bridge.site_command("site_string", args))
    return {"system": system, "action": action, "reason": reply.reason, "by": session.username}


@router.post("/site/operation/{action}")
async def site_operation(
    action: Literal["connect", "disconnect"], session: Operator, ctx: Ctx
) -> dict[str, Any]:
    """`disconnect`: the site controller puts every string in standby and keeps them out
    ("disconnected by an operator"), none joins until `connect`; `connect` lets the strings
    the disconnect held join again by the controller's rules (a string held out on its own, or
    out of service in the site configuration, stays out). The same as SCADA's 802 SetOp. 404
    without a site; 502 when the controller refuses (the reason), 504 when it does not
    answer."""
    if ctx.site is None:
        raise HTTPException(404, "this system is not a string of a site (BMS_SITE)")
    args = SiteOperationArgs(action=action, by="operator")
    reply = _accepted(await ctx.bridge.site_command("site_operation", args))
    return {"action": action, "result": reply.result, "by": session.username}


def _accepted(reply: CommandReply | None) -> CommandReply:
    """The accepted reply; 504 without one, 502 with the reason when refused."""
    if reply is None:
        raise HTTPException(504, "the site controller did not answer in time")
    if reply.status != "accepted":
        raise HTTPException(502, f"the site controller refused: {reply.reason}")
    return reply
