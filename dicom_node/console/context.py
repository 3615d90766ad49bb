"""What the console's routers share: settings, the job store, the session guard, the audit
recorder, the views; and the two things every action does with them (read an admin's form, audit
the outcome).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

import audit
from audit import events
from common.settings import Settings
from dicom_node.console.access import is_admin, session_of
from dicom_node.console.auth import Guard, LoginLimiter
from dicom_node.console.view import View
from dicom_node.ops.health import CheckResult, Readiness
from store import actions
from store.jobstore import JobStore
from store.outbox import Outbox
from store.users import Users

READINESS_CACHE_S = 5.0


@dataclass
class CachedReadiness:
    """The readiness checks, run at most every few seconds however many pages poll."""

    checks: Readiness
    max_age_s: float = READINESS_CACHE_S
    _last: tuple[float, tuple[bool, list[CheckResult]]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> tuple[bool, list[CheckResult]]:
        """Whether all pass, and each result (from the cache while it is fresh)."""
        with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._last[0] > self.max_age_s:
                self._last = (now, self.checks.run())
            return self._last[1]


@dataclass
class ConsoleContext:
    """One node's console: the state its routers (:mod:`.routes`) are built on."""

    settings: Settings
    store: JobStore
    outbox: Outbox
    users: Users
    guard: Guard
    limiter: LoginLimiter
    readiness: CachedReadiness
    recorder: audit.Recorder
    view: View
    enqueue: actions.Enqueue | None = None

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        store: JobStore,
        readiness: Readiness,
        recorder: audit.Recorder | None = None,
        enqueue: actions.Enqueue | None = None,
    ) -> ConsoleContext:
        """``recorder``: where logins and actions are audited (default: the process's)."""
        console = settings.console
        users = Users(store)
        return cls(
            settings=settings,
            store=store,
            outbox=Outbox(store),
            users=users,
            guard=Guard(
                users,
                idle_s=console.session_idle_min * 60,
                max_age_s=console.session_max_h * 3600,
                secure_cookies=console.tls,
            ),
            limiter=LoginLimiter(console.login_max_failures, console.login_window_s),
            readiness=CachedReadiness(readiness),
            recorder=recorder or audit.current(),
            view=View(settings.listener.ae_title),
            enqueue=enqueue,
        )

    def audit_action(
        self,
        request: Request,
        action: str,
        target: str,
        reason: str,
        *,
        accepted: bool = True,
        study_instance_uid: str | None = None,
    ) -> None:
        """Audit an action of the request's user (refused: ``accepted=False``)."""
        session = session_of(request)
        self.recorder.record(
            events.UserAction(
                user=session.user.name,
                role=session.user.role,
                via="console",
                peer_address=peer(request),
                action=action,
                target=target,
                reason=reason,
                accepted=accepted,
                study_instance_uid=study_instance_uid,
            )
        )

    async def admin_form(
        self, request: Request, action: str, target: str, study_instance_uid: str | None = None
    ) -> FormData | Response:
        """The form of an admin's POST with its CSRF token, or the response refusing it
        (audited: a forged form, or a user without the ``admin`` scope)."""
        session = session_of(request)
        form = await request.form()
        refusal: tuple[str, str, str] | None = None
        if not self.guard.form_ok(request, session, form):
            refusal = (
                "missing or wrong CSRF token",
                "Refused",
                "This form has expired or did not come from this console. Reload the "
                "page and try again.",
            )
        elif not is_admin(request):
            refusal = (
                "the viewer role may not run actions",
                "Not allowed",
                "Only an admin may do this. Ask an admin, or for an admin account.",
            )
        if refusal is None:
            return form
        reason, title, message = refusal
        self.audit_action(
            request,
            action,
            target,
            reason,
            accepted=False,
            study_instance_uid=study_instance_uid,
        )
        return self.page(request, "error.html", 403, title=title, message=message)

    def page(self, request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
        """A page for the request's logged-in user."""
        return self.view.page(request, session_of(request), name, status_code, **ctx)


def peer(request: Request) -> str | None:
    """The client's IP address (as the audit trail names it)."""
    return request.client.host if request.client else None
