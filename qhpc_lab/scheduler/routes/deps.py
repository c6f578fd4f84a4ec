"""What the routes are given: the scheduler and the caller's identity, as FastAPI dependencies.

The app keeps its :class:`~qhpc_lab.scheduler.core.Scheduler` and
:class:`~qhpc_lab.scheduler.auth.Authenticator` in ``app.state``; a route names
:data:`SchedulerDep`, :data:`User` or :data:`Admin` and never reaches for them itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from qhpc_lab import munge
from qhpc_lab.scheduler.auth import Authenticator, AuthError, Identity
from qhpc_lab.scheduler.caller_limits import CallerLimits
from qhpc_lab.scheduler.core import Scheduler
from qhpc_lab.scheduler.gateway import STORE_DOWN, STORE_RETRY_AFTER_S
from qhpc_lab.scheduler.refusal import SchedulerError


def _scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


async def _identity(
    request: Request,
    x_munge_cred: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Identity:
    auth: Authenticator = request.app.state.authenticator
    binding = None
    if x_munge_cred:
        target = request.scope.get("raw_path") or request.url.path.encode()
        if request.scope.get("query_string"):
            target += b"?" + request.scope["query_string"]
        binding = munge.request_binding(request.method, target, await request.body())
    try:
        client_host = request.client.host if request.client else None
        who = await auth.identify_async(x_munge_cred, authorization, binding, client_host)
    except STORE_DOWN as err:  # the replay memory is in the store
        raise SchedulerError(
            503,
            "the scheduler's database is unavailable; try again",
            "store",
            retry_after=STORE_RETRY_AFTER_S,
        ) from err
    limits: CallerLimits = request.app.state.caller_limits
    limits.enter(request.scope, who.user_id, who.admin)
    return who


async def _admin(who: Annotated[Identity, Depends(_identity)]) -> Identity:
    if not who.admin:
        raise AuthError(
            403,
            "this route needs an administrator identity (away from admin_unbound_hosts, an "
            "admin uid's MUNGE credential counts only when bound to its request, as qhpc's "
            "own tools make them)",
        )
    return who


async def _optional_identity(request: Request) -> Identity | None:
    """The caller when credentials came with the request; None for an anonymous one."""
    munge_cred = request.headers.get("x-munge-cred")
    authorization = request.headers.get("authorization")
    if not munge_cred and not authorization:
        return None
    return await _identity(request, munge_cred, authorization)


SchedulerDep = Annotated[Scheduler, Depends(_scheduler)]
User = Annotated[Identity, Depends(_identity)]
Admin = Annotated[Identity, Depends(_admin)]
Anyone = Annotated[Identity | None, Depends(_optional_identity)]
"""The caller if it sent credentials (refused when they are bad), else None; the OpenAPI
document shows no header, as anonymous callers need none."""
WardenSession = Annotated[str | None, Header(alias="X-Warden-Session")]
