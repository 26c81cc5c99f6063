"""Request-scoped dependencies: the unit of work, the caller, rate limits."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any, TypeAlias

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from app.api.context import WebContext
from app.db import AsyncUnitOfWork, async_unit_of_work
from app.errors import AppError, ServiceUnavailable
from app.logging import get_logger
from app.redis_conn import REDIS_ERRORS
from app.services.access import Principal
from app.settings import Bucket, LimitSettings

log = get_logger("api")

#: Handler parameter types for the named dependencies every controller uses.
UnitOfWorkDep: TypeAlias = NamedDependency[AsyncUnitOfWork]
CallerDep: TypeAlias = NamedDependency[Principal]
RateLimitDep: TypeAlias = NamedDependency[None]


def web_context(state: State) -> WebContext:
    ctx: WebContext = state.ctx
    return ctx


async def _commit(uow: AsyncUnitOfWork) -> None:
    """Commit, then run the after-commit actions; Redis failing there is a 503 (the change is kept)."""
    try:
        await uow.session.commit()
    except BaseException:
        await uow.rollback()
        raise
    try:
        await uow.run_after_commit()
    except REDIS_ERRORS as error:
        log.error("api.after_commit_failed", error=repr(error))
        raise ServiceUnavailable(
            "The change was saved but could not be published yet; repeat the request.",
            details={"dependency": "redis"},
        ) from error


def _keeps_changes(error: BaseException) -> bool:
    return isinstance(error, AppError) and error.keeps_changes


async def provide_uow(state: State) -> AsyncGenerator[AsyncUnitOfWork, None]:
    """The request's unit of work: committed when the handler returns, rolled back if it raises
    (committed first if the error keeps its changes, `AppError.keeps_changes`)."""
    async with async_unit_of_work(web_context(state).sessions, commit=_commit,
                                  keeps_changes=_keeps_changes) as uow:
        yield uow


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


#: Methods that change nothing: all a read-only admin may send (beside its own account's routes).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Routes about the caller's own session and account, open to a read-only admin whatever the method.
OWN_ACCOUNT_PREFIXES = ("/api/v1/auth/", "/api/v1/me")


async def provide_principal(request: Request[Any, Any, Any], state: State) -> Principal:
    """The authenticated caller (401/403/503 otherwise). A read-only admin gets 403
    (`READ_ONLY_ADMIN`) here for any request that could change something, on every route."""
    try:
        principal = await web_context(state).gate.authenticate(bearer_token(request))
    except REDIS_ERRORS as error:
        log.error("auth.revocation_check_unavailable", error=repr(error))
        raise ServiceUnavailable("Token checks are unavailable; try again shortly.",
                                 details={"dependency": "redis"}) from error
    if principal.read_only and request.method not in SAFE_METHODS \
            and not request.scope["path"].startswith(OWN_ACCOUNT_PREFIXES):
        principal.require_write()
    return principal


def client_address(request: Request[Any, Any, Any], trusted: Sequence[IPv4Network | IPv6Network]) -> str:
    peer = request.client.host if request.client else "unknown"
    return pick_client_address(peer, request.headers.getall("x-forwarded-for", []), trusted)


def pick_client_address(peer: str, forwarded_for: Sequence[str],
                        trusted: Sequence[IPv4Network | IPv6Network]) -> str:
    """The client behind `trusted` proxies: walking `X-Forwarded-For` from the right (the hop
    nearest us), the first address that is not a trusted proxy. Entries left of it are whatever the
    client wrote and are never believed. A peer that is not a trusted proxy is the client itself;
    a malformed entry stops the walk at the last trusted hop."""
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    nearest = peer
    for hop in reversed(hops):
        try:
            address = ip_address(hop)
        except ValueError:
            return nearest
        if not any(address in network for network in trusted):
            return str(address)
        nearest = str(address)
    return nearest


def _is_trusted(host: str, trusted: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        address = ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in trusted)


async def auth_rate_limit(request: Request[Any, Any, Any], state: State) -> None:
    """Per client address and route: `AUTH_RATE_LIMIT_REQUESTS` requests per `AUTH_RATE_LIMIT_WINDOW`
    seconds."""
    ctx = web_context(state)
    route = request.scope["path"].rsplit("/", 1)[-1]
    address = client_address(request, ctx.settings.auth.trusted_proxies)
    try:
        await ctx.limiter.hit(f"auth-{route}", address, limit=ctx.settings.auth.rate_limit_requests,
                              window_s=ctx.settings.auth.rate_limit_window_s)
    except REDIS_ERRORS as error:
        raise ServiceUnavailable("Rate limits are unavailable; try again shortly.",
                                 details={"dependency": "redis"}) from error


def caller_with_role(name: str, role: str) -> dict[str, Provide]:
    """Controller dependencies: `principal`, and `name` — the caller, 403 unless it has `role`."""

    async def provide(principal: CallerDep) -> Principal:
        principal.require_role(role)
        return principal

    return {"principal": Provide(provide_principal), name: Provide(provide)}


def user_rate_limit(scope: str, bucket: Callable[[LimitSettings], Bucket]) -> dict[str, Provide]:
    """Route dependency `limit`: one request from the caller's `scope` bucket (`LimitSettings`),
    shared by every web process; 429 `RATE_LIMITED` with `Retry-After` when it is empty."""

    async def provide(principal: CallerDep, state: State) -> None:
        ctx = web_context(state)
        try:
            await ctx.limiter.take(scope, str(principal.id), bucket(ctx.settings.limits))
        except REDIS_ERRORS as error:
            raise ServiceUnavailable("Rate limits are unavailable; try again shortly.",
                                     details={"dependency": "redis"}) from error

    return {"limit": Provide(provide)}


#: The per-user limits of the authenticated writes (see `LimitSettings`).
RIDE_LIMIT = user_rate_limit("rides", lambda limits: limits.rides)
WRITE_LIMIT = user_rate_limit("writes", lambda limits: limits.writes)
LOCATION_LIMIT = user_rate_limit("location", lambda limits: limits.location)
PAYMENT_SETUP_LIMIT = user_rate_limit("payment-setup", lambda limits: limits.payment_setup)
