"""The wizard's steps as JSON: the draft, its fields, a step submitted, review and apply."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field

from services.config_ui import wizard
from services.config_ui.api.commands import CommandResult, run_command
from services.config_ui.api.configuration import RollbackBody, diff_info, version_info
from services.config_ui.api.deps import Admin, Ctx, Viewer, rejected
from services.config_ui.context import InvalidConfigError, UiContext
from shared.messages import OcvCaptureArgs

router = APIRouter()


@router.get("/wizard/steps", tags=["wizard"])
def wizard_steps(_: Viewer) -> list[dict[str, Any]]:
    return [{"key": s.key, "title": s.title, "help": s.help} for s in wizard.STEPS]


@router.get("/wizard/draft", tags=["wizard"])
def wizard_draft(session: Admin, ctx: Ctx) -> dict[str, Any]:
    """Your draft, with the problems it still has by field."""
    draft = ctx.draft_for(session.username)
    _, errors = wizard.validate(draft)
    return {"draft": draft, "errors": errors}


@router.get("/wizard/steps/{key}", tags=["wizard"])
def wizard_fields(key: str, session: Admin, ctx: Ctx) -> dict[str, Any]:
    """The fields of one step, with values from your draft and their problems, the derived
    fields its last submission moved or kept, and the services that run one of the step's
    fields with a value set on their host (`in_use`, by field; see GET /api/services)."""
    _step(key)
    draft = ctx.draft_for(session.username)
    _, errors = wizard.validate(draft)
    changed_in, changes = ctx.rederivations.get(session.username, ("", ()))
    fields = wizard.fields_for_step(key, draft)
    paths = {f.path for f in fields}
    return {
        "fields": [f.__dict__ for f in fields],
        "in_use": {p: u for p, u in ctx.live.in_use().items() if p in paths},
        "errors": wizard.errors_for_step(key, errors),
        # what this step's last submission derived again (or kept), until the next one
        "changes": _changes(changes, draft) if changed_in == key else [],
        # what the OCV table means for the SOC's accuracy (Cell data step)
        **({"ocv_note": wizard.ocv_note(draft)} if key == "cells" else {}),
    }


@router.put("/wizard/steps/{key}", tags=["wizard"])
def wizard_submit(
    key: str, session: Admin, ctx: Ctx, form: Annotated[dict[str, str], Body()]
) -> dict[str, Any]:
    """Set the fields of one step (values as text, as a form sends them)."""
    _step(key)
    result = ctx.submit_step(session.username, key, form)
    _, errors = wizard.validate(result.draft)
    step_errors = {**wizard.errors_for_step(key, errors), **result.errors}
    return {
        "errors": step_errors,
        "rederived": result.rederived,
        "changes": _changes(result.changes, result.draft),
        "next": wizard.next_step(key),
    }


def _changes(
    changes: tuple[wizard.Rederivation, ...], draft: dict[str, Any]
) -> list[dict[str, Any]]:
    rows = {r.path: r for r in wizard.describe_changes(changes, draft)}
    return [
        {"path": c.path, "label": rows[c.path].label, "unit": rows[c.path].unit,
         "old": c.old, "new": c.new, "kept": c.kept}
        for c in changes
    ]  # fmt: skip


class OcvCsvBody(BaseModel):
    csv: str = Field(min_length=1, max_length=wizard.OCV_CSV_MAX_BYTES)
    """soc_pct,ocv_charge_v,ocv_discharge_v[,temperature_c][,capacity_pct], or soc_pct,ocv_v
    (a single curve), one row per point (`wizard.ocv_csv`)."""
    source: str = Field("", max_length=300)
    """Where the table comes from (the cell's datasheet, a C/20 cycle of these cells)."""


@router.put("/wizard/ocv-csv", tags=["wizard"])
def wizard_ocv_csv(session: Admin, ctx: Ctx, body: OcvCsvBody) -> Any:
    """Set the Cell data step's OCV table from a CSV file: charge and discharge branches (or a
    single curve), per temperature where the file gives one. A bad file changes nothing and is
    answered 422 with one message per bad line (`errors["csv"]`). The answer lists the step's
    remaining problems (e.g. a table that does not span the cell's voltage window) and what the
    table means for the SOC's accuracy (`ocv_note`)."""
    parsed = wizard.parse_ocv_csv(body.csv, body.source.strip())
    if parsed.errors:
        return rejected({"csv": parsed.errors})
    result = ctx.submit_step(session.username, "cells", wizard.form_text(parsed.values))
    _, errors = wizard.validate(result.draft)
    return {
        "errors": {**wizard.errors_for_step("cells", errors), **result.errors},
        "points": parsed.points,
        "temperatures": parsed.temperatures,
        "branches": parsed.branches,
        "ocv_note": wizard.ocv_note(result.draft),
        "changes": _changes(result.changes, result.draft),
    }


class OcvCaptureBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["start", "abort"]
    order: Literal["full_first", "empty_first"] = "full_first"
    """full_first: a full charge, a slow discharge to empty, a slow charge to full;
    empty_first: the other way round."""
    max_c_rate: float = Field(0.05, gt=0.0, le=0.2)


@router.post("/wizard/ocv-capture", tags=["wizard"])
async def wizard_ocv_capture(session: Admin, ctx: Ctx, body: OcvCaptureBody) -> CommandResult:
    """Start or abort the master's capture of a slow (C/20) cycle, from which it derives the
    OCV branches (`ocv_capture`). The inverter (or you) drives the cycle: a full charge, a
    discharge at <= C/20 to the cut-off, a charge at <= C/20 to full (or the other way
    round); a faster current, a gap in the readings or a cell without voltage aborts it."""
    del session
    args = OcvCaptureArgs(action=body.action, order=body.order, max_c_rate=body.max_c_rate)
    return await run_command(ctx, "ocv_capture", args)


@router.get("/wizard/ocv-capture", tags=["wizard"])
async def wizard_ocv_capture_status(session: Admin, ctx: Ctx) -> CommandResult:
    """The capture's progress (`result`: state, phase, reason, progress_pct, ...); once done
    also the CSV (`result.csv`) and the measured capacity and cell spread (`result.summary`)."""
    del session
    return await run_command(ctx, "ocv_capture", OcvCaptureArgs(action="status"))


@router.get("/wizard/ocv-capture.csv", tags=["wizard"])
async def wizard_ocv_capture_csv(session: Admin, ctx: Ctx) -> Response:
    """The derived branches as the CSV PUT /api/wizard/ocv-csv imports; 409 until the capture
    is done, 504 when the master does not answer."""
    del session
    reply = await run_command(ctx, "ocv_capture", OcvCaptureArgs(action="status"))
    if reply.status == "no_reply":
        raise HTTPException(504, reply.reason)
    text = reply.result.get("csv")
    if reply.status != "accepted" or not isinstance(text, str):
        state = reply.result.get("state", "unknown")
        why = reply.reason or reply.result.get("reason", "")
        raise HTTPException(409, f"no derived branches: the capture is {state} ({why})")
    return Response(
        text,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="ocv-c20-{ctx.system}.csv"'},
    )


class DerivedChoice(BaseModel):
    path: str = Field(min_length=1, max_length=200)
    keep_old: bool
    """True: the field takes its value from before the change again; False: the derived one."""


@router.put("/wizard/derived", tags=["wizard"])
def wizard_choose_derived(session: Admin, ctx: Ctx, body: DerivedChoice) -> dict[str, Any]:
    """For a field the last step submitted derived again (or kept): keep the old value or
    take the derived one. The answer lists those fields with the choice made."""
    try:
        ctx.choose_derived(session.username, body.path, keep_old=body.keep_old)
    except KeyError as exc:
        raise HTTPException(404, f"the last step derived no field {body.path!r}") from exc
    _, changes = ctx.rederivations[session.username]
    return {"changes": _changes(changes, ctx.draft_for(session.username))}


@router.delete("/wizard/draft", tags=["wizard"], status_code=204)
def wizard_discard(session: Admin, ctx: Ctx) -> None:
    """Start again from the active configuration."""
    ctx.drop_draft(session.username)


@router.get("/wizard/review", tags=["wizard"])
def wizard_review(session: Admin, ctx: Ctx) -> dict[str, Any]:
    """The draft against the active configuration, field by field, and what blocks applying."""
    return review(ctx, session.username)


def review(ctx: UiContext, user: str) -> dict[str, Any]:
    from services.config_ui.config_diff import config_diff

    draft = {**ctx.draft_for(user), "system_id": ctx.system}
    latest = ctx.latest()
    _, errors = wizard.validate(draft)
    old = latest.config.model_dump(mode="json") if latest else None
    return {
        "active_version": latest.version if latest else None,
        "diff": diff_info(config_diff(old, draft)),
        "errors": errors,
        "first_step_with_errors": wizard.first_step_with_errors(errors),
    }


@router.post("/wizard/apply", tags=["wizard"], status_code=201)
def wizard_apply(session: Admin, ctx: Ctx, body: RollbackBody | None = None) -> Any:
    """Apply your draft: a new version, published to every service."""
    try:
        config = ctx.validate(ctx.draft_for(session.username))
    except InvalidConfigError as exc:
        return rejected(exc.errors)
    try:
        version = ctx.apply(
            config, user=session.username, source="wizard", comment=body.comment if body else ""
        )
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc
    ctx.drop_draft(session.username)
    return version_info(version)


def _step(key: str) -> wizard.WizardStep:
    try:
        return wizard.step(key)
    except KeyError as exc:
        raise HTTPException(404, f"no wizard step {key!r}") from exc
