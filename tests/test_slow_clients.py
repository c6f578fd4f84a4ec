"""Slow clients are dropped and others served: the daemon's read timeouts and connection cap.

Raw sockets to a real daemon (``qhpc scheduler serve``) on 127.0.0.1: some send their request
headers and never finish them, some send headers and stall in the body; meanwhile ``/health``
must keep answering, every slow connection must get its 408 and be closed, and a client over
the connection cap must get a 503 document, not silence.
"""

from __future__ import annotations

import json
import select
import socket
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.support.daemons import daemon
from tests.support.identities import USER, auth_header

TIMEOUT_S = 5
SLOW_HEADERS = SLOW_BODIES = 200
CAP = 450  # above the attack (400) plus what the test's own requests need


def _open(address: tuple[str, int], data: bytes) -> socket.socket:
    sock = socket.create_connection(address, timeout=5)
    sock.sendall(data)
    sock.setblocking(False)
    return sock


def _answers(sockets: list[socket.socket], deadline: float) -> dict[socket.socket, bytes]:
    """What each socket received until the server closed it (or the deadline passed)."""
    received = {s: b"" for s in sockets}
    open_ = set(sockets)
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(list(open_), [], [], 0.5)
        for sock in readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[sock] += chunk
            else:
                open_.discard(sock)
    assert not open_, f"{len(open_)} slow connections still open after the timeout"
    return received


def _status_and_document(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_slow_clients_are_dropped_while_others_are_served(tmp_path: Path) -> None:
    flags = ("--header-timeout", str(TIMEOUT_S), "--body-timeout", str(TIMEOUT_S))
    with daemon(tmp_path, *flags, "--max-connections", str(CAP)) as server:
        url = urlsplit(server.url)
        address = (url.hostname or "127.0.0.1", url.port or 80)
        token = auth_header(USER)["Authorization"]
        slow_headers = [
            _open(address, b"GET /health HTTP/1.1\r\nHost: scheduler\r\nX-Slow: ")
            for _ in range(SLOW_HEADERS)
        ]
        slow_bodies = [
            _open(
                address,
                b"POST /jobs HTTP/1.1\r\nHost: scheduler\r\nContent-Type: application/json\r\n"
                b"Authorization: " + token.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
                b'{"sequence": "',
            )
            for _ in range(SLOW_BODIES)
        ]
        try:
            opened = time.monotonic()
            # The first answer waits while the server reads the 400 requests in (CPU, not
            # starvation); the bound is on the answers while the attack holds its connections.
            assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
            latencies = []
            with httpx.Client(
                base_url=server.url, timeout=10, headers={"Connection": "close"}
            ) as client:  # a new connection each time: the server must still accept them
                while time.monotonic() - opened < TIMEOUT_S - 1 or len(latencies) < 20:
                    started = time.monotonic()
                    assert client.get("/health").status_code == 200
                    latencies.append(time.monotonic() - started)
            p99 = statistics.quantiles(latencies, n=100)[98]
            print(f"/health during the attack: {len(latencies)} calls, p99 {p99 * 1000:.1f} ms")
            assert p99 < 1.0, f"/health p99 {p99:.3f} s during the attack ({len(latencies)} calls)"

            deadline = opened + TIMEOUT_S + 15
            for sockets, rule in (
                (slow_headers, "header_timeout_s"),
                (slow_bodies, "body_timeout_s"),
            ):
                for raw in _answers(sockets, deadline).values():
                    status, document = _status_and_document(raw)
                    assert (status, document["rule"]) == (408, rule), raw
        finally:
            for sock in slow_headers + slow_bodies:
                sock.close()

        idle = [socket.create_connection(address, timeout=5) for _ in range(CAP)]
        try:
            refused = httpx.get(f"{server.url}/health", timeout=10)
            assert refused.status_code == 503, refused.text
            assert refused.json()["rule"] == "max_connections"
            assert refused.headers["Retry-After"] == "1"
        finally:
            for sock in idle:
                sock.close()
        served = None
        for _ in range(50):  # the server sees the closes within a few event-loop turns
            served = httpx.get(f"{server.url}/health", timeout=10)
            if served.status_code == 200:
                break
            time.sleep(0.1)
        assert served is not None and served.status_code == 200, served
