"""ASGI layers every HTTP answer goes through: security headers, and a refusal of NUL characters.

PostgreSQL text can't hold a NUL (U+0000), so a string carrying one would fail deep inside a
statement; it is refused up front as 400 `VALIDATION_ERROR` naming the field. The body check costs
one `bytes.find` per chunk: only a body that carries the JSON escape `\\u0000` is decoded to find
the field (a literal backslash followed by `u0000`, which is not a NUL, passes after that check).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from app.errors import ValidationFailed
from app.settings import Settings

_NUL_ESCAPE = b"\\u0000"
_NUL_PROBLEM = "contains a NUL character (U+0000), which is not allowed"


def _nul_paths(value: Any, path: str) -> Iterator[str]:
    """Dotted paths (`pickup.address`, `items[2]`) of every string holding a NUL."""
    if isinstance(value, str):
        if "\x00" in value:
            yield path or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                yield name
            yield from _nul_paths(item, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_paths(item, f"{path}[{index}]")


def refuse_nul_in_body(body: bytes) -> None:
    """Raise `ValidationFailed` if the JSON `body` has a string with a NUL in it."""
    if _NUL_ESCAPE not in body:
        return
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return  # not JSON: the route's own decoding refuses it with the usual 400
    fields = {path: _NUL_PROBLEM for path in _nul_paths(decoded, "")}
    if fields:
        raise ValidationFailed("A text field contains a NUL character.", details=fields)


def _query_has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return b"%00" in query.lower() if b"%" in query else False


def input_guard_middleware(app: ASGIApp) -> ASGIApp:
    """Refuses NUL characters in the path, the query and JSON bodies (400, nothing was done)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if "\x00" in scope["path"] or _query_has_nul(scope):
            raise ValidationFailed("The path or query contains a NUL character.",
                                   details={"query": _NUL_PROBLEM})
        chunks: list[bytes] = []
        suspicious = False

        async def checked_receive() -> ReceiveMessage:
            nonlocal suspicious
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                tail = chunks[-1][-len(_NUL_ESCAPE):] if chunks else b""
                chunks.append(chunk)
                suspicious = suspicious or _NUL_ESCAPE in tail + chunk
                if suspicious and not message.get("more_body", False):
                    refuse_nul_in_body(b"".join(chunks))
            return message

        await app(scope, checked_receive, send)

    return middleware


def security_headers(settings: Settings) -> tuple[tuple[bytes, bytes], ...]:
    """The headers added to every answer; HSTS only when the farm is served over TLS."""
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", b"frame-ancestors 'none'"),
    ]
    if settings.web.hsts_max_age_s > 0:
        headers.append((b"strict-transport-security",
                        f"max-age={settings.web.hsts_max_age_s}".encode()))
    return tuple(headers)


def security_headers_hook(settings: Settings) -> Any:
    """A Litestar `before_send` hook adding `security_headers` to every answer, errors and 404s
    included (HSTS only over TLS, or behind a TLS proxy that says `X-Forwarded-Proto: https`)."""
    always = security_headers(settings)
    plain = tuple(header for header in always if header[0] != b"strict-transport-security")

    async def before_send(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        extra = always if _over_tls(scope) else plain
        headers = list(message.get("headers", []))
        present = {bytes(name).lower() for name, _ in headers}
        headers.extend(header for header in extra if header[0] not in present)
        message["headers"] = headers

    return before_send


def _over_tls(scope: Scope) -> bool:
    """Served over TLS: by the server itself, or by a proxy in front that says so."""
    if scope.get("scheme") == "https":
        return True
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-proto":
            return bool(value.split(b",")[-1].strip().lower() == b"https")
    return False
