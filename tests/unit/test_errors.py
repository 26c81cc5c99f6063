"""Every failure becomes `{"error": {"code", "message", "details"}}` (`app/api/errors.py`).

The handler is called directly with the exception a route (or Litestar, or a driver) would raise.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar import Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.testing import RequestFactory
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.api.errors import handle_exception
from app.errors import (
    AccountDeactivated,
    AppError,
    Conflict,
    Forbidden,
    InvalidCredentials,
    InvalidSignature,
    InvalidToken,
    InvalidTransition,
    NotFound,
    ProviderError,
    RateLimited,
    RefreshTokenReused,
    ServiceUnavailable,
    TokenExpired,
    TokenRevoked,
    ValidationFailed,
)

REQUEST = RequestFactory().get("/api/v1/somewhere")


def answer(exc: Exception) -> tuple[int, dict[str, Any], Response[Any]]:
    response = handle_exception(REQUEST, exc)
    body = response.content
    assert isinstance(body, dict)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    json.dumps(body)  # what goes on the wire must be plain JSON
    assert response.status_code is not None
    return response.status_code, body["error"], response


# --- the application's own errors --------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ValidationFailed(details={"phone": "bad"}), 400, "VALIDATION_ERROR"),
        (InvalidCredentials(), 401, "INVALID_CREDENTIALS"),
        (InvalidToken(), 401, "INVALID_TOKEN"),
        (TokenExpired(), 401, "TOKEN_EXPIRED"),
        (TokenRevoked(), 401, "TOKEN_REVOKED"),
        (RefreshTokenReused(), 401, "TOKEN_REVOKED"),
        (AccountDeactivated(), 403, "ACCOUNT_DEACTIVATED"),
        (Forbidden(), 403, "FORBIDDEN"),
        (NotFound(), 404, "NOT_FOUND"),
        (Conflict(), 409, "CONFLICT"),
        (InvalidTransition("COMPLETED", "CANCELLED"), 409, "INVALID_TRANSITION"),
        (RateLimited(retry_after_s=30), 429, "RATE_LIMITED"),
        (InvalidSignature(), 400, "INVALID_SIGNATURE"),
        (ServiceUnavailable(), 503, "SERVICE_UNAVAILABLE"),
        (ProviderError(transient=True), 502, "PROVIDER_ERROR"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, AppError) else None,
)
def test_an_app_error_answers_with_its_status_and_code(error: AppError, status: int, code: str) -> None:
    got_status, body, _ = answer(error)

    assert (got_status, body["code"]) == (status, code)
    assert body["message"] == error.message
    assert body["details"] == error.details


def test_a_custom_message_and_details_reach_the_client() -> None:
    _, body, _ = answer(Conflict("That email is taken.", details={"email": "taken"}))

    assert body == {"code": "CONFLICT", "message": "That email is taken.", "details": {"email": "taken"}}


def test_an_invalid_transition_names_both_states() -> None:
    _, body, _ = answer(InvalidTransition("LOADING", "CANCELLED"))

    assert body["details"] == {"from": "LOADING", "to": "CANCELLED"}


def test_rate_limited_says_when_to_come_back() -> None:
    status, body, response = answer(RateLimited(retry_after_s=42))

    assert status == 429
    assert response.headers["Retry-After"] == "42"
    assert body["details"] == {"retryAfter": 42}


def test_rate_limited_never_says_come_back_in_zero_seconds() -> None:
    _, _, response = answer(RateLimited(retry_after_s=0))

    assert response.headers["Retry-After"] == "1"


def test_service_unavailable_asks_to_retry_shortly() -> None:
    _, _, response = answer(ServiceUnavailable())

    assert response.headers["Retry-After"] == "1"


# --- Litestar's errors -------------------------------------------------------------------------
def test_a_body_validation_error_names_the_offending_fields() -> None:
    exc = ValidationException(extra=[
        {"message": "Expected `str` matching regex", "key": "phone", "source": "body"},
        {"message": "Expected `str`, got `int`", "key": "password", "source": "body"},
    ])

    status, body, _ = answer(exc)

    assert status == 400
    assert body["code"] == "VALIDATION_ERROR"
    assert body["details"] == {
        "phone": "Expected `str` matching regex",
        "password": "Expected `str`, got `int`",
    }


@pytest.mark.parametrize(
    ("key", "message", "field"),
    [
        ("data", "Object contains unknown field `nickname`", "nickname"),
        ("data", "Object missing required field `fullName`", "fullName"),
        ("pickup", "Object contains unknown field `altitude`", "pickup.altitude"),
    ],
)
def test_an_unknown_or_missing_field_is_named_itself(key: str, message: str, field: str) -> None:
    status, body, _ = answer(ValidationException(extra=[{"message": message, "key": key, "source": "body"}]))

    assert status == 400
    assert set(body["details"]) == {field}


def test_a_validation_error_without_fields_still_says_what_is_wrong() -> None:
    _, body, _ = answer(ValidationException(detail="Expected `object`, got `array`"))

    assert body["code"] == "VALIDATION_ERROR"
    assert body["details"] == {"body": "Expected `object`, got `array`"}


def test_malformed_json_is_a_validation_error() -> None:
    status, body, _ = answer(ClientException("JSON is malformed: invalid character (byte 1)"))

    assert status == 400
    assert body["code"] == "VALIDATION_ERROR"
    assert "malformed" in body["details"]["body"]


def test_an_unknown_route_is_not_found() -> None:
    status, body, _ = answer(NotFoundException())

    assert (status, body["code"]) == (404, "NOT_FOUND")


def test_a_wrong_method_is_405_with_the_allowed_ones() -> None:
    status, body, response = answer(MethodNotAllowedException(headers={"Allow": "GET"}))

    assert (status, body["code"]) == (405, "METHOD_NOT_ALLOWED")
    assert response.headers["Allow"] == "GET"


def test_a_too_large_body_keeps_its_status() -> None:
    status, body, _ = answer(HTTPException(status_code=413, detail="too large"))

    assert (status, body["code"]) == (413, "PAYLOAD_TOO_LARGE")


# --- dependencies down -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "dependency"),
    [
        (RedisConnectionError("Connection refused"), "redis"),
        (RedisTimeoutError("Timeout reading from socket"), "redis"),
        (OperationalError("SELECT 1", {}, Exception("connection refused")), "postgres"),
        (InterfaceError("SELECT 1", {}, Exception("connection already closed")), "postgres"),
        (PoolTimeoutError("QueuePool limit reached"), "postgres"),
        (DBAPIError("SELECT 1", {}, Exception("server closed"), connection_invalidated=True), "postgres"),
    ],
    ids=["redis-refused", "redis-timeout", "pg-operational", "pg-interface", "pg-pool-timeout",
         "pg-connection-invalidated"],
)
def test_a_dependency_that_is_down_is_503_never_500(error: Exception, dependency: str) -> None:
    status, body, response = answer(error)

    assert status == 503
    assert body["code"] == "SERVICE_UNAVAILABLE"
    assert body["details"] == {"dependency": dependency}
    assert response.headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    "inner",
    [ServiceUnavailable(details={"dependency": "redis"}), RedisConnectionError("Connection refused")],
    ids=["service-unavailable", "redis-down"],
)
def test_an_error_raised_while_a_dependency_cleans_up_is_answered_for(inner: Exception) -> None:
    # Litestar wraps what a generator dependency (the unit of work) raised in an ExceptionGroup
    status, body, _ = answer(ExceptionGroup("Exceptions occurred during cleanup of dependencies", [inner]))

    assert status == 503
    assert body["code"] == "SERVICE_UNAVAILABLE"


# --- bugs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("secret internals: password=hunter2"),
        IntegrityError("INSERT", {}, Exception("duplicate key secret internals")),
        KeyError("secret internals"),
    ],
    ids=["runtime", "integrity", "key"],
)
def test_an_unexpected_error_is_a_500_that_leaks_nothing(error: Exception) -> None:
    status, body, _ = answer(error)

    assert status == 500
    assert body["code"] == "INTERNAL_ERROR"
    assert "secret" not in json.dumps(body)
