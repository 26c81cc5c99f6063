"""`/api/v1/drivers/me/*`: a driver's position and availability."""

from __future__ import annotations

from litestar import Controller, post, put
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT

from app.api.dependencies import CallerDep, UnitOfWorkDep, caller_with_role, web_context
from app.api.schemas_drivers import LocationIn
from app.services import drivers
from models import Role


class DriverController(Controller):
    path = "/drivers/me"
    tags = ["drivers"]
    dependencies = caller_with_role("driver", Role.DRIVER)

    @put("/location", status_code=HTTP_204_NO_CONTENT)
    async def update_location(
        self, data: JSONBody[LocationIn], uow: UnitOfWorkDep, state: State, driver: CallerDep
    ) -> None:
        """Report the driver's position (stored while offline too; only online drivers are offered rides)."""
        ctx = web_context(state)
        await drivers.update_location(uow, ctx.driver_index, driver.id, data.lat, data.lng, data.heading,
                                      data.speed_kph, publisher=ctx.publisher)

    @post("/online", status_code=HTTP_204_NO_CONTENT)
    async def go_online(self, uow: UnitOfWorkDep, state: State, driver: CallerDep) -> None:
        """Start receiving ride offers (from the last position if it is fresh, else the next one)."""
        ctx = web_context(state)
        await drivers.go_online(uow, ctx.driver_index, driver.id,
                                stale_after_s=ctx.settings.dispatch.driver_stale_after_s)

    @post("/offline", status_code=HTTP_204_NO_CONTENT)
    async def go_offline(self, uow: UnitOfWorkDep, state: State, driver: CallerDep) -> None:
        """Stop receiving ride offers."""
        await drivers.go_offline(uow, web_context(state).driver_index, driver.id)
