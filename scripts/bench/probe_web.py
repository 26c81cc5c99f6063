"""The farm's web app with every Redis call timed per request — a benchmark's wrapper, not app code.

    uvicorn scripts.bench.probe_web:app ...      (the Procfile's web line with the app swapped)

`bench_rides.py` starts it to show how much of `POST /api/v1/rides` is spent on Redis:

- Redis calls made while a request is being handled are counted and timed, split into *awaited*
  (redis.asyncio: the event loop serves other requests meanwhile) and *blocking* (redis-py's sync
  client: the whole event loop, every request and socket of the process, waits);
- `BENCH_ENQUEUE=send` replaces the outbox write in `app.services.rides` with what a naive handler
  would do: the Dramatiq actor's `send()` (a blocking Redis call) — only inside this process, only
  for the measurement;
- `GET /__bench__/redis` answers the totals (and calls per command) as JSON, `POST` resets them.

Nothing here is imported by the farm; the patches live only in the process that imports this module.
"""

from __future__ import annotations

import contextvars
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio.client as async_client
import redis.client as sync_client

STATS_PATH = "/__bench__/redis"


@dataclass
class Totals:
    requests: int = 0
    #: "awaited MGET" / "blocking EVALSHA" → [calls, seconds]
    commands: dict[str, list[float]] = field(default_factory=dict)
    request_s: float = 0.0
    awaited_calls: int = 0
    awaited_s: float = 0.0
    blocking_calls: int = 0
    blocking_s: float = 0.0
    first_start: float = 0.0
    last_end: float = 0.0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["window_s"] = max(self.last_end - self.first_start, 0.0)
        return data


@dataclass
class _Current:
    awaited_calls: int = 0
    awaited_s: float = 0.0
    blocking_calls: int = 0
    blocking_s: float = 0.0
    commands: list[tuple[str, float]] = field(default_factory=list)

    def add(self, kind: str, args: tuple[Any, ...], spent: float) -> None:
        """One Redis call of the request: `kind` is "awaited" or "blocking"."""
        if kind == "awaited":
            self.awaited_calls += 1
            self.awaited_s += spent
        else:
            self.blocking_calls += 1
            self.blocking_s += spent
        self.commands.append((f"{kind} {_command_name(args)}", spent))


class _Timed:
    """Times the call it wraps into the request's `_Current`."""

    __slots__ = ("args", "current", "kind", "started")

    def __init__(self, current: _Current, kind: str, args: tuple[Any, ...]) -> None:
        self.current, self.kind, self.args, self.started = current, kind, args, 0.0

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.current.add(self.kind, self.args, time.perf_counter() - self.started)


def _command_name(args: tuple[Any, ...]) -> str:
    return str(args[0]).upper() if args else "PIPELINE"


_totals = Totals()
_current: contextvars.ContextVar[_Current | None] = contextvars.ContextVar("bench_redis", default=None)


def _time_async(original: Any) -> Any:
    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        current = _current.get()
        if current is None:
            return await original(self, *args, **kwargs)
        with _Timed(current, "awaited", args):
            return await original(self, *args, **kwargs)

    return timed


def _time_sync(original: Any) -> Any:
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        current = _current.get()
        if current is None:
            return original(self, *args, **kwargs)
        with _Timed(current, "blocking", args):
            return original(self, *args, **kwargs)

    return timed


def _install_redis_timers() -> None:
    # A pipeline is one round trip: time its `execute`, not the commands it buffers.
    async_client.Redis.execute_command = _time_async(async_client.Redis.execute_command)  # type: ignore[method-assign]
    async_client.Pipeline.execute = _time_async(async_client.Pipeline.execute)  # type: ignore[method-assign]
    sync_client.Redis.execute_command = _time_sync(sync_client.Redis.execute_command)  # type: ignore[method-assign]
    sync_client.Pipeline.execute = _time_sync(sync_client.Pipeline.execute)  # type: ignore[method-assign]


def _install_send_enqueue() -> None:
    """`create_ride` also enqueues `dispatch.step` with a blocking `actor.send()` in the handler.

    The ride is still written with its outbox row (one statement); the difference between the two
    runs is what a direct Redis enqueue on the event loop costs each request.
    """
    import jobs  # builds the farm's broker from this process's settings
    from app.services import rides

    create_ride = rides.create_ride

    async def create_ride_and_send(*args: Any, **kwargs: Any) -> Any:
        view = await create_ride(*args, **kwargs)
        jobs.broker.get_actor("dispatch.step").send(str(view.ride.id), 0)
        return view

    rides.create_ride = create_ride_and_send


_install_redis_timers()
if os.environ.get("BENCH_ENQUEUE", "outbox") == "send":
    _install_send_enqueue()

from app.asgi import app as farm_app  # noqa: E402 - after the patches, as the farm would import it


async def _answer_stats(scope: Any, receive: Any, send: Any) -> None:
    global _totals
    if scope["method"] == "POST":
        _totals = Totals()
    body = json.dumps(_totals.as_json()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http" or scope["path"] in ("/ready", "/health"):
        await farm_app(scope, receive, send)
        return
    if scope["path"] == STATS_PATH:
        await _answer_stats(scope, receive, send)
        return
    current = _Current()
    token = _current.set(current)
    started = time.perf_counter()
    try:
        await farm_app(scope, receive, send)
    finally:
        ended = time.perf_counter()
        _current.reset(token)
        totals = _totals
        if totals.requests == 0:
            totals.first_start = started
        totals.requests += 1
        totals.request_s += ended - started
        totals.last_end = ended
        totals.awaited_calls += current.awaited_calls
        totals.awaited_s += current.awaited_s
        totals.blocking_calls += current.blocking_calls
        totals.blocking_s += current.blocking_s
        for name, spent in current.commands:
            entry = totals.commands.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += spent
