"""`/api/v1/providers`: a provider publishes its week (`PUT /providers/me/schedule`); anyone lists
its free slots (`GET /providers/{id}/slots?from&to`, public)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from litestar import Controller, get, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from app.api.controllers.bookings import run
from app.api.dependencies import (
    WRITE_LIMIT,
    CallerDep,
    RateLimitDep,
    UnitOfWorkDep,
    caller_with_role,
    web_context,
)
from app.api.schemas_bookings import ScheduleIn, ScheduleOut, SlotList
from app.errors import ValidationFailed
from app.services.bookings import calendar
from models import Role


class ProviderScheduleController(Controller):
    path = "/providers/me"
    tags = ["bookings"]
    dependencies = caller_with_role("provider", Role.DRIVER)

    @put("/schedule", dependencies=WRITE_LIMIT)
    async def publish(self, data: JSONBody[ScheduleIn], uow: UnitOfWorkDep, state: State, provider: CallerDep,
                      limit: RateLimitDep) -> ScheduleOut:
        """Publish (replace) the caller's weekly hours, exceptions, time zone, price and slot length;
        bookings already made are kept."""
        try:
            request = data.to_request()
        except ValueError as exc:  # a period backwards, two of one day overlapping
            raise ValidationFailed(str(exc), details={"schedule": str(exc)}) from exc
        published = await run(uow, state, lambda s, fx: calendar.publish(s, provider.id, request, effects=fx))
        return ScheduleOut.of(published)

    @get("/schedule")
    async def read(self, uow: UnitOfWorkDep, provider: CallerDep) -> ScheduleOut:
        """The caller's schedule (404 before it published one)."""
        return ScheduleOut.of(await uow.session.run_sync(lambda s: calendar.load_calendar(s, provider.id)))


@get("/providers/{provider_id:uuid}/slots", tags=["bookings"])
async def free_slots(
    provider_id: FromPath[uuid.UUID], uow: UnitOfWorkDep, state: State,
    starts_from: Annotated[datetime | None, QueryParameter(name="from")] = None,
    starts_before: Annotated[datetime | None, QueryParameter(name="to")] = None,
) -> SlotList:
    """The provider's free slots starting in [`from`, `to`) (default: the next 7 days), computed from
    its hours minus bookings and live holds, with UTC instants and its local clock."""
    now = datetime.now(UTC)
    start = _instant(starts_from, "from") or now
    end = _instant(starts_before, "to") or start + timedelta(days=7)
    settings = web_context(state).settings.bookings
    longest, horizon = settings.listing_max_days, timedelta(days=settings.horizon_days)
    if end <= start or end - start > timedelta(days=longest):
        raise ValidationFailed(f"`to` must be after `from`, at most {longest} days later.",
                               details={"to": f"after from, within {longest} days"})
    found, free = await uow.session.run_sync(lambda s: calendar.free_slots(s, provider_id, start, end, now,
                                                                                 horizon=horizon))
    return SlotList.of(found, free)


def _instant(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(f"`{name}` needs an offset (RFC 3339, e.g. 2026-03-29T00:00:00Z).",
                               details={name: "must carry a UTC offset"})
    return value
