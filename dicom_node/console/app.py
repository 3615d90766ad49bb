"""The operator console's pages and actions (Starlette routes, Jinja2 templates).

Pages: dashboard (``/``), jobs (``/jobs``), one job (``/jobs/{id}``, with its overlay as PNG and
its SR as a table), models (``/models``, activation behind a confirmation page) and settings
(``/settings``). The dashboard and the job page refresh themselves: a little script fetches
``/live/...`` fragments every few seconds. Every page needs a login (:mod:`.auth`); actions and
activation need the ``admin`` role, a POST with the session's CSRF token, and are audited.

The decisions live elsewhere: what an action does in :mod:`store.actions` (the same code as
``deepcovid jobs reanalyse | resend | retry-failed``), what the pages show in :mod:`.queries`,
:mod:`.render` and :mod:`.registry`; the handlers here check who asks, call, and render.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydicom.uid import UID
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

import audit
from audit import events
from common.redact import redacted_settings
from common.settings import OPTIONS, Settings
from common.states import JobState
from dicom_node.console import queries, registry, render
from dicom_node.console.auth import SESSION_COOKIE, Guard, LoginLimiter, limiter_keys
from dicom_node.ops.health import CheckResult, Readiness
from store import actions
from store.jobstore import JobStore
from store.outbox import Outbox, ResultView
from store.users import SessionView, Users

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
POLL_MS = 5000
READINESS_CACHE_S = 5.0
STATE_ORDER = [str(s) for s in JobState]

Handler = Callable[[Request], Awaitable[Response]]


class Console:
    """The console bound to one node's settings, job store, readiness checks and audit log."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: JobStore,
        readiness: Readiness,
        recorder: audit.Recorder | None = None,
        enqueue: actions.Enqueue | None = None,
    ) -> None:
        """``recorder``: where logins and actions are audited (default: the process's)."""
        self.settings = settings
        self.store = store
        self.outbox = Outbox(store)
        self.users = Users(store)
        self.readiness = readiness
        self.recorder = recorder or audit.current()
        self.enqueue = enqueue
        self.guard = Guard(
            self.users,
            idle_s=settings.console_session_idle_min * 60,
            max_age_s=settings.console_session_max_h * 3600,
            secure_cookies=settings.console_tls,
        )
        self.limiter = LoginLimiter(
            settings.console_login_max_failures, settings.console_login_window_s
        )
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True),
        )
        self.env.filters.update(when=_when, age=_age, prob=_prob, sop_class=_sop_class)
        self._flashes: dict[int, str] = {}
        self._ready: tuple[float, tuple[bool, list[CheckResult]]] | None = None
        self._ready_lock = threading.Lock()

    # --- routing ------------------------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        """The console's routes (added beside ``/health`` and ``/metrics``)."""
        return [
            Route("/", self.dashboard),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/live/dashboard", self.dashboard_fragment),
            Route("/jobs", self.jobs),
            Route("/jobs/{job_id:int}", self.job),
            Route("/live/jobs/{job_id:int}", self.job_fragment),
            Route("/jobs/{job_id:int}/overlay.png", self.overlay),
            Route("/jobs/{job_id:int}/reanalyse", self.reanalyse, methods=["POST"]),
            Route("/jobs/{job_id:int}/resend", self.resend, methods=["POST"]),
            Route("/deliveries/retry-failed", self.retry_failed, methods=["POST"]),
            Route("/models", self.models),
            Route("/models/{version}/activate", self.activate_page, methods=["GET"]),
            Route("/models/{version}/activate", self.activate, methods=["POST"]),
            Route("/settings", self.settings_page),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    # --- helpers --------------------------------------------------------------------------------
    async def _session(self, request: Request) -> SessionView | None:
        return await run_in_threadpool(self.guard.who, request)

    def _login_redirect(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    def _render(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(
            ae_title=self.settings.ae_title, poll_ms=POLL_MS, **context
        )
        return HTMLResponse(html, status_code=status_code)

    def _page(
        self, request: Request, session: SessionView, name: str, status_code: int = 200, **ctx: Any
    ) -> HTMLResponse:
        return self._render(
            name,
            status_code,
            user=session.user,
            csrf=session.csrf_token,
            # A live fragment must not take the message its page is about to show.
            flash="" if name.startswith("_") else self._flashes.pop(session.id, ""),
            path=request.url.path,
            **ctx,
        )

    def _flash(self, session: SessionView, message: str) -> None:
        self._flashes[session.id] = message
        if len(self._flashes) > 1000:  # sessions that never came back
            self._flashes.pop(next(iter(self._flashes)))

    def _action(
        self,
        request: Request,
        session: SessionView,
        action: str,
        target: str,
        reason: str,
        *,
        accepted: bool = True,
        study_instance_uid: str | None = None,
    ) -> None:
        """Audit an action of the session's user (refused: ``accepted=False``)."""
        self.recorder.record(
            events.UserAction(
                user=session.user.name,
                role=session.user.role,
                via="console",
                peer_address=_peer(request),
                action=action,
                target=target,
                reason=reason,
                accepted=accepted,
                study_instance_uid=study_instance_uid,
            )
        )

    def _readiness(self) -> tuple[bool, list[CheckResult]]:
        with self._ready_lock:
            now = time.monotonic()
            if self._ready is None or now - self._ready[0] > READINESS_CACHE_S:
                self._ready = (now, self.readiness.run())
            return self._ready[1]

    async def _admin_form(
        self, request: Request, action: str, target: str, study_instance_uid: str | None = None
    ) -> tuple[SessionView, Any] | Response:
        """The session and form of an admin's POST, or the response refusing it (audited)."""
        session = await self._session(request)
        if session is None:
            return self._login_redirect(request)
        form = await request.form()
        refusal: tuple[str, str, str] | None = None
        if not self.guard.form_ok(request, session, form):
            refusal = (
                "missing or wrong CSRF token",
                "Refused",
                "This form has expired or did not come from this console. Reload the "
                "page and try again.",
            )
        elif not session.user.is_admin:
            refusal = (
                "the viewer role may not run actions",
                "Not allowed",
                "Only an admin may do this. Ask an admin, or for an admin account.",
            )
        if refusal is not None:
            reason, title, message = refusal
            self._action(
                request,
                session,
                action,
                target,
                reason,
                accepted=False,
                study_instance_uid=study_instance_uid,
            )
            return self._page(request, session, "error.html", 403, title=title, message=message)
        return session, form

    # --- login and logout -------------------------------------------------------------------------
    async def login_page(self, request: Request) -> Response:
        """The login form (already logged in: straight to the dashboard)."""
        if await self._session(request) is not None:
            return RedirectResponse(_local(request.query_params.get("next")), status_code=303)
        return self._login_form(_local(request.query_params.get("next")))

    def _login_form(self, target: str, status_code: int = 200, error: str = "") -> Response:
        token = self.guard.new_login_token()
        response = self._render("login.html", status_code, next=target, error=error, csrf=token)
        self.guard.set_login_cookie(response, token)
        return response

    async def login(self, request: Request) -> Response:
        """Check the form; start a session or say no (rate-limited, audited)."""
        form = await request.form()
        name = str(form.get("username", "")).strip()[:64]
        password = str(form.get("password", ""))
        target = _local(str(form.get("next", "")))
        peer = _peer(request)
        keys = limiter_keys(peer, name)

        def again(message: str, status: int) -> Response:
            return self._login_form(target, status, message)

        if not self.guard.login_form_ok(request, form):
            return again("The login form expired; please try again.", 403)
        wait = self.limiter.blocked(keys)
        if wait > 0:
            self.recorder.record(
                events.LoginFailed(user=name, peer_address=peer, reason="too many failed attempts")
            )
            response = again(
                f"Too many failed attempts. Try again in {int(wait) + 1} seconds.", 429
            )
            response.headers["retry-after"] = str(int(wait) + 1)
            return response
        user = await run_in_threadpool(self.users.authenticate, name, password)
        if user is None:
            self.limiter.failed(keys)
            self.recorder.record(
                events.LoginFailed(
                    user=name, peer_address=peer, reason="wrong user name or password"
                )
            )
            return again("Wrong user name or password.", 401)
        self.limiter.succeeded(keys[1:])
        await run_in_threadpool(
            self.users.purge_sessions, idle_s=self.guard.idle_s, max_age_s=self.guard.max_age_s
        )
        token, _ = await run_in_threadpool(self.users.start_session, user.id)
        self.recorder.record(
            events.LoginSucceeded(user=user.name, role=user.role, peer_address=peer)
        )
        response = RedirectResponse(target, status_code=303)
        self.guard.set_session_cookie(response, token)
        return response

    async def logout(self, request: Request) -> Response:
        """End the session (CSRF-checked, so another site cannot log an operator out)."""
        session = await self._session(request)
        response = RedirectResponse("/login", status_code=303)
        if session is None:
            self.guard.clear_session_cookie(response)
            return response
        form = await request.form()
        if not self.guard.form_ok(request, session, form):
            return self._page(
                request, session, "error.html", 403, title="Refused", message="Reload and retry."
            )
        token = request.cookies.get(SESSION_COOKIE, "")
        await run_in_threadpool(self.users.end_session, token)
        self.recorder.record(
            events.LoggedOut(
                user=session.user.name, role=session.user.role, peer_address=_peer(request)
            )
        )
        self.guard.clear_session_cookie(response)
        return response

    # --- dashboard --------------------------------------------------------------------------------
    def _dashboard_context(self) -> dict[str, Any]:
        figures = queries.dashboard(self.store.engine)
        ready, checks = self._readiness()
        root = self.settings.model_registry_dir
        active = registry.active_version(root)
        model = None
        if active is not None:
            try:
                model = registry.version_info(root, active, active)
            except KeyError:
                model = None
        peak = max(figures.finished_per_hour) or 1
        return {
            "d": figures,
            "ready": ready,
            "checks": checks,
            "active": active,
            "model": model,
            "peak": peak,
            "states": STATE_ORDER,
            "destination": self.settings.destination,
        }

    async def dashboard(self, request: Request) -> Response:
        """The dashboard page."""
        session = await self._session(request)
        if session is None:
            return self._login_redirect(request)
        ctx = await run_in_threadpool(self._dashboard_context)
        return self._page(request, session, "dashboard.html", title="Dashboard", **ctx)

    async def dashboard_fragment(self, request: Request) -> Response:
        """The dashboard's live part, fetched every few seconds by the page."""
        session = await self._session(request)
        if session is None:
            return JSONResponse({"error": "login required"}, status_code=401)
        ctx = await run_in_threadpool(self._dashboard_context)
        return self._page(request, session, "_dashboard.html", **ctx)

    # --- jobs -----------------------------------------------------------------------------------
    async def jobs(self, request: Request) -> Response:
        """Jobs, filtered and paginated, newest first."""
        session = await self._session(request)
        if session is None:
            return self._login_redirect(request)
        f = queries.JobFilter.parse(request.query_params)

        def read() -> tuple[queries.JobPage, list[str]]:
            return queries.search_jobs(self.store.engine, f), queries.modalities(self.store.engine)

        page, modalities = await run_in_threadpool(read)
        return self._page(
            request,
            session,
            "jobs.html",
            title="Jobs",
            f=f,
            page=page,
            modalities=modalities,
            states=STATE_ORDER,
            link=lambda **changes: "/jobs?" + urlencode(f.query(**changes)),
        )

    def _job_context(self, job_id: int) -> dict[str, Any] | None:
        job = self.store.get(job_id)
        if job is None:
            return None
        results = self.outbox.for_job(job_id)
        sc = _newest(results, "sc")
        sr = _newest(results, "sr") or _newest(results, "rejection_sr")
        sr_table, sr_error = None, ""
        if sr is not None:
            try:
                sr_table = render.sr_table(self.settings.results, sr.path)
            except Exception as exc:  # a missing or unreadable file: say so, show the rest
                sr_error = f"the SR cannot be shown: {type(exc).__name__}"
        has_overlay = sc is not None and Path(sc.path).is_file()
        destination = self.settings.destination
        return {
            "job": job,
            "events": self.store.events(job_id),
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

    async def job(self, request: Request) -> Response:
        """One job: attributes, overlay, SR, deliveries, timeline, actions."""
        session = await self._session(request)
        if session is None:
            return self._login_redirect(request)
        ctx = await run_in_threadpool(self._job_context, request.path_params["job_id"])
        if ctx is None:
            return self._page(
                request, session, "error.html", 404, title="Not found", message="No such job."
            )
        return self._page(request, session, "job.html", title=f"Job {ctx['job'].id}", **ctx)

    async def job_fragment(self, request: Request) -> Response:
        """The job page's live part."""
        session = await self._session(request)
        if session is None:
            return JSONResponse({"error": "login required"}, status_code=401)
        ctx = await run_in_threadpool(self._job_context, request.path_params["job_id"])
        if ctx is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        return self._page(request, session, "_job.html", **ctx)

    async def overlay(self, request: Request) -> Response:
        """The job's newest Secondary Capture overlay as PNG."""
        session = await self._session(request)
        if session is None:
            return JSONResponse({"error": "login required"}, status_code=401)
        job_id = request.path_params["job_id"]

        def png() -> bytes | None:
            sc = _newest(self.outbox.for_job(job_id), "sc")
            if sc is None:
                return None
            try:
                return render.overlay_png(self.settings.results, sc.path)
            except (render.NotAResult, OSError, ValueError):
                return None

        data = await run_in_threadpool(png)
        if data is None:
            return JSONResponse({"error": "no overlay for this job"}, status_code=404)
        return Response(
            data, media_type="image/png", headers={"cache-control": "private, max-age=300"}
        )

    # --- actions ----------------------------------------------------------------------------------
    async def _job_action(
        self,
        request: Request,
        action: str,
        run: Callable[[int, str], actions.ActionResult],
    ) -> Response:
        job_id = request.path_params["job_id"]
        job = await run_in_threadpool(self.store.get, job_id)
        target = job.sop_instance_uid if job else str(job_id)
        study = job.study_instance_uid if job else None
        checked = await self._admin_form(request, action, target, study)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        by = f"{session.user.name} (console)"
        result = await run_in_threadpool(run, job_id, by)
        self._action(request, session, action, target, result.message, study_instance_uid=study)
        self._flash(session, result.message)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    async def reanalyse(self, request: Request) -> Response:
        """Re-analyse a failed or rejected job (admin)."""
        return await self._job_action(
            request,
            "reanalyse",
            lambda job_id, by: actions.reanalyse(self.store, job_id, by=by, enqueue=self.enqueue),
        )

    async def resend(self, request: Request) -> Response:
        """Send a job's results again (admin)."""
        return await self._job_action(
            request,
            "resend",
            lambda job_id, by: actions.resend(
                self.store, job_id, by=by, destination=self.settings.destination
            ),
        )

    async def retry_failed(self, request: Request) -> Response:
        """Retry every failed delivery (admin)."""
        checked = await self._admin_form(request, "retry-failed", "all failed deliveries")
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        by = f"{session.user.name} (console)"
        result = await run_in_threadpool(lambda: actions.retry_failed_deliveries(self.store, by=by))
        self._action(request, session, "retry-failed", "all failed deliveries", result.message)
        self._flash(session, result.message)
        return RedirectResponse("/", status_code=303)

    # --- models -----------------------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        """The registry: every version, its card and metrics."""
        session = await self._session(request)
        if session is None:
            return self._login_redirect(request)
        root = self.settings.model_registry_dir
        found = await run_in_threadpool(registry.versions, root)
        return self._page(
            request, session, "models.html", title="Models", versions=found, root=root
        )

    async def activate_page(self, request: Request) -> Response:
        """Ask for confirmation before activating a version."""
        session = await self._session(request)
        if session is None:
            return self._login_redirect(request)
        try:
            info = registry.version_info(
                self.settings.model_registry_dir, request.path_params["version"]
            )
        except KeyError:
            return self._page(
                request, session, "error.html", 404, title="Not found", message="No such version."
            )
        return self._page(request, session, "activate.html", title="Activate a model", v=info)

    async def activate(self, request: Request) -> Response:
        """Activate a version (admin, confirmed, audited)."""
        version = request.path_params["version"]
        checked = await self._admin_form(request, "activate-model", version)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        root = self.settings.model_registry_dir
        if form.get("confirm") != version:
            self._flash(session, f"Not activated: type the version name {version} to confirm.")
            return RedirectResponse(f"/models/{version}/activate", status_code=303)
        try:
            await run_in_threadpool(registry.activate, root, version)
        except (ValueError, OSError) as exc:
            message, accepted = f"version {version} not activated: {exc}", False
        else:
            message, accepted = f"version {version} is now the active model", True
        self._action(request, session, "activate-model", version, message, accepted=accepted)
        self._flash(session, message)
        return RedirectResponse("/models", status_code=303)

    # --- settings ---------------------------------------------------------------------------------
    async def settings_page(self, request: Request) -> Response:
        """The effective settings, URLs with passwords redacted."""
        session = await self._session(request)
        if session is None:
            return self._login_redirect(request)
        values = redacted_settings(self.settings.values())
        rows = [
            (name, value, OPTIONS[name].info.description or "") for name, value in values.items()
        ]
        return self._page(request, session, "settings.html", title="Settings", rows=rows)


def _newest(results: list[ResultView], kind: str) -> ResultView | None:
    found = [r for r in results if r.kind == kind]
    return found[-1] if found else None


def _peer(request: Request) -> str | None:
    """The client's IP address (as the audit trail names it)."""
    return request.client.host if request.client else None


def _local(target: str | None) -> str:
    """A redirect target on this site only (never ``//host`` or ``https://...``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _when(value: Any) -> str:
    moment = queries.aware(value)
    return "-" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _prob(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _sop_class(uid: str | None) -> str:
    if not uid:
        return "-"
    name = UID(uid).name
    return name if name != uid else uid
