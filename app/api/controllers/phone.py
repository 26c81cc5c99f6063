"""`/api/v1/me/phone/*`: prove the account's phone number with a one-time SMS code."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from app.api.dependencies import (
    WRITE_LIMIT,
    CallerDep,
    RateLimitDep,
    UnitOfWorkDep,
    provide_principal,
    web_context,
)
from app.api.schemas import Request, UserOut
from app.services import phone_verification

Code = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}\Z", description="the 6 digits received by SMS")]


class CodeIn(Request):
    code: Code


class PhoneController(Controller):
    path = "/me/phone"
    tags = ["auth"]
    dependencies = {"principal": Provide(provide_principal), **WRITE_LIMIT}

    @post("/verification", status_code=HTTP_204_NO_CONTENT)
    async def send_code(self, uow: UnitOfWorkDep, state: State, principal: CallerDep,
                        limit: RateLimitDep) -> None:
        """Send a 6-digit code to the account's phone (valid 10 minutes; a new one replaces it;
        `PHONE_CODE_SENDS_PER_HOUR` per hour)."""
        ctx = web_context(state)
        await phone_verification.send_code(uow, principal, settings=ctx.settings, limiter=ctx.limiter)

    @post("/verify", status_code=HTTP_200_OK)
    async def verify(self, data: JSONBody[CodeIn], uow: UnitOfWorkDep, state: State, principal: CallerDep,
                     limit: RateLimitDep) -> UserOut:
        """Check the code: the user with `phoneVerified: true`; a wrong code is 400 (attempts are
        limited), an expired or spent one 409 (ask for a new one)."""
        ctx = web_context(state)
        user = await phone_verification.verify_code(uow, principal, data.code, settings=ctx.settings,
                                                    store=ctx.tokens)
        return UserOut.of(user)
