"""Logging in and out: ``GET``/``POST /login`` and ``POST /logout``.

Logins are rate-limited per client address and per user name and audited whether they succeed
or fail; the login form carries a double-submit CSRF token, logout the session's.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from audit import events
from dicom_node.console.access import ConsoleUser
from dicom_node.console.auth import SESSION_COOKIE, limiter_keys
from dicom_node.console.context import ConsoleContext, peer


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    """The login form (named ``login``: where pages send an anonymous visitor) and logout."""

    def login_form(target: str, status_code: int = 200, error: str = "") -> Response:
        token = ctx.guard.new_login_token()
        response = ctx.view.render("login.html", status_code, next=target, error=error, csrf=token)
        ctx.guard.set_login_cookie(response, token)
        return response

    async def login_page(request: Request) -> Response:
        """The login form (already logged in: straight to the page asked for)."""
        target = local(request.query_params.get("next"))
        if request.user.is_authenticated:
            return RedirectResponse(target, status_code=303)
        return login_form(target)

    async def login(request: Request) -> Response:
        """Check the form; start a session or say no (rate-limited, audited)."""
        form = await request.form()
        name = str(form.get("username", "")).strip()[:64]
        password = str(form.get("password", ""))
        target = local(str(form.get("next", "")))
        address = peer(request)
        keys = limiter_keys(address, name)

        if not ctx.guard.login_form_ok(request, form):
            return login_form(target, 403, "The login form expired; please try again.")
        wait = ctx.limiter.blocked(keys)
        if wait > 0:
            ctx.recorder.record(
                events.LoginFailed(
                    user=name, peer_address=address, reason="too many failed attempts"
                )
            )
            response = login_form(
                target, 429, f"Too many failed attempts. Try again in {int(wait) + 1} seconds."
            )
            response.headers["retry-after"] = str(int(wait) + 1)
            return response
        user = await run_in_threadpool(ctx.users.authenticate, name, password)
        if user is None:
            ctx.limiter.failed(keys)
            ctx.recorder.record(
                events.LoginFailed(
                    user=name, peer_address=address, reason="wrong user name or password"
                )
            )
            return login_form(target, 401, "Wrong user name or password.")
        ctx.limiter.succeeded(keys[1:])
        await run_in_threadpool(
            ctx.users.purge_sessions, idle_s=ctx.guard.idle_s, max_age_s=ctx.guard.max_age_s
        )
        token, _ = await run_in_threadpool(ctx.users.start_session, user.id)
        ctx.recorder.record(
            events.LoginSucceeded(user=user.name, role=user.role, peer_address=address)
        )
        response = RedirectResponse(target, status_code=303)
        ctx.guard.set_session_cookie(response, token)
        return response

    async def logout(request: Request) -> Response:
        """End the session (CSRF-checked, so another site cannot log an operator out)."""
        response = RedirectResponse("/login", status_code=303)
        if not isinstance(request.user, ConsoleUser):
            ctx.guard.clear_session_cookie(response)
            return response
        session = request.user.session
        form = await request.form()
        if not ctx.guard.form_ok(request, session, form):
            return ctx.page(
                request, "error.html", 403, title="Refused", message="Reload and retry."
            )
        await run_in_threadpool(ctx.users.end_session, request.cookies.get(SESSION_COOKIE, ""))
        ctx.recorder.record(
            events.LoggedOut(
                user=session.user.name, role=session.user.role, peer_address=peer(request)
            )
        )
        ctx.guard.clear_session_cookie(response)
        return response

    return [
        Route("/login", login_page, methods=["GET"], name="login"),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


def local(target: str | None) -> str:
    """A redirect target on this site only (never ``//host`` or ``https://...``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
