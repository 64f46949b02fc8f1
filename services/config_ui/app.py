"""The FastAPI application: API, pages, static files, health, and error pages."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from services.config_ui import api, pages
from services.config_ui.auth import PasswordChangeRequired
from services.config_ui.context import UiContext

log = logging.getLogger("config_ui.http")
STATIC_DIR = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    # all scripts and styles are files of this site: no inline code, nothing from elsewhere
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def create_app(ctx: UiContext) -> FastAPI:
    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        title="BMS user access application",
        version="1",
        description=(
            f"Configure, watch and operate battery system `{ctx.system}`. Log in with "
            "`POST /api/session`; send the returned `csrf_token` as `X-CSRF-Token` on every "
            "write. Roles: viewer (read), operator (commands), admin (configuration, users)."
        ),
    )
    app.state.ctx = ctx
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> HTMLResponse:
        """Swagger UI served from this site, so it works without internet access."""
        return HTMLResponse(API_DOCS_HTML)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, object]:
        """Up, and whether the broker is connected."""
        connected = bool(getattr(ctx.bridge.bus, "connected", True))
        return {
            "status": "ok", "mqtt_connected": connected, "system": ctx.system,
            "counters": ctx.counters(),
        }  # fmt: skip

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        ctx.count(f"http_{exc.status_code}")
        if exc.status_code in (403, 409, 429) or exc.status_code >= 500:
            log.warning(
                "%s %s: %d %s", request.method, request.url.path, exc.status_code, exc.detail
            )
        if not _is_api(request) and exc.status_code == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        if not _is_api(request) and isinstance(exc, PasswordChangeRequired):
            return RedirectResponse("/account", status_code=303)
        if not _is_api(request):
            return pages.render(
                request, "error.html", pages.page_session(request), exc.status_code,
                status=exc.status_code, detail=exc.detail,
            )  # fmt: skip
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        ]
        ctx.count("http_invalid_request")
        log.warning("%s %s refused: %s", request.method, request.url.path, "; ".join(problems[:5]))
        return JSONResponse({"detail": "invalid request", "problems": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # a bug, not bad input: logged with its traceback and counted, the service goes on
        ctx.count("http_internal_errors")
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error; the service log has the details"}, 500)

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


API_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BMS API</title>
<link rel="stylesheet" href="/static/vendor/swagger-ui-5.35.0.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static/vendor/swagger-ui-5.35.0-bundle.js"></script>
<script src="/static/api-docs.js"></script></body></html>"""


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")
