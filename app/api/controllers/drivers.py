"""`/api/v1/drivers/me/*`: a driver's position and availability, payouts onboarding and earnings."""

from __future__ import annotations

from litestar import Controller, get, post, put
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from app.api.dependencies import (
    LOCATION_LIMIT,
    PAYMENT_SETUP_LIMIT,
    WRITE_LIMIT,
    CallerDep,
    RateLimitDep,
    UnitOfWorkDep,
    caller_with_role,
    web_context,
)
from app.api.schemas_drivers import LocationIn
from app.api.schemas_payments import EarningsOut, OnboardOut
from app.services import drivers, payment_setup, payments
from models import Role


class DriverController(Controller):
    path = "/drivers/me"
    tags = ["drivers"]
    dependencies = caller_with_role("driver", Role.DRIVER)

    @put("/location", status_code=HTTP_204_NO_CONTENT, dependencies=LOCATION_LIMIT)
    async def update_location(
        self, data: JSONBody[LocationIn], uow: UnitOfWorkDep, state: State, driver: CallerDep,
        limit: RateLimitDep,
    ) -> None:
        """Report the driver's position (stored while offline too; only online drivers are offered rides)."""
        ctx = web_context(state)
        await drivers.update_location(uow, ctx.driver_index, driver.id, data.lat, data.lng, data.heading,
                                      data.speed_kph, publisher=ctx.publisher)

    @post("/online", status_code=HTTP_204_NO_CONTENT, dependencies=WRITE_LIMIT)
    async def go_online(self, uow: UnitOfWorkDep, state: State, driver: CallerDep,
                        limit: RateLimitDep) -> None:
        """Start receiving ride offers (from the last position if it is fresh, else the next one)."""
        ctx = web_context(state)
        await drivers.go_online(uow, ctx.driver_index, driver.id,
                                stale_after_s=ctx.settings.dispatch.driver_stale_after_s,
                                publisher=ctx.publisher)

    @post("/offline", status_code=HTTP_204_NO_CONTENT, dependencies=WRITE_LIMIT)
    async def go_offline(self, uow: UnitOfWorkDep, state: State, driver: CallerDep,
                         limit: RateLimitDep) -> None:
        """Stop receiving ride offers."""
        ctx = web_context(state)
        await drivers.go_offline(uow, ctx.driver_index, driver.id, publisher=ctx.publisher)

    @post("/payouts/onboard", status_code=HTTP_200_OK, dependencies=PAYMENT_SETUP_LIMIT)
    async def onboard_payouts(self, state: State, driver: CallerDep, limit: RateLimitDep) -> OnboardOut:
        """A Stripe Connect onboarding link (the Express account is created on the first call).

        Card rides can be accepted for the driver once Stripe reports charges and payouts enabled
        (`account.updated` webhooks keep that current).
        """
        ctx = web_context(state)
        url = await payment_setup.onboarding_link(ctx.sessions, ctx.stripe(), driver.id,
                                                  lock_timeout_ms=ctx.settings.db.lock_timeout_ms)
        return OnboardOut(url=url)

    @get("/earnings")
    async def earnings(self, uow: UnitOfWorkDep, driver: CallerDep) -> EarningsOut:
        """Ledger totals per currency and the newest entries (earnings, refunds, cash commission owed)."""
        return EarningsOut.of(await payments.earnings(uow.session, driver.id))
