"""Issue 27's attacks on fair use of the QPU, re-run against the daemon: hybrid-loop holds
that kept another user's job waiting (5), and connection caps (8). Each test is the attack;
it asserts the answer now. The policy's side of the loop bounds: tests/test_loops.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from qhpc_lab.scheduler.caller_limits import CallerLimits
from qhpc_lab.scheduler.refusal import SchedulerError
from tests.support.daemons import free_port
from tests.support.identities import OTHER, USER, auth_header
from tests.support.in_process import in_process, long_chunk_profile, scheduler_config
from tests.support.polling import apoll_until, wait_for_status
from tests.support.served import served

ATTACK_ITERATIONS = 400
"""More loop iterations than the attacker needs to keep the QPU (about one per chunk
duration before the fix); the victim's job now runs long before they are spent."""


# -- 5. hybrid-loop holds ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_loop_that_comes_back_at_once_no_longer_keeps_the_qpu(
    tmp_path: Path, sequence_json: str
) -> None:
    """The attack: a loop of 1-shot development jobs, each sent the moment the last one ends
    and declaring 0.9 s of think time, so that every end pauses the loop and every next job
    runs first; another user's development job (one 2 s chunk: holding 0.9 s costs it less
    than the loop would lose) waited for as long as the loop went on. Now, once that job has
    waited a chunk duration (``loop_yield_after_chunks``), the loop loses its turn: the
    victim's job ends while the loop is still going."""
    config = scheduler_config(tmp_path, device=str(long_chunk_profile(tmp_path, 2.0)))
    loop = {"sequence": sequence_json, "shots": 1, "job_class": "development"}
    loop |= {"loop": "vqe", "think_time_s": 0.9}
    async with in_process(config) as api:
        first = (await api.other.post("/jobs", json=loop)).json()
        await wait_for_status(api.other, first["id"])
        victim = await api.user.post(
            "/jobs", json={"sequence": sequence_json, "shots": 4000, "job_class": "development"}
        )
        victim_id = victim.json()["id"]
        iterations = 0
        while iterations < ATTACK_ITERATIONS:
            if (await api.user.get(f"/jobs/{victim_id}")).json()["status"] == "DONE":
                break
            job = (await api.other.post("/jobs", json=loop)).json()
            await wait_for_status(api.other, job["id"])
            iterations += 1
        assert iterations < ATTACK_ITERATIONS, "the loop kept the QPU from the victim's job"


@pytest.mark.anyio
async def test_another_users_loop_id_rides_no_hold_and_the_hold_is_named(
    tmp_path: Path, sequence_json: str
) -> None:
    """The attacks: a job naming another user's loop id (``loop="vqe"``) ran first as if it
    were that loop's next job; and a job kept waiting by a loop hold showed ``position 1`` and
    its plain ETA, its timeline silent. Now the loop id is the other user's own: the job is
    held like anyone else's, its place says ``held_by: loop_hold`` with the hold's rest in its
    ETA, and its timeline and story name the hold."""
    config = scheduler_config(tmp_path, device=str(long_chunk_profile(tmp_path, 1.5)))
    async with in_process(config) as api:
        loop = {"sequence": sequence_json, "shots": 1, "loop": "vqe", "think_time_s": 0.6}
        first = (await api.other.post("/jobs", json=loop)).json()
        await wait_for_status(api.other, first["id"])
        # 3000 shots: one 1.5 s chunk; holding 0.6 s costs it less than the loop would lose
        rider = await api.user.post(
            "/jobs", json={"sequence": sequence_json, "shots": 3000, "loop": "vqe"}
        )
        rider_id = rider.json()["id"]

        async def held() -> dict | None:
            job = (await api.user.get(f"/jobs/{rider_id}")).json()
            return job if job["held_by"] == "loop_hold" else None

        waiting = await apoll_until(held, "the rider's job held by the other user's loop")
        assert waiting["position"] == 1 and waiting["eta_s"] > 3000 * 0.0005
        device = (await api.user.get("/device")).json()
        assert device["held_for_loop"]["loop"] is None  # not the user's loop: its id unshown
        await wait_for_status(api.user, rider_id)
        timeline = (await api.user.get(f"/jobs/{rider_id}/timeline")).json()["entries"]
        assert [e["event"] for e in timeline if e["event"] != "chunk"] == [
            "queued",
            "loop_hold",
            "finished",
        ]
        story = (await api.user.get(f"/jobs/{rider_id}/logs")).json()["logs"]
        assert "by loop_hold" in story
        assert OTHER not in story  # whose loop is not told


# -- 8. connection caps -----------------------------------------------------------------------

STREAMS_ATTEMPTED = 80
"""The attack's streams: as many as the connection cap it filled."""


def _open_stream(address: tuple[str, int], uid: str) -> tuple[socket.socket, int, bytes]:
    """A raw ``GET /events`` of ``uid``: the socket, the answer's status and what came."""
    sock = socket.create_connection(address, timeout=10)
    token = auth_header(uid)["Authorization"].encode()
    sock.sendall(
        b"GET /events HTTP/1.1\r\nHost: scheduler\r\nAccept: text/event-stream\r\n"
        b"Authorization: " + token + b"\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            break
        head += chunk
    return sock, int(head.split()[1]), head


def test_one_user_cannot_take_every_connection_nor_anonymous_clients_the_daemon(
    tmp_path: Path,
) -> None:
    """The attacks: one user opened 80 ``/events`` streams, every connection the daemon
    had (``max_connections`` 80), and everyone else, ``/health`` included, got 503; anonymous
    clients calling ``/estimate`` as fast as they could slowed everyone. Now the user's
    streams past ``max_streams_per_user`` get 429 with a one-line reason, another user's
    stream and ``/health`` are answered, and one address's anonymous burst past
    ``anonymous_burst`` gets 429 with Retry-After while ``/health`` is never refused."""
    config = scheduler_config(tmp_path, port=free_port(), max_connections=STREAMS_ATTEMPTED)
    with served(config) as app:
        base_url = app.url
        url = urlsplit(base_url)
        address = (url.hostname or "127.0.0.1", url.port or 80)
        streams: list[socket.socket] = []
        refusals: list[dict] = []
        try:
            for _ in range(STREAMS_ATTEMPTED):
                sock, status, head = _open_stream(address, USER)
                if status == 200:
                    streams.append(sock)
                    continue
                assert status == 429, head
                body = head.partition(b"\r\n\r\n")[2] or sock.recv(65536)
                refusals.append(json.loads(body))
                sock.close()  # refused: the client goes, its connection with it
            assert len(streams) == 8  # max_streams_per_user
            assert {r["rule"] for r in refusals} == {"max_streams_per_user"}
            assert "\n" not in refusals[0]["detail"] and "close one" in refusals[0]["detail"]
            other, status, _ = _open_stream(address, OTHER)
            other.close()
            assert status == 200
            assert httpx.get(f"{base_url}/health", timeout=10).status_code == 200
        finally:
            for sock in streams:
                sock.close()

        with httpx.Client(base_url=base_url, timeout=10) as anonymous:
            answers = [
                anonymous.get("/estimate", params={"shots": 100}).status_code for _ in range(40)
            ]
            assert 200 in answers and 429 in answers
            refused = anonymous.get("/estimate", params={"shots": 100})
            assert refused.status_code == 429
            assert refused.json()["rule"] == "anonymous_rate_per_second"
            assert int(refused.headers["Retry-After"]) >= 1
            assert all(anonymous.get("/health").status_code == 200 for _ in range(40))
            signed = anonymous.get("/estimate", params={"shots": 100}, headers=auth_header(USER))
            assert signed.status_code == 200  # credentials are counted per user, not rated


def test_a_users_requests_are_counted_once_given_back_and_anonymous_ones_refilled() -> None:
    """The rule behind the caps: a request is counted once however often its identity is
    asked, given back when it ends; administrators and /health are not capped; an address's
    bucket refills at the rate."""
    now = [0.0]
    limits = CallerLimits(2, 1, 2.0, 3, clock=lambda: now[0])
    first, second, third = {"path": "/jobs"}, {"path": "/jobs"}, {"path": "/events"}
    limits.enter(first, USER, admin=False)
    limits.enter(first, USER, admin=False)
    limits.enter(second, USER, admin=False)
    with pytest.raises(SchedulerError, match="max_requests_per_user") as refused:
        limits.enter(third, USER, admin=False)
    assert refused.value.status == 429 and refused.value.rule == "max_requests_per_user"
    limits.enter(third, "0", admin=True)
    limits.enter({"path": "/health"}, USER, admin=False)
    assert limits.requests_of(USER) == 2
    limits.leave(second)
    limits.enter(third, USER, admin=False)
    limits.open_stream(third, USER, admin=False)
    with pytest.raises(SchedulerError, match="max_streams_per_user"):
        limits.open_stream({"path": "/events"}, USER, admin=False)
    limits.leave(third)
    limits.leave(first)
    assert (limits.requests_of(USER), limits.streams_of(USER)) == (0, 0)
    assert [limits.anonymous_wait("a") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    assert limits.anonymous_wait("b") == 0.0  # another address has its own bucket
    now[0] = 0.5  # one request's worth refilled
    assert limits.anonymous_wait("a") == 0.0
