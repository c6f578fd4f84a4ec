"""Calls on the scheduler's HTTP API that must succeed, and the shape of a refusal."""

from __future__ import annotations

from typing import Any

import httpx

SESSION = "X-Warden-Session"
"""The header that names the session a request is made in."""

WAIT_S = 180
"""How long any wait may last. A scheduler's first job waits for its emulator worker to import
Pulser, which on a loaded shared machine took over a minute: a guard against hangs, no measure."""


async def submit(
    client: httpx.AsyncClient,
    sequence: str,
    shots: int = 10,
    session: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """POST /jobs that must be accepted; the job document."""
    headers = {SESSION: session} if session else {}
    response = await client.post(
        "/jobs", json={"sequence": sequence, "shots": shots, **extra}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def open_session(
    admin: httpx.AsyncClient, user_id: str, slurm_job_id: str | None = None
) -> dict[str, Any]:
    """POST /sessions as an administrator, which must be accepted; the session document."""
    response = await admin.post(
        "/sessions", json={"user_id": user_id, "slurm_job_id": slurm_job_id}
    )
    assert response.status_code == 200, response.text
    return response.json()


def refused(response: httpx.Response, status: int, rule: str, *words: str) -> None:
    """The response is the refusal ``status`` with ``rule``, its detail naming every word."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["rule"] == rule, body
    assert isinstance(body["detail"], str)
    for word in words:
        assert word in body["detail"], body


async def device(client: httpx.AsyncClient) -> dict[str, Any]:
    """GET /device, which must answer."""
    response = await client.get("/device")
    assert response.status_code == 200, response.text
    return response.json()
