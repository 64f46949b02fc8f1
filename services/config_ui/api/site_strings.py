"""An operator's say over a string of the site (BMS_SITE): hold it out of the site's bus, or
ask a held string to join again (the site command `site_string`, to the site controller)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path

from services.config_ui.api.deps import Ctx, Operator
from shared.messages import SiteStringArgs

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
    reply = await ctx.bridge.site_string(SiteStringArgs(system=system, action=action))
    if reply is None:
        raise HTTPException(504, "the site controller did not answer in time")
    if reply.status != "accepted":
        raise HTTPException(502, f"the site controller refused: {reply.reason}")
    return {"system": system, "action": action, "reason": reply.reason, "by": session.username}
