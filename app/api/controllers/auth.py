"""`/api/v1/auth/*` and `/api/v1/me`."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.api.dependencies import (
    CallerDep,
    RateLimitDep,
    UnitOfWorkDep,
    auth_rate_limit,
    provide_principal,
    web_context,
)
from app.api.schemas import LoginIn, LogoutIn, RefreshIn, RegisterIn, SessionOut, TokensOut, UserOut
from app.services.auth import Registration


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post("/register", status_code=HTTP_201_CREATED, dependencies={"limit": Provide(auth_rate_limit)})
    async def register(
        self, data: JSONBody[RegisterIn], uow: UnitOfWorkDep, state: State, limit: RateLimitDep
    ) -> SessionOut:
        """Create a customer or driver account and start a session."""
        session = await web_context(state).auth.register(
            uow,
            Registration(
                email=data.email,
                password=data.password,
                full_name=data.full_name,
                phone=data.phone,
                role=data.role,
                vehicle_type=data.vehicle_type,
                whatsapp_opt_in=data.whatsapp_opt_in,
            ),
        )
        return SessionOut.of(session)

    @post("/login", status_code=HTTP_200_OK, dependencies={"limit": Provide(auth_rate_limit)})
    async def login(
        self, data: JSONBody[LoginIn], uow: UnitOfWorkDep, state: State, limit: RateLimitDep
    ) -> SessionOut:
        """Exchange email and password for an access and a refresh token.

        Besides the per-address limit, each account backs off after repeated failures (429 with
        `Retry-After`, whichever address they come from; unknown emails count alike)."""
        ctx = web_context(state)
        auth = ctx.settings.auth
        await ctx.limiter.begin_login(data.email, allowed=auth.login_failures_allowed,
                                      max_lock_s=auth.login_max_lock_s,
                                      forget_after_s=auth.login_forget_after_s)
        session = await ctx.auth.login(uow, data.email, data.password)
        await ctx.limiter.login_succeeded(data.email)
        return SessionOut.of(session)

    @post("/refresh", status_code=HTTP_200_OK, dependencies={"limit": Provide(auth_rate_limit)})
    async def refresh(
        self, data: JSONBody[RefreshIn], uow: UnitOfWorkDep, state: State, limit: RateLimitDep
    ) -> TokensOut:
        """Spend a refresh token for a new pair; spending one twice revokes its session."""
        return TokensOut.of(await web_context(state).auth.refresh(uow, data.refresh_token))

    @post("/logout", status_code=HTTP_204_NO_CONTENT, dependencies={"principal": Provide(provide_principal)})
    async def logout(
        self, uow: UnitOfWorkDep, state: State, principal: CallerDep, data: JSONBody[LogoutIn | None] = None
    ) -> None:
        """End this session: its access tokens (and the given refresh token's session) are refused."""
        await web_context(state).auth.logout(uow, principal, data.refresh_token if data else None)

    @post(
        "/logout-all", status_code=HTTP_204_NO_CONTENT, dependencies={"principal": Provide(provide_principal)}
    )
    async def logout_all(self, uow: UnitOfWorkDep, state: State, principal: CallerDep) -> None:
        """Refuse every token issued to this user until now; live sockets are disconnected."""
        await web_context(state).auth.logout_all(uow, principal)


@get("/me", tags=["auth"], dependencies={"principal": Provide(provide_principal)})
async def me(principal: CallerDep) -> UserOut:
    """The caller's account."""
    return UserOut.of(principal.user)
