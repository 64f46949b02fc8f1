"""The routes every versioned configuration has, written once: apply, validate, versions,
one version, diff, rollback and export. The system configuration (`/config`) and the site
configuration (`/site/config`) each describe themselves with a `VersionedKind`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic

from fastapi import APIRouter, Body, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.config_ui.api.deps import MAX_VERSION, Admin, Ctx, Viewer, rejected
from services.config_ui.config_diff import DiffEntry
from services.config_ui.config_store import C, ConfigSource, StoredVersion, VersionStore
from services.config_ui.context import InvalidConfigError, UiContext


class ApplyBody(BaseModel):
    config: dict[str, Any]
    comment: str = Field("", max_length=500)


class RollbackBody(BaseModel):
    comment: str = Field("", max_length=500)


class ValidationResult(BaseModel):
    valid: bool
    errors: dict[str, list[str]] = {}


@dataclass(frozen=True)
class VersionedKind(Generic[C]):
    """What differs between the versioned configurations; the routes are the same."""

    noun: str
    """In messages: "configuration", "site configuration"."""
    store: Callable[[UiContext], VersionStore[C]]
    """The kind's store (an HTTPException where this application does not keep it)."""
    validate: Callable[[UiContext, Any], C]
    """InvalidConfigError with the problems by field."""
    apply: Callable[[UiContext, C, str, ConfigSource, str], StoredVersion[C]]
    """Store and publish: (ctx, config, user, source, comment)."""
    rollback: Callable[[UiContext, int, str, str], StoredVersion[C]]
    """A new version with an old one's content, published: (ctx, version, user, comment)."""
    summary: Callable[[C], str]
    file_stem: Callable[[UiContext], str]
    """The export's file name before `-v{version}.json`."""

    def info(self, v: StoredVersion[C], *, with_config: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": v.version,
            "created_ts": v.created_ts,
            "user": v.user,
            "source": v.source,
            "comment": v.comment,
            "based_on": v.based_on,
            "summary": self.summary(v.config),
        }
        if with_config:
            out["config"] = v.config.model_dump(mode="json")
        return out

    def get(self, ctx: UiContext, version: int) -> StoredVersion[C]:
        try:
            return self.store(ctx).get(version)
        except KeyError as exc:
            raise HTTPException(404, f"no {self.noun} version {version}") from exc
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc


def diff_info(entries: list[DiffEntry]) -> list[dict[str, Any]]:
    return [{"path": e.path, "old": e.old, "new": e.new, "change": e.change} for e in entries]


def add_version_routes(
    router: APIRouter, kind: VersionedKind[C], base: str, *, apply_doc: str
) -> None:
    """Register the routes under `base` (e.g. "/config"); `apply_doc` documents the apply
    route (what a refusal lists)."""

    def apply(body: ApplyBody, session: Admin, ctx: Ctx) -> Any:
        kind.store(ctx)
        try:
            config = kind.validate(ctx, body.config)
        except InvalidConfigError as exc:
            return rejected(exc.errors)
        try:
            version = kind.apply(ctx, config, session.username, "api", body.comment)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
        return kind.info(version)

    def validate(
        _: Viewer, ctx: Ctx, config: Annotated[dict[str, Any], Body()]
    ) -> ValidationResult:
        kind.store(ctx)
        try:
            kind.validate(ctx, config)
        except InvalidConfigError as exc:
            return ValidationResult(valid=False, errors=exc.errors)
        return ValidationResult(valid=True)

    def versions(
        _: Viewer,
        ctx: Ctx,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict[str, Any]:
        store = kind.store(ctx)
        return {
            "count": store.count(),
            "versions": [kind.info(v, with_config=False) for v in store.history(limit, offset)],
        }

    def get_version(
        version: Annotated[int, Path(ge=1, le=MAX_VERSION)], _: Viewer, ctx: Ctx
    ) -> dict[str, Any]:
        return kind.info(kind.get(ctx, version))

    def diff(
        _: Viewer,
        ctx: Ctx,
        from_version: Annotated[int, Query(ge=1, le=MAX_VERSION)],
        to_version: Annotated[int, Query(ge=1, le=MAX_VERSION)],
    ) -> list[dict[str, Any]]:
        kind.get(ctx, from_version)
        kind.get(ctx, to_version)
        return diff_info(kind.store(ctx).diff(from_version, to_version))

    def rollback(
        version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
        session: Admin,
        ctx: Ctx,
        body: RollbackBody | None = None,
    ) -> dict[str, Any]:
        kind.get(ctx, version)
        comment = (body.comment if body else "") or f"rollback to version {version}"
        try:
            new = kind.rollback(ctx, version, session.username, comment)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
        return kind.info(new)

    def export(
        _: Viewer, ctx: Ctx, version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None
    ) -> JSONResponse:
        try:
            data = kind.store(ctx).export_json(version)
        except KeyError as exc:
            raise HTTPException(404, f"no such {kind.noun} version") from exc
        name = f"{kind.file_stem(ctx)}-v{data['version']}.json"
        return JSONResponse(data, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    noun = kind.noun
    stem = noun.replace(" ", "_")
    routes: list[tuple[str, str, Callable[..., Any], str, int]] = [
        ("POST", "", apply, apply_doc, 201),
        ("POST", "/validate", validate, f"Check a {noun} without applying it (the problems by "
         "field).", 200),
        ("GET", "/versions", versions, f"The stored {noun} versions, newest first.", 200),
        ("GET", "/versions/{version}", get_version, f"One {noun} version.", 200),
        ("GET", "/diff", diff, "What changed between two versions, field by field.", 200),
        ("POST", "/rollback/{version}", rollback, "A new version with the content of an old "
         "one, published at once.", 201),
        ("GET", "/export", export, f"The {noun} as a JSON file (the newest unless `version` "
         "is given).", 200),
    ]  # fmt: skip
    for method, path, endpoint, doc, status in routes:
        router.add_api_route(
            base + path, endpoint, methods=[method], description=doc, status_code=status,
            name=f"{stem}_{endpoint.__name__}",
        )  # fmt: skip
