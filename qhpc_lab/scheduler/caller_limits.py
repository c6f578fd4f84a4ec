"""Caps per caller, so that no one client takes the daemon from the others (docs/scheduler.md,
"Connections, limits and timeouts"): one user's requests in flight (event streams included)
and open event streams, and anonymous requests per client address. ``/health`` is never
capped here: a stream cap or another client's burst must not make a healthy daemon look down.

The per-user counts are taken once the caller is known (the routes' identity dependency calls
:meth:`CallerLimits.enter`) and given back when the request's answer is complete, a stream's
at its end (:class:`CallerCaps`, the ASGI middleware around the app). Refusals are 429 with
the setting that refused them as ``rule`` and a one-line ``detail``.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from qhpc_lab.scheduler.errors import error_response
from qhpc_lab.scheduler.refusal import SchedulerError

UNCAPPED_PATHS = frozenset({"/health"})
"""Answered whoever asks and however often: the load balancer's and the operator's probe."""
CALLER = "qhpc.caller"
"""The scope key naming the user a request is counted for (and whether it is a stream)."""
ADDRESSES_KEPT = 4096
"""Client addresses whose anonymous rate is remembered before full (idle) buckets are dropped."""


@dataclass
class _Counted:
    """What a request is counted as: one of ``request``'s requests, one of ``stream``'s
    streams (None: not counted so)."""

    request: str | None = None
    stream: str | None = None


@dataclass
class _Bucket:
    tokens: float
    at: float


class CallerLimits:
    """The counts and the rule; the settings are the scheduler's (0: that cap is off)."""

    def __init__(
        self,
        max_requests_per_user: int,
        max_streams_per_user: int,
        anonymous_rate_per_second: float,
        anonymous_burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_requests_per_user = max_requests_per_user
        self.max_streams_per_user = max_streams_per_user
        self.anonymous_rate_per_second = anonymous_rate_per_second
        self.anonymous_burst = max(1, anonymous_burst)
        self._clock = clock
        self._requests: collections.Counter[str] = collections.Counter()
        self._streams: collections.Counter[str] = collections.Counter()
        self._buckets: dict[str, _Bucket] = {}

    def enter(self, scope: Scope, user_id: str, admin: bool) -> None:
        """Count a request of ``user_id`` until :meth:`leave`; 429 when the user already has
        ``max_requests_per_user`` in flight. Administrators are not capped; a request is
        counted once however often its identity is asked."""
        counted: _Counted = scope.setdefault(CALLER, _Counted())
        if admin or counted.request is not None or scope.get("path") in UNCAPPED_PATHS:
            return
        cap = self.max_requests_per_user
        if cap and self._requests[user_id] >= cap:
            raise SchedulerError(
                429,
                f"user {user_id} has {cap} requests open (max_requests_per_user): wait for "
                "one to end or close an event stream",
                "max_requests_per_user",
                retry_after=1,
            )
        self._requests[user_id] += 1
        counted.request = user_id

    def open_stream(self, scope: Scope, user_id: str, admin: bool) -> None:
        """Count an event stream of ``user_id`` until it ends; 429 over
        ``max_streams_per_user`` (one per kernel and Lab is the usual need)."""
        if admin:
            return
        cap = self.max_streams_per_user
        if cap and self._streams[user_id] >= cap:
            raise SchedulerError(
                429,
                f"user {user_id} has {cap} event streams open (max_streams_per_user): close "
                "one (a kernel or a Lab tab) before opening another",
                "max_streams_per_user",
                retry_after=1,
            )
        self._streams[user_id] += 1
        scope.setdefault(CALLER, _Counted()).stream = user_id

    def leave(self, scope: Scope) -> None:
        """The request's answer is complete (a stream's: it ended): give back its counts."""
        counted: _Counted | None = scope.pop(CALLER, None)
        if counted is not None and counted.request is not None:
            self._drop(self._requests, counted.request)
        if counted is not None and counted.stream is not None:
            self._drop(self._streams, counted.stream)

    def requests_of(self, user_id: str) -> int:
        return self._requests[user_id]

    def streams_of(self, user_id: str) -> int:
        return self._streams[user_id]

    def anonymous_wait(self, address: str) -> float:
        """Seconds the anonymous client at ``address`` must wait before its next request is
        served (0: served now, and counted): a token bucket of ``anonymous_burst`` requests
        refilled at ``anonymous_rate_per_second``."""
        rate = self.anonymous_rate_per_second
        if rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= ADDRESSES_KEPT:
                self._forget_idle(now)
            bucket = self._buckets[address] = _Bucket(float(self.anonymous_burst), now)
        bucket.tokens = min(self.anonymous_burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate

    def _forget_idle(self, now: float) -> None:
        rate, burst = self.anonymous_rate_per_second, self.anonymous_burst
        self._buckets = {
            address: bucket
            for address, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.at) * rate < burst
        }

    @staticmethod
    def _drop(counter: collections.Counter[str], key: str) -> None:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]


class CallerCaps:
    """The ASGI middleware: anonymous requests rate-limited per client address (``/health``
    exempt), and every request's per-user counts given back when its answer is complete."""

    def __init__(self, app: ASGIApp, limits: CallerLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] not in UNCAPPED_PATHS and _anonymous(scope):
            address = scope["client"][0] if scope.get("client") else "unknown"
            wait = self.limits.anonymous_wait(address)
            if wait > 0:
                retry = math.ceil(wait)
                detail = (
                    f"client {address} is over {self.limits.anonymous_rate_per_second:g} anonymous "
                    f"requests a second (anonymous_rate_per_second): retry in {retry} s or send "
                    "credentials"
                )
                refusal = error_response(
                    429, detail, "anonymous_rate_per_second", {"Retry-After": str(retry)}
                )
                return await refusal(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            self.limits.leave(scope)


def _anonymous(scope: Scope) -> bool:
    return not any(name in (b"authorization", b"x-munge-cred") for name, _ in scope["headers"])
