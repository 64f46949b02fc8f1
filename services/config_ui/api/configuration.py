"""Configuration versions: apply, validate, history, diff, rollback, export and import."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.config_ui.api.deps import MAX_VERSION, Admin, Ctx, Viewer, rejected
from services.config_ui.config_diff import DiffEntry
from services.config_ui.config_store import ConfigImportError, ConfigVersion, unwrap_import
from services.config_ui.context import InvalidConfigError, UiContext, file_system_id
from shared.config import CHEMISTRY_PRESETS

router = APIRouter()


class ApplyBody(BaseModel):
    config: dict[str, Any]
    comment: str = Field("", max_length=500)


class RollbackBody(BaseModel):
    comment: str = Field("", max_length=500)


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
def import_config(
    session: Admin,
    ctx: Ctx,
    data: Annotated[dict[str, Any], Body()],
    confirm_other_system: bool = False,
) -> Any:
    """Import an exported file (or a bare configuration) as a new version and apply it. A
    file made for another system (its `system_id`) is refused with 409 unless
    `confirm_other_system=true`; it then runs as this system's."""
    try:
        body = unwrap_import(data)
        config = ctx.validate(body)
    except ConfigImportError as exc:
        return rejected({"": exc.lines})
    except InvalidConfigError as exc:
        return rejected(exc.errors)
    made_for = file_system_id(body)
    if made_for not in (None, ctx.system) and not confirm_other_system:
        raise HTTPException(
            409,
            f"the file was made for system {made_for!r}, not {ctx.system!r}: send it again with "
            "confirm_other_system=true to import it anyway",
        )
    try:
        version = ctx.apply(config, user=session.username, source="import", comment="imported")
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc
    return version_info(version)
