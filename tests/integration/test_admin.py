"""`/api/v1/admin/*`: suspending and re-activating drivers, and who may do it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from app.settings import Settings
from models import AuditEntry
from tests.integration.conftest import (
    Accounts,
    Client,
    bearer,
    error_code,
    forget_everything_in_redis,
    own_session,
)


def suspend_url(driver_id: str) -> str:
    return f"/api/v1/admin/drivers/{driver_id}/suspend"


def activate_url(driver_id: str) -> str:
    return f"/api/v1/admin/drivers/{driver_id}/activate"


async def audit_actions(api: Client) -> list[tuple[str, str, str | None]]:
    async with own_session() as session:
        rows = (await session.execute(
            select(AuditEntry.action, AuditEntry.target_id, AuditEntry.actor_id).order_by(AuditEntry.id)
        )).all()
    return [(action, target, str(actor) if actor else None) for action, target, actor in rows]


async def test_a_suspended_driver_is_locked_out_and_comes_back_only_by_logging_in(
    api: Client, accounts: Accounts
) -> None:
    # Given an admin and a signed-in driver
    admin = await accounts.admin()
    driver = await accounts.register("driver")
    driver_id, email = driver["user"]["id"], driver["user"]["email"]

    # When the admin suspends the driver
    response = await api.post(suspend_url(driver_id), json={"reason": "documents expired"},
                              headers=bearer(admin["accessToken"]))

    # Then the driver's access token, refresh token and a new login all get 403 ACCOUNT_DEACTIVATED
    assert response.status_code == 204
    for attempt in (await accounts.me(driver["accessToken"]), await accounts.refresh(driver["refreshToken"]),
                    await accounts.login(email)):
        assert attempt.status_code == 403, attempt.text
        assert error_code(attempt) == "ACCOUNT_DEACTIVATED"

    # When the admin activates the driver again
    response = await api.post(activate_url(driver_id), json={"reason": "documents renewed"},
                              headers=bearer(admin["accessToken"]))

    # Then the tokens from before the suspension stay refused as revoked
    assert response.status_code == 204
    for attempt in (await accounts.me(driver["accessToken"]), await accounts.refresh(driver["refreshToken"])):
        assert attempt.status_code == 401, attempt.text
        assert error_code(attempt) == "TOKEN_REVOKED"
    # And a fresh login works
    fresh = await accounts.session(email)
    assert (await accounts.me(fresh["accessToken"])).json()["id"] == driver_id
    # And both actions are in the audit log, by that admin
    admin_id = admin["user"]["id"]
    assert await audit_actions(api) == [
        ("admin.created", admin_id, None),
        ("driver.suspended", driver_id, admin_id),
        ("driver.activated", driver_id, admin_id),
    ]


async def test_a_suspension_survives_redis_coming_back_empty(
    api: Client, accounts: Accounts, settings: Settings
) -> None:
    # Given a suspended driver
    admin = await accounts.admin()
    driver = await accounts.register("driver")
    response = await api.post(suspend_url(driver["user"]["id"]), json={"reason": "fraud"},
                              headers=bearer(admin["accessToken"]))
    assert response.status_code == 204

    # When Redis comes back empty
    forget_everything_in_redis(settings)

    # Then the driver's token is still refused
    me = await accounts.me(driver["accessToken"])
    assert me.status_code == 403
    assert error_code(me) == "ACCOUNT_DEACTIVATED"


@pytest.mark.parametrize("caller_role", ["customer", "driver"])
@pytest.mark.parametrize("url", [suspend_url, activate_url], ids=["suspend", "activate"])
async def test_only_an_admin_may_suspend_or_activate(
    api: Client, accounts: Accounts, caller_role: str, url: Any
) -> None:
    # Given a driver and a signed-in non-admin
    driver = await accounts.register("driver")
    caller = await accounts.register(caller_role)

    # When the non-admin tries to suspend or activate the driver
    response = await api.post(url(driver["user"]["id"]), json={"reason": "because"},
                              headers=bearer(caller["accessToken"]))

    # Then it is 403 FORBIDDEN and the driver is untouched
    assert response.status_code == 403
    assert error_code(response) == "FORBIDDEN"
    assert (await accounts.me(driver["accessToken"])).status_code == 200


async def test_admin_routes_need_a_token(api: Client, accounts: Accounts) -> None:
    driver = await accounts.register("driver")

    response = await api.post(suspend_url(driver["user"]["id"]), json={"reason": "because"})

    assert response.status_code == 401
    assert error_code(response) == "INVALID_TOKEN"


async def test_suspending_someone_who_is_not_a_driver_is_not_found(api: Client, accounts: Accounts) -> None:
    # Given an admin, and a customer
    admin = await accounts.admin()
    customer = await accounts.register("customer")

    # When the admin suspends an unknown id, and the customer's id
    for target in (str(uuid.uuid4()), customer["user"]["id"]):
        response = await api.post(suspend_url(target), json={"reason": "because"},
                                  headers=bearer(admin["accessToken"]))

        # Then both are 404 NOT_FOUND
        assert response.status_code == 404, target
        assert error_code(response) == "NOT_FOUND"
    # And the customer can still use the API
    assert (await accounts.me(customer["accessToken"])).status_code == 200


@pytest.mark.parametrize("body", [{}, {"reason": ""}], ids=["missing-reason", "empty-reason"])
async def test_a_suspension_needs_a_reason(api: Client, accounts: Accounts, body: dict[str, Any]) -> None:
    admin = await accounts.admin()
    driver = await accounts.register("driver")

    response = await api.post(suspend_url(driver["user"]["id"]), json=body,
                              headers=bearer(admin["accessToken"]))

    assert response.status_code == 400
    assert error_code(response) == "VALIDATION_ERROR"
    assert "reason" in response.json()["error"]["details"]
    assert (await accounts.me(driver["accessToken"])).status_code == 200
