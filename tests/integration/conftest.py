"""Integration fixtures: an API driver for the auth routes, extra app instances, throw-away Redis.

Everything runs against the real PostgreSQL of the run; a throw-away `redis-server` (no
persistence, loopback, free port) stands in when a test needs to stop or restart Redis. Servers
are stopped by the PID this file started, never by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.db import AsyncUnitOfWork
from app.settings import Settings, get_settings

PASSWORD = "correct-horse-battery"

Client = AsyncTestClient[Any]


@contextlib.asynccontextmanager
async def own_session() -> AsyncIterator[AsyncSession]:
    """A session on the test's own engine, in the test's event loop.

    The app under test runs in the test client's thread and loop; sharing its engine from the
    test's loop can lose a wake-up between the two loops and hang the run.
    """
    engine = create_async_engine(get_settings().db.url, poolclass=NullPool)
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            yield session
    finally:
        await engine.dispose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_code(response: httpx.Response) -> str:
    """The API error code of a response (fails loudly if the body is not the error shape)."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return str(body["error"]["code"])


class Accounts:
    """Registers and logs people in through one API client, the way an app would."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._numbers = itertools.count(1)

    def fresh_email(self, who: str = "user") -> str:
        return f"{who}{next(self._numbers)}@example.com"

    async def register(self, role: str = "customer", **fields: Any) -> dict[str, Any]:
        """A new account's session: `{user, accessToken, refreshToken, ...}`."""
        body: dict[str, Any] = {
            "email": self.fresh_email(role),
            "password": PASSWORD,
            "fullName": f"A {role}",
            "phone": "+4917012345678",
            "role": role,
        }
        if role == "driver":
            body["vehicleType"] = "van"
        body.update(fields)
        response = await self.client.post("/api/v1/auth/register", json=body)
        assert response.status_code == 201, response.text
        session: dict[str, Any] = response.json()
        return session

    async def login(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return await self.client.post("/api/v1/auth/login", json={"email": email, "password": password})

    async def session(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        response = await self.login(email, password)
        assert response.status_code == 200, response.text
        session: dict[str, Any] = response.json()
        return session

    async def admin(self, *, read_only: bool = False) -> dict[str, Any]:
        """An admin created the way `farmctl users create-admin [--read-only]` does, then logged in."""
        from app.services.accounts import create_admin
        from models import AdminAccess

        email = self.fresh_email("support" if read_only else "admin")
        async with own_session() as session:
            uow = AsyncUnitOfWork(session)
            await create_admin(uow, email, PASSWORD, "An admin", "+4917000000001",
                               access=AdminAccess.READ_ONLY if read_only else AdminAccess.FULL)
            await uow.commit()
        return await self.session(email)

    async def me(self, access_token: str) -> httpx.Response:
        return await self.client.get("/api/v1/me", headers=bearer(access_token))

    async def refresh(self, refresh_token: str) -> httpx.Response:
        return await self.client.post("/api/v1/auth/refresh", json={"refreshToken": refresh_token})


@pytest.fixture
def accounts(api: Client) -> Accounts:
    return Accounts(api)


AppFactory = Callable[[Settings], Awaitable[Client]]


@pytest.fixture
async def make_client(clean: None) -> AsyncIterator[AppFactory]:
    """Builds extra app instances (like extra web processes), each with its own clients."""
    async with contextlib.AsyncExitStack() as stack:

        async def build(settings: Settings) -> Client:
            from app.api.app import create_app

            return await stack.enter_async_context(AsyncTestClient(app=create_app(settings)))

        yield build


def with_redis(settings: Settings, url: str) -> Settings:
    return dataclasses.replace(settings, redis=dataclasses.replace(settings.redis, url=url))


def forget_everything_in_redis(settings: Settings) -> None:
    """What a Redis restarted without persistence looks like to the app: the run's keys are gone."""
    from app.redis_conn import create_sync_redis

    client = create_sync_redis(settings.redis)
    try:
        keys = list(client.scan_iter(match=f"{settings.redis.prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the web process's ASGI app on a real port ----------------------------------------------------
WEB_START_S = 10.0


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The web process's ASGI app (API + Socket.IO) under uvicorn in a thread, started as the
    Procfile starts it (no proxy headers: the app decides whose X-Forwarded-For counts)."""
    import threading

    import uvicorn

    from app.asgi import build_asgi

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_asgi(settings), host="127.0.0.1", port=port, loop="asyncio",
                                           ws="websockets-sansio", lifespan="on", log_level="warning",
                                           proxy_headers=False))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + WEB_START_S
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=WEB_START_S)


@pytest.fixture
def web(clean: None, settings: Settings) -> Iterator[str]:
    """The web process on a real port; its base URL."""
    with serving(settings) as url:
        yield url


# --- throw-away Redis ----------------------------------------------------------------------------


@dataclasses.dataclass
class RedisServer:
    """A `redis-server` this test started: no persistence, loopback only, stopped by PID."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} exited "
                                       f"with {self.process.returncode}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout_s}s")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """Stop it the hard way (SIGKILL to its PID), as a crash would, and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running throw-away Redis on a free loopback port."""
    server = RedisServer(port=free_port(), workdir=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


#: The sockets tests' name for `serving`.
serve_web = serving
