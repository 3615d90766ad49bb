"""The model registry: ``/models`` (every version, its card and metrics) and activation
(``/models/{version}/activate``: a confirmation page, then an admin's confirmed POST)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dicom_node.console import registry
from dicom_node.console.access import requires, session_of
from dicom_node.console.context import ConsoleContext


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    """The registry pages (login required) and activation (admin, confirmed, audited)."""

    @requires("authenticated", redirect="login")
    async def models(request: Request) -> Response:
        """The registry: every version, its card and metrics."""
        root = ctx.settings.model.registry_dir
        found = await run_in_threadpool(registry.versions, root)
        return ctx.page(request, "models.html", title="Models", versions=found, root=root)

    @requires("authenticated", redirect="login")
    async def activate_page(request: Request) -> Response:
        """Ask for confirmation before activating a version."""
        try:
            info = registry.version_info(
                ctx.settings.model.registry_dir, request.path_params["version"]
            )
        except KeyError:
            return ctx.page(
                request, "error.html", 404, title="Not found", message="No such version."
            )
        return ctx.page(request, "activate.html", title="Activate a model", v=info)

    @requires("authenticated", redirect="login")
    async def activate(request: Request) -> Response:
        """Activate a version (admin, confirmed, audited)."""
        version = request.path_params["version"]
        form = await ctx.admin_form(request, "activate-model", version)
        if isinstance(form, Response):
            return form
        session = session_of(request)
        if form.get("confirm") != version:
            ctx.view.flash(session, f"Not activated: type the version name {version} to confirm.")
            return RedirectResponse(f"/models/{version}/activate", status_code=303)
        try:
            await run_in_threadpool(registry.activate, ctx.settings.model.registry_dir, version)
        except (ValueError, OSError) as exc:
            message, accepted = f"version {version} not activated: {exc}", False
        else:
            message, accepted = f"version {version} is now the active model", True
        ctx.audit_action(request, "activate-model", version, message, accepted=accepted)
        ctx.view.flash(session, message)
        return RedirectResponse("/models", status_code=303)

    return [
        Route("/models", models),
        Route("/models/{version}/activate", activate_page, methods=["GET"]),
        Route("/models/{version}/activate", activate, methods=["POST"]),
    ]
