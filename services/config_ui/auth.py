"""Sessions, roles and CSRF for pages and the API.

A session is a random token in an HttpOnly, SameSite=Strict cookie; every write also needs the
session's CSRF token, in the `X-CSRF-Token` header (API) or the `csrf_token` form field (pages).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from services.config_ui.context import UiContext
from services.config_ui.users import Role, Session, role_allows

SESSION_COOKIE = "bms_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHANGE_PASSWORD_FIRST = "set your own password first (POST /api/account/password)"


class PasswordChangeRequired(HTTPException):
    """403 until the user has chosen their own password; pages send them to /account."""

    def __init__(self) -> None:
        super().__init__(403, CHANGE_PASSWORD_FIRST)


def ctx_of(request: Request) -> UiContext:
    ctx: UiContext = request.app.state.ctx
    return ctx


def client_of(request: Request) -> str:
    """The peer address, for the log (behind a proxy: the proxy's)."""
    return request.client.host if request.client else "unknown"


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


def require(
    role: Role, *, before_password_change: bool = False
) -> Callable[[Request], Awaitable[Session]]:
    """A dependency: the caller's session, with at least `role`, and a CSRF token on writes.

    A user whose password was generated or set by someone else may only change it, see their
    session and log out (`before_password_change`) until they have.
    """

    async def dependency(request: Request) -> Session:
        # a SQLite write (last_seen): off the event loop, which also carries the live streams
        session = await run_in_threadpool(session_of, request)
        if session is None:
            raise HTTPException(401, "log in first")
        if session.must_change_password and not before_password_change:
            raise PasswordChangeRequired()
        if not role_allows(session.role, role):
            raise HTTPException(403, f"needs the {role} role; you are {session.role}")
        if request.method not in SAFE_METHODS:
            users = ctx_of(request).users
            if not users.check_csrf(session, await _csrf_token(request)):
                raise HTTPException(403, "missing or wrong CSRF token; reload the page")
        return session

    return dependency
