"""Read-only admins (support staff): every admin read, no action — over the API and `farmctl`."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from models import AuditEntry
from tests.integration.conftest import Accounts, Client, bearer, error_code, own_session
from tests.integration.rides_support import ensure_region, ride_body
from tests.integration.test_farmctl_drivers import farmctl


def refused_as_read_only(response: Any) -> bool:
    return (response.status_code == 403 and error_code(response) == "FORBIDDEN"
            and response.json()["error"]["details"] == {"reason": "READ_ONLY_ADMIN"})


async def test_a_read_only_admin_reads_what_admins_read_and_changes_nothing(
        api: Client, accounts: Accounts) -> None:
    # Given a read-only admin, a driver and a customer's open ride
    support = await accounts.admin(read_only=True)
    driver = await accounts.register("driver")
    await ensure_region(api)
    customer = await accounts.register("customer")
    ride = await api.post("/api/v1/rides", json=ride_body(), headers=bearer(customer["accessToken"]))
    assert ride.status_code == 201, ride.text
    ride_id = ride.json()["id"]
    token = bearer(support["accessToken"])

    # When it reads admin lists and a ride
    reads = [await api.get(path, headers=token) for path in
             ("/api/v1/admin/jobs/failed", "/api/v1/admin/audit", f"/api/v1/rides/{ride_id}", "/api/v1/me")]

    # Then it sees them, and its account says it is read-only
    assert [r.status_code for r in reads] == [200, 200, 200, 200], [r.text for r in reads]
    assert reads[3].json()["adminAccess"] == "read_only"

    # When it tries to act: suspend the driver, cancel the ride
    suspend = await api.post(f"/api/v1/admin/drivers/{driver['user']['id']}/suspend",
                             json={"reason": "try"}, headers=token)
    cancel = await api.post(f"/api/v1/rides/{ride_id}/cancel", json={"reason": "try"}, headers=token)

    # Then both are refused as read-only and nothing changed
    assert refused_as_read_only(suspend), suspend.text
    assert refused_as_read_only(cancel), cancel.text
    assert (await accounts.login(driver["user"]["email"])).status_code == 200
    after = await api.get(f"/api/v1/rides/{ride_id}", headers=bearer(customer["accessToken"]))
    assert after.json()["status"] == "PENDING_BIDS"

    # And its own session stays its own: it may log out
    out = await api.post("/api/v1/auth/logout", json={}, headers=token)
    assert out.status_code == 204, out.text


async def test_other_accounts_carry_no_admin_access_and_full_admins_are_full(
        api: Client, accounts: Accounts) -> None:
    customer = await accounts.register("customer")
    admin = await accounts.admin()
    assert "adminAccess" not in (await accounts.me(customer["accessToken"])).json()
    assert (await accounts.me(admin["accessToken"])).json()["adminAccess"] == "full"


async def access_audit(email: str) -> list[tuple[str, dict[str, Any], str]]:
    async with own_session() as session:
        rows = (await session.execute(
            select(AuditEntry.action, AuditEntry.details, AuditEntry.actor_role)
            .where(AuditEntry.action.startswith("admin."), AuditEntry.details["email"].astext == email)
            .order_by(AuditEntry.id))).all()
    return [(action, details, role) for action, details, role in rows]


async def test_farmctl_creates_a_read_only_admin_and_changes_access_with_tokens_already_out(
        api: Client, accounts: Accounts, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a read-only admin created with farmctl, signed in
    import io
    import sys

    email = accounts.fresh_email("support")
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw-support-1\npw-support-1\n"))
    code, out, _ = await farmctl(capsys, "users", "create-admin", email, "--read-only", "--by", "lead")
    assert code == 0 and "read-only admin" in out
    session = await accounts.session(email, "pw-support-1")
    token = bearer(session["accessToken"])
    driver = await accounts.register("driver")
    suspend_url = f"/api/v1/admin/drivers/{driver['user']['id']}/suspend"
    assert refused_as_read_only(await api.post(suspend_url, json={"reason": "x"}, headers=token))

    # When farmctl gives it full access
    code, out, _ = await farmctl(capsys, "users", "set-access", email, "full", "--by", "lead")

    # Then the token it already holds may act from its next request
    assert code == 0 and "full access" in out
    assert (await api.post(suspend_url, json={"reason": "checked"}, headers=token)).status_code == 204

    # When it is made read-only again (twice: the second changes nothing)
    assert (await farmctl(capsys, "users", "set-access", email, "read-only", "--by", "lead"))[0] == 0
    code, out, _ = await farmctl(capsys, "users", "set-access", email, "read-only", "--by", "lead")
    assert code == 0 and "nothing changed" in out

    # Then it is refused again at once, and each real change is audited with who made it
    activate_url = f"/api/v1/admin/drivers/{driver['user']['id']}/activate"
    assert refused_as_read_only(await api.post(activate_url, json={"reason": "x"}, headers=token))
    assert [(action, details.get("from"), details.get("to"), details.get("access"))
            for action, details, _ in await access_audit(email)] == [
        ("admin.created", None, None, "read_only"),
        ("admin.access_changed", "read_only", "full", None),
        ("admin.access_changed", "full", "read_only", None)]


async def test_set_access_of_an_unknown_admin_fails_clearly(
        accounts: Accounts, capsys: pytest.CaptureFixture[str]) -> None:
    customer = await accounts.register("customer")
    code, _, err = await farmctl(capsys, "users", "set-access", customer["user"]["email"], "read-only")
    assert code != 0 and "No admin has the email" in err
