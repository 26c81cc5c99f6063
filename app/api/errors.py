"""One handler that turns every failure into `{"error": {"code", "message", "details"}}`.

Only the contract's codes, each with its status (`app.errors.CONTRACT_CODES`), ever reach a client,
Litestar's own refusals included; the one exception is a bug, a 500 `INTERNAL_ERROR`.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.status_codes import HTTP_405_METHOD_NOT_ALLOWED
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.errors import AppError, ProviderError, RateLimited, ServiceUnavailable, ValidationFailed
from app.logging import get_logger

log = get_logger("api.errors")

#: Litestar's HTTP errors whose status is one of the contract's, answered with its code.
_HTTP_CODES = {
    401: "INVALID_TOKEN",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


def _body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _respond(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


def app_error_response(exc: AppError) -> Response[Any]:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RateLimited) else None
    if isinstance(exc, ServiceUnavailable) or (isinstance(exc, ProviderError) and exc.transient):
        headers = {"Retry-After": "1"}
    return _respond(exc.status_code, exc.to_dict(), headers)


_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def _validation_details(exc: ValidationException) -> dict[str, str]:
    """`{field: problem}`; an unknown or missing field is named itself (Litestar names its parent)."""
    details: dict[str, str] = {}
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if not isinstance(item, dict):
            continue
        key = str(item.get("key") or item.get("source") or "body")
        key = "body" if key == "data" else key
        message = str(item.get("message", "invalid"))
        named = _NAMED_FIELD.search(message)
        if named:
            key = named.group(1) if key == "body" else f"{key}.{named.group(1)}"
        details[key] = message
    return details or {"body": exc.detail}


def _http_error_response(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own refusals, in the contract's codes (a finer cause in `details.reason`)."""
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == HTTP_405_METHOD_NOT_ALLOWED:
        # No route for this method and path: the contract's 404, naming the methods there are.
        listed = next((value for name, value in headers.items() if name.lower() == "allow"), "")
        allowed = sorted(method.strip() for method in listed.split(",") if method.strip())
        return _respond(404, _body("NOT_FOUND", "This method is not allowed here.",
                                   {"reason": "METHOD_NOT_ALLOWED", "allowed": allowed}), headers)
    if status in _HTTP_CODES:
        return _respond(status, _body(_HTTP_CODES[status], exc.detail), headers)
    if status == 400:
        return app_error_response(ValidationFailed("The request body is not valid JSON.",
                                                   details={"body": exc.detail}))
    if 400 <= status < 500:
        # e.g. 413 (body too large): the request as sent can't be taken, so a VALIDATION_ERROR
        # naming the body (its details are fields, so no `reason` key that could be one).
        return app_error_response(ValidationFailed(exc.detail, details={"body": exc.detail}))
    log.error("api.http_error", status=status, path=request.url.path, error=exc.detail)
    return _respond(500, _body("INTERNAL_ERROR", "Something went wrong on our side."))


def _is_nul_refusal(exc: Exception) -> bool:
    """psycopg refusing a string with NUL in it (it can't be sent as PostgreSQL text)."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(cause, psycopg.DataError) and "NUL (0x00)" in str(cause)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, ExceptionGroup) and exc.exceptions:
        # Litestar groups what a dependency's clean-up raised while the handler's error unwound
        # (e.g. the unit of work failing to commit a kept change): answer for the first of them.
        return handle_exception(request, exc.exceptions[0])
    if isinstance(exc, AppError):
        return app_error_response(exc)
    if isinstance(exc, ValidationException):
        return app_error_response(ValidationFailed(details=_validation_details(exc)))
    if isinstance(exc, NotFoundException):
        return _respond(404, _body("NOT_FOUND", "Not found."))
    if isinstance(exc, HTTPException):
        return _http_error_response(request, exc)
    if _is_nul_refusal(exc):
        # A NUL the input guard could not see (e.g. inside a header-derived value): still the
        # caller's mistake, and PostgreSQL refused it before anything was written.
        return app_error_response(ValidationFailed("A text field contains a NUL character.",
                                                   details={"body": "contains a NUL character"}))
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        log.error("api.dependency_down", dependency="redis", error=repr(exc))
        return app_error_response(ServiceUnavailable("Redis is unavailable; nothing was changed.",
                                                     details={"dependency": "redis"}))
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        log.error("api.dependency_down", dependency="postgres", error=repr(exc))
        return app_error_response(ServiceUnavailable("PostgreSQL is unavailable; nothing was changed.",
                                                     details={"dependency": "postgres"}))
    log.exception("api.unhandled_error", path=request.url.path)
    return _respond(500, _body("INTERNAL_ERROR", "Something went wrong on our side."))
