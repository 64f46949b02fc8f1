"""Log in and out, and change your own password."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from services.config_ui.api.deps import AccountOwner, Ctx
from services.config_ui.auth import SESSION_COOKIE, client_of
from services.config_ui.users import LoginThrottled, Role, UserError

router = APIRouter()


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class SessionInfo(BaseModel):
    username: str
    role: Role
    csrf_token: str
    must_change_password: bool = False


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


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
            session.username, body.new_password, by=session.username, keep_token=session.token,
            current=body.current_password,
        )  # fmt: skip
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc
