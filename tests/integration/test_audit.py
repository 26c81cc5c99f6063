"""The audit log as operators read it: `GET /api/v1/admin/audit` and `farmctl audit`, and the actions
that write it (admin cancellations and suspensions over HTTP; every changing `farmctl` command)."""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from typing import Any

import pytest
import structlog

from scripts.farmctl import main
from tests.integration.conftest import Accounts, Client, bearer, error_code
from tests.integration.rides_support import ensure_region, ride_body

AUDIT = "/api/v1/admin/audit"


async def farmctl(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None,
                  monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    """Run `farmctl argv` in this process, off the test's event loop (it runs its own)."""
    capsys.readouterr()
    if stdin is not None and monkeypatch is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))

    def run() -> int:
        with structlog.testing.capture_logs():
            return main(list(argv), configure_logs=False)

    code = await asyncio.to_thread(run)
    out, err = capsys.readouterr()
    return code, out, err


async def read_audit(api: Client, token: str, **query: Any) -> dict[str, Any]:
    response = await api.get(AUDIT, params=query, headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_admin_cancellation_is_audited_with_the_admins_email_and_the_reason(
    api: Client, accounts: Accounts
) -> None:
    # Given a customer's ride and an admin
    await ensure_region(api)
    customer = await accounts.register("customer")
    ride = (await api.post("/api/v1/rides", json=ride_body(), headers=bearer(customer["accessToken"]))).json()
    admin = await accounts.admin()

    # When the admin cancels it
    response = await api.post(f"/api/v1/rides/{ride['id']}/cancel", json={"reason": "fraud report"},
                              headers=bearer(admin["accessToken"]))
    assert response.status_code == 200, response.text

    # Then the audit log has it, naming the admin (id, role and email), the ride and the reason
    [entry] = (await read_audit(api, admin["accessToken"], action="ride.cancelled"))["items"]
    assert entry["actor"] == {"id": admin["user"]["id"], "role": "admin"}
    assert entry["operator"] == admin["user"]["email"]
    assert entry["target"] == {"type": "ride", "id": ride["id"]}
    assert entry["details"] == {"from": "PENDING_BIDS", "reason": "fraud report"}
    assert entry["at"].endswith("Z")


async def test_a_customers_own_cancellation_is_not_an_audited_admin_action(
    api: Client, accounts: Accounts
) -> None:
    await ensure_region(api)
    customer = await accounts.register("customer")
    ride = (await api.post("/api/v1/rides", json=ride_body(), headers=bearer(customer["accessToken"]))).json()
    response = await api.post(f"/api/v1/rides/{ride['id']}/cancel", json={},
                              headers=bearer(customer["accessToken"]))
    assert response.status_code == 200, response.text

    admin = await accounts.admin()
    assert (await read_audit(api, admin["accessToken"], action="ride.cancelled"))["items"] == []


async def test_the_audit_log_reads_newest_first_filtered_and_in_pages(
    api: Client, accounts: Accounts
) -> None:
    # Given an admin who suspended and re-activated two drivers
    admin = await accounts.admin()
    token = admin["accessToken"]
    drivers = [await accounts.register("driver") for _ in range(2)]
    for driver in drivers:
        for verb in ("suspend", "activate"):
            response = await api.post(f"/api/v1/admin/drivers/{driver['user']['id']}/{verb}",
                                      json={"reason": f"{verb} it"}, headers=bearer(token))
            assert response.status_code == 204

    # When the admin reads the log two entries at a time
    first = await read_audit(api, token, limit=2)
    second = await read_audit(api, token, limit=2, cursor=first["nextCursor"])
    third = await read_audit(api, token, limit=2, cursor=second["nextCursor"])

    # Then every action comes once, newest first, and the last page says there is no more
    actions = [(e["action"], e["target"]["id"]) for page in (first, second, third) for e in page["items"]]
    one, two = (d["user"]["id"] for d in drivers)
    assert actions == [("driver.activated", two), ("driver.suspended", two), ("driver.activated", one),
                       ("driver.suspended", one), ("admin.created", admin["user"]["id"])]
    assert third["nextCursor"] is None
    assert all(e["operator"] == admin["user"]["email"] for page in (first, second) for e in page["items"])

    # And the filters narrow it: by action prefix, by target, by operator text, by time
    by_prefix = await read_audit(api, token, action="driver.")
    assert len(by_prefix["items"]) == 4
    by_target = await read_audit(api, token, targetId=one)
    assert [e["action"] for e in by_target["items"]] == ["driver.activated", "driver.suspended"]
    by_operator = await read_audit(api, token, operator=admin["user"]["email"].split("@")[0].upper())
    assert len(by_operator["items"]) == 4  # the admin's own creation was at a terminal (no operator)
    by_actor = await read_audit(api, token, actorId=admin["user"]["id"], action="driver.activated")
    assert len(by_actor["items"]) == 2
    assert (await read_audit(api, token, since="2099-01-01T00:00:00Z"))["items"] == []


@pytest.mark.parametrize("query", [{"cursor": "not-a-cursor"}, {"since": "9" * 40 + "d"},
                                   {"since": "99999999999999999w"}, {"limit": "0"}, {"actorId": "x"}])
async def test_bad_audit_queries_are_a_400_that_names_the_field(
    api: Client, accounts: Accounts, query: dict[str, str]
) -> None:
    admin = await accounts.admin()
    response = await api.get(AUDIT, params=query, headers=bearer(admin["accessToken"]))
    assert response.status_code == 400, response.text
    assert error_code(response) == "VALIDATION_ERROR"


async def test_only_admins_read_the_audit_log(api: Client, accounts: Accounts) -> None:
    for role in ("customer", "driver"):
        caller = await accounts.register(role)
        response = await api.get(AUDIT, headers=bearer(caller["accessToken"]))
        assert response.status_code == 403 and error_code(response) == "FORBIDDEN"
    response = await api.get(AUDIT)
    assert response.status_code == 401 and error_code(response) == "INVALID_TOKEN"


async def test_every_changing_farmctl_command_is_audited_with_by_or_user_at_host(
    api: Client, accounts: Accounts, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # When an operator sets a region (naming itself), creates an admin and seeds demo data (not naming
    # itself), then suspends a driver
    assert (await farmctl(capsys, "regions", "set", "LIS", "--name", "Lisbon", "--currency", "EUR",
                          "--commission", "0.1", "--by", "ana@ops"))[0] == 0
    code, _, err = await farmctl(capsys, "users", "create-admin", "root@example.com",
                                 stdin="pw-long-enough\npw-long-enough\n", monkeypatch=monkeypatch)
    assert code == 0, err
    assert (await farmctl(capsys, "demo", "seed", "--region", "LIS", "--drivers", "1",
                          "--by", "ana@ops"))[0] == 0
    driver = await accounts.register("driver")
    assert (await farmctl(capsys, "drivers", "suspend", driver["user"]["id"], "--reason", "docs",
                          "--by", "bo@ops"))[0] == 0

    # Then `farmctl audit` lists each, newest first, with who ran it; user@host where --by was not given
    code, out, _ = await farmctl(capsys, "audit", "--json")
    assert code == 0
    entries = [json.loads(line) for line in out.splitlines()]
    here = f"{getpass.getuser()}@{socket.gethostname()}"
    assert [(e["action"], e["operator"], e["actor"]["role"]) for e in entries] == [
        ("driver.suspended", "bo@ops", "cli"),
        ("demo.seeded", "ana@ops", "cli"),
        ("region.set", "ana@ops", "cli"),  # the demo's region
        ("admin.created", here, "cli"),
        ("region.set", "ana@ops", "cli"),
    ]
    assert entries[0]["details"] == {"reason": "docs"}
    assert entries[4]["target"] == {"type": "region", "id": "LIS"}

    # And it filters, prints a table, and exits 1 when nothing matches
    code, out, _ = await farmctl(capsys, "audit", "--operator", "ana@", "--action", "region.")
    assert code == 0
    assert out.count("region.set") == 2 and "ana@ops" in out and "demo.seeded" not in out
    code, _, err = await farmctl(capsys, "audit", "--action", "payment.")
    assert code == 1 and "no audit entry matches" in err
    code, _, err = await farmctl(capsys, "audit", "--since", "99999999999999999999999d")
    assert code == 2 and "since" in err


async def test_db_upgrade_is_audited_and_a_refused_region_code_writes_nothing(
    api: Client, accounts: Accounts, capsys: pytest.CaptureFixture[str]
) -> None:
    # When an operator migrates the (already migrated) database
    code, _, err = await farmctl(capsys, "db", "upgrade", "--by", "release@ci")
    assert code == 0, err
    # And sets a region whose code carries a trailing newline
    code, _, err = await farmctl(capsys, "regions", "set", "BER\n", "--name", "Berlin", "--currency", "EUR",
                                 "--commission", "0.1")
    assert code == 2 and "region code" in err

    # Then only the upgrade is in the audit log
    admin = await accounts.admin()
    items = (await read_audit(api, admin["accessToken"], action="db.upgraded"))["items"]
    assert [(e["operator"], e["details"]) for e in items] == [("release@ci", {"revision": "head"})]
    assert (await read_audit(api, admin["accessToken"], action="region.set"))["items"] == []
