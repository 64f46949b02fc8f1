"""The site configuration: apply, validate, history, diff, rollback and export, as for the
system's (`configuration`), in the web application that keeps it (BMS_UI_SITE_CONFIG with
BMS_SITE; 404 elsewhere)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from services.config_ui.api.deps import Ctx, Viewer
from services.config_ui.api.versions import VersionedKind, add_version_routes
from services.config_ui.config_store import ConfigSource, SiteConfigStore, SiteConfigVersion
from services.config_ui.context import UiContext
from shared.config import SiteConfig

router = APIRouter(tags=["site configuration"])


def site_summary(config: SiteConfig) -> str:
    out = [s.system for s in config.strings if not s.in_service]
    text = f"{len(config.strings)} strings: {', '.join(config.system_ids)}"
    return text + (f" ({', '.join(out)} out of service)" if out else "")


def _store(ctx: UiContext) -> SiteConfigStore:
    if ctx.site_store is None or ctx.settings.site is None:
        raise HTTPException(
            404,
            "this web application does not keep a site configuration (BMS_UI_SITE_CONFIG "
            "with BMS_SITE)",
        )
    return ctx.site_store


def _apply(
    ctx: UiContext, config: SiteConfig, user: str, source: ConfigSource, comment: str
) -> SiteConfigVersion:
    return ctx.apply_site(config, user=user, source=source, comment=comment)


def _rollback(ctx: UiContext, version: int, user: str, comment: str) -> SiteConfigVersion:
    _store(ctx)
    return ctx.rollback_site(version, user=user, comment=comment)


SITE_CONFIG = VersionedKind[SiteConfig](
    noun="site configuration",
    store=_store,
    validate=UiContext.validate_site,
    apply=_apply,
    rollback=_rollback,
    summary=site_summary,
    file_stem=lambda ctx: f"bms-site-config-{ctx.settings.site}",
)


def site_version_info(v: SiteConfigVersion, *, with_config: bool = True) -> dict[str, Any]:
    return SITE_CONFIG.info(v, with_config=with_config)


@router.get("/site/config")
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


add_version_routes(
    router, SITE_CONFIG, "/site/config",
    apply_doc="Validate, store as a new version and publish retained on "
    "`bms/v1/{site}/site/config`. 422 lists the problems by field (`strings.2.system`: a "
    "duplicate string; `site` and `strings.0.system`: the site's id equal to a string's; "
    "`strings`: more than 16).",
)  # fmt: skip
