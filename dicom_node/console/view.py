"""How the console's pages are drawn: the Jinja2 templates, their filters, one-shot messages.

Every page gets the node's AE title, the poll interval of its live parts, and (when someone is
logged in) the user, the session's CSRF token for its forms and the message an action left for
the next page (:meth:`View.flash`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydicom.uid import UID
from starlette.requests import Request
from starlette.responses import HTMLResponse

from common.states import JobState
from dicom_node.console import queries
from store.users import SessionView

TEMPLATES = Path(__file__).resolve().parent / "templates"
POLL_MS = 5000
MAX_FLASHES = 1000
STATE_ORDER = [str(s) for s in JobState]
"""Job states in the order the pages list them."""


class View:
    """The templates bound to one node (its AE title) and the messages waiting per session."""

    def __init__(self, ae_title: str) -> None:
        self.ae_title = ae_title
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True)
        )
        self.env.filters.update(when=_when, age=_age, prob=_prob, sop_class=_sop_class)
        self._flashes: dict[int, str] = {}

    def render(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """A template as a response (no session: the login form)."""
        html = self.env.get_template(name).render(
            ae_title=self.ae_title, poll_ms=POLL_MS, **context
        )
        return HTMLResponse(html, status_code=status_code)

    def page(
        self, request: Request, session: SessionView, name: str, status_code: int = 200, **ctx: Any
    ) -> HTMLResponse:
        """A page (or a live fragment, ``_*.html``) for a logged-in user."""
        return self.render(
            name,
            status_code,
            user=session.user,
            csrf=session.csrf_token,
            # A live fragment must not take the message its page is about to show.
            flash="" if name.startswith("_") else self._flashes.pop(session.id, ""),
            path=request.url.path,
            **ctx,
        )

    def flash(self, session: SessionView, message: str) -> None:
        """Leave ``message`` for the session's next page."""
        self._flashes[session.id] = message
        if len(self._flashes) > MAX_FLASHES:  # sessions that never came back
            self._flashes.pop(next(iter(self._flashes)))


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
