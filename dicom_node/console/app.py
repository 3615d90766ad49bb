"""The operator console assembled: its routers behind Starlette's authentication.

Pages: dashboard (``/``), jobs (``/jobs``), one job (``/jobs/{id}``, with its overlay as PNG and
its SR as a table), studies (``/studies``, one study with its study-level results), models
(``/models``, activation behind a confirmation page) and settings (``/settings``). The dashboard
and the job page refresh themselves: a little script fetches ``/live/...`` fragments every few
seconds. Every page needs a login; actions and activation need
the ``admin`` scope, a POST with the session's CSRF token, and are audited (:mod:`.access`).

One router per resource (:mod:`.routes`), built on one :class:`.context.ConsoleContext`; the
decisions live elsewhere: what an action does in :mod:`store.actions`, what the pages show in
:mod:`.queries`, :mod:`.render` and :mod:`.registry`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from dicom_node.console.access import SessionBackend
from dicom_node.console.context import ConsoleContext
from dicom_node.console.routes import auth, jobs, models, pages, studies, tokens

STATIC = Path(__file__).resolve().parent / "static"


def console_routes(ctx: ConsoleContext) -> list[BaseRoute]:
    """The console's routes, to be placed after any others of the app they join (``/health``,
    ``/metrics``): they answer every other path, a 404 for what no router knows.

    ``/static`` is served without a session look-up; everything else goes through
    :class:`~starlette.middleware.authentication.AuthenticationMiddleware`.
    """
    routers = [
        *auth.routes(ctx),
        *pages.routes(ctx),
        *jobs.routes(ctx),
        *studies.routes(ctx),
        *models.routes(ctx),
        *tokens.routes(ctx),
    ]
    return [
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Mount(
            "",
            routes=routers,
            middleware=[Middleware(AuthenticationMiddleware, backend=SessionBackend(ctx.guard))],
        ),
    ]
