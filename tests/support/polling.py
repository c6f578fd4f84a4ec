"""Waits on observable state, bounded in time: what tests do instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import httpx

T = TypeVar("T")


def poll_until(
    check: Callable[[], T],
    what: str | Callable[[], str],
    timeout: float = 60,
    interval: float = 0.1,
) -> T:
    """``check()`` until it returns something truthy, which is returned; bounded in time,
    failing with ``what`` (a text, or a callable saying what was seen last)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {said}")
        time.sleep(interval)
    return result


async def apoll_until(
    check: Callable[[], Awaitable[T]], what: str, timeout: float = 60, interval: float = 0.02
) -> T:
    """The asynchronous :func:`poll_until`: awaits ``check()`` between async sleeps."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await anyio.sleep(interval)
    return result


async def wait_for_status(
    client: httpx.AsyncClient,
    job_id: int,
    statuses: tuple[str, ...] = ("DONE",),
    timeout: float = 60,
) -> dict:
    """Poll a job until it reaches one of ``statuses`` (tests only; clients use /events)."""
    deadline = time.monotonic() + timeout
    while True:
        job = (await client.get(f"/jobs/{job_id}")).json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck in {job['status']}: {job}")
        await anyio.sleep(0.02)


async def wait_until_started(client: httpx.AsyncClient, job_id: int, timeout: float = 180) -> dict:
    """Until at least one chunk of the job has run (its shots_done moved)."""
    with anyio.fail_after(timeout):
        while True:
            job = (await client.get(f"/jobs/{job_id}")).json()
            if job["shots_done"] > 0:
                return job
            await anyio.sleep(0.01)
