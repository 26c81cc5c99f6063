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
    CONTRACT_CODES,
    AccountDeactivated,
    AppError,
    Conflict,
    Forbidden,
    InvalidCredentials,
    InvalidSignature,
    InvalidToken,
    InvalidTransition,
    NotFound,
    PaymentsDisabled,
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
        (ProviderError(transient=True), 503, "SERVICE_UNAVAILABLE"),
        (PaymentsDisabled(), 409, "CONFLICT"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, AppError) else None,
)
def test_an_app_error_answers_with_its_status_and_code(error: AppError, status: int, code: str) -> None:
    got_status, body, _ = answer(error)

    assert (got_status, body["code"]) == (status, code)
    assert body["message"] == error.message
    assert body["details"] == error.details


#: API.md, "Errors": every code a client may see, with its HTTP status(es).
API_MD_CODES = {
    "VALIDATION_ERROR": {400}, "INVALID_CREDENTIALS": {401}, "INVALID_TOKEN": {401},
    "TOKEN_EXPIRED": {401}, "TOKEN_REVOKED": {401}, "ACCOUNT_DEACTIVATED": {403}, "FORBIDDEN": {403},
    "NOT_FOUND": {404}, "CONFLICT": {409}, "INVALID_TRANSITION": {409}, "RATE_LIMITED": {429},
    "INVALID_SIGNATURE": {400, 403}, "SERVICE_UNAVAILABLE": {503},
}


def every_error_class(root: type[AppError] = AppError) -> list[type[AppError]]:
    found: list[type[AppError]] = []
    for sub in root.__subclasses__():
        found += [sub, *every_error_class(sub)]
    return found


def test_the_codes_the_app_knows_are_the_contracts() -> None:
    assert {code: set(statuses) for code, statuses in CONTRACT_CODES.items()} == API_MD_CODES


@pytest.mark.parametrize("error_class", every_error_class(), ids=lambda cls: cls.__name__)
def test_every_app_error_answers_a_code_of_the_contract_with_its_status(error_class: type[AppError]) -> None:
    assert error_class.code in API_MD_CODES, f"{error_class.__name__}: {error_class.code} is not in API.md"
    assert error_class.status_code in API_MD_CODES[error_class.code]


def test_payments_disabled_is_a_conflict_saying_how_to_enable_card_payments() -> None:
    status, body, _ = answer(PaymentsDisabled())

    assert (status, body["code"], body["details"]) == (409, "CONFLICT", {"reason": "PAYMENTS_DISABLED"})
    assert "STRIPE_SECRET_KEY" in body["message"]
    assert isinstance(PaymentsDisabled(), Conflict)


def test_a_provider_failure_is_service_unavailable_naming_the_provider() -> None:
    status, body, response = answer(ProviderError("Stripe is down", transient=True,
                                                  details={"provider": "stripe", "code": None}))
    _, refused, refused_response = answer(ProviderError("Stripe refused", transient=False))

    assert (status, body["code"]) == (503, "SERVICE_UNAVAILABLE")
    assert body["details"] == {"reason": "PROVIDER_ERROR", "transient": True, "provider": "stripe",
                               "code": None}
    assert response.headers["Retry-After"] == "1"
    assert refused["details"]["reason"] == "PROVIDER_ERROR"
    assert "Retry-After" not in refused_response.headers  # retrying won't change a refusal


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


def test_a_wrong_method_is_not_found_naming_the_allowed_ones() -> None:
    status, body, response = answer(MethodNotAllowedException(headers={"Allow": "POST, GET"}))

    assert (status, body["code"]) == (404, "NOT_FOUND")
    assert body["details"] == {"reason": "METHOD_NOT_ALLOWED", "allowed": ["GET", "POST"]}
    assert response.headers["Allow"] == "POST, GET"


def test_a_too_large_body_is_a_validation_error_naming_the_body() -> None:
    status, body, _ = answer(HTTPException(status_code=413, detail="too large"))

    assert (status, body["code"], body["details"]) == (400, "VALIDATION_ERROR", {"body": "too large"})


@pytest.mark.parametrize("http_status", [400, 401, 403, 404, 405, 406, 408, 409, 411, 413, 414, 415, 422,
                                         429, 500, 501, 503])
def test_every_litestar_refusal_answers_a_code_of_the_contract_with_its_status(http_status: int) -> None:
    status, body, _ = answer(HTTPException(status_code=http_status, detail="refused"))

    # (a 500 is a bug, the only answer outside the contract's list)
    assert (status == 500 and body["code"] == "INTERNAL_ERROR") or status in API_MD_CODES[body["code"]]


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
