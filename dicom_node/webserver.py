"""The node's HTTP server: uvicorn serving an ASGI app on a daemon thread beside the listener.

The socket is bound before the thread starts, so a taken port is known at once (and the node
goes on serving DICOM without it). TLS, when asked for, uses the node's certificate and key.
uvicorn installs no signal handlers off the main thread: stopping the node stops this server
with it (daemon thread), and :meth:`ThreadedServer.shutdown` stops it on its own.
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class SecurityHeaders:
    """Headers every response of the node's HTTP server carries: no framing, no sniffing, a
    strict content security policy (scripts and styles from ``/static`` only), no caching
    unless a handler says otherwise."""

    HEADERS = (
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),  # no-referrer would make Origin "null"
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
            b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in self.HEADERS if k not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ThreadedServer:
    """An ASGI app served on ``host``:``port`` by uvicorn in a daemon thread."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        name: str = "http",
        certfile: Path | None = None,
        keyfile: Path | None = None,
    ) -> None:
        self.sock = _bind(host, port)  # raises OSError when the port is taken
        bound = self.sock.getsockname()
        self.host: str = str(bound[0])
        self.port: int = int(bound[1])  # the port actually bound (port 0 in tests)
        self.tls = certfile is not None
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,
            ssl_certfile=str(certfile) if certfile else None,
            ssl_keyfile=str(keyfile) if keyfile else None,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name=name, daemon=True
        )
        self.thread.start()

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock
