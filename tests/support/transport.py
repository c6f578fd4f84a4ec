"""An httpx transport that records what a client sends: the tests' window on its requests.

``Client(..., transport=RecordingTransport())`` (and ``discover``/``SchedulerTarget``) send
every scheduler request through it, so a test counts requests or reads their headers without
reaching into the client's private state.
"""

from __future__ import annotations

import httpx


class RecordingTransport(httpx.AsyncBaseTransport):
    """Sends through ``inner`` (httpx's own transport unless told otherwise) and keeps every
    request, headers as sent (authentication included), in order."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def sent(self) -> list[str]:
        """``METHOD path`` of each request, in order."""
        return [f"{request.method} {request.url.path}" for request in self.requests]

    def clear(self) -> None:
        """Forget what was sent so far (say, a watch's own first read)."""
        self.requests.clear()


def unanswered() -> RecordingTransport:
    """Records, and answers every request 503 without sending it anywhere: for a target whose
    requests a test inspects but whose server does not exist."""
    return RecordingTransport(httpx.MockTransport(lambda request: httpx.Response(503)))
