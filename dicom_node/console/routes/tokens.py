"""DICOMweb senders' bearer tokens: ``/tokens`` (admins only): list, add (shown once), remove.

The console's twin of ``deepcovid tokens`` (:mod:`store.tokens`): a new token is shown on the
answer to the admin's POST and never again (the table keeps only its hash; the page is not
cached). Adding and removing are audited like every console action.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dicom_node.console.access import is_admin, requires, session_of
from dicom_node.console.context import ConsoleContext
from store.tokens import Tokens
from store.users import UserError


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    """The tokens page and its two actions, for admins."""
    tokens = Tokens(ctx.store)

    async def page(request: Request, new: tuple[str, str] | None = None) -> Response:
        if not is_admin(request):
            message = "Only an admin may see and manage the DICOMweb senders' tokens."
            return ctx.page(request, "error.html", 403, title="Not allowed", message=message)
        found = await run_in_threadpool(tokens.list_all)
        return ctx.page(request, "tokens.html", title="DICOMweb tokens", tokens=found, new=new)

    @requires("authenticated", redirect="login")
    async def show(request: Request) -> Response:
        """Every sender's token by name (never the token)."""
        return await page(request)

    @requires("authenticated", redirect="login")
    async def add(request: Request) -> Response:
        """Make a token and show it, once."""
        form = await ctx.admin_form(request, "add-token", "")
        if isinstance(form, Response):
            return form
        name = str(form.get("name", "")).strip()
        try:
            token = await run_in_threadpool(tokens.add, name)
        except UserError as exc:
            ctx.audit_action(request, "add-token", name, str(exc), accepted=False)
            ctx.view.flash(session_of(request), f"No token made: {exc}")
            return RedirectResponse("/tokens", status_code=303)
        ctx.audit_action(request, "add-token", name, "DICOMweb sender token made")
        return await page(request, new=(name, token))

    @requires("authenticated", redirect="login")
    async def remove(request: Request) -> Response:
        """Revoke a sender's token."""
        name = request.path_params["name"]
        form = await ctx.admin_form(request, "remove-token", name)
        if isinstance(form, Response):
            return form
        removed = await run_in_threadpool(tokens.remove, name)
        message = f"token {name} removed" if removed else f"no token {name}"
        ctx.audit_action(request, "remove-token", name, message, accepted=removed)
        ctx.view.flash(session_of(request), message)
        return RedirectResponse("/tokens", status_code=303)

    return [
        Route("/tokens", show, methods=["GET"]),
        Route("/tokens", add, methods=["POST"]),
        Route("/tokens/{name}/remove", remove, methods=["POST"]),
    ]
