"""How the daemon is served: uvicorn with a connection cap and read timeouts.

uvicorn alone times only idle keep-alive connections: a client that dribbles its request
headers or its body holds a connection for ever, and once the process runs out of file
descriptors new clients are dropped without an answer. Served through :func:`serve`:

- a connection that has not sent complete request headers ``header_timeout_s`` after it
  opened (or after its previous answer) is answered 408 and closed;
- a request whose body is not complete ``body_timeout_s`` after its headers is answered 408;
- a request arriving while more than ``max_connections`` connections are open is answered
  503 with Retry-After, and the file-descriptor limit is raised to hold the cap;
- an idle keep-alive connection is closed after ``keep_alive_timeout_s``.

A stop (SIGTERM from systemd, SIGINT) ends the long-lived ``/events`` streams at once and
completely (their clients reconnect to the next daemon and resume), so uvicorn's graceful
shutdown has nothing left to cancel; the process then exits 0, not by the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from qhpc_lab.scheduler.config import SchedulerConfig
from qhpc_lab.scheduler.errors import error_response

log = logging.getLogger(__name__)

FILES_BESIDE_CONNECTIONS = 64
"""Descriptors the daemon needs besides its connections (database, logs, munged, listener)."""
RETRY_AFTER_S = 1
"""What a client refused at the connection cap is told to wait."""
GIL_SWITCH_INTERVAL_S = 0.0005
"""How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
A store thread drops the GIL in every SQLite call and, while the event loop runs requests,
waited up to 5 ms to get it back, holding the database's one writer lock meanwhile: every
submission queued behind that convoy (docs/benchmarks.md, "The submission path")."""


def serve(
    app: ASGIApp,
    config: SchedulerConfig,
    *,
    listening: str | None = None,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Run ``app`` in the foreground until SIGINT or SIGTERM.

    The port is bound first: one that is taken raises OSError naming it, before the scheduler
    starts. ``listening`` is printed once the server accepts connections; ``on_stop`` runs on
    the event loop as soon as a stop is asked (ending the event streams).
    """
    ensure_file_limit(config.max_connections + FILES_BESIDE_CONNECTIONS)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    listeners = bind(config.host, config.port)
    server = _Server(uvicorn_config(app, config), listening, on_stop)
    server.run(sockets=listeners)


def bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to ``port`` on every address ``host`` names (a name may have an IPv4 and
    an IPv6 one, as uvicorn binds them); OSError saying the port is taken when it is."""
    addresses = dict.fromkeys(
        (family, kind, proto, address)
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    )
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, address in addresses:
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
    except OSError as err:
        for listener in listeners:
            listener.close()
        if err.errno == errno.EADDRINUSE:
            raise OSError(f"port {port} is taken (on {host}): choose another with --port") from None
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    return listeners


class _Server(uvicorn.Server):
    """uvicorn's server: says when it listens, runs ``on_stop`` when asked to stop, and
    leaves the signal handled (uvicorn re-raises it after shutdown: exit status -15)."""

    def __init__(
        self,
        config: uvicorn.Config,
        listening: str | None,
        on_stop: Callable[[], None] | None,
    ) -> None:
        super().__init__(config)
        self._listening = listening
        self._on_stop = on_stop
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started and self._listening:
            print(self._listening, flush=True)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit and self._on_stop is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_stop)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def uvicorn_config(app: ASGIApp, config: SchedulerConfig) -> uvicorn.Config:
    """uvicorn's settings for ``app``: uvloop, httptools with the guards above."""
    return uvicorn.Config(
        BodyTimeout(app, config.body_timeout_s),
        host=config.host,
        port=config.port,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through the daemon's handler (text or JSON)
        loop="uvloop",
        http=guarded_protocol(config.header_timeout_s, config.max_connections),
        timeout_keep_alive=config.keep_alive_timeout_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=5,
    )


def ensure_file_limit(needed: int) -> None:
    """Raise the soft descriptor limit to ``needed`` (up to the hard one), else warn."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "max_connections needs %d file descriptors but the hard limit is %d: past it new "
            "clients get no answer; lower max_connections or raise the limit",
            needed,
            hard,
        )


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[HttpToolsProtocol]:
    """uvicorn's ``http=`` class: its httptools protocol with a header timer and the cap."""
    return type(
        "GuardedHttpProtocol",
        (_GuardedHttp,),
        {"header_timeout_s": header_timeout_s, "max_connections": max_connections},
    )


class _GuardedHttp(HttpToolsProtocol):
    """HttpToolsProtocol plus a timer on the request headers and a cap on connections.

    The timer runs from the connection's opening, and again from the first bytes after an
    answer, until the headers are complete (uvicorn's keep-alive timer covers the idle time
    between requests: the header timer starts when that one has been cancelled by data).
    """

    header_timeout_s: float
    max_connections: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        between_requests = self.cycle is None or self.cycle.response_complete
        if (
            between_requests
            and self._header_timer is None
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
        ):
            self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        if len(self.connections) <= self.max_connections:
            return super().on_headers_complete()
        # uvicorn reads self.app once, here, to start this request's cycle: answer 503 instead.
        log.warning(
            "%d connections open, over max_connections: answering 503", len(self.connections)
        )
        served, self.app = self.app, _over_capacity
        try:
            super().on_headers_complete()
        finally:
            self.app = served

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        detail = f"request headers not received within {self.header_timeout_s:g} s"
        body = error_response(408, detail, "header_timeout_s").body
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


async def _over_capacity(scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(
        503,
        "the scheduler is at its connection limit (max_connections); retry shortly",
        "max_connections",
        {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"},
    )
    await response(scope, receive, send)


class BodyTimeout:
    """Answer 408 when a request body is not complete ``timeout_s`` after the request began.

    The app then sees the client as gone (``http.disconnect``) and whatever it sends is
    dropped. Once the body is complete, reads pass through untimed (an event stream waits on
    them for the client's disconnect).
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        body_complete = late = started = False

        async def timed_receive() -> Message:
            nonlocal body_complete, late
            if late:
                return {"type": "http.disconnect"}
            if body_complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                late = True
                if not started:
                    detail = f"request body not received within {self.timeout_s:g} s"
                    headers = {"Connection": "close"}
                    await error_response(408, detail, "body_timeout_s", headers)(
                        scope, receive, send
                    )
                return {"type": "http.disconnect"}
            body_complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if late:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not late:
                raise
            log.debug("request abandoned after its body timed out", exc_info=True)
