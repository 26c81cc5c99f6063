"""`/api/v1/payments/{rideId}/intent`: the customer's client secret for the ride's card hold."""

from __future__ import annotations

import uuid

from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK

from app.api.dependencies import PAYMENT_SETUP_LIMIT, CallerDep, RateLimitDep, caller_with_role, web_context
from app.api.schemas_payments import IntentOut
from app.services import payment_setup
from models import Role


class PaymentController(Controller):
    path = "/payments"
    tags = ["payments"]
    dependencies = caller_with_role("customer", Role.CUSTOMER)

    @post("/{ride_id:uuid}/intent", status_code=HTTP_200_OK, dependencies=PAYMENT_SETUP_LIMIT)
    async def intent(self, ride_id: FromPath[uuid.UUID], state: State, customer: CallerDep,
                     limit: RateLimitDep) -> IntentOut:
        """`{clientSecret, status}` for a card ride in BID_ACCEPTED (the hold is created if the job
        has not yet); confirm it with Stripe.js / the mobile SDK to hold the fare on the card."""
        ctx = web_context(state)
        view = await payment_setup.client_intent(ctx.sessions, ctx.stripe(), customer, ride_id,
                                                 lock_timeout_ms=ctx.settings.db.lock_timeout_ms)
        return IntentOut(client_secret=view.client_secret, status=view.status)
