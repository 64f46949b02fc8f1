"""The REST API: everything the pages do, as JSON (OpenAPI at /docs and /openapi.json)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from services.config_ui import wizard
from services.config_ui.auth import SESSION_COOKIE, client_of, ctx_of, require, session_of
from services.config_ui.config_diff import DiffEntry
from services.config_ui.config_store import ConfigImportError, ConfigVersion, unwrap_import
from services.config_ui.context import InvalidConfigError, UiContext
from services.config_ui.users import LoginThrottled, Role, Session, UserError
from shared.config import CHEMISTRY_PRESETS
from shared.messages import (
    CommandArgs,
    ContactorsArgs,
    EventsQueryArgs,
    ResetFaultsArgs,
    SetModeArgs,
)
from shared.messages.events import EventKind, EventLevel

router = APIRouter(prefix="/api")
SESSION_RECHECK_S = 5.0
"""How often a live stream checks that its session still exists."""
MAX_VERSION = 2**31
"""Configuration versions count from 1; larger numbers are refused before they reach SQLite."""
Viewer = Annotated[Session, Depends(require("viewer"))]
AccountOwner = Annotated[Session, Depends(require("viewer", before_password_change=True))]
Operator = Annotated[Session, Depends(require("operator"))]
Admin = Annotated[Session, Depends(require("admin"))]
Ctx = Annotated[UiContext, Depends(ctx_of)]


# --- models -----------------------------------------------------------------------------------
class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class SessionInfo(BaseModel):
    username: str
    role: Role
    csrf_token: str
    must_change_password: bool = False


class CommandResult(BaseModel):
    command: str
    status: Literal["accepted", "refused", "no_reply"]
    reason: str = ""
    result: dict[str, Any] = {}


class ApplyBody(BaseModel):
    config: dict[str, Any]
    comment: str = Field("", max_length=500)


class RollbackBody(BaseModel):
    comment: str = Field("", max_length=500)


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    role: Role


class UserPatch(BaseModel):
    role: Role


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class PasswordReset(BaseModel):
    new_password: str = Field(min_length=1, max_length=256)


class ValidationResult(BaseModel):
    valid: bool
    errors: dict[str, list[str]] = {}


def version_info(v: ConfigVersion, *, with_config: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": v.version,
        "created_ts": v.created_ts,
        "user": v.user,
        "source": v.source,
        "comment": v.comment,
        "based_on": v.based_on,
        "summary": summary(v),
    }
    if with_config:
        out["config"] = v.config.model_dump(mode="json")
    return out


def summary(v: ConfigVersion) -> str:
    c = v.config
    t = c.topology
    size = f"{t.total_cells}s ({t.modules} x {t.cells_per_module})"
    return f"{c.chemistry} {size}, {c.cell_capacity_ah:g} Ah"


def diff_info(entries: list[DiffEntry]) -> list[dict[str, Any]]:
    return [{"path": e.path, "old": e.old, "new": e.new, "change": e.change} for e in entries]


def rejected(errors: dict[str, list[str]]) -> JSONResponse:
    return JSONResponse(
        {"detail": "the configuration is not valid", "errors": errors}, status_code=422
    )


# --- session ----------------------------------------------------------------------------------
@router.post("/session", tags=["session"])
def login(body: LoginBody, request: Request, response: Response, ctx: Ctx) -> SessionInfo:
    """Log in: sets the session cookie and returns the CSRF token for writes."""
    try:
        user = ctx.login(body.username, body.password, client=client_of(request))
    except LoginThrottled as exc:
        raise HTTPException(
            429,
            f"too many failed logins; try again in {exc.retry_after_s:.0f} s",
            headers={"Retry-After": str(int(exc.retry_after_s) + 1)},
        ) from exc
    if user is None:
        raise HTTPException(401, "wrong user name or password")
    session = ctx.users.create_session(user)
    set_session_cookie(response, session.token, secure=ctx.settings.ui_secure_cookies)
    return SessionInfo(
        username=user.username,
        role=user.role,
        csrf_token=session.csrf_token,
        must_change_password=user.must_change_password,
    )


def set_session_cookie(response: Response, token: str, *, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/"
    )


@router.get("/session", tags=["session"])
def current(session: AccountOwner, ctx: Ctx) -> SessionInfo:
    user = ctx.users.get_user(session.username)
    return SessionInfo(
        username=session.username,
        role=session.role,
        csrf_token=session.csrf_token,
        must_change_password=bool(user and user.must_change_password),
    )


@router.delete("/session", tags=["session"], status_code=204)
def logout(request: Request, response: Response, session: AccountOwner, ctx: Ctx) -> None:
    ctx.users.delete_session(session.token)
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.post("/account/password", tags=["session"], status_code=204)
def change_password(body: PasswordChange, session: AccountOwner, ctx: Ctx) -> None:
    if ctx.users.authenticate(session.username, body.current_password) is None:
        raise HTTPException(403, "the current password is wrong")
    try:
        ctx.users.set_password(
            session.username, body.new_password, by=session.username, keep_token=session.token
        )
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc


# --- live values ------------------------------------------------------------------------------
@router.get("/state", tags=["live"])
def state(_: Viewer, ctx: Ctx) -> dict[str, Any]:
    """The latest pack state and cells (`stale` when the master has gone quiet)."""
    return ctx.live.snapshot()


@router.get("/live", tags=["live"], response_class=EventSourceResponse)
async def live(request: Request, _: Viewer, ctx: Ctx) -> EventSourceResponse:
    """Server-sent events: a `state` event with the `/api/state` data several times a second."""
    period = ctx.settings.ui_live_period_s

    async def stream() -> AsyncIterator[dict[str, str]]:
        checked_s = time.monotonic()
        while not await request.is_disconnected():
            if time.monotonic() - checked_s >= SESSION_RECHECK_S:
                # a stream lives for hours: a logout or a deleted user must end it too
                checked_s = time.monotonic()
                session = await run_in_threadpool(session_of, request)
                if session is None or session.must_change_password:
                    yield {"event": "session_ended", "data": "{}"}
                    return
            yield {"event": "state", "data": json.dumps(ctx.live.snapshot())}
            await asyncio.sleep(period)

    return EventSourceResponse(stream(), ping=15)


@router.get("/history", tags=["live"])
def history(
    _: Viewer, ctx: Ctx, seconds: Annotated[float, Query(gt=0, le=3660 * 86400)] = 3600
) -> list[dict[str, float]]:
    """SOC, voltage and current, oldest first: once a second over the last hour, averaged
    from the stored 10 s points over longer spans (at most 1500 points)."""
    return [
        {"ts": p.ts, "soc": p.soc_pct, "voltage": p.voltage_v, "current": p.current_a}
        for p in ctx.history_points(seconds)
    ]


@router.get("/services", tags=["live"])
def services(_: Viewer, ctx: Ctx) -> dict[str, Any]:
    """Each service: online or not, and the configuration version it acknowledged."""
    latest = ctx.latest()
    return {
        "active_version": None if latest is None else latest.version,
        "services": ctx.live.services(),
    }


# --- events -----------------------------------------------------------------------------------
EVENT_COLUMNS = ("ts", "level", "kind", "code", "text", "source", "values")


async def query_events(ctx: UiContext, f: EventFilter) -> list[dict[str, Any]]:
    """The master filters its whole log, so an old window or a rare code is found too."""
    rows = await ctx.bridge.events(EventsQueryArgs(**f.model_dump()))
    if rows is None:
        raise HTTPException(504, "the master did not answer the event query")
    return rows


class EventFilter(BaseModel):
    since_ts: float = Field(0.0, ge=0.0, le=1e10)
    until_ts: float | None = Field(None, ge=0.0, le=1e10)
    min_level: EventLevel = "info"
    kind: EventKind | None = None
    code: str | None = Field(None, pattern=r"^[a-z0-9_]{1,64}$", description="part of the code")
    text: str | None = Field(None, min_length=1, max_length=100, description="part of the text")
    limit: int = Field(500, ge=1, le=1000)


@router.get("/events", tags=["events"])
async def events(_: Viewer, ctx: Ctx, f: Annotated[EventFilter, Query()]) -> list[dict[str, Any]]:
    """The master's event log, newest first, filtered."""
    return await query_events(ctx, f)


@router.get("/events.csv", tags=["events"], response_class=StreamingResponse)
async def events_csv(_: Viewer, ctx: Ctx, f: Annotated[EventFilter, Query()]) -> Response:
    rows = await query_events(ctx, f)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([*EVENT_COLUMNS[:1], "time_utc", *EVENT_COLUMNS[1:]])
    for row in rows:
        ts = float(row.get("ts", 0.0))
        writer.writerow(
            [
                f"{ts:.3f}",
                _iso(ts),
                *(row.get(c, "") for c in EVENT_COLUMNS[1:-1]),
                json.dumps(row.get("values", {}), sort_keys=True),
            ]
        )
    name = f"events-{ctx.system}.csv"
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


# --- commands ---------------------------------------------------------------------------------
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


# --- configuration ----------------------------------------------------------------------------
@router.get("/presets", tags=["config"])
def presets(_: Viewer) -> dict[str, Any]:
    """The chemistry presets the wizard starts from."""
    return {name: p.model_dump(mode="json") for name, p in CHEMISTRY_PRESETS.items()}


@router.get("/config", tags=["config"])
def active_config(_: Viewer, ctx: Ctx) -> dict[str, Any]:
    """The newest version: the one published to the services."""
    latest = ctx.latest()
    if latest is None:
        raise HTTPException(404, "no configuration yet; use the wizard")
    return version_info(latest)


@router.post("/config", tags=["config"], status_code=201)
def apply_config(body: ApplyBody, session: Admin, ctx: Ctx) -> Any:
    """Validate, store as a new version and publish. 422 lists the problems by field."""
    try:
        config = ctx.validate(body.config)
    except InvalidConfigError as exc:
        return rejected(exc.errors)
    try:
        version = ctx.apply(config, user=session.username, source="api", comment=body.comment)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc
    return version_info(version)


@router.post("/config/validate", tags=["config"])
def validate_config(
    _: Viewer, ctx: Ctx, config: Annotated[dict[str, Any], Body()]
) -> ValidationResult:
    """Check a configuration without applying it."""
    try:
        ctx.validate(config)
    except InvalidConfigError as exc:
        return ValidationResult(valid=False, errors=exc.errors)
    return ValidationResult(valid=True)


@router.get("/config/versions", tags=["config"])
def versions(
    _: Viewer,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    return {
        "count": ctx.store.count(),
        "versions": [version_info(v, with_config=False) for v in ctx.store.history(limit, offset)],
    }


@router.get("/config/versions/{version}", tags=["config"])
def get_version(
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)], _: Viewer, ctx: Ctx
) -> dict[str, Any]:
    return version_info(_get(ctx, version))


def _get(ctx: UiContext, version: int) -> ConfigVersion:
    try:
        return ctx.store.get(version)
    except KeyError as exc:
        raise HTTPException(404, f"no configuration version {version}") from exc
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc


@router.get("/config/diff", tags=["config"])
def diff(
    _: Viewer,
    ctx: Ctx,
    from_version: Annotated[int, Query(ge=1, le=MAX_VERSION)],
    to_version: Annotated[int, Query(ge=1, le=MAX_VERSION)],
) -> list[dict[str, Any]]:
    """What changed between two versions, field by field."""
    _get(ctx, from_version)
    _get(ctx, to_version)
    return diff_info(ctx.store.diff(from_version, to_version))


@router.post("/config/rollback/{version}", tags=["config"], status_code=201)
def rollback(
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    session: Admin,
    ctx: Ctx,
    body: RollbackBody | None = None,
) -> dict[str, Any]:
    """A new version with the content of an old one, published at once."""
    _get(ctx, version)
    comment = (body.comment if body else "") or f"rollback to version {version}"
    try:
        new = ctx.rollback(version, user=session.username, comment=comment)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc
    return version_info(new)


@router.get("/config/export", tags=["config"])
def export(
    _: Viewer, ctx: Ctx, version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None
) -> JSONResponse:
    """The configuration as a JSON file (the newest unless `version` is given)."""
    try:
        data = ctx.store.export_json(version)
    except KeyError as exc:
        raise HTTPException(404, "no such configuration version") from exc
    name = f"bms-config-{ctx.system}-v{data['version']}.json"
    return JSONResponse(data, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.post("/config/import", tags=["config"], status_code=201)
def import_config(session: Admin, ctx: Ctx, data: Annotated[dict[str, Any], Body()]) -> Any:
    """Import an exported file (or a bare configuration) as a new version and apply it."""
    try:
        config = ctx.validate(unwrap_import(data))
    except ConfigImportError as exc:
        return rejected({"": exc.lines})
    except InvalidConfigError as exc:
        return rejected(exc.errors)
    try:
        version = ctx.apply(config, user=session.username, source="import", comment="imported")
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc
    return version_info(version)


# --- wizard -----------------------------------------------------------------------------------
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
    """The fields of one step, with values from your draft and their problems."""
    _step(key)
    draft = ctx.draft_for(session.username)
    _, errors = wizard.validate(draft)
    return {
        "fields": [f.__dict__ for f in wizard.fields_for_step(key, draft)],
        "errors": wizard.errors_for_step(key, errors),
    }


@router.put("/wizard/steps/{key}", tags=["wizard"])
def wizard_submit(
    key: str, session: Admin, ctx: Ctx, form: Annotated[dict[str, str], Body()]
) -> dict[str, Any]:
    """Set the fields of one step (values as text, as a form sends them)."""
    _step(key)
    result = wizard.apply_form(key, ctx.draft_for(session.username), form)
    ctx.drafts[session.username] = result.draft
    _, errors = wizard.validate(result.draft)
    step_errors = {**wizard.errors_for_step(key, errors), **result.errors}
    return {"errors": step_errors, "rederived": result.rederived, "next": wizard.next_step(key)}


@router.delete("/wizard/draft", tags=["wizard"], status_code=204)
def wizard_discard(session: Admin, ctx: Ctx) -> None:
    """Start again from the active configuration."""
    ctx.drafts.pop(session.username, None)


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
    ctx.drafts.pop(session.username, None)
    return version_info(version)


def _step(key: str) -> wizard.WizardStep:
    try:
        return wizard.step(key)
    except KeyError as exc:
        raise HTTPException(404, f"no wizard step {key!r}") from exc


# --- users ------------------------------------------------------------------------------------
def user_info(u: Any) -> dict[str, Any]:
    return {
        "username": u.username,
        "role": u.role,
        "created_ts": u.created_ts,
        "created_by": u.created_by,
        "must_change_password": u.must_change_password,
    }


@router.get("/users", tags=["users"])
def list_users(_: Admin, ctx: Ctx) -> list[dict[str, Any]]:
    return [user_info(u) for u in ctx.users.list_users()]


@router.post("/users", tags=["users"], status_code=201)
def create_user(body: UserCreate, session: Admin, ctx: Ctx) -> dict[str, Any]:
    try:
        user = ctx.users.create_user(
            body.username, body.password, body.role, created_by=session.username,
            must_change_password=True,
        )  # fmt: skip
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc
    return user_info(user)


@router.post("/users/{username}/password", tags=["users"], status_code=204)
def reset_password(username: str, body: PasswordReset, session: Admin, ctx: Ctx) -> None:
    """Set a user's password (a forgotten one); their sessions end and they must choose
    their own at the next login."""
    if username == session.username:
        raise HTTPException(422, "change your own password with POST /api/account/password")
    try:
        ctx.users.set_password(username, body.new_password, by=session.username)
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.patch("/users/{username}", tags=["users"])
def patch_user(username: str, body: UserPatch, session: Admin, ctx: Ctx) -> dict[str, Any]:
    try:
        return user_info(ctx.users.set_role(username, body.role, by=session.username))
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.delete("/users/{username}", tags=["users"], status_code=204)
def delete_user(username: str, session: Admin, ctx: Ctx) -> None:
    try:
        ctx.users.delete_user(username, by=session.username)
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc


__all__ = ["router", "session_of"]
