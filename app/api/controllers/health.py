"""`/health` (the process is alive) and `/ready` (its dependencies answer)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import text

from app.api.dependencies import web_context
from app.api.schemas import HealthOut
from app.logging import get_logger

log = get_logger("api.health")


@get("/health", tags=["ops"], include_in_schema=True)
async def health() -> HealthOut:
    """Liveness: answers while the process serves requests."""
    return HealthOut(status="ok")


@get("/ready", tags=["ops"])
async def ready(state: State) -> Response[Any]:
    """Readiness: PostgreSQL and Redis both answer within a second."""
    ctx = web_context(state)

    async def postgres() -> None:
        async with ctx.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await ctx.redis.ping()

    checks: dict[str, str] = {}
    for name, probe in (("postgres", postgres), ("redis", redis)):
        try:
            await asyncio.wait_for(probe(), timeout=1.0)
            checks[name] = "ok"
        except Exception as error:
            log.warning("ready.dependency_down", dependency=name, error=repr(error))
            checks[name] = "unavailable"
    down = [name for name, status in checks.items() if status != "ok"]
    if down:
        body = {"error": {"code": "SERVICE_UNAVAILABLE", "message": f"Unavailable: {', '.join(down)}.",
                          "details": {"checks": checks}}}
        return Response(body, status_code=503)
    return Response({"status": "ready", "checks": checks}, status_code=200)
