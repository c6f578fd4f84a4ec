"""A spawned process that serves one request at a time under a wall-time and a memory budget.

Validation (here) and emulation (``qhpc_lab.qpu.emulated``) each run in one: an SDK call on
hostile input can take minutes or gigabytes, and only a process can be stopped mid-call. The
process is kept between requests (its SDK imports cost seconds) and replaced by a fresh one
when a request overruns a budget, is cancelled, or kills it. It lives in ``programs``, the
lowest part both users import.

Budgets are watched from the parent by the thread that waits on the pipe: it polls every
:data:`POLL_S`, reads the worker's resident memory from ``/proc/PID/status`` (an address-space
rlimit is unusable with torch, which reserves far more than it touches) and kills the worker
past either budget.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

POLL_S = 0.05
"""How often the waiting thread checks the clock, the worker's memory and a cancellation."""

START_TIMEOUT_S = 300.0
"""How long a fresh worker may take to import its SDKs (tens of seconds on a loaded machine)."""


class BudgetExceeded(RuntimeError):
    """A request overran a budget; the worker was replaced. ``what``: ``time`` or ``memory``."""

    def __init__(self, what: str, limit: float, value: float) -> None:
        unit = "s" if what == "time" else "MB"
        super().__init__(f"{what} budget of {limit:g} {unit} exceeded ({value:.1f} {unit})")
        self.what, self.limit, self.value = what, limit, value


class WorkerDied(RuntimeError):
    """The worker process ended during a request; a fresh one was started."""


class WorkerInterrupted(RuntimeError):
    """The request was cancelled; the worker was replaced if it was already serving it."""


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (``VmRSS``), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _die_with_parent(parent_pid: int) -> None:
    """A parent killed with SIGKILL must not leave its worker behind, even mid-request.

    A thread watches the parent's pid, because ``PR_SET_PDEATHSIG`` fires when the parent
    *thread* ends, and workers are replaced from short-lived helper threads.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


_PARENT_POLL_S = 0.5


def _serve(
    connection: Connection,
    parent_pid: int,
    handle: Callable[[Any], Any],
    warm_up: Callable[[], None] | None,
) -> None:
    """The worker process: say it is ready, then answer requests until the pipe closes."""
    _die_with_parent(parent_pid)
    if warm_up is not None:
        warm_up()
    try:
        connection.send(("ready", None))
        while True:
            request = connection.recv()
            try:
                connection.send((True, handle(request)))
            except Exception as err:  # the request fails with the reason; the worker lives on
                connection.send((False, f"{type(err).__name__}: {err}"))
    except (EOFError, ConnectionResetError, BrokenPipeError):
        # The parent closed the pipe (reset: with "ready" unread). Leave without the
        # interpreter's teardown, which takes seconds with the SDKs loaded: nothing to save.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class BudgetedWorker:
    """One worker process at a time, replaced when a request overruns, is cancelled or dies.

    ``handle`` and ``warm_up`` must be module-level functions (the process is spawned, not
    forked: a forked copy of a daemon with threads and torch is unsafe). :meth:`call` blocks
    and is meant for a helper thread; :meth:`call_async` is the event-loop side.
    """

    def __init__(
        self, name: str, handle: Callable[[Any], Any], warm_up: Callable[[], None] | None = None
    ) -> None:
        self.name = name
        self._handle = handle
        self._warm_up = warm_up
        self._lock = threading.Lock()
        self._process: Any = None
        self._connection: Connection | None = None
        self._ready = False
        atexit.register(self.stop)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self) -> None:
        """Start the process (if none is alive) without waiting for its warm-up."""
        with self._lock:
            self._ensure_started()

    def wait_ready(self) -> None:
        """Start the process if needed and block until its warm-up is done."""
        with self._lock:
            self._ensure_started()
            self._await_ready(None)

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        self._discard()
        context = multiprocessing.get_context("spawn")
        connection, child = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(child, os.getpid(), self._handle, self._warm_up),
            name=self.name,
            daemon=True,
        )
        try:
            process.start()
        finally:
            child.close()
        self._connection, self._process, self._ready = connection, process, False

    def _discard(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
            self._process = None

    def _replace(self) -> None:
        self._discard()
        self._ensure_started()

    def _await_ready(self, cancelled: threading.Event | None) -> None:
        assert self._connection is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready:
            if cancelled is not None and cancelled.is_set():
                raise WorkerInterrupted(f"{self.name}: canceled before it started")
            if time.monotonic() > deadline:
                self._replace()
                raise WorkerDied(f"{self.name} did not start within {START_TIMEOUT_S:g} s")
            try:
                if self._connection.poll(POLL_S):
                    self._connection.recv()
                    self._ready = True
            except (EOFError, OSError):
                self._replace()
                raise WorkerDied(f"{self.name} died while starting") from None

    def call(
        self,
        request: Any,
        time_s: float | None = None,
        memory_bytes: int | None = None,
        cancelled: threading.Event | None = None,
    ) -> tuple[Any, float]:
        """Serve ``request``; return the answer and the seconds it took. The clock starts once
        the worker is warm, so neither its start nor another request's turn counts."""
        while not self._lock.acquire(timeout=POLL_S):  # another request's turn
            if cancelled is not None and cancelled.is_set():
                raise WorkerInterrupted(f"{self.name}: canceled before its turn")
        try:
            if cancelled is not None and cancelled.is_set():
                raise WorkerInterrupted(f"{self.name}: canceled before its turn")
            self._ensure_started()
            self._await_ready(cancelled)
            assert self._connection is not None
            try:
                self._connection.send(request)
            except OSError:
                self._replace()
                raise WorkerDied(f"{self.name} died") from None
            started = time.monotonic()
            while True:
                elapsed = time.monotonic() - started
                if cancelled is not None and cancelled.is_set():
                    self._replace()
                    raise WorkerInterrupted(f"{self.name}: canceled after {elapsed:.2f} s")
                if time_s is not None and elapsed > time_s:
                    self._replace()
                    raise BudgetExceeded("time", time_s, elapsed)
                if memory_bytes is not None:
                    rss = rss_bytes(self._process.pid)
                    if rss > memory_bytes:
                        self._replace()
                        raise BudgetExceeded("memory", memory_bytes / 2**20, rss / 2**20)
                try:
                    if self._connection.poll(POLL_S):
                        ok, answer = self._connection.recv()
                        break
                except (EOFError, OSError):
                    self._replace()
                    raise WorkerDied(f"{self.name} died during the request") from None
            elapsed = time.monotonic() - started
        finally:
            self._lock.release()
        if not ok:
            raise RuntimeError(answer)
        return answer, elapsed

    async def call_async(
        self, request: Any, time_s: float | None = None, memory_bytes: int | None = None
    ) -> tuple[Any, float]:
        """:meth:`call` from a helper thread. Cancelling the awaiting task stops the request:
        the thread kills the worker within :data:`POLL_S`, starts a fresh one and returns,
        and only then is ``CancelledError`` re-raised."""
        cancelled = threading.Event()
        thread = asyncio.ensure_future(
            asyncio.to_thread(self.call, request, time_s, memory_bytes, cancelled)
        )
        try:
            return await asyncio.shield(thread)
        except asyncio.CancelledError:
            cancelled.set()
            await asyncio.wait({thread}, timeout=10)
            if thread.done() and not thread.cancelled():
                thread.exception()  # retrieved: the interruption is expected
            raise

    def stop(self) -> None:
        """End the worker (at exit, or when its owner shuts down); a request in progress is
        cut short rather than waited for."""
        locked = self._lock.acquire(timeout=1)
        try:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            if self._process is not None:
                # one still warming up reads the closed pipe only once warm: not waited for
                self._process.join(5 if locked and self._ready else 0)
                if self._process.is_alive():
                    self._process.kill()
                    self._process.join(5)
                self._process = None
        finally:
            if locked:
                self._lock.release()
