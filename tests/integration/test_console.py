"""`/console`: the operations console's shell and assets (`app/api/controllers/console.py`), served
by the real app — content types, caching, the Content-Security-Policy, what is refused — and the
admin routes it reads still wanting an admin."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from html.parser import HTMLParser

import pytest

from app.settings import Settings
from tests.integration.conftest import Accounts, AppFactory, Client, bearer, error_code

JS = "text/javascript; charset=utf-8"
TYPES = {".js": JS, ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
         ".html": "text/html; charset=utf-8"}
#: `import … from "./x.js"` and `import "./x.js"` in the console's modules.
IMPORT = re.compile(r"""^\s*import\s+(?:[^'"]*?\s+from\s+)?["']([^"']+)["']""", re.MULTILINE)


class References(HTMLParser):
    """Every `src` and `href` of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs if name in ("src", "href") and value]


def directives(policy: str) -> dict[str, list[str]]:
    return {name: rest for name, *rest in (part.split() for part in policy.split(";") if part.strip())}


async def test_the_shell_is_served_without_a_token_under_a_strict_policy(api: Client) -> None:
    # When anyone opens /console (no token: the page holds no data)
    response = await api.get("/console")

    # Then it is the console's HTML, not cached without asking, under a strict CSP
    assert response.status_code == 200
    assert response.headers["content-type"] == TYPES[".html"]
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert 'data-testid="login-form"' in response.text
    policy = directives(response.headers["content-security-policy"])
    assert policy["default-src"] == ["'self'"] and policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["connect-src"] == ["'self'", "ws:", "wss:"] and policy["img-src"] == ["'self'", "data:"]
    # And it names no other host, and no inline script or style
    assert not re.search(r"(?:src|href)=[\"'](?:https?:)?//", response.text)
    assert "<style" not in response.text and " style=" not in response.text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", response.text)
    # And /console/ is the same page
    assert (await api.get("/console/")).text == response.text


async def test_every_asset_the_page_and_its_modules_name_is_served_with_its_type(api: Client) -> None:
    # Given the page's references
    page = References()
    page.feed((await api.get("/console")).text)
    queue = [ref for ref in page.found if not ref.startswith("#")]
    assert "/console/app.js" in queue and "/console/console.css" in queue and "/console/icon.svg" in queue

    # When every reference, and every module each script imports, is fetched
    seen: dict[str, str] = {}
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        assert path.startswith("/console/"), path
        response = await api.get(path)
        # Then each is there with its content type, and a CSP like the page's
        assert response.status_code == 200, path
        suffix = path[path.rindex("."):]
        assert response.headers["content-type"] == TYPES[suffix], path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        seen[path] = response.text
        if suffix == ".js":
            queue += ["/console/" + name.removeprefix("./") for name in IMPORT.findall(response.text)]
    # And the console's pages are all among them
    pages = ("queues", "failed", "job", "workers", "schedules", "map")
    for module in ("api", "socket", "dom", "format", *pages):
        assert f"/console/{module}.js" in seen, module


async def test_an_unchanged_asset_is_not_sent_again(api: Client) -> None:
    # Given an asset and its ETag
    first = await api.get("/console/app.js")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')

    # When it is asked for again with that ETag (alone, weak, or in a list)
    for given in (etag, f"W/{etag}", f'"other", {etag}'):
        again = await api.get("/console/app.js", headers={"If-None-Match": given})
        # Then 304, nothing sent, the same ETag
        assert again.status_code == 304, given
        assert again.content == b"" and again.headers["etag"] == etag
    # And another ETag gets the file
    other = await api.get("/console/app.js", headers={"If-None-Match": '"stale"'})
    assert other.status_code == 200 and other.content == first.content


@pytest.mark.parametrize("path", [
    "/console/nope.js", "/console/__init__.py", "/console/..%2f..%2fsettings%2f__init__.py",
    "/console/%2e%2e%2fapi%2fapp.py", "/console/..%5capp.js", "/console/sub/app.js", "/console/.%2fapp.js",
])
async def test_what_is_not_a_console_file_is_not_found(api: Client, path: str) -> None:
    # When a name that is no asset, or a path out of the package, is asked for
    response = await api.get(path)

    # Then 404 in the project's error shape, naming nothing of the file system
    assert response.status_code == 404, response.text
    assert error_code(response) == "NOT_FOUND"
    assert "/work" not in response.text and "site-packages" not in response.text


async def test_the_console_stays_out_of_the_api_schema(api: Client) -> None:
    paths = (await api.get("/schema/openapi.json")).json()["paths"]
    assert [path for path in paths if path.startswith("/console")] == []


async def test_the_data_it_shows_still_needs_an_admin(api: Client, accounts: Accounts) -> None:
    # Given a customer and an admin
    customer = bearer((await accounts.register("customer"))["accessToken"])
    admin = bearer((await accounts.admin())["accessToken"])
    routes = ["/api/v1/admin/queues", "/api/v1/admin/jobs/failed", "/api/v1/admin/jobs/failed/count",
              "/api/v1/admin/workers", "/api/v1/admin/schedules"]

    for route in routes:
        # Then without a token: 401; as a customer: 403; as an admin: 200
        anonymous = await api.get(route)
        assert anonymous.status_code == 401 and error_code(anonymous) == "INVALID_TOKEN", route
        refused = await api.get(route, headers=customer)
        assert refused.status_code == 403 and error_code(refused) == "FORBIDDEN", route
        assert (await api.get(route, headers=admin)).status_code == 200, route


async def test_a_tile_server_is_allowed_for_images_only_when_configured(
    make_client: AppFactory, settings: Settings,
) -> None:
    # Given a farm whose console draws map tiles from a tile server
    tiles = "https://{s}.tiles.example.org/{z}/{x}/{y}.png?key=a&b=\"c\""
    client = await make_client(dataclasses.replace(
        settings, web=dataclasses.replace(settings.web, console_tile_url=tiles)))

    # When the page is opened
    response = await client.get("/console")

    # Then the tile host may serve images (and nothing else), and the page carries the template, escaped
    policy = directives(response.headers["content-security-policy"])
    assert policy["img-src"] == ["'self'", "data:", "https://*.tiles.example.org"]
    assert policy["script-src"] == ["'self'"] and policy["connect-src"] == ["'self'", "ws:", "wss:"]
    assert ('<meta name="console-tile-url" content="https://{s}.tiles.example.org/{z}/{x}/{y}.png?key=a&amp;'
            'b=&quot;c&quot;">') in response.text


# --- the console's own Socket.IO client (app/console/socket.js) speaks this, frame by frame ---------
async def frames(url: str, token: str, *sent: str) -> list[str]:
    """Open a WebSocket as the console does, connect with `token`, send `sent`; every frame received
    after the open packet, one answer per frame sent (and one for the connect)."""
    from websockets.asyncio.client import connect
    from websockets.typing import Origin

    received: list[str] = []
    socket_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    # (with the page's Origin, as a browser sends it: the socket server admits its own origin only)
    async with asyncio.timeout(10), connect(socket_url, origin=Origin(url)) as ws:
        opened = json.loads(str(await ws.recv())[1:])
        assert {"sid", "pingInterval", "pingTimeout"} <= set(opened)
        for frame in (f"40{json.dumps({'token': token})}", *sent):
            await ws.send(frame)
            received.append(str(await ws.recv()))
    return received


async def test_the_socket_frames_the_console_sends_get_the_answers_it_reads(
    web: str, accounts: Accounts,
) -> None:
    # Given an admin's token
    token = (await accounts.admin())["accessToken"]

    # When the console's frames go over a bare WebSocket: connect with auth, join ops, ask for a map
    connected, ops, unknown = await frames(web, token, '421["subscribe:ops",{}]',
                                           '422["subscribe:map",{"region":"NOWHERE"}]')

    # Then the connect is acked with a sid, and each event's ack carries its id and the answer
    assert connected.startswith("40{") and "sid" in json.loads(connected[2:])
    assert ops == '431[{"ok":true}]'
    assert unknown.startswith("432[") and json.loads(unknown[3:])[0]["error"]["code"] == "NOT_FOUND"

    # And a refused token is a connect error whose code says to refresh
    [refused] = await frames(web, "not-a-token")
    assert refused.startswith("44") and json.loads(refused[2:])["data"]["code"] == "INVALID_TOKEN"
