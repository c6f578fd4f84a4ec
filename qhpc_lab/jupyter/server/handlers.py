"""The ``/qhpc/api`` routes. Every one needs the Jupyter server's own login (token or cookie).

Answers are built by :class:`~qhpc_lab.jupyter.server.service.QPUService` from allow-listed
fields and pass its redaction: no token, session id or API key reaches the browser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from tornado.iostream import StreamClosedError

from qhpc_lab.client import RefusedError, TargetError
from qhpc_lab.eventstream import HEARTBEAT_S, comment
from qhpc_lab.jupyter.server.batch import BatchRefused, read_form
from qhpc_lab.jupyter.server.service import QPUService

JOB_ID_DIGITS = 19
"""Digits a job id may have: ids are 64-bit integers on every scheduler. A longer one names no
job (404) and is never converted: Python refuses to read an integer of over 4 300 digits."""


class _Handler(APIHandler):
    @property
    def service(self) -> QPUService:
        return self.settings["qhpc_service"]

    def answer(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(self.service.dumps(data))

    def refuse(self, status: int, message: str) -> None:
        """An error in Jupyter's shape, written here: ``HTTPError`` would %-format it."""
        self.answer({"message": message, "reason": None}, status)


class TargetsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        """Each target: state, calibration age and next window, queue depth per class."""
        self.answer(await self.service.targets_view())


class JobsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        """The user's jobs on every scheduler target, with their place and end estimate."""
        limit = self.get_query_argument("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            self.refuse(400, "limit must be an integer from 1 to 1000")
        else:
            self.answer(await self.service.jobs_view(int(limit)))


class CancelHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, job_id: str) -> None:
        """Cancel one of the user's jobs; ``?target=NAME`` when several schedulers exist."""
        target = self.get_query_argument("target", None)
        if len(job_id) > JOB_ID_DIGITS:
            self.refuse(
                404,
                f"no job {job_id[:JOB_ID_DIGITS]}…: a job id has at most {JOB_ID_DIGITS} digits",
            )
            return
        try:
            self.answer(await self.service.cancel(int(job_id), target))
        except LookupError as err:
            self.refuse(404, str(err))
        except RefusedError as err:
            self.refuse(err.status if err.status and 400 <= err.status < 500 else 502, str(err))
        except TargetError as err:
            self.refuse(502, str(err))


class _BatchHandler(_Handler):
    async def call(self, work: Awaitable[Any]) -> None:
        """Answer what ``work`` gives; a refusal is its status and one line."""
        try:
            self.answer(await work)
        except BatchRefused as err:
            self.refuse(err.status, str(err))


class BatchHandler(_BatchHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        """The user's batch work, newest first: notebook runs and cluster emulations."""
        await self.call(self.service.batch_view())

    @tornado.web.authenticated
    async def post(self) -> None:
        """Run a notebook as a batch job (checked first: a refusal is a 422 and its line)."""
        try:
            form = read_form(self.request.body)
        except BatchRefused as err:
            self.refuse(err.status, str(err))
            return
        await self.call(self.service.submit_run(form))


class BatchCancelHandler(_BatchHandler):
    @tornado.web.authenticated
    async def post(self, entry_id: str) -> None:
        """Cancel a batch run's batch job."""
        await self.call(self.service.cancel_run(entry_id))


class BatchParametersHandler(_BatchHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        """``?path=NOTEBOOK``: the names and defaults of its cell tagged ``parameters``."""
        await self.call(self.service.run_parameters(self.get_query_argument("path", "")))


class EventsHandler(_Handler):
    """Server-sent events: ``target`` (a target's new state), ``job`` (one of the user's jobs
    changed), ``queue`` (a scheduler's queue: depth, running job, my jobs' positions and
    ETAs), ``reset`` (a scheduler's stream was reopened without resuming: re-read its jobs),
    ``batch`` (one of the user's batch runs, new or changed)."""

    def initialize(self) -> None:
        self._closed = asyncio.Event()

    def on_connection_close(self) -> None:
        self._closed.set()

    @tornado.web.authenticated
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        async with self.service.listen() as queue:
            chunk: bytes | None = comment("connected")
            closed = asyncio.ensure_future(self._closed.wait())
            try:
                while chunk is not None and not self._closed.is_set():
                    self.write(chunk)
                    await self.flush()
                    chunk = await self._next(queue, closed)
            except StreamClosedError:
                pass
            finally:
                closed.cancel()
        if not self._closed.is_set():
            self.finish()

    async def _next(
        self, queue: asyncio.Queue[bytes | None], closed: asyncio.Future
    ) -> bytes | None:
        """The next chunk, a heartbeat after a quiet spell, or None once the tab has gone."""
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait(
            {getter, closed}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            return getter.result()
        getter.cancel()
        return None if closed in done else comment("heartbeat")
