"""Sockets end with their session: at their token's expiry, on logout (that session only), on
logout-all; and `sessions.end_sockets` makes sure every live socket server carried it out.

The web process's real ASGI app runs under uvicorn; a real Dramatiq worker relays the outbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio as aredis
import socketio

import jobs.sessions as sessions_job
from app.keys import QUEUE_MAINTENANCE, RedisKeys
from app.realtime.sessions import SocketRegistry
from app.settings import Settings
from jobs.sessions import SocketServersMissed
from tests.integration.conftest import Accounts, AppFactory, RedisServer, bearer, serve_web, with_redis
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    WorkerFactory,
    broker_redis_fixture,
    db_fixture,
    drain,
    failed_jobs,
    start_worker_fixture,
    wait_for,
)

DEADLINE_S = 20.0


class Socket:
    """A Socket.IO client that records `session:ended` (without its `at`) and whether it was
    disconnected."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.ended: list[dict[str, Any]] = []
        self.stamps: list[str] = []
        self.gone = asyncio.Event()
        self.client.on("session:ended", self.on_ended)
        self.client.on("disconnect", self.on_disconnect)

    def on_ended(self, payload: dict[str, Any]) -> None:
        self.stamps.append(payload.get("at", ""))
        self.ended.append({key: value for key, value in payload.items() if key != "at"})

    def on_disconnect(self, *reason: Any) -> None:
        self.gone.set()

    async def connect(self, web: str, token: str) -> Socket:
        await self.client.connect(web, transports=["websocket"], auth={"token": token},
                                  socketio_path="socket.io", wait_timeout=DEADLINE_S)
        return self

    async def disconnected(self) -> bool:
        with_deadline = asyncio.wait_for(self.gone.wait(), timeout=DEADLINE_S)
        try:
            await with_deadline
        except TimeoutError:
            return False
        return True


@pytest.fixture(name="sockets")
async def sockets_fixture() -> AsyncIterator[Callable[[str, str], Awaitable[Socket]]]:
    made: list[Socket] = []

    async def open_socket(web: str, token: str) -> Socket:
        socket = Socket()
        made.append(socket)
        return await socket.connect(web, token)

    yield open_socket
    for socket in made:
        if socket.client.connected:
            await socket.client.disconnect()


async def test_a_logout_ends_that_sessions_socket_but_not_the_users_other_session(
    web: str, accounts: Accounts, start_worker: WorkerFactory, settings: Settings,
    sockets: Callable[[str, str], Awaitable[Socket]],
) -> None:
    # Given a customer signed in twice (a phone and a laptop), each with a live socket
    first = await accounts.register()
    second = await accounts.session(first["user"]["email"])
    phone = await sockets(web, first["accessToken"])
    laptop = await sockets(web, second["accessToken"])
    start_worker(relay=settings)

    # When the phone's session logs out
    response = await accounts.client.post("/api/v1/auth/logout", headers=bearer(first["accessToken"]))
    assert response.status_code == 204

    # Then the phone's socket is told and disconnected
    assert await phone.disconnected(), "the logged-out session's socket stayed connected"
    assert phone.ended == [{"userId": first["user"]["id"], "reason": "logout"}]
    assert datetime.fromisoformat(phone.stamps[0]).tzinfo is not None
    # And once the job is done, the laptop's socket is still connected and was told nothing
    await asyncio.to_thread(drain, QUEUE_MAINTENANCE)
    assert laptop.client.connected
    assert laptop.ended == []

    # When the customer logs out everywhere, Then the laptop's socket is ended too
    response = await accounts.client.post("/api/v1/auth/logout-all", headers=bearer(second["accessToken"]))
    assert response.status_code == 204
    assert await laptop.disconnected()
    assert laptop.ended == [{"userId": first["user"]["id"], "reason": "logout_all"}]


async def test_a_socket_is_disconnected_at_its_tokens_expiry(
    settings: Settings, clean: None, make_client: AppFactory,
    sockets: Callable[[str, str], Awaitable[Socket]],
) -> None:
    # Given access tokens that live two seconds, and a customer's socket opened with one
    short = dataclasses.replace(settings, auth=dataclasses.replace(settings.auth, access_token_ttl_s=2))
    accounts = Accounts(await make_client(short))
    customer = await accounts.register()
    with serve_web(short) as web:
        socket = await sockets(web, customer["accessToken"])
        assert socket.client.connected

        # When the token expires, Then the server disconnects the socket, saying why
        assert await socket.disconnected(), "a socket outlived its token"
        assert socket.ended == [{"userId": customer["user"]["id"], "reason": "token_expired"}]
        assert not socket.client.connected  # so it receives no further events


async def test_after_its_end_requests_were_cut_a_server_rechecks_its_sockets_and_ends_the_revoked(
    settings: Settings, make_client: AppFactory, redis_server: RedisServer,
    sockets: Callable[[str, str], Awaitable[Socket]],
) -> None:
    # Given a socket server on a Redis of its own, holding sockets of two sessions of a customer
    own = with_redis(settings, redis_server.url)
    accounts = Accounts(await make_client(own))
    first = await accounts.register()
    second = await accounts.session(first["user"]["email"])
    with serve_web(own) as web:
        laptop = await sockets(web, second["accessToken"])  # held first, so rechecked first
        phone = await sockets(web, first["accessToken"])

        # When the phone's session logs out while no worker runs (its end request is never sent,
        # as for a server cut off past its heartbeat), and the server's subscriptions are cut
        response = await accounts.client.post("/api/v1/auth/logout", headers=bearer(first["accessToken"]))
        assert response.status_code == 204
        admin = redis.Redis(host="127.0.0.1", port=redis_server.port)
        try:
            assert admin.client_kill_filter(_type="pubsub") >= 1
        finally:
            admin.close()

        # Then, once resubscribed, the server rechecks its sockets: the revoked one is ended
        assert await phone.disconnected(), "a revoked socket outlived a gap in the end requests"
        assert phone.ended == [{"userId": first["user"]["id"], "reason": "revoked"}]
        # And the other session's socket, still allowed, stays
        assert laptop.client.connected
        assert laptop.ended == []


def test_the_job_fails_while_a_live_socket_server_has_not_acknowledged(
    clean: None, broker_redis: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a socket server with a fresh heartbeat that never carries out end requests (stuck)
    keys = RedisKeys(settings.redis)
    stuck = f"stuck-{uuid.uuid4().hex}"
    broker_redis.zadd(keys.socket_servers(), {stuck: time.time()})
    monkeypatch.setattr(sessions_job, "ACK_WAIT_S", 0.3)
    try:
        # When a user's sockets are ended (one attempt), Then the attempt fails, to be retried
        with pytest.raises(SocketServersMissed):
            sessions_job.end_everywhere(broker_redis, keys, str(uuid.uuid4()), "logout_all")
        # And once its heartbeat lapses (the server is gone, with its sockets) the attempt succeeds
        broker_redis.zadd(keys.socket_servers(), {stuck: time.time() - 3600})
        sessions_job.end_everywhere(broker_redis, keys, str(uuid.uuid4()), "logout_all")
    finally:
        broker_redis.zrem(keys.socket_servers(), stuck)


async def test_the_job_retries_until_a_late_socket_server_acknowledges(
    start_worker: WorkerFactory, broker_redis: redis.Redis, settings: Settings, db: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a socket server with a fresh heartbeat that is not yet following end requests
    keys = RedisKeys(settings.redis)
    late = f"late-{uuid.uuid4().hex}"
    broker_redis.zadd(keys.socket_servers(), {late: time.time()})
    monkeypatch.setattr(sessions_job, "ACK_WAIT_S", 0.3)
    bus = broker_redis.pubsub()
    bus.subscribe(keys.socket_end_channel())
    wait_for(lambda: bus.get_message(timeout=0.1), what="the test's subscription")
    published: list[str] = []

    def heard(times: int) -> bool:
        while (item := bus.get_message(timeout=0.05)) is not None:
            published.append(msgspec.json.decode(item["data"])["request"])
        return len(published) >= times

    async def nothing_to_end(sid: str, user_id: str, reason: str) -> None:
        raise AssertionError("this server holds no sockets")

    client = aredis.Redis.from_url(settings.redis.url)
    server = SocketRegistry(client, keys, nothing_to_end, server_id=late)
    start_worker()
    try:
        # When a user's sockets are ended, and the server starts following only after the first try
        message = sessions_job.end_sockets.send(str(uuid.uuid4()), "logout_all")
        await asyncio.to_thread(wait_for, lambda: heard(1), what="the first end request")
        await server.ensure_started()

        # Then the job is retried (the same request published again) until the server acked it
        await asyncio.to_thread(drain, QUEUE_MAINTENANCE, DEADLINE_S)
        await asyncio.to_thread(heard, 2)
        assert len(published) >= 2 and set(published) == {message.message_id}
        assert broker_redis.smembers(keys.socket_end_acks(message.message_id)) == {late.encode()}
        assert failed_jobs(db) == []
    finally:
        bus.close()
        await server.stop()
        await client.aclose()
