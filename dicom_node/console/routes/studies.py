"""Studies: the jobs of one Study Instance UID and the study-level results issued for them.

Pages: ``/studies`` (most recently changed first, with the current study finding) and
``/studies/{uid}`` (its results, newest first, each naming the SR it replaces; its images, the
one that drove the finding marked; the current study SR as a table). What a study is, and when
it has settled, is :mod:`store.studies`; the result itself :mod:`worker.study`.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from common.uids import is_valid_uid
from dicom_node.console import render
from dicom_node.console.access import requires
from dicom_node.console.context import ConsoleContext
from store.studies import Studies

PAGE_SIZE = 50


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    """The study pages (login required)."""
    studies = Studies(ctx.store)
    settle_s = ctx.settings.worker.study_settle_s

    @requires("authenticated", redirect="login")
    async def study_list(request: Request) -> Response:
        """Studies, most recently changed first."""
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page = 1
        rows = await run_in_threadpool(
            studies.summaries, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
        )
        return ctx.page(
            request,
            "studies.html",
            title="Studies",
            studies=rows[:PAGE_SIZE],
            page=page,
            more=len(rows) > PAGE_SIZE,
            settle_s=settle_s,
        )

    def study_context(uid: str) -> dict[str, Any] | None:
        jobs = studies.jobs(uid)
        if not jobs:
            return None
        results = studies.results(uid)
        current = results[-1] if results else None
        sr_table, sr_error = None, ""
        if current is not None and current.sr_sop_instance_uid:
            path = ctx.settings.storage.results / uid / f"{current.sr_sop_instance_uid}.dcm"
            try:
                sr_table = render.sr_table(ctx.settings.storage.results, path)
            except Exception as exc:  # a missing or unreadable file: say so, show the rest
                sr_error = f"the study SR cannot be shown: {type(exc).__name__}"
        return {
            "study_uid": uid,
            "jobs": jobs,
            "results": results,
            "driver": current.driving_sop_instance_uid if current else None,
            "sr_table": sr_table,
            "sr_error": sr_error,
            "settle_s": settle_s,
        }

    @requires("authenticated", redirect="login")
    async def study(request: Request) -> Response:
        """One study: its results, its images, its current SR."""
        uid = request.path_params["uid"]
        context = await run_in_threadpool(study_context, uid) if is_valid_uid(uid) else None
        if context is None:
            return ctx.page(request, "error.html", 404, title="Not found", message="No such study.")
        return ctx.page(request, "study.html", title="Study", **context)

    return [Route("/studies", study_list), Route("/studies/{uid}", study)]
