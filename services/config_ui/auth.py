"""Sessions, roles and CSRF for pages and the API.

A session is a random token in an HttpOnly, SameSite=Strict cookie; every write also needs the
session's CSRF token, in the `X-CSRF-Token` header (API) or the `csrf_token` form field (pages).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request

from services.config_ui.context import UiContext
from services.config_ui.users import Role, Session, role_allows

SESSION_COOKIE = "bms_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def ctx_of(request: Request) -> UiContext:
    ctx: UiContext = request.app.state.ctx
    return ctx


def session_of(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 200:
        return None
    return ctx_of(request).users.get_session(token)


async def _csrf_token(request: Request) -> str | None:
    token = request.headers.get(CSRF_HEADER)
    if token:
        return token
    kind = request.headers.get("content-type", "")
    if kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def require(role: Role) -> Callable[[Request], Awaitable[Session]]:
    """A dependency: the caller's session, with at least `role`, and a CSRF token on writes."""

    async def dependency(request: Request) -> Session:
        session = session_of(request)
        if session is None:
            raise HTTPException(401, "log in first")
        if not role_allows(session.role, role):
            raise HTTPException(403, f"needs the {role} role; you are {session.role}")
        if request.method not in SAFE_METHODS:
            users = ctx_of(request).users
            if not users.check_csrf(session, await _csrf_token(request)):
                raise HTTPException(403, "missing or wrong CSRF token; reload the page")
        return session

    return dependency
