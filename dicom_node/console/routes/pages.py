"""The dashboard (``/``, its live part ``/live/dashboard``) and the settings page."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from common.redact import redacted_settings
from common.settings import OPTIONS
from dicom_node.console import queries, registry
from dicom_node.console.access import requires
from dicom_node.console.context import ConsoleContext
from dicom_node.console.view import STATE_ORDER


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    """The dashboard and settings pages (login required)."""

    def dashboard_context() -> dict[str, Any]:
        figures = queries.dashboard(ctx.store.engine)
        ready, checks = ctx.readiness.run()
        root = ctx.settings.model.registry_dir
        active = registry.active_version(root)
        model = None
        if active is not None:
            try:
                model = registry.version_info(root, active, active)
            except KeyError:
                model = None
        return {
            "d": figures,
            "ready": ready,
            "checks": checks,
            "active": active,
            "model": model,
            "peak": max(figures.finished_per_hour) or 1,
            "states": STATE_ORDER,
            "destination": ctx.settings.delivery.destination,
        }

    @requires("authenticated", redirect="login")
    async def dashboard(request: Request) -> Response:
        """The dashboard page."""
        context = await run_in_threadpool(dashboard_context)
        return ctx.page(request, "dashboard.html", title="Dashboard", **context)

    @requires("authenticated")
    async def dashboard_fragment(request: Request) -> Response:
        """The dashboard's live part, fetched every few seconds by the page."""
        context = await run_in_threadpool(dashboard_context)
        return ctx.page(request, "_dashboard.html", **context)

    @requires("authenticated", redirect="login")
    async def settings_page(request: Request) -> Response:
        """The effective settings, URLs with passwords redacted."""
        values = redacted_settings(ctx.settings.values())
        rows = [
            (name, value, OPTIONS[name].info.description or "") for name, value in values.items()
        ]
        return ctx.page(request, "settings.html", title="Settings", rows=rows)

    return [
        Route("/", dashboard),
        Route("/live/dashboard", dashboard_fragment),
        Route("/settings", settings_page),
    ]
