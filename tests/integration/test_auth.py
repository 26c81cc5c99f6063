"""The auth routes of API.md (`/api/v1/auth/*`), over real PostgreSQL and Redis.

Register, login, refresh-token rotation and reuse detection, logout, logout-all, and the shared
rate limit. Each test starts from empty tables and an empty Redis prefix.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
import redis

from app.settings import Settings
from tests.integration.conftest import PASSWORD, Accounts, AppFactory, Client, bearer, error_code

REGISTER = "/api/v1/auth/register"


def registration(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": "ada@example.com",
        "password": PASSWORD,
        "fullName": "Ada Lovelace",
        "phone": "+447700900123",
        "role": "customer",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


# --- register ----------------------------------------------------------------------------------
async def test_a_customer_registers_and_is_signed_in_at_once(api: Client) -> None:
    # When a customer registers
    response = await api.post(REGISTER, json=registration(whatsappOptIn=True))

    # Then the account is created with a session, in camelCase
    assert response.status_code == 201
    body = response.json()
    assert {"user", "accessToken", "refreshToken"} <= set(body)
    user = body["user"]
    assert uuid.UUID(user["id"])
    assert user["email"] == "ada@example.com"
    assert user["fullName"] == "Ada Lovelace"
    assert user["phone"] == "+447700900123"
    assert user["role"] == "customer"
    assert user["vehicleType"] is None
    assert user["whatsappOptIn"] is True
    assert user["createdAt"].endswith("Z")
    assert user["phoneVerified"] is False
    assert set(user) == {"id", "email", "fullName", "phone", "role", "vehicleType", "whatsappOptIn",
                         "createdAt", "phoneVerified"}
    assert not any("_" in key for key in body)
    # And the access token opens `/me` as that user
    me = await api.get("/api/v1/me", headers=bearer(body["accessToken"]))
    assert me.status_code == 200
    assert me.json() == user


async def test_a_driver_registers_with_a_vehicle_type(api: Client) -> None:
    response = await api.post(REGISTER, json=registration(role="driver", vehicleType="truck"))

    assert response.status_code == 201
    assert response.json()["user"]["role"] == "driver"
    assert response.json()["user"]["vehicleType"] == "truck"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"role": "driver"}, "vehicleType", id="driver-without-vehicle-type"),
        pytest.param({"vehicleType": "car"}, "vehicleType", id="customer-with-vehicle-type"),
        pytest.param({"phone": "01701234567"}, "phone", id="phone-not-e164"),
        pytest.param({"phone": "+49 170 1234567"}, "phone", id="phone-with-spaces"),
        pytest.param({"email": "not-an-email"}, "email", id="bad-email"),
        pytest.param({"password": "short"}, "password", id="short-password"),
        pytest.param({"password": 12345678}, "password", id="wrong-type"),
        pytest.param({"role": "admin"}, "role", id="admin-cannot-self-register"),
        pytest.param({"vehicleType": "spaceship", "role": "driver"}, "vehicleType", id="unknown-vehicle"),
        pytest.param({"nickname": "ada"}, "nickname", id="unknown-field"),
    ],
)
async def test_a_bad_registration_is_refused_naming_the_field(
    api: Client, fields: dict[str, Any], field: str
) -> None:
    # When someone registers with one bad field
    response = await api.post(REGISTER, json=registration(**fields))

    # Then it is a 400 VALIDATION_ERROR whose details name that field, and no account exists
    assert response.status_code == 400, response.text
    assert error_code(response) == "VALIDATION_ERROR"
    assert field in response.json()["error"]["details"]
    login = await api.post("/api/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert login.status_code == 401


async def test_a_missing_field_is_a_validation_error(api: Client) -> None:
    body = registration()
    del body["fullName"]

    response = await api.post(REGISTER, json=body)

    assert response.status_code == 400
    assert error_code(response) == "VALIDATION_ERROR"
    assert "fullName" in response.json()["error"]["details"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]"], ids=["malformed", "empty", "array"])
async def test_a_body_that_is_not_a_json_object_is_a_validation_error(api: Client, raw: bytes) -> None:
    response = await api.post(REGISTER, content=raw, headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert error_code(response) == "VALIDATION_ERROR"


async def test_an_email_is_taken_whatever_its_case(api: Client) -> None:
    # Given an account for ada@example.com
    assert (await api.post(REGISTER, json=registration())).status_code == 201

    # When someone registers Ada@Example.COM
    response = await api.post(REGISTER, json=registration(email="Ada@Example.COM", role="driver",
                                                          vehicleType="car"))

    # Then it is a 409 CONFLICT
    assert response.status_code == 409
    assert error_code(response) == "CONFLICT"


# --- login -------------------------------------------------------------------------------------
async def test_login_returns_the_user_and_a_new_session(api: Client, accounts: Accounts) -> None:
    # Given a registered driver
    registered = await accounts.register("driver")
    email = registered["user"]["email"]

    # When it logs in (typing its email in capitals)
    response = await accounts.login(email.upper())

    # Then it gets its user and a new working pair of tokens
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == registered["user"]
    assert body["accessToken"] != registered["accessToken"]
    assert body["refreshToken"] != registered["refreshToken"]
    assert (await accounts.me(body["accessToken"])).status_code == 200
    assert (await accounts.refresh(body["refreshToken"])).status_code == 200


async def test_a_wrong_password_and_an_unknown_email_read_the_same(api: Client, accounts: Accounts) -> None:
    # Given a registered customer
    email = (await accounts.register())["user"]["email"]

    # When someone tries a wrong password, and an email nobody has
    wrong_password = await accounts.login(email, "not-the-password")
    unknown_email = await accounts.login("nobody@example.com")

    # Then both are 401 INVALID_CREDENTIALS with the same message (no account enumeration)
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert error_code(wrong_password) == error_code(unknown_email) == "INVALID_CREDENTIALS"
    assert wrong_password.json() == unknown_email.json()


# --- refresh -----------------------------------------------------------------------------------
async def test_refresh_rotates_the_pair_and_spends_the_old_refresh_token(accounts: Accounts) -> None:
    # Given a session
    first = await accounts.register()

    # When its refresh token is spent
    response = await accounts.refresh(first["refreshToken"])

    # Then a new pair comes back, and both new tokens work
    assert response.status_code == 200
    second = response.json()
    assert second["accessToken"] != first["accessToken"]
    assert second["refreshToken"] != first["refreshToken"]
    assert (await accounts.me(second["accessToken"])).json()["id"] == first["user"]["id"]
    third = await accounts.refresh(second["refreshToken"])
    assert third.status_code == 200
    assert (await accounts.me(third.json()["accessToken"])).status_code == 200


async def test_spending_a_refresh_token_twice_revokes_the_whole_session(accounts: Accounts) -> None:
    # Given a session whose refresh token was rotated once (a thief copied the first one)
    victim = await accounts.register()
    other_session = await accounts.session(victim["user"]["email"])
    rotated = (await accounts.refresh(victim["refreshToken"])).json()

    # When the spent refresh token is presented again
    replay = await accounts.refresh(victim["refreshToken"])

    # Then it is refused as revoked
    assert replay.status_code == 401
    assert error_code(replay) == "TOKEN_REVOKED"
    # And every token of that session is refused too: the rotated refresh token and both access tokens
    assert error_code(await accounts.refresh(rotated["refreshToken"])) == "TOKEN_REVOKED"
    for access in (rotated["accessToken"], victim["accessToken"]):
        response = await accounts.me(access)
        assert response.status_code == 401
        assert error_code(response) == "TOKEN_REVOKED"
    # But the user's other session is untouched
    assert (await accounts.me(other_session["accessToken"])).status_code == 200
    assert (await accounts.refresh(other_session["refreshToken"])).status_code == 200


async def test_a_refresh_replay_while_redis_fails_is_503_and_the_session_stays_revoked(
    api: Client, accounts: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a rotated session, and Redis failing just when the revocation is written to it
    victim = await accounts.register()
    rotated = (await accounts.refresh(victim["refreshToken"])).json()

    async def redis_drops(*_: Any, **__: Any) -> None:
        raise redis.exceptions.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(api.app.state.ctx.tokens, "revoke_sessions", redis_drops)

    # When the spent refresh token is replayed
    replay = await accounts.refresh(victim["refreshToken"])

    # Then the answer is 503 (never a 500), and the revocation was kept in PostgreSQL
    assert replay.status_code == 503, replay.text
    assert error_code(replay) == "SERVICE_UNAVAILABLE"
    monkeypatch.undo()
    assert error_code(await accounts.refresh(victim["refreshToken"])) == "TOKEN_REVOKED"
    assert error_code(await accounts.refresh(rotated["refreshToken"])) == "TOKEN_REVOKED"


async def test_an_expired_refresh_token_is_token_expired(settings: Settings, make_client: AppFactory) -> None:
    # Given a web process whose refresh tokens live no time at all
    auth = dataclasses.replace(settings.auth, refresh_token_ttl_s=0)
    short_lived = dataclasses.replace(settings, auth=auth)
    accounts = Accounts(await make_client(short_lived))
    session = await accounts.register()

    # When the refresh token is spent
    response = await accounts.refresh(session["refreshToken"])

    # Then it is 401 TOKEN_EXPIRED (log in again)
    assert response.status_code == 401
    assert error_code(response) == "TOKEN_EXPIRED"


async def test_an_unknown_refresh_token_is_invalid(accounts: Accounts) -> None:
    response = await accounts.refresh("not-a-refresh-token")

    assert response.status_code == 401
    assert error_code(response) == "INVALID_TOKEN"


async def test_an_access_token_is_not_a_refresh_token(accounts: Accounts) -> None:
    session = await accounts.register()

    response = await accounts.refresh(session["accessToken"])

    assert response.status_code == 401
    assert error_code(response) == "INVALID_TOKEN"


# --- logout ------------------------------------------------------------------------------------
async def test_logout_refuses_that_access_token_and_its_refresh_token(
    api: Client, accounts: Accounts
) -> None:
    # Given two sessions of one customer
    session = await accounts.register()
    other = await accounts.session(session["user"]["email"])

    # When the first logs out, handing its refresh token back
    response = await api.post("/api/v1/auth/logout", json={"refreshToken": session["refreshToken"]},
                              headers=bearer(session["accessToken"]))

    # Then the answer is 204 and both its tokens are refused as revoked
    assert response.status_code == 204
    assert response.content == b""
    me = await accounts.me(session["accessToken"])
    assert me.status_code == 401
    assert error_code(me) == "TOKEN_REVOKED"
    refresh = await accounts.refresh(session["refreshToken"])
    assert refresh.status_code == 401
    assert error_code(refresh) == "TOKEN_REVOKED"
    # And the other session still works
    assert (await accounts.me(other["accessToken"])).status_code == 200


async def test_logout_without_a_body_still_ends_the_session_refresh_token_included(
    api: Client, accounts: Accounts
) -> None:
    # Given a session that was refreshed once
    session = await accounts.register()
    rotated = (await accounts.refresh(session["refreshToken"])).json()

    # When it logs out with its access token only
    response = await api.post("/api/v1/auth/logout", headers=bearer(rotated["accessToken"]))

    # Then its access token and its live refresh token are both refused
    assert response.status_code == 204
    assert error_code(await accounts.me(rotated["accessToken"])) == "TOKEN_REVOKED"
    assert error_code(await accounts.refresh(rotated["refreshToken"])) == "TOKEN_REVOKED"


async def test_logout_needs_a_token(api: Client) -> None:
    response = await api.post("/api/v1/auth/logout")

    assert response.status_code == 401
    assert error_code(response) == "INVALID_TOKEN"


async def test_logout_all_refuses_every_earlier_token_but_not_the_next_login(
    api: Client, accounts: Accounts
) -> None:
    # Given a driver signed in three times (one session refreshed)
    registered = await accounts.register("driver")
    email = registered["user"]["email"]
    phone_session = await accounts.session(email)
    laptop_session = await accounts.session(email)
    rotated = (await accounts.refresh(laptop_session["refreshToken"])).json()
    access_tokens = [registered["accessToken"], phone_session["accessToken"], rotated["accessToken"]]
    refresh_tokens = [registered["refreshToken"], phone_session["refreshToken"], rotated["refreshToken"]]

    # When it logs out everywhere from the phone
    response = await api.post("/api/v1/auth/logout-all", headers=bearer(phone_session["accessToken"]))
    # And logs in again straight away (within the same second)
    fresh = await accounts.login(email)

    # Then every earlier token is refused as revoked
    assert response.status_code == 204
    for access in access_tokens:
        me = await accounts.me(access)
        assert me.status_code == 401
        assert error_code(me) == "TOKEN_REVOKED"
    for refresh_token in refresh_tokens:
        refresh = await accounts.refresh(refresh_token)
        assert refresh.status_code == 401
        assert error_code(refresh) == "TOKEN_REVOKED"
    # And the new login works, refresh included
    assert fresh.status_code == 200
    assert (await accounts.me(fresh.json()["accessToken"])).status_code == 200
    renewed = await accounts.refresh(fresh.json()["refreshToken"])
    assert renewed.status_code == 200
    assert (await accounts.me(renewed.json()["accessToken"])).status_code == 200


# --- rate limit --------------------------------------------------------------------------------
async def test_the_login_rate_limit_is_shared_by_every_web_process(
    settings: Settings, make_client: AppFactory
) -> None:
    # Given two web processes over the same Redis, allowing 3 logins per window
    limited = dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, rate_limit_requests=3))
    first, second = await make_client(limited), await make_client(limited)
    attempt = {"email": "ada@example.com", "password": "guessing-1234"}

    # When one client tries twice on the first process and twice on the second
    answers = [
        await first.post("/api/v1/auth/login", json=attempt),
        await first.post("/api/v1/auth/login", json=attempt),
        await second.post("/api/v1/auth/login", json=attempt),
        await second.post("/api/v1/auth/login", json=attempt),
    ]

    # Then the first three are answered and the fourth is 429 RATE_LIMITED with a Retry-After
    assert [r.status_code for r in answers] == [401, 401, 401, 429]
    limited_answer = answers[-1]
    assert error_code(limited_answer) == "RATE_LIMITED"
    assert 1 <= int(limited_answer.headers["Retry-After"]) <= settings.auth.rate_limit_window_s
    # And the first process refuses too, while another auth route keeps its own count
    assert (await first.post("/api/v1/auth/login", json=attempt)).status_code == 429
    registered = await first.post(REGISTER, json=registration())
    assert registered.status_code == 201
