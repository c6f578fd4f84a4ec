"""The client's event loop: one background thread where every target's coroutines run.

Blocking calls (scripts, ``job.wait()``) and ``await job`` (notebooks, whose kernel already
runs a loop) both hand their coroutine to this loop, so each target is written once, async,
and its connections and event streams live on a single loop whatever the caller is.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _running_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(target=_loop.run_forever, name="qhpc-client", daemon=True)
            _thread.start()
        assert _loop is not None
        return _loop


def call(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the client loop and block until it ends (interrupting cancels it)."""
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("a blocking qhpc_lab call was made from the client's own loop")
    future = asyncio.run_coroutine_threadsafe(coro, _running_loop())
    try:
        return future.result()
    finally:
        future.cancel()


async def acall(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` run on the client loop from any other loop (a Jupyter kernel's)."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, _running_loop()))


async def aiterate(source: AsyncIterator[T]) -> AsyncIterator[T]:
    """Iterate, from another loop, an async iterator that runs on the client loop."""
    caller = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                caller.call_soon_threadsafe(queue.put_nowait, (item, None))
        except Exception as err:
            caller.call_soon_threadsafe(queue.put_nowait, (None, err))
        else:
            caller.call_soon_threadsafe(queue.put_nowait, (None, StopAsyncIteration()))

    future = asyncio.run_coroutine_threadsafe(pump(), _running_loop())
    try:
        while True:
            item, end = await queue.get()
            if isinstance(end, StopAsyncIteration):
                return
            if end is not None:
                raise end
            yield item
    finally:
        future.cancel()
