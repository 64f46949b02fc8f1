"""The REST API: everything the pages do, as JSON (OpenAPI at /docs and /openapi.json)."""

from __future__ import annotations

from fastapi import APIRouter

from services.config_ui.api import (
    cells,
    commands,
    configuration,
    events,
    live,
    session,
    site,
    site_config,
    site_strings,
    users,
    wizard_api,
)
from services.config_ui.api.configuration import diff_info, summary
from services.config_ui.api.deps import MAX_VERSION
from services.config_ui.api.session import set_session_cookie
from services.config_ui.api.wizard_api import review

router = APIRouter(prefix="/api")
for module in (
    session,
    live,
    site,
    site_config,
    site_strings,
    cells,
    events,
    commands,
    configuration,
    wizard_api,
    users,
):
    router.include_router(module.router)

__all__ = ["MAX_VERSION", "diff_info", "review", "router", "set_session_cookie", "summary"]
