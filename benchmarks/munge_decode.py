"""MUNGE identification cost: ``munge.decode`` from 1 and 8 threads, then the scheduler's auth
step alone (50 concurrent identifications on one event loop), CPU per identification.

Needs a munged (``--socket``, default libmunge's). Credentials are made before each timed
part, so encoding is not counted. Rows of the auth step: ``threadpool`` is how app.py called
``identify`` before (the event loop's default pool of 40, munged's cache only), ``bounded`` is
``identify_async`` (8 decode threads) with the in-memory replay guard, ``bounded+store`` with
the SQLite store as guard (what the daemon runs), ``token`` a bearer token for comparison.

    .venv/bin/python benchmarks/munge_decode.py [--socket PATH] [--n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi.concurrency import run_in_threadpool

from qhpc_lab import munge
from qhpc_lab.scheduler.auth import Authenticator, make_token
from qhpc_lab.scheduler.store import Store

SECRET = "benchmark-secret-" + "0" * 48
CLIENTS = 50


def decode_rate(socket: str | None, n: int, threads: int) -> tuple[float, float]:
    """(decodes/s, CPU µs per decode) for ``n`` fresh credentials over ``threads`` threads."""
    credentials = [munge.encode(socket=socket) for _ in range(n)]
    cpu, started = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda c: munge.decode(c, socket), credentials))
    elapsed = time.perf_counter() - started
    return n / elapsed, 1e6 * (time.process_time() - cpu) / n


async def auth_step(
    identify: Callable[[str | None], Awaitable[object]], credentials: list[str | None]
) -> tuple[float, float, float, float]:
    """(identifications/s, p50 ms, p99 ms, CPU µs each) over ``CLIENTS`` concurrent callers."""
    pending = iter(credentials)
    latencies: list[float] = []

    async def caller() -> None:
        for credential in pending:
            started = time.perf_counter()
            await identify(credential)
            latencies.append(time.perf_counter() - started)

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CLIENTS)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(credentials)
    return (
        n / elapsed,
        1e3 * latencies[n // 2],
        1e3 * latencies[int(0.99 * n)],
        1e6 * (time.process_time() - cpu) / n,
    )


async def auth_rows(socket: str | None, n: int, store: Store) -> list[tuple[str, tuple]]:
    plain = Authenticator(("munge",), frozenset(), None, socket)
    bounded = Authenticator(("munge",), frozenset(), None, socket)
    stored = Authenticator(("munge",), frozenset(), None, socket, replay_guard=store)
    tokens = Authenticator(("token",), frozenset(), SECRET)
    bearer = f"Bearer {make_token(SECRET, 1000)}"
    variants: list[tuple[str, Callable[[str | None], Awaitable[object]]]] = [
        ("threadpool", lambda c: run_in_threadpool(plain.identify, c, None)),
        ("bounded", lambda c: bounded.identify_async(c, None)),
        ("bounded+store", lambda c: stored.identify_async(c, None)),
        ("token", lambda _c: tokens.identify_async(None, bearer)),
    ]
    rows = []
    for name, identify in variants:
        fresh: list[str | None] = (
            [None] * n if name == "token" else [munge.encode(socket=socket) for _ in range(n)]
        )
        rows.append((name, await auth_step(identify, fresh)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", help="munged's socket (default: libmunge's)")
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    print("| munge.decode | decodes/s | CPU µs each |\n|---|---:|---:|")
    for threads in (1, 8):
        rate, cpu = decode_rate(args.socket, args.n, threads)
        print(f"| {threads} thread{'s' * (threads > 1)} | {rate:.0f} | {cpu:.0f} |")
    with tempfile.TemporaryDirectory() as state:
        store = Store(f"sqlite:///{state}/scheduler.db")
        try:
            rows = asyncio.run(auth_rows(args.socket, args.n, store))
        finally:
            store.close()
    print(f"\n| auth step, {CLIENTS} concurrent | per s | p50 ms | p99 ms | CPU µs each |")
    print("|---|---:|---:|---:|---:|")
    for name, (rate, p50, p99, cpu) in rows:
        print(f"| {name} | {rate:.0f} | {p50:.1f} | {p99:.1f} | {cpu:.0f} |")
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
