"""`POST /api/v1/webhooks/stripe` (public, signed; also at the root): verify on the raw body, store
once, enqueue, answer."""

from __future__ import annotations

import stripe
from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK

from app.api.dependencies import web_context
from app.api.schemas import Response
from app.errors import InvalidSignature
from app.logging import get_logger
from app.services import payments

log = get_logger("webhooks")


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
        settings = context.settings.stripe
        payload = await request.body()
        signature = request.headers.get("stripe-signature")
        if not settings.webhook_secret:
            raise InvalidSignature("Stripe webhooks are not enabled: set STRIPE_WEBHOOK_SECRET.")
        if not signature:
            raise InvalidSignature("The Stripe-Signature header is missing.")
        try:
            stripe.WebhookSignature.verify_header(
                payload.decode("utf-8", "replace"), signature, settings.webhook_secret,
                tolerance=settings.webhook_tolerance_s)
        except stripe.SignatureVerificationError as exc:
            log.warning("webhooks.stripe_bad_signature", error=str(exc))
            raise InvalidSignature("The Stripe-Signature does not verify (or is too old).") from exc
        stored = await payments.store_event(context.statements, payload)
        return WebhookAck(received=True, duplicate=not stored)
