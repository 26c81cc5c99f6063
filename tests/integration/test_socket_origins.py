"""Which pages may open a socket: the Socket.IO server's Origin check (`CORS_ORIGINS`).

Without `CORS_ORIGINS` only the page's own origin (the Host it was served from) may connect; a
browser page elsewhere is refused. With it, the listed origins may. Real ASGI app under uvicorn.
"""

from __future__ import annotations

import dataclasses

import httpx

from app.settings import Settings
from tests.integration.conftest import serve_web

HANDSHAKE = "/socket.io/?EIO=4&transport=polling"
FOREIGN = "https://evil.example"


async def handshake(web: str, origin: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0) as client:
        return await client.get(f"{web}{HANDSHAKE}", headers={"Origin": origin})


async def test_without_cors_origins_a_foreign_page_is_refused_and_the_own_origin_accepted(
    web: str,
) -> None:
    # Given the web process with no CORS_ORIGINS (the test settings name none)
    # When a page on another origin opens a socket, Then it is refused
    foreign = await handshake(web, FOREIGN)
    assert foreign.status_code == 400
    assert "access-control-allow-origin" not in foreign.headers

    # And a page served by the web process itself may
    own = await handshake(web, web)
    assert own.status_code == 200
    assert own.headers["access-control-allow-origin"] == web


async def test_an_origin_listed_in_cors_origins_may_open_a_socket(settings: Settings, clean: None) -> None:
    # Given the web process with CORS_ORIGINS naming one front end
    front_end = "https://app.example"
    listed = dataclasses.replace(settings, web=dataclasses.replace(settings.web, cors_origins=(front_end,)))
    with serve_web(listed) as web:
        # When that front end opens a socket, Then it may
        allowed = await handshake(web, front_end)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == front_end
        # And any other origin is still refused
        assert (await handshake(web, FOREIGN)).status_code == 400
