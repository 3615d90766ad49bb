"""Jobs and what an admin can do about them.

Pages: ``/jobs`` (filtered, paginated, newest first), ``/jobs/{id}`` (attributes, overlay, SR,
deliveries, timeline) with its live part ``/live/jobs/{id}`` and its overlay as PNG. Actions
(admin, CSRF-checked, audited, all through :func:`act`): ``/jobs/{id}/reanalyse``,
``/jobs/{id}/resend`` and ``/deliveries/retry-failed``. What an action does is
:mod:`store.actions`, the same code as ``deepcovid jobs reanalyse | resend | retry-failed``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dicom_node.console import queries, render
from dicom_node.console.access import requires, session_of
from dicom_node.console.context import ConsoleContext
from dicom_node.console.view import STATE_ORDER
from store import actions
from store.outbox import ResultView


async def act(
    ctx: ConsoleContext,
    request: Request,
    action: str,
    target: str,
    run: Callable[[str], actions.ActionResult],
    *,
    then: str,
    study_instance_uid: str | None = None,
) -> Response:
    """Run an admin's action: check the form, ``run(by)``, audit the outcome, leave its message
    for the page ``then`` the browser is sent to."""
    form = await ctx.admin_form(request, action, target, study_instance_uid)
    if isinstance(form, Response):
        return form
    session = session_of(request)
    result = await run_in_threadpool(run, f"{session.user.name} (console)")
    ctx.audit_action(request, action, target, result.message, study_instance_uid=study_instance_uid)
    ctx.view.flash(session, result.message)
    return RedirectResponse(then, status_code=303)


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    """The job pages (login required) and the actions (admin)."""

    @requires("authenticated", redirect="login")
    async def jobs(request: Request) -> Response:
        """Jobs, filtered and paginated, newest first."""
        f = queries.JobFilter.parse(request.query_params)

        def read() -> tuple[queries.JobPage, list[str]]:
            return queries.search_jobs(ctx.store.engine, f), queries.modalities(ctx.store.engine)

        page, modalities = await run_in_threadpool(read)
        return ctx.page(
            request,
            "jobs.html",
            title="Jobs",
            f=f,
            page=page,
            modalities=modalities,
            states=STATE_ORDER,
            link=lambda **changes: "/jobs?" + urlencode(f.query(**changes)),
        )

    def job_context(job_id: int) -> dict[str, Any] | None:
        job = ctx.store.get(job_id)
        if job is None:
            return None
        results = ctx.outbox.for_job(job_id)
        sc = newest(results, "sc")
        sr = newest(results, "sr") or newest(results, "rejection_sr")
        sr_table, sr_error = None, ""
        if sr is not None:
            try:
                sr_table = render.sr_table(ctx.settings.storage.results, sr.path)
            except Exception as exc:  # a missing or unreadable file: say so, show the rest
                sr_error = f"the SR cannot be shown: {type(exc).__name__}"
        has_overlay = sc is not None and Path(sc.path).is_file()
        destination = ctx.settings.delivery.destination
        return {
            "job": job,
            "events": ctx.store.events(job_id),
            "results": results,
            "overlay": f"/jobs/{job_id}/overlay.png?v={sc.sop_instance_uid}"
            if has_overlay and sc
            else "",
            "sr": sr,
            "sr_table": sr_table,
            "sr_error": sr_error,
            "can_reanalyse": job.state in actions.REANALYSABLE,
            "can_resend": job.state in actions.RESENDABLE
            and bool(results)
            and (bool(destination) or all(r.destination for r in results)),
        }

    @requires("authenticated", redirect="login")
    async def job(request: Request) -> Response:
        """One job: attributes, overlay, SR, deliveries, timeline, actions."""
        context = await run_in_threadpool(job_context, request.path_params["job_id"])
        if context is None:
            return ctx.page(request, "error.html", 404, title="Not found", message="No such job.")
        return ctx.page(request, "job.html", title=f"Job {context['job'].id}", **context)

    @requires("authenticated")
    async def job_fragment(request: Request) -> Response:
        """The job page's live part."""
        context = await run_in_threadpool(job_context, request.path_params["job_id"])
        if context is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        return ctx.page(request, "_job.html", **context)

    @requires("authenticated")
    async def overlay(request: Request) -> Response:
        """The job's newest Secondary Capture overlay as PNG."""
        job_id = request.path_params["job_id"]

        def png() -> bytes | None:
            sc = newest(ctx.outbox.for_job(job_id), "sc")
            if sc is None:
                return None
            try:
                return render.overlay_png(ctx.settings.storage.results, sc.path)
            except (render.NotAResult, OSError, ValueError):
                return None

        data = await run_in_threadpool(png)
        if data is None:
            return JSONResponse({"error": "no overlay for this job"}, status_code=404)
        return Response(
            data, media_type="image/png", headers={"cache-control": "private, max-age=300"}
        )

    async def on_job(
        request: Request, action: str, run: Callable[[int, str], actions.ActionResult]
    ) -> Response:
        """:func:`act` on the job of the path, audited with its instance and study."""
        job_id = request.path_params["job_id"]
        found = await run_in_threadpool(ctx.store.get, job_id)
        return await act(
            ctx,
            request,
            action,
            found.sop_instance_uid if found else str(job_id),
            lambda by: run(job_id, by),
            then=f"/jobs/{job_id}",
            study_instance_uid=found.study_instance_uid if found else None,
        )

    @requires("authenticated", redirect="login")
    async def reanalyse(request: Request) -> Response:
        """Re-analyse a failed or rejected job (admin)."""
        return await on_job(
            request,
            "reanalyse",
            lambda job_id, by: actions.reanalyse(ctx.store, job_id, by=by, enqueue=ctx.enqueue),
        )

    @requires("authenticated", redirect="login")
    async def resend(request: Request) -> Response:
        """Send a job's results again (admin)."""
        return await on_job(
            request,
            "resend",
            lambda job_id, by: actions.resend(
                ctx.store, job_id, by=by, destination=ctx.settings.delivery.destination
            ),
        )

    @requires("authenticated", redirect="login")
    async def retry_failed(request: Request) -> Response:
        """Retry every failed delivery (admin)."""
        return await act(
            ctx,
            request,
            "retry-failed",
            "all failed deliveries",
            lambda by: actions.retry_failed_deliveries(ctx.store, by=by),
            then="/",
        )

    return [
        Route("/jobs", jobs),
        Route("/jobs/{job_id:int}", job),
        Route("/live/jobs/{job_id:int}", job_fragment),
        Route("/jobs/{job_id:int}/overlay.png", overlay),
        Route("/jobs/{job_id:int}/reanalyse", reanalyse, methods=["POST"]),
        Route("/jobs/{job_id:int}/resend", resend, methods=["POST"]),
        Route("/deliveries/retry-failed", retry_failed, methods=["POST"]),
    ]


def newest(results: list[ResultView], kind: str) -> ResultView | None:
    """The newest result object of ``kind`` (None: the job has none)."""
    found = [r for r in results if r.kind == kind]
    return found[-1] if found else None
