"""The web process's ASGI app: Litestar with the Socket.IO server at `/socket.io`.

Run with `uvicorn app.asgi:app` (the Procfile's `web`). Settings and logging are set up here, at
import, because this module *is* the process entry point.
"""

from __future__ import annotations

import socketio

from app.api.app import create_app
from app.api.context import WebContext
from app.logging import configure_logging
from app.realtime.server import create_socket_server
from app.settings import Settings, get_settings


def build_asgi(settings: Settings) -> socketio.ASGIApp:
    holder: dict[str, WebContext] = {}

    def context() -> WebContext:
        if "ctx" not in holder:
            holder["ctx"] = WebContext.build(settings)
        return holder["ctx"]

    api = create_app(settings, context_factory=context)
    sio = create_socket_server(
        context,
        redis_url=settings.redis.url,
        channel=context().keys.socketio_channel(),
        # None is engine.io's same-origin check; [] would switch the Origin check off.
        cors_origins=list(settings.web.cors_origins) or None,
    )
    return socketio.ASGIApp(sio, other_asgi_app=api, socketio_path="socket.io")


settings = get_settings()
configure_logging(settings.log, process="web")
app = build_asgi(settings)
