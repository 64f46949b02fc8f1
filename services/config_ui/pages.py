"""Server-rendered pages; the live parts (dashboard, event log) fetch the REST API."""

from __future__ import annotations

import pathlib
import secrets
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from services.config_ui import wizard
from services.config_ui.api import MAX_VERSION, diff_info, review, set_session_cookie, summary
from services.config_ui.auth import SESSION_COOKIE, client_of, ctx_of, require, session_of
from services.config_ui.config_diff import config_diff
from services.config_ui.config_store import ConfigImportError, unwrap_import
from services.config_ui.context import (
    InvalidConfigError,
    PendingImport,
    UiContext,
    file_system_id,
)
from services.config_ui.password_policy import PASSWORD_MIN_CHARS
from services.config_ui.users import (
    USERNAME_RULE,
    LoginThrottled,
    Session,
    UserError,
    role_allows,
)

TEMPLATES = Jinja2Templates(directory=pathlib.Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)
Viewer = Annotated[Session, Depends(require("viewer"))]
AccountOwner = Annotated[Session, Depends(require("viewer", before_password_change=True))]
Admin = Annotated[Session, Depends(require("admin"))]
Ctx = Annotated[UiContext, Depends(ctx_of)]
MAX_IMPORT_BYTES = 1_000_000
VersionQuery = Annotated[int, Query(ge=1, le=MAX_VERSION)]
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION)]


def render(
    request: Request, name: str, session: Session | None, status_code: int = 200, **values: Any
) -> HTMLResponse:
    ctx = ctx_of(request)
    values.update(
        session=session,
        system=ctx.system,
        can_operate=session is not None and role_allows(session.role, "operator"),
        is_admin=session is not None and role_allows(session.role, "admin"),
        path=request.url.path,
        site=None if ctx.site is None else ctx.site.site,
        keeps_site_config=ctx.site_store is not None,
    )
    return TEMPLATES.TemplateResponse(request, name, values, status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# --- login ------------------------------------------------------------------------------------
@router.get("/login")
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", None, next=_safe_next(next), error="")


@router.post("/login")
def login_submit(
    request: Request,
    ctx: Ctx,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    try:
        user = ctx.login(username, password, client=client_of(request))
    except LoginThrottled as exc:
        error = f"Too many failed logins; try again in {exc.retry_after_s:.0f} s."
        return render(request, "login.html", None, 429, next=next, error=error)
    if user is None:
        return render(
            request, "login.html", None, 401, next=next, error="Wrong user name or password."
        )
    session = ctx.users.create_session(user)
    target = "/account" if user.must_change_password else _safe_next(next)
    response = redirect(target)
    set_session_cookie(response, session.token, secure=ctx.settings.ui_secure_cookies)
    return response


def _safe_next(url: str) -> str:
    """Only paths of this site: an open redirect would help phishing."""
    return url if url.startswith("/") and not url.startswith("//") else "/"


@router.post("/logout")
def logout(session: AccountOwner, ctx: Ctx) -> Response:
    ctx.users.delete_session(session.token)
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/account")
def account(request: Request, session: AccountOwner, ctx: Ctx) -> HTMLResponse:
    user = ctx.users.get_user(session.username)
    return render(request, "account.html", session, user=user, error="", done=False)


@router.post("/account")
def account_submit(
    request: Request,
    session: AccountOwner,
    ctx: Ctx,
    current_password: Annotated[str, Form(max_length=256)],
    new_password: Annotated[str, Form(max_length=256)],
    confirm_password: Annotated[str, Form(max_length=256)],
) -> HTMLResponse:
    user = ctx.users.get_user(session.username)
    error = ""
    if new_password != confirm_password:
        error = "The new password and its confirmation differ."
    elif ctx.users.authenticate(session.username, current_password) is None:
        error = "The current password is wrong."
    else:
        try:
            ctx.users.set_password(
                session.username, new_password, by=session.username, keep_token=session.token,
                current=current_password,
            )  # fmt: skip
        except UserError as exc:
            error = str(exc).capitalize() + "."
    user = ctx.users.get_user(session.username)
    return render(
        request, "account.html", session, 422 if error else 200, user=user, error=error,
        done=not error,
    )  # fmt: skip


# --- dashboard and events ---------------------------------------------------------------------
@router.get("/")
def dashboard(request: Request, session: Viewer, ctx: Ctx) -> HTMLResponse:
    latest = ctx.latest()
    return render(
        request,
        "dashboard.html",
        session,
        config=latest.config if latest else None,
        version=latest.version if latest else None,
    )


@router.get("/site")
def site_page(request: Request, session: Viewer, ctx: Ctx) -> HTMLResponse:
    if ctx.site is None:
        raise HTTPException(404, "this system is not a string of a site (BMS_SITE)")
    return render(request, "site.html", session)


@router.get("/site/config")
def site_config_page(request: Request, session: Viewer, ctx: Ctx) -> HTMLResponse:
    """The site configuration form (the data comes from /api/site/config)."""
    if ctx.site_store is None or ctx.site is None:
        raise HTTPException(404, "this web application does not keep a site configuration")
    return render(request, "site_config.html", session)


@router.get("/events")
def events_page(request: Request, session: Viewer) -> HTMLResponse:
    return render(request, "events.html", session)


# --- configuration ----------------------------------------------------------------------------
@router.get("/config")
def config_page(
    request: Request, session: Viewer, ctx: Ctx, error: str = "", done: str = ""
) -> HTMLResponse:
    history = ctx.store.history(200)
    return render(
        request,
        "config.html",
        session,
        history=history,
        summaries={v.version: summary(v) for v in history},
        services=ctx.live.services(),
        active=None if (latest := ctx.latest()) is None else latest.version,
        error=error,
        done=done[:300],
    )


@router.get("/config/diff")
def config_diff_page(
    request: Request,
    session: Viewer,
    ctx: Ctx,
    from_version: VersionQuery,
    to_version: VersionQuery,
) -> HTMLResponse:
    try:
        entries = ctx.store.diff(from_version, to_version)
    except (KeyError, ValueError) as exc:
        raise HTTPException(404, f"no such versions: {exc}") from exc
    return render(
        request,
        "diff.html",
        session,
        entries=diff_info(entries),
        from_version=from_version,
        to_version=to_version,
    )


@router.post("/config/rollback/{version}")
def config_rollback(version: VersionPath, session: Admin, ctx: Ctx) -> Response:
    try:
        ctx.rollback(version, user=session.username, comment=f"rollback to version {version}")
    except (KeyError, ValueError) as exc:
        return redirect(f"/config?error={quote(str(exc))}")
    return redirect("/config")


@router.post("/config/import")
async def config_import(request: Request, file: UploadFile, session: Admin, ctx: Ctx) -> Response:
    """Check an imported file and show what it would change; nothing is applied yet."""
    try:
        data = unwrap_import(await file.read(MAX_IMPORT_BYTES + 1))
        config = ctx.validate(data)
    except ConfigImportError as exc:
        return redirect(f"/config?error={quote('; '.join(exc.lines)[:1500])}")
    except InvalidConfigError as exc:
        return redirect(f"/config?error={quote(str(exc)[:1500])}")
    except ValueError as exc:
        return redirect(f"/config?error={quote(str(exc))}")
    pending = PendingImport(
        config, file.filename or "the file", file_system_id(data), secrets.token_urlsafe(16)
    )
    ctx.pending_imports[session.username] = pending
    return _import_review(request, session, ctx, pending)


def _import_review(
    request: Request, session: Session, ctx: UiContext, pending: PendingImport, error: str = ""
) -> HTMLResponse:
    latest = ctx.latest()
    old = None if latest is None else latest.config.model_dump(mode="json")
    entries = config_diff(old, pending.config.model_dump(mode="json"))
    other = pending.file_system is not None and pending.file_system != ctx.system
    return render(
        request, "import_review.html", session, 422 if error else 200, pending=pending,
        entries=diff_info(entries), active=None if latest is None else latest.version,
        other_system=other, error=error,
    )  # fmt: skip


@router.post("/config/import/apply")
def config_import_apply(
    request: Request,
    session: Admin,
    ctx: Ctx,
    token: Annotated[str, Form(max_length=64)],
    confirm_other_system: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Apply the file reviewed with `token`; a file made for another system only when the
    admin ticked that they mean it."""
    pending = ctx.pending_imports.get(session.username)
    if pending is None or not secrets.compare_digest(pending.token, token):
        return redirect(f"/config?error={quote('that import is no longer waiting: import again')}")
    if pending.file_system not in (None, ctx.system) and confirm_other_system != "yes":
        why = (
            f"This file was made for system {pending.file_system!r}, not {ctx.system!r}: tick "
            "the box to import it anyway."
        )
        return _import_review(request, session, ctx, pending, why)
    ctx.pending_imports.pop(session.username, None)
    try:
        version = ctx.apply(
            pending.config, user=session.username, source="import",
            comment=f"imported {pending.filename}",
        )  # fmt: skip
    except ValueError as exc:
        return redirect(f"/config?error={quote(str(exc))}")
    done = f"Imported {pending.filename} as version {version.version}, published to every service."
    return redirect(f"/config?done={quote(done)}")


@router.post("/config/import/cancel")
def config_import_cancel(session: Admin, ctx: Ctx) -> Response:
    ctx.pending_imports.pop(session.username, None)
    return redirect("/config")


@router.get("/wizard")
def wizard_start(session: Admin) -> Response:
    return redirect(f"/wizard/{wizard.STEPS[0].key}")


@router.post("/wizard/discard")
def wizard_discard(session: Admin, ctx: Ctx) -> Response:
    ctx.drop_draft(session.username)
    return redirect(f"/wizard/{wizard.STEPS[0].key}")


@router.get("/wizard/{key}")
def wizard_page(request: Request, key: str, session: Admin, ctx: Ctx) -> HTMLResponse:
    return _wizard_render(request, key, session, ctx, {})


@router.post("/wizard/{key}/derived")
def wizard_choose_derived(
    key: str,
    session: Admin,
    ctx: Ctx,
    path: Annotated[str, Form(max_length=200)],
    keep: Annotated[str, Form(max_length=8)],
) -> Response:
    """Keep a field's old value after a new chemistry or size derived it again, or take the
    derived value after all."""
    try:
        ctx.choose_derived(session.username, path, keep_old=keep == "old")
    except KeyError as exc:
        raise HTTPException(404, f"the last step derived no field {path!r}") from exc
    return redirect(f"/wizard/{quote(key)}")


def _wizard_render(
    request: Request,
    key: str,
    session: Session,
    ctx: UiContext,
    parse_errors: dict[str, list[str]],
    *,
    typed: dict[str, str] | None = None,
    status: int = 200,
    ocv_csv_errors: list[str] | None = None,
) -> HTMLResponse:
    try:
        step = wizard.step(key)
    except KeyError as exc:
        raise HTTPException(404, f"no wizard step {key!r}") from exc
    draft = ctx.draft_for(session.username)
    _, errors = wizard.validate({**draft, "system_id": ctx.system})
    values: dict[str, Any] = {}
    if step.key == "review":
        values["review"] = review(ctx, session.username)
        values["review_problems"] = wizard.problems_once(values["review"]["errors"])
    if step.key == "protection":
        values["charts"] = wizard.level_charts(draft)
    if step.key == "cells":
        values["ocv_source"] = wizard.ocv_source(draft)
        values["ocv_note"] = wizard.ocv_note(draft)
        values["ocv_csv_errors"] = ocv_csv_errors or []
    step_errors = {**wizard.errors_for_step(key, errors), **parse_errors}
    fields = wizard.fields_for_step(key, draft, typed)
    changed_in, changes = ctx.rederivations.get(session.username, ("", ()))
    known = {f.path for f in fields}
    groups = _grouped(fields, step_errors)
    placed = {p for _, _, group_errors in groups for p in group_errors}
    return render(
        request,
        "wizard.html",
        session,
        status,
        step=step,
        steps=wizard.STEPS,
        fields=fields,
        groups=groups,
        errors=step_errors,
        # model-level problems without a field or group of their own show above the form
        other_errors={p: m for p, m in step_errors.items() if p not in known | placed},
        steps_with_errors={s.key for s in wizard.STEPS if wizard.errors_for_step(s.key, errors)},
        prev=wizard.prev_step(key),
        next=wizard.next_step(key),
        changes=wizard.describe_changes(changes, draft) if changed_in == key else [],
        chemistry=draft.get("chemistry"),
        # services that run a field with a value set on their host (their acknowledgements)
        in_use={p: u for p, u in ctx.live.in_use().items() if p in known},
        **values,
    )


def _grouped(
    fields: list[wizard.FieldSpec], errors: dict[str, list[str]]
) -> list[tuple[str, list[wizard.FieldSpec], dict[str, list[str]]]]:
    """Fields by group, with the group-level problems (e.g. levels out of order) of each."""
    groups: dict[str, list[wizard.FieldSpec]] = {}
    for f in fields:
        groups.setdefault(f.group, []).append(f)
    prefixes = {name: _common_prefix([f.path for f in members]) for name, members in groups.items()}
    owner: dict[str, str] = {}
    for path in errors:
        # a problem belongs to the innermost group around it (cell_overvoltage, not protection)
        around = [n for n, pre in prefixes.items() if path == pre or path.startswith(pre + ".")]
        if path and around and path not in {f.path for f in fields}:
            owner[path] = max(around, key=lambda n: len(prefixes[n]))
    return [
        (name, members, {p: m for p, m in errors.items() if owner.get(p) == name})
        for name, members in groups.items()
    ]


def _common_prefix(paths: list[str]) -> str:
    parts = [p.split(".") for p in paths]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if len(paths) == 1:
        common = common[:-1]
    return ".".join(common)


@router.post("/wizard/cells/ocv-csv")
async def wizard_ocv_csv(
    request: Request,
    file: UploadFile,
    session: Admin,
    ctx: Ctx,
    source: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    """The Cell data step's OCV table from an uploaded CSV (`wizard.ocv_csv`); a bad file
    changes nothing and shows one message per bad line."""
    raw = await file.read(wizard.OCV_CSV_MAX_BYTES + 1)
    if len(raw) > wizard.OCV_CSV_MAX_BYTES:
        problems = [f"the file is larger than {wizard.OCV_CSV_MAX_BYTES // 1024} kB"]
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text, problems = "", ["the file is not UTF-8 text"]
        else:
            named = source.strip() or f"imported from {file.filename or 'a CSV file'}"
            parsed = wizard.parse_ocv_csv(text, named)
            problems = parsed.errors
    if problems:
        return await run_in_threadpool(
            lambda: _wizard_render(
                request, "cells", session, ctx, {}, status=422, ocv_csv_errors=problems
            )
        )
    form = wizard.form_text(parsed.values)
    await run_in_threadpool(ctx.submit_step, session.username, "cells", form)
    return redirect("/wizard/cells")


@router.post("/wizard/{key}")
async def wizard_submit(request: Request, key: str, session: Admin, ctx: Ctx) -> Response:
    try:
        wizard.step(key)
    except KeyError as exc:
        raise HTTPException(404, f"no wizard step {key!r}") from exc
    form = await request.form()
    values = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "csrf_token"}
    # a multiselect sends one value per choice: join them as the wizard expects
    for k in set(form.keys()):
        many = [v for v in form.getlist(k) if isinstance(v, str)]
        if len(many) > 1:
            values[k] = ",".join(many)
    # the rest touches SQLite: off the event loop, so live streams keep flowing
    return await run_in_threadpool(_wizard_step, request, key, values, session, ctx)


def _wizard_step(
    request: Request, key: str, values: dict[str, str], session: Session, ctx: UiContext
) -> Response:
    go = values.get("go", "next")
    if key == "review" and go == "apply":
        return _wizard_apply(request, session, ctx, values.get("comment", "")[:500])
    if key == "review":
        keys = {s.key for s in wizard.STEPS}
        return redirect(
            f"/wizard/{wizard.prev_step(key) if go == 'prev' else go if go in keys else key}"
        )
    result = ctx.submit_step(session.username, key, values)
    _, errors = wizard.validate({**result.draft, "system_id": ctx.system})
    if result.errors or (go == "next" and wizard.errors_for_step(key, errors)):
        return _wizard_render(
            request, key, session, ctx, result.errors, typed=result.typed, status=422
        )
    if result.changes:
        # Derived fields moved: the user sees each, old -> new, before going on.
        return redirect(f"/wizard/{key}")
    target = (
        wizard.next_step(key) if go == "next" else wizard.prev_step(key) if go == "prev" else key
    )
    if go not in ("next", "prev") and go in {s.key for s in wizard.STEPS}:
        target = go
    return redirect(f"/wizard/{target or key}")


def _wizard_apply(request: Request, session: Session, ctx: UiContext, comment: str) -> Response:
    try:
        config = ctx.validate(ctx.draft_for(session.username))
        version = ctx.apply(config, user=session.username, source="wizard", comment=comment)
    except InvalidConfigError:
        return _wizard_render(request, "review", session, ctx, {}, status=422)
    except ValueError as exc:
        return _wizard_render(request, "review", session, ctx, {"": [str(exc)]}, status=409)
    ctx.drop_draft(session.username)
    return redirect(f"/config?applied={version.version}")


# --- users ------------------------------------------------------------------------------------
@router.get("/users")
def users_page(request: Request, session: Admin, ctx: Ctx, error: str = "") -> HTMLResponse:
    return render(
        request, "users.html", session, users=ctx.users.list_users(), error=error,
        username_rule=USERNAME_RULE, password_min=PASSWORD_MIN_CHARS,
    )  # fmt: skip


@router.post("/users")
def users_create(
    session: Admin,
    ctx: Ctx,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    role: Annotated[str, Form(max_length=16)],
) -> Response:
    try:
        if role not in ("viewer", "operator", "admin"):
            raise UserError(f"unknown role {role!r}")
        ctx.users.create_user(
            username, password, role, created_by=session.username,  # type: ignore[arg-type]
            must_change_password=True,
        )  # fmt: skip
    except UserError as exc:
        return redirect(f"/users?error={quote(str(exc))}")
    return redirect("/users")


@router.post("/users/{username}/role")
def users_role(
    username: str, session: Admin, ctx: Ctx, role: Annotated[str, Form(max_length=16)]
) -> Response:
    try:
        if role not in ("viewer", "operator", "admin"):
            raise UserError(f"unknown role {role!r}")
        ctx.users.set_role(username, role, by=session.username)  # type: ignore[arg-type]
    except UserError as exc:
        return redirect(f"/users?error={quote(str(exc))}")
    return redirect("/users")


@router.post("/users/{username}/password")
def users_password(
    username: str, session: Admin, ctx: Ctx, new_password: Annotated[str, Form(max_length=256)]
) -> Response:
    try:
        ctx.users.set_password(username, new_password, by=session.username)
    except UserError as exc:
        return redirect(f"/users?error={quote(str(exc))}")
    return redirect("/users")


@router.post("/users/{username}/delete")
def users_delete(username: str, session: Admin, ctx: Ctx) -> Response:
    try:
        ctx.users.delete_user(username, by=session.username)
    except UserError as exc:
        return redirect(f"/users?error={quote(str(exc))}")
    return redirect("/users")


def page_session(request: Request) -> Session | None:
    return session_of(request)


__all__ = ["config_diff", "router"]
