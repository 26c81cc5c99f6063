"""`farmctl drivers suspend|activate`: the same services as the admin routes, audited as the CLI.

Suspension must refuse the driver's tokens at once (checked through the API) and disconnect its
live sockets: a real worker relays the `sessions.end_sockets` job the suspension wrote to the
outbox, and the driver's real sockets (on the web process under uvicorn) are ended.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from sqlalchemy import select

from app.settings import Settings
from models import AuditEntry
from scripts.farmctl import main
from tests.integration.conftest import Accounts, error_code, own_session
from tests.integration.test_socket_sessions import Socket, sockets_fixture  # noqa: F401  (fixture)
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    WorkerFactory,
    broker_redis_fixture,
    start_worker_fixture,
    wait_for,
)


async def farmctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `farmctl argv` in this process, off the test's event loop (it runs its own)."""
    capsys.readouterr()

    def run() -> int:
        with structlog.testing.capture_logs():
            return main(list(argv), configure_logs=False)

    code = await asyncio.to_thread(run)
    out, err = capsys.readouterr()
    return code, out, err


async def audit(driver_id: str) -> list[tuple[str, Any, str, dict[str, Any]]]:
    async with own_session() as session:
        rows = (await session.execute(
            select(AuditEntry.action, AuditEntry.actor_id, AuditEntry.actor_role, AuditEntry.details)
            .where(AuditEntry.target_id == driver_id).order_by(AuditEntry.id))).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_suspend_refuses_tokens_at_once_disconnects_sockets_and_activate_lets_the_driver_back(
    web: str, accounts: Accounts, start_worker: WorkerFactory, settings: Settings,
    capsys: pytest.CaptureFixture[str], sockets: Callable[[str, str], Awaitable[Socket]],
) -> None:
    # Given a signed-in driver with two live sockets, and a worker relaying the outbox
    driver = await accounts.register("driver")
    driver_id, email = driver["user"]["id"], driver["user"]["email"]
    live = [await sockets(web, driver["accessToken"]) for _ in range(2)]
    start_worker(relay=settings)

    # When the admin suspends it from the terminal
    code, out, err = await farmctl(capsys, "drivers", "suspend", driver_id, "--reason", "documents expired")

    # Then every token and a new login are refused at once
    assert code == 0, err
    assert f"driver {driver_id} suspended" in out
    for attempt in (await accounts.me(driver["accessToken"]), await accounts.refresh(driver["refreshToken"]),
                    await accounts.login(email)):
        assert attempt.status_code == 403, attempt.text
        assert error_code(attempt) == "ACCOUNT_DEACTIVATED"
    # And its sockets are told and disconnected
    for socket in live:
        assert await socket.disconnected(), "a suspended driver's socket stayed connected"
        assert socket.ended == [{"userId": driver_id, "reason": "suspended"}]

    # When the admin activates it again
    code, out, err = await farmctl(capsys, "drivers", "activate", driver_id, "--reason", "renewed")
    # Then old tokens stay refused, and a new login works
    assert code == 0, err
    assert error_code(await accounts.me(driver["accessToken"])) == "TOKEN_REVOKED"
    fresh = await accounts.session(email)
    assert (await accounts.me(fresh["accessToken"])).status_code == 200
    # And both are audited as done from the CLI
    assert await audit(driver_id) == [("driver.suspended", None, "cli", {"reason": "documents expired"}),
                                      ("driver.activated", None, "cli", {"reason": "renewed"})]


async def test_driver_commands_refuse_bad_ids_in_one_line(
    accounts: Accounts, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = await accounts.register("customer")
    for argv, code in [
        (["drivers", "suspend", str(uuid.uuid4()), "--reason", "x"], 1),  # no such driver
        (["drivers", "suspend", customer["user"]["id"], "--reason", "x"], 1),  # not a driver
        (["drivers", "suspend", "driver-7", "--reason", "x"], 2),  # not an id
        (["drivers", "activate", str(uuid.uuid4())], 2),  # --reason missing
    ]:
        got, out, err = await farmctl(capsys, *argv)
        assert got == code, (argv, err)
        # the reason on stderr, no traceback, nothing done (the app under test may log on stdout)
        assert "farmctl" in err and "Traceback" not in err, argv
        assert not any(line.startswith("driver ") for line in out.splitlines()), argv
    assert (await accounts.me(customer["accessToken"])).status_code == 200
