"""Error documents: every refusal is ``{detail, rule}``, and the OpenAPI schema says so.

:func:`install_error_handling` turns each exception the API raises into that document (a
request the models refuse is 422 naming the field; anything unexpected is a 500 with rule
``internal`` and a logged traceback, answered so the connection stays usable), and
:func:`error_responses` declares a route's error statuses in one line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qhpc_lab.scheduler.auth import AuthError
from qhpc_lab.scheduler.refusal import SchedulerError
from qhpc_lab.wire.documents import ErrorOut, QuotaRefusalOut

log = logging.getLogger(__name__)


_MEANINGS = {
    400: "Malformed request (a body that is not JSON).",
    401: "No identity, or a credential that was refused.",
    403: "The identity may not do this (administrator route, session rules).",
    404: "No such job or session visible to this identity.",
    408: "The request headers or body did not arrive in time.",
    409: "The request conflicts with the resource's state.",
    413: "The request body exceeds max_payload_bytes.",
    422: "A field is invalid; detail names it.",
    429: "Too many requests (a caller's cap, or a queue limit); retry after Retry-After seconds.",
    500: "An unexpected error (rule internal); the scheduler logged its traceback.",
    503: "The QPU is not accepting jobs, or the server is at its connection limit.",
}
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying, when the server knows.",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``: each status as ErrorOut, and the three any route may answer
    (500 on a bug, 503 at the connection cap, 429 at a caller's cap: caller_limits.py).

    Declaring 422 also keeps FastAPI from adding its own ``HTTPValidationError``, which is
    not what this API sends.
    """
    return {
        status: {
            "model": ErrorOut,
            "description": _MEANINGS[status],
            **({"headers": RETRY_AFTER_HEADER} if status in (429, 503) else {}),
        }
        for status in sorted({*statuses, 429, 500, 503})
    }


ADMIN_BODY_ERRORS = error_responses(400, 401, 403, 408, 413, 422)
"""What an administrator's route that takes a body may answer."""
SUBMIT_ERRORS = {
    **error_responses(400, 401, 403, 408, 413, 422, 429),
    403: {
        "model": QuotaRefusalOut,
        "description": f"{_MEANINGS[403]} Rule quota: the job would exceed a quota.",
    },
}
"""What ``POST /jobs`` may answer: a quota's refusal is a 403 with its numbers."""


def error_response(
    status: int,
    detail: str,
    rule: str | None,
    headers: Mapping[str, str] | None = None,
    fields: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """The error document (and a refusal's ``fields``); text that is not valid Unicode
    (echoed input) is escaped."""
    safe = detail.encode("utf-8", "backslashreplace").decode("utf-8")
    body = {**(fields or {}), "detail": safe, "rule": rule}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handling(app: FastAPI) -> None:
    """Answer every exception with the error document; call after adding other middleware."""
    app.add_exception_handler(SchedulerError, _scheduler_error)  # type: ignore[arg-type]
    app.add_exception_handler(AuthError, _auth_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_middleware(UnexpectedErrors)


async def _scheduler_error(_request: Request, err: SchedulerError) -> JSONResponse:
    return error_response(err.status, str(err), err.rule, _retry_after(err.retry_after), err.fields)


async def _auth_error(_request: Request, err: AuthError) -> JSONResponse:
    return error_response(err.status, str(err), "auth", _retry_after(err.retry_after))


def _retry_after(seconds: float | None) -> dict[str, str] | None:
    return None if seconds is None else {"Retry-After": str(math.ceil(seconds))}


async def _invalid_request(_request: Request, err: RequestValidationError) -> JSONResponse:
    problems = err.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return error_response(400, "malformed JSON body", "json")
    text = "; ".join(
        f"{'.'.join(str(x) for x in p.get('loc', ())[1:]) or 'body'}: {p.get('msg')}"
        for p in problems
    )
    return error_response(422, text, "request")


async def _http_error(_request: Request, err: HTTPException) -> JSONResponse:
    """Routing refusals (unknown path 404, wrong method 405) in the same shape."""
    return error_response(err.status_code, str(err.detail), None, err.headers)


class UnexpectedErrors:
    """Turn an exception no handler knows into a logged JSON 500, instead of letting it reach
    the server (uvicorn then closes the connection and answers text/plain)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            if started:  # half an answer went out: only closing the connection can end it
                raise
            response = error_response(500, "internal error (logged by the scheduler)", "internal")
            await response(scope, receive, send)
