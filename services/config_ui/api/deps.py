"""What every API module shares: the role dependencies and the shape of a refusal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.responses import JSONResponse

from services.config_ui.auth import ctx_of, require
from services.config_ui.context import UiContext
from services.config_ui.users import Session

MAX_VERSION = 2**31
"""Configuration versions count from 1; larger numbers are refused before they reach SQLite."""
Viewer = Annotated[Session, Depends(require("viewer"))]
AccountOwner = Annotated[Session, Depends(require("viewer", before_password_change=True))]
Operator = Annotated[Session, Depends(require("operator"))]
Admin = Annotated[Session, Depends(require("admin"))]
Ctx = Annotated[UiContext, Depends(ctx_of)]


def rejected(errors: dict[str, list[str]]) -> JSONResponse:
    return JSONResponse(
        {"detail": "the configuration is not valid", "errors": errors}, status_code=422
    )
