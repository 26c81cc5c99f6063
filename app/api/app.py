"""`create_app()`: the Litestar application (importing this module starts nothing)."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager

import structlog
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.api.context import WebContext
from app.api.controllers.admin import AdminController
from app.api.controllers.admin_jobs import AdminJobsController
from app.api.controllers.admin_live import AdminLiveController
from app.api.controllers.admin_queues import AdminQueuesController
from app.api.controllers.auth import AuthController, me
from app.api.controllers.bids import BidController
from app.api.controllers.bookings import AdminBookingController, BookingController
from app.api.controllers.console import console_routes
from app.api.controllers.drivers import DriverController
from app.api.controllers.health import health, ready
from app.api.controllers.payments import PaymentController
from app.api.controllers.phone import PhoneController
from app.api.controllers.providers import ProviderScheduleController, free_slots
from app.api.controllers.regions import regions
from app.api.controllers.rides import RideController
from app.api.controllers.twilio_status import TwilioStatusController
from app.api.controllers.webhooks import StripeWebhookController
from app.api.dependencies import provide_uow
from app.api.errors import handle_exception
from app.api.hardening import input_guard_middleware, security_headers_hook
from app.connection_budget import log_budget
from app.logging import freeze_startup_objects
from app.observability.web import WebMetrics, metrics_route, request_metrics_middleware
from app.settings import Settings

API_PREFIX = "/api/v1"
#: Provider callbacks: at `/api/v1/webhooks/...` (the contract) and at the root, where Stripe
#: dashboards and older `TWILIO_STATUS_CALLBACK_URL`s point (aliases, left out of the schema).
WEBHOOK_CONTROLLERS = (StripeWebhookController, TwilioStatusController)


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Binds `request_id` (from `X-Request-ID` or a new one) to logs and echoes it back."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:64]
                break
        request_id = request_id or os.urandom(12).hex()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")

    return middleware


def create_app(settings: Settings, context_factory: Callable[[], WebContext] | None = None) -> Litestar:
    """The API. `context_factory` shares the process's clients with the socket server."""

    metrics = WebMetrics(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        ctx = context_factory() if context_factory else WebContext.build(settings)
        app.state.ctx = ctx
        ctx.start()
        log_budget("web", settings)
        freeze_startup_objects()
        try:
            yield
        finally:
            await ctx.close()
            metrics.close()

    api = Router(
        path=API_PREFIX,
        route_handlers=[AuthController, AdminController, DriverController, RideController, BidController,
                        PaymentController, PhoneController, BookingController, AdminBookingController,
                        ProviderScheduleController, free_slots, regions, me, *WEBHOOK_CONTROLLERS,
                        AdminJobsController, AdminQueuesController, AdminLiveController],
        dependencies={"uow": Provide(provide_uow)},
    )
    root_webhooks = Router(path="/", route_handlers=list(WEBHOOK_CONTROLLERS), include_in_schema=False,
                           dependencies={"uow": Provide(provide_uow)})
    return Litestar(
        route_handlers=[api, root_webhooks, health, ready, metrics_route(metrics),
                        *console_routes(settings.web)],
        lifespan=[lifespan],
        middleware=[request_metrics_middleware, request_id_middleware, input_guard_middleware],
        before_send=[security_headers_hook(settings)],
        exception_handlers={Exception: handle_exception},
        cors_config=(
            CORSConfig(allow_origins=list(settings.web.cors_origins)) if settings.web.cors_origins else None
        ),
        openapi_config=OpenAPIConfig(
            title="Dispatch Farm API",
            version="1.0.0",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
        ),
        debug=False,
        logging_config=None,
    )
