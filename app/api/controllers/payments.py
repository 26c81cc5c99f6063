"""`/api/v1/payments/{rideId}/intent`: the customer's client secret for the ride's card hold."""

from __future__ import annotations

import uuid

from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK

from app.api.dependencies import CallerDep, UnitOfWorkDep, caller_with_role, web_context
from app.api.schemas_payments import IntentOut
from app.errors import Forbidden
from app.services import payments, rides
from models import Role


class PaymentController(Controller):
    path = "/payments"
    tags = ["payments"]
    dependencies = caller_with_role("customer", Role.CUSTOMER)

    @post("/{ride_id:uuid}/intent", status_code=HTTP_200_OK)
    async def intent(self, ride_id: FromPath[uuid.UUID], uow: UnitOfWorkDep, state: State,
                     customer: CallerDep) -> IntentOut:
        """`{clientSecret, status}` for a card ride in BID_ACCEPTED (the hold is created if the job
        has not yet); confirm it with Stripe.js / the mobile SDK to hold the fare on the card."""
        ride = await rides.load_ride(uow.session, customer, ride_id, for_update=True)
        if ride.customer_id != customer.id:
            raise Forbidden("Only the ride's customer may pay for it.")
        view = await payments.client_intent(uow.session, web_context(state).stripe(), ride)
        return IntentOut(client_secret=view.client_secret, status=view.status)
