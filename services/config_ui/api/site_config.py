"""The site configuration: apply, validate, history, diff, rollback and export, as for the
system's (`configuration`), in the web application that keeps it (BMS_UI_SITE_CONFIG with
BMS_SITE; 404 elsewhere)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.config_ui.api.configuration import RollbackBody, ValidationResult, diff_info
from services.config_ui.api.deps import MAX_VERSION, Admin, Ctx, Viewer, rejected
from services.config_ui.config_store import SiteConfigStore, SiteConfigVersion
from services.config_ui.context import InvalidConfigError, UiContext
from shared.config import SiteConfig

router = APIRouter(prefix="/site/config", tags=["site configuration"])


class SiteApplyBody(BaseModel):
    config: dict[str, Any]
    comment: str = Field("", max_length=500)


def site_summary(config: SiteConfig) -> str:
    out = [s.system for s in config.strings if not s.in_service]
    text = f"{len(config.strings)} strings: {', '.join(config.system_ids)}"
    return text + (f" ({', '.join(out)} out of service)" if out else "")


def site_version_info(v: SiteConfigVersion, *, with_config: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": v.version,
        "created_ts": v.created_ts,
        "user": v.user,
        "source": v.source,
        "comment": v.comment,
        "based_on": v.based_on,
        "summary": site_summary(v.config),
    }
    if with_config:
        out["config"] = v.config.model_dump(mode="json")
    return out


def _store(ctx: UiContext) -> SiteConfigStore:
    if ctx.site_store is None or ctx.settings.site is None:
        raise HTTPException(
            404,
            "this web application does not keep a site configuration (BMS_UI_SITE_CONFIG "
            "with BMS_SITE)",
        )
    return ctx.site_store


def _get(store: SiteConfigStore, version: int) -> SiteConfigVersion:
    try:
        return store.get(version)
    except KeyError as exc:
        raise HTTPException(404, f"no site configuration version {version}") from exc
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc


@router.get("")
def active_site_config(_: Viewer, ctx: Ctx) -> dict[str, Any]:
    """The newest version (the one published), with the site controller's acknowledgement
    (`acks`: each acknowledging service, the version it runs, accepted or its errors, and
    `current` when that is the newest version). `config` is null before any version."""
    _store(ctx)
    latest = ctx.latest_site()
    acks = (
        []
        if ctx.site_acks is None
        else ctx.site_acks.view(None if latest is None else latest.version)
    )
    return {
        "site": ctx.settings.site,
        "version": None if latest is None else site_version_info(latest),
        "acks": acks,
    }


@router.post("", status_code=201)
def apply_site_config(body: SiteApplyBody, session: Admin, ctx: Ctx) -> Any:
    """Validate, store as a new version and publish retained on `bms/v1/{site}/site/config`.
    422 lists the problems by field (`strings.2.system`: a duplicate string; `site` and
    `strings.0.system`: the site's id equal to a string's; `strings`: more than 16)."""
    _store(ctx)
    try:
        config = ctx.validate_site(body.config)
    except InvalidConfigError as exc:
        return rejected(exc.errors)
    try:
        version = ctx.apply_site(config, user=session.username, source="api", comment=body.comment)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc
    return site_version_info(version)


@router.post("/validate")
def validate_site_config(
    _: Viewer, ctx: Ctx, config: Annotated[dict[str, Any], Body()]
) -> ValidationResult:
    """Check a site configuration without applying it (the problems by field)."""
    _store(ctx)
    try:
        ctx.validate_site(config)
    except InvalidConfigError as exc:
        return ValidationResult(valid=False, errors=exc.errors)
    return ValidationResult(valid=True)


@router.get("/versions")
def site_versions(
    _: Viewer,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    store = _store(ctx)
    return {
        "count": store.count(),
        "versions": [site_version_info(v, with_config=False) for v in store.history(limit, offset)],
    }


@router.get("/versions/{version}")
def get_site_version(
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)], _: Viewer, ctx: Ctx
) -> dict[str, Any]:
    return site_version_info(_get(_store(ctx), version))


@router.get("/diff")
def site_diff(
    _: Viewer,
    ctx: Ctx,
    from_version: Annotated[int, Query(ge=1, le=MAX_VERSION)],
    to_version: Annotated[int, Query(ge=1, le=MAX_VERSION)],
) -> list[dict[str, Any]]:
    """What changed between two versions, field by field."""
    store = _store(ctx)
    _get(store, from_version)
    _get(store, to_version)
    return diff_info(store.diff(from_version, to_version))


@router.post("/rollback/{version}", status_code=201)
def rollback_site(
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    session: Admin,
    ctx: Ctx,
    body: RollbackBody | None = None,
) -> dict[str, Any]:
    """A new version with the content of an old one, published at once."""
    _get(_store(ctx), version)
    comment = (body.comment if body else "") or f"rollback to version {version}"
    try:
        new = ctx.rollback_site(version, user=session.username, comment=comment)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc
    return site_version_info(new)


@router.get("/export")
def export_site(
    _: Viewer, ctx: Ctx, version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None
) -> JSONResponse:
    """The site configuration as a JSON file (the newest unless `version` is given)."""
    try:
        data = _store(ctx).export_json(version)
    except KeyError as exc:
        raise HTTPException(404, "no such site configuration version") from exc
    name = f"bms-site-config-{ctx.settings.site}-v{data['version']}.json"
    return JSONResponse(data, headers={"Content-Disposition": f'attachment; filename="{name}"'})
