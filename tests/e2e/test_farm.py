"""The farm end to end: real web, worker and clock processes over real PostgreSQL and Redis.

- Sockets authenticate with the access token: a valid one is accepted, a garbage or logged-out
  one is refused.
- Logout-all reaches live sockets from a *worker* process: the API writes an outbox row, the
  worker's relay enqueues `sessions.end_sockets`, the job asks every socket server (the web
  process) to end the user's sockets and waits for its ack; the socket gets `session:ended`, then
  is disconnected.
- The clock's `tokens.cleanup` runs on a worker and purges a long-expired refresh token.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import socketio
from sqlalchemy import create_engine, insert, select

from app.settings import Settings
from models import RefreshToken
from tests.e2e.conftest import register_customer
from tests.e2e.farm import Farm

pytestmark = pytest.mark.e2e

DEADLINE_S = 20.0
POLL_S = 0.1


class SocketProbe:
    """A real python-socketio client that records what the server sends it, in order."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.connect_error: Any = None
        self.session_ended = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.client.on("connect_error", self._on_connect_error)
        self.client.on("session:ended", self._on_session_ended)
        self.client.on("disconnect", self._on_disconnect)

    async def connect(self, base_url: str, token: str) -> None:
        await self.client.connect(base_url, transports=["websocket"], auth={"token": token},
                                  socketio_path="socket.io", wait_timeout=10)

    async def close(self) -> None:
        if self.client.connected:
            await self.client.disconnect()

    async def _on_connect_error(self, data: Any) -> None:
        self.connect_error = data

    async def _on_session_ended(self, data: Any) -> None:
        self.events.append(("session:ended", data))
        self.session_ended.set()

    async def _on_disconnect(self, *reason: Any) -> None:
        self.events.append(("disconnect", reason))
        self.disconnected.set()


@pytest.fixture
async def probes() -> AsyncIterator[list[SocketProbe]]:
    made: list[SocketProbe] = []
    yield made
    for probe in made:
        await probe.close()


def refusal_code(probe: SocketProbe) -> str | None:
    """The API error code the server refused the connection with."""
    error = probe.connect_error
    if isinstance(error, dict) and isinstance(error.get("data"), dict):
        code = error["data"].get("code")
        return code if isinstance(code, str) else None
    return None


async def test_socket_accepts_a_valid_token_and_refuses_garbage_and_logged_out_tokens(
    farm: Farm, http: httpx.AsyncClient, probes: list[SocketProbe]
) -> None:
    # Given a registered customer who logs in over HTTP
    account = await register_customer(http)
    login = await http.post("/auth/login", json={"email": account["email"], "password": account["password"]})
    assert login.status_code == 200, login.text
    access = login.json()["accessToken"]

    # When a socket connects with the access token, Then it is accepted
    accepted = SocketProbe()
    probes.append(accepted)
    await accepted.connect(farm.base_url, access)
    assert accepted.client.connected
    assert accepted.client.get_sid() is not None

    # When a socket connects with a garbage token, Then it is refused as an invalid token
    garbage = SocketProbe()
    probes.append(garbage)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await garbage.connect(farm.base_url, "not-a-jwt")
    assert not garbage.client.connected
    assert refusal_code(garbage) == "INVALID_TOKEN", garbage.connect_error

    # When the customer logs out, Then a socket connecting with that token is refused as revoked
    logout = await http.post("/auth/logout", headers={"Authorization": f"Bearer {access}"})
    assert logout.status_code == 204, logout.text
    revoked = SocketProbe()
    probes.append(revoked)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await revoked.connect(farm.base_url, access)
    assert not revoked.client.connected
    assert refusal_code(revoked) == "TOKEN_REVOKED", revoked.connect_error


async def test_logout_all_ends_live_sockets_from_a_worker(
    farm: Farm, http: httpx.AsyncClient, probes: list[SocketProbe]
) -> None:
    # Given a customer with a live socket
    account = await register_customer(http)
    user_id = account["user"]["id"]
    access = account["accessToken"]
    probe = SocketProbe()
    probes.append(probe)
    await probe.connect(farm.base_url, access)
    assert probe.client.connected

    # When the customer logs out everywhere
    response = await http.post("/auth/logout-all", headers={"Authorization": f"Bearer {access}"})
    assert response.status_code == 204, response.text

    # Then a worker tells the socket its session ended, and then disconnects it
    async with asyncio.timeout(DEADLINE_S):
        await probe.session_ended.wait()
        await probe.disconnected.wait()
    names = [name for name, _ in probe.events]
    assert names == ["session:ended", "disconnect"], probe.events
    payload = probe.events[0][1]
    assert payload["userId"] == user_id
    assert payload["reason"] == "logout_all"
    assert datetime.fromisoformat(payload["at"]).tzinfo is not None
    assert not probe.client.connected


async def test_clock_cleanup_purges_an_expired_refresh_token_through_a_worker(
    farm: Farm, http: httpx.AsyncClient, settings: Settings
) -> None:
    # Given a customer holding a refresh token that expired 30 days ago and one that is still valid
    account = await register_customer(http)
    user_id = uuid.UUID(account["user"]["id"])
    now = datetime.now(UTC)
    expired_id, valid_id = uuid.uuid4(), uuid.uuid4()
    engine = create_engine(settings.db.url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(RefreshToken), [
                {"id": expired_id, "user_id": user_id, "family_id": uuid.uuid4(),
                 "token_hash": hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
                 "issued_at": now - timedelta(days=37), "expires_at": now - timedelta(days=30)},
                {"id": valid_id, "user_id": user_id, "family_id": uuid.uuid4(),
                 "token_hash": hashlib.sha256(secrets.token_bytes(32)).hexdigest(),
                 "issued_at": now, "expires_at": now + timedelta(days=7)},
            ])

        def remaining() -> set[uuid.UUID]:
            with engine.connect() as conn:
                return set(conn.scalars(
                    select(RefreshToken.id).where(RefreshToken.id.in_([expired_id, valid_id]))
                ))

        async def purged() -> set[uuid.UUID]:
            while True:
                left = remaining()
                if expired_id not in left:
                    return left
                await asyncio.sleep(POLL_S)

        # When the clock's tokens.cleanup runs on a worker (every second in this farm)
        async with asyncio.timeout(DEADLINE_S):
            left = await purged()

        # Then the expired token is gone and the valid one is kept
        assert left == {valid_id}
    finally:
        engine.dispose()
