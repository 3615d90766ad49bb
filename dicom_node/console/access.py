"""Who may call a console route, said where the route is defined.

Starlette's :class:`~starlette.middleware.authentication.AuthenticationMiddleware` runs
:class:`SessionBackend` once per request: the session cookie is looked up in the job store
(:class:`.auth.Guard`, with its idle and maximum age), and a live session gives the scopes
``authenticated`` and, for an admin, ``admin``. Routes then say what they need with
:func:`requires`, as Starlette's decorator of that name does::

    @requires("authenticated", redirect="login")  # a page: to the login form, and back
    @requires("authenticated")                    # a fragment or image: 401, JSON

The console's form differs from Starlette's in two ways that the pages and their script rely on:
the login redirect names the page asked for as a local path (``/login?next=/jobs``, never an
absolute URL, which the login form would refuse as a way off the site), and a refusal without a
redirect is ``401 {"error": "login required"}`` (the pages' script sends the browser to the login
form on a 401). The ``admin`` scope is checked where an action's form is read
(:meth:`.context.ConsoleContext.admin_form`), after its CSRF token, so that a refusal is audited
with the action it refused.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlencode

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    has_required_scope,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from dicom_node.console.auth import SESSION_COOKIE, Guard
from store.users import SessionView

AUTHENTICATED = "authenticated"
ADMIN = "admin"

Endpoint = Callable[[Request], Awaitable[Response]]


class ConsoleUser(BaseUser):
    """``request.user`` of a logged-in operator: the live session behind the cookie."""

    def __init__(self, session: SessionView) -> None:
        self.session = session

    @property
    def is_authenticated(self) -> bool:
        """Always: an anonymous request has Starlette's ``UnauthenticatedUser``."""
        return True

    @property
    def display_name(self) -> str:
        """The user name."""
        return self.session.user.name

    @property
    def identity(self) -> str:
        """The user's id in the job store."""
        return str(self.session.user.id)


class SessionBackend(AuthenticationBackend):
    """The console session behind a request's cookie, as Starlette's credentials and user."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        """Scopes ``authenticated`` (and ``admin`` for an admin); None without a live session."""
        if not conn.cookies.get(SESSION_COOKIE):
            return None  # no look-up for anonymous requests
        session = await run_in_threadpool(self.guard.who, conn)
        if session is None:
            return None
        scopes = [AUTHENTICATED, ADMIN] if session.user.is_admin else [AUTHENTICATED]
        return AuthCredentials(scopes), ConsoleUser(session)


def requires(
    scopes: str | Sequence[str], *, redirect: str | None = None
) -> Callable[[Endpoint], Endpoint]:
    """Refuse a request without ``scopes``: redirect to the route named ``redirect`` with the
    local path asked for as ``next``, or (no ``redirect``) answer 401 in JSON."""
    needed = [scopes] if isinstance(scopes, str) else list(scopes)

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def checked(request: Request) -> Response:
            if has_required_scope(request, needed):
                return await endpoint(request)
            if redirect is None:
                return JSONResponse({"error": "login required"}, status_code=401)
            asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            login = request.app.url_path_for(redirect)
            return RedirectResponse(f"{login}?{urlencode({'next': asked})}", status_code=303)

        return checked

    return decorate


def session_of(request: Request) -> SessionView:
    """The session of a request that :func:`requires` let through."""
    user = request.user
    assert isinstance(user, ConsoleUser), "route without @requires('authenticated')"
    return user.session


def is_admin(request: Request) -> bool:
    """Whether the request's session has the ``admin`` scope."""
    return ADMIN in request.auth.scopes
