"""`/api/v1/bookings`: hold a provider's time, confirm, pay, cancel, complete, mark a no-show;
`/api/v1/admin/bookings`: every booking, filtered. The providers' calendars: `providers.py`.

The booking services are sync functions run on the request's session (`run_sync`); their socket
events (`booking:status`, `slots:changed`) are emitted after the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.orm import Session

from app.api.dependencies import (
    PAYMENT_SETUP_LIMIT,
    RIDE_LIMIT,
    WRITE_LIMIT,
    CallerDep,
    RateLimitDep,
    UnitOfWorkDep,
    caller_with_role,
    provide_principal,
    web_context,
)
from app.api.schemas_bookings import BookingCancelIn, BookingIn, BookingList, BookingOut
from app.api.schemas_payments import IntentOut
from app.db import AsyncUnitOfWork
from app.services import audit
from app.services.access import Principal
from app.services.bookings import holds, intent, lifecycle, views
from app.services.bookings.effects import Effects
from app.services.bookings.lifecycle import Caller
from app.services.phone_verification import require_verified_phone
from models import BookingStatus, Role

T = TypeVar("T")

Cursor = Annotated[str | None, QueryParameter(name="cursor", max_length=200)]
Limit = Annotated[int, QueryParameter(name="limit", ge=1, le=100)]


def caller_of(principal: Principal) -> Caller:
    operator = audit.Operator.of_caller(principal) if principal.role == Role.ADMIN.value else None
    return Caller(principal.id, principal.role, operator)


async def run(uow: AsyncUnitOfWork, state: State, use_case: Callable[[Session, Effects], T]) -> T:
    """Run a booking use case in the request's transaction; its events go out after the commit."""
    effects = Effects()
    result = await uow.session.run_sync(lambda session: use_case(session, effects))
    effects.emit_after_commit(uow.after_commit, web_context(state).publisher.emit)
    return result


async def _view(uow: AsyncUnitOfWork, caller: Caller, booking_id: uuid.UUID) -> BookingOut:
    return BookingOut.of(await uow.session.run_sync(lambda s: views.get_booking(s, caller, booking_id)))


class BookingController(Controller):
    path = "/bookings"
    tags = ["bookings"]
    dependencies = {"principal": Provide(provide_principal)}

    @post("/", status_code=HTTP_201_CREATED, dependencies=RIDE_LIMIT)
    async def hold(self, data: JSONBody[BookingIn], uow: UnitOfWorkDep, state: State, principal: CallerDep,
                   limit: RateLimitDep) -> BookingOut:
        """Hold a provider's time while the customer pays: 201 `HELD` with `holdExpiresAt`; a time
        that overlaps another live booking or hold of the provider: 409 `CONFLICT` (`SLOT_TAKEN`)."""
        principal.require_role(Role.CUSTOMER)
        settings, now = web_context(state).settings, datetime.now(UTC)
        require_verified_phone(principal, settings)
        request = data.to_request()
        held = await run(uow, state, lambda s, fx: holds.hold(s, settings, principal.id, request, now=now,
                                                              effects=fx))
        return BookingOut.of(held)

    @get("/")
    async def list(self, uow: UnitOfWorkDep, principal: CallerDep, cursor: Cursor = None,
                   limit: Limit = 20) -> BookingList:
        """The caller's bookings, newest first (a customer's, or a provider's own)."""
        caller = caller_of(principal)
        page, next_cursor = await uow.session.run_sync(
            lambda s: views.list_bookings(s, caller, cursor=cursor, limit=limit))
        return BookingList(items=[BookingOut.of(v) for v in page], next_cursor=next_cursor)

    @get("/{booking_id:uuid}")
    async def read(self, booking_id: FromPath[uuid.UUID], uow: UnitOfWorkDep,
                   principal: CallerDep) -> BookingOut:
        """One booking with its payment and history (404 for another's)."""
        return await _view(uow, caller_of(principal), booking_id)

    @post("/{booking_id:uuid}/confirm", status_code=HTTP_200_OK, dependencies=WRITE_LIMIT)
    async def confirm(self, booking_id: FromPath[uuid.UUID], uow: UnitOfWorkDep, state: State,
                      principal: CallerDep, limit: RateLimitDep) -> BookingOut:
        """The customer confirms its hold: `CONFIRMED` at once for cash or an authorized card hold;
        otherwise the PaymentIntent is re-read at Stripe and `booking:status` follows. After
        `holdExpiresAt`: 409 `INVALID_TRANSITION`."""
        caller, settings, now = caller_of(principal), web_context(state).settings, datetime.now(UTC)
        await run(uow, state, lambda s, fx: lifecycle.confirm(s, settings, caller, booking_id, now=now,
                                                              effects=fx))
        return await _view(uow, caller, booking_id)

    @post("/{booking_id:uuid}/intent", status_code=HTTP_200_OK, dependencies=PAYMENT_SETUP_LIMIT)
    async def payment_intent(self, booking_id: FromPath[uuid.UUID], state: State, principal: CallerDep,
                             limit: RateLimitDep) -> IntentOut:
        """`{clientSecret, status}` of a card booking's hold; confirm it with Stripe.js."""
        ctx = web_context(state)
        view = await intent.client_intent(ctx.sessions, ctx.stripe(), caller_of(principal), booking_id,
                                          lock_timeout_ms=ctx.settings.db.lock_timeout_ms)
        return IntentOut(client_secret=view.client_secret, status=view.status)

    async def _end(self, uow: AsyncUnitOfWork, state: State, principal: Principal, booking_id: uuid.UUID,
                   target: BookingStatus, reason: str | None = None) -> BookingOut:
        caller, settings, now = caller_of(principal), web_context(state).settings, datetime.now(UTC)
        await run(uow, state, lambda s, fx: lifecycle.end(s, settings, caller, booking_id, target, now=now,
                                                          effects=fx, reason=reason))
        return await _view(uow, caller, booking_id)

    @post("/{booking_id:uuid}/cancel", status_code=HTTP_200_OK, dependencies=WRITE_LIMIT)
    async def cancel(self, booking_id: FromPath[uuid.UUID], uow: UnitOfWorkDep, state: State,
                     principal: CallerDep, limit: RateLimitDep,
                     data: JSONBody[BookingCancelIn | None] = None) -> BookingOut:
        """Cancel (body optional): the customer (a late cancellation of a confirmed card booking
        takes the late fee), the provider or an admin (never a fee)."""
        return await self._end(uow, state, principal, booking_id, BookingStatus.CANCELLED,
                               data.reason if data else None)

    @post("/{booking_id:uuid}/complete", status_code=HTTP_200_OK, dependencies=WRITE_LIMIT)
    async def complete(self, booking_id: FromPath[uuid.UUID], uow: UnitOfWorkDep, state: State,
                       principal: CallerDep, limit: RateLimitDep) -> BookingOut:
        """The provider (or an admin), once the slot has started: the price is captured."""
        return await self._end(uow, state, principal, booking_id, BookingStatus.COMPLETED)

    @post("/{booking_id:uuid}/no-show", status_code=HTTP_200_OK, dependencies=WRITE_LIMIT)
    async def no_show(self, booking_id: FromPath[uuid.UUID], uow: UnitOfWorkDep, state: State,
                      principal: CallerDep, limit: RateLimitDep) -> BookingOut:
        """The provider (or an admin), once the slot has started: the no-show fee is captured."""
        return await self._end(uow, state, principal, booking_id, BookingStatus.NO_SHOW)


class AdminBookingController(Controller):
    path = "/admin/bookings"
    tags = ["admin"]
    dependencies = caller_with_role("admin", Role.ADMIN)

    @get("/")
    async def list(
        self, uow: UnitOfWorkDep, admin: CallerDep, cursor: Cursor = None, limit: Limit = 50,
        status: Annotated[BookingStatus | None, QueryParameter(name="status")] = None,
        provider_id: Annotated[uuid.UUID | None, QueryParameter(name="providerId")] = None,
        customer_id: Annotated[uuid.UUID | None, QueryParameter(name="customerId")] = None,
        starts_from: Annotated[datetime | None, QueryParameter(name="from")] = None,
        starts_before: Annotated[datetime | None, QueryParameter(name="to")] = None,
    ) -> BookingList:
        """Every booking, newest first; filters: `status`, `providerId`, `customerId`, and the start
        in [`from`, `to`)."""
        filters = views.BookingFilter(status=status.value if status else None, provider_id=provider_id,
                                      customer_id=customer_id, starts_from=starts_from,
                                      starts_before=starts_before)
        caller = caller_of(admin)
        page, next_cursor = await uow.session.run_sync(
            lambda s: views.list_bookings(s, caller, cursor=cursor, limit=limit, filters=filters))
        return BookingList(items=[BookingOut.of(v) for v in page], next_cursor=next_cursor)
