"""The FastAPI application: API, pages, static files, health, and error pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from services.config_ui import api, pages
from services.config_ui.auth import CHANGE_PASSWORD_FIRST
from services.config_ui.context import UiContext

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
        return {"status": "ok", "mqtt_connected": connected, "system": ctx.system}

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if not _is_api(request) and exc.status_code == 401:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        if not _is_api(request) and exc.detail == CHANGE_PASSWORD_FIRST:
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
        return JSONResponse({"detail": "invalid request", "problems": problems}, status_code=422)

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
