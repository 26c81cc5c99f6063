"""Page cursors: an opaque, URL-safe token of where the last page ended.

A cursor is the page's last sort key as JSON (a msgspec type: a number, or an array-like struct of
a moment and an id), base64url without padding. A cursor that doesn't decode to that type is a 400.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from app.errors import ValidationFailed

T = TypeVar("T")


class Position(msgspec.Struct, array_like=True):
    """A row's place in a newest-first listing: its moment, then its id (ties)."""

    at: datetime
    id: uuid.UUID


def encode_cursor(key: Any) -> str:
    """The cursor of `key` (a `Position`, an int, …)."""
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode().rstrip("=")


def decode_cursor(cursor: str, kind: type[T]) -> T:
    """The key a cursor holds; `ValidationFailed` (400, `details.cursor`) when it isn't one."""
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), type=kind)
    except (ValueError, msgspec.DecodeError) as exc:
        raise ValidationFailed("The cursor is not valid.", details={"cursor": "malformed"}) from exc
