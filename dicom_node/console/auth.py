"""Who is asking: session cookies, CSRF tokens and the login rate limit of the console.

Plain objects a unit test drives directly: :class:`Guard` (``who``, ``form_ok``) and
:class:`LoginLimiter`. Starlette's authentication hooks them in (:mod:`.access`); the login
route counts failures with the limiter.

- The session cookie holds a random token (the job store keeps its SHA-256,
  :mod:`store.users`); it is ``HttpOnly`` and ``SameSite=Strict``, and ``Secure`` when the
  console is served over TLS.
- Every form carries its session's CSRF token; a POST without the right one is refused (403)
  and audited. A POST whose ``Origin`` names another site is refused as well. The login form,
  before any session exists, uses a double-submit cookie instead.
- Failed logins are counted per client address and per user name; after
  ``console.login_max_failures`` within ``console.login_window_s`` both are refused (429)
  until the window has passed, whatever the password.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from store.users import SessionView, Users

SESSION_COOKIE = "deepcovid_console"
LOGIN_CSRF_COOKIE = "deepcovid_login_csrf"
CSRF_FIELD = "csrf_token"


class LoginLimiter:
    """Failures per key (``ip:...``, ``user:...``) in a sliding window; thread-safe."""

    MAX_KEYS = 10_000

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, keys: Iterable[str]) -> float:
        """Seconds until an attempt with these keys is allowed again (0: allowed now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._prune(key, now)
                if len(times) >= self.max_failures:
                    wait = max(wait, times[0] + self.window_s - now)
        return wait

    def failed(self, keys: Iterable[str]) -> None:
        """Count one failed attempt against each key."""
        now = self.clock()
        with self._lock:
            if len(self._failures) >= self.MAX_KEYS:  # bounded memory under a spray of names
                for key in list(self._failures):
                    self._prune(key, now)
                if len(self._failures) >= self.MAX_KEYS:
                    self._failures.pop(next(iter(self._failures)))
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, keys: Iterable[str]) -> None:
        """Forget the failures of these keys (a correct login for the name)."""
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def _prune(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times


def limiter_keys(peer: str | None, name: str) -> tuple[str, str]:
    """The two keys one login attempt counts against."""
    return (f"ip:{peer or '?'}", f"user:{name.strip().lower()}")


class Guard:
    """Session look-up and CSRF checks for the console's handlers."""

    def __init__(
        self, users: Users, *, idle_s: float, max_age_s: float, secure_cookies: bool
    ) -> None:
        self.users = users
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.secure_cookies = secure_cookies

    def who(self, conn: HTTPConnection) -> SessionView | None:
        """The connection's live session, or None."""
        token = conn.cookies.get(SESSION_COOKIE, "")
        return self.users.session(token, idle_s=self.idle_s, max_age_s=self.max_age_s)

    def set_session_cookie(self, response: Response, token: str) -> None:
        """Attach a new session's cookie (ends with the browser or at the session's maximum)."""
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(self.max_age_s),
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
        )

    def clear_session_cookie(self, response: Response) -> None:
        """Remove the session cookie."""
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=self.secure_cookies
        )

    @staticmethod
    def new_login_token() -> str:
        """A CSRF token for the login form (also sent as a cookie: double submit)."""
        return secrets.token_urlsafe(24)

    def set_login_cookie(self, response: Response, token: str) -> None:
        """The login form's CSRF cookie."""
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            max_age=3600,
            path="/login",
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
        )

    @staticmethod
    def login_form_ok(request: Request, form: Mapping[str, object]) -> bool:
        """The login form's token matches its cookie."""
        return _same(request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get(CSRF_FIELD))

    @staticmethod
    def form_ok(request: Request, session: SessionView, form: Mapping[str, object]) -> bool:
        """The form carries the session's CSRF token and comes from this site."""
        return same_origin(request) and _same(session.csrf_token, form.get(CSRF_FIELD))


def same_origin(request: Request) -> bool:
    """No ``Origin`` header (old browsers, tools), or one naming the host asked."""
    origin = request.headers.get("origin")
    if not origin:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _same(expected: str, given: object) -> bool:
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(expected, given)
