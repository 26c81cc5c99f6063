"""One handler that turns every failure into `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

import re
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.status_codes import HTTP_405_METHOD_NOT_ALLOWED
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.errors import AppError, RateLimited, ServiceUnavailable, ValidationFailed
from app.logging import get_logger

log = get_logger("api.errors")

_HTTP_CODES = {
    400: "VALIDATION_ERROR",
    401: "INVALID_TOKEN",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def _body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _respond(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


def app_error_response(exc: AppError) -> Response[Any]:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RateLimited) else None
    if isinstance(exc, ServiceUnavailable):
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
        status = exc.status_code
        code = _HTTP_CODES.get(status, "HTTP_ERROR")
        if status == 400:
            return app_error_response(ValidationFailed("The request body is not valid JSON.",
                                                       details={"body": exc.detail}))
        headers = dict(exc.headers or {})
        if status == HTTP_405_METHOD_NOT_ALLOWED:
            return _respond(status, _body(code, "This method is not allowed here."), headers)
        return _respond(status, _body(code, exc.detail), headers)
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
