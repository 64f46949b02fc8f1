"""Configuration versions: apply, validate, history, diff, rollback, export and import."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException

from services.config_ui.api.deps import Admin, Ctx, Viewer, rejected
from services.config_ui.api.versions import (
    RollbackBody,
    ValidationResult,
    VersionedKind,
    add_version_routes,
    diff_info,
)
from services.config_ui.config_store import (
    ConfigImportError,
    ConfigSource,
    ConfigVersion,
    unwrap_import,
)
from services.config_ui.context import InvalidConfigError, UiContext, file_system_id
from shared.config import CHEMISTRY_PRESETS, SystemConfig

__all__ = ["RollbackBody", "ValidationResult", "diff_info", "router", "summary", "version_info"]

router = APIRouter(tags=["config"])


def summary(v: ConfigVersion) -> str:
    return config_summary(v.config)


def config_summary(c: SystemConfig) -> str:
    t = c.topology
    size = f"{t.total_cells}s ({t.modules} x {t.cells_per_module})"
    return f"{c.chemistry} {size}, {c.cell_capacity_ah:g} Ah"


def _apply(
    ctx: UiContext, config: SystemConfig, user: str, source: ConfigSource, comment: str
) -> ConfigVersion:
    return ctx.apply(config, user=user, source=source, comment=comment)


def _rollback(ctx: UiContext, version: int, user: str, comment: str) -> ConfigVersion:
    return ctx.rollback(version, user=user, comment=comment)


SYSTEM_CONFIG = VersionedKind[SystemConfig](
    noun="configuration",
    store=lambda ctx: ctx.store,
    validate=UiContext.validate,
    apply=_apply,
    rollback=_rollback,
    summary=config_summary,
    file_stem=lambda ctx: f"bms-config-{ctx.system}",
)


def version_info(v: ConfigVersion, *, with_config: bool = True) -> dict[str, Any]:
    return SYSTEM_CONFIG.info(v, with_config=with_config)


@router.get("/presets")
def presets(_: Viewer) -> dict[str, Any]:
    """The chemistry presets the wizard starts from."""
    return {name: p.model_dump(mode="json") for name, p in CHEMISTRY_PRESETS.items()}


@router.get("/config")
def active_config(_: Viewer, ctx: Ctx) -> dict[str, Any]:
    """The newest version: the one published to the services."""
    latest = ctx.latest()
    if latest is None:
        raise HTTPException(404, "no configuration yet; use the wizard")
    return version_info(latest)


add_version_routes(
    router, SYSTEM_CONFIG, "/config",
    apply_doc="Validate, store as a new version and publish. 422 lists the problems by field.",
)  # fmt: skip


@router.post("/config/import", status_code=201)
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
