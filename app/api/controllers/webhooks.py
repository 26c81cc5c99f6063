"""`POST /api/v1/webhooks/stripe` (public, signed; also at the root): verify on the raw body, store
once, enqueue, answer."""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK

from app.api.dependencies import web_context
from app.api.schemas import Response
from app.services import payments


class WebhookAck(Response):
    received: bool
    duplicate: bool


class StripeWebhookController(Controller):
    path = "/webhooks/stripe"
    tags = ["webhooks"]

    @post("/", status_code=HTTP_200_OK)
    async def receive(self, request: Request[object, object, State], state: State) -> WebhookAck:
        """A Stripe event: 200 once stored (a replayed event id answers 200 and does nothing); a
        signature that does not verify, or one older than the tolerance, is 400 and stores nothing."""
        context = web_context(state)
        stored = await payments.receive_event(context.stripe_webhooks(), context.statements,
                                              await request.body(), request.headers.get("stripe-signature"))
        return WebhookAck(received=True, duplicate=not stored)
