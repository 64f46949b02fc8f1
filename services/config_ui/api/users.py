"""User management (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from services.config_ui.api.deps import Admin, Ctx
from services.config_ui.users import Role, UserError

router = APIRouter()


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    role: Role


class UserPatch(BaseModel):
    role: Role


class PasswordReset(BaseModel):
    new_password: str = Field(min_length=1, max_length=256)


def user_info(u: Any) -> dict[str, Any]:
    return {
        "username": u.username,
        "role": u.role,
        "created_ts": u.created_ts,
        "created_by": u.created_by,
        "must_change_password": u.must_change_password,
    }


@router.get("/users", tags=["users"])
def list_users(_: Admin, ctx: Ctx) -> list[dict[str, Any]]:
    return [user_info(u) for u in ctx.users.list_users()]


@router.post("/users", tags=["users"], status_code=201)
def create_user(body: UserCreate, session: Admin, ctx: Ctx) -> dict[str, Any]:
    try:
        user = ctx.users.create_user(
            body.username, body.password, body.role, created_by=session.username,
            must_change_password=True,
        )  # fmt: skip
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc
    return user_info(user)


@router.post("/users/{username}/password", tags=["users"], status_code=204)
def reset_password(username: str, body: PasswordReset, session: Admin, ctx: Ctx) -> None:
    """Set a user's password (a forgotten one); their sessions end and they must choose
    their own at the next login."""
    if username == session.username:
        raise HTTPException(422, "change your own password with POST /api/account/password")
    try:
        ctx.users.set_password(username, body.new_password, by=session.username)
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.patch("/users/{username}", tags=["users"])
def patch_user(username: str, body: UserPatch, session: Admin, ctx: Ctx) -> dict[str, Any]:
    try:
        return user_info(ctx.users.set_role(username, body.role, by=session.username))
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.delete("/users/{username}", tags=["users"], status_code=204)
def delete_user(username: str, session: Admin, ctx: Ctx) -> None:
    try:
        ctx.users.delete_user(username, by=session.username)
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc
