"""Request and response bodies (msgspec). JSON is camelCase; unknown fields are refused."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from app.adapters.token_store import UserSnapshot
from app.services.auth import Session, TokenPair

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=128)]
Phone = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}\Z",
                                    description="E.164, e.g. +491701234567")]
FullName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
VehicleTypeName = Literal["motorbike", "car", "van", "truck"]


class Request(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True):
    """Base of request bodies."""


class Response(msgspec.Struct, rename="camel", kw_only=True):
    """Base of response bodies."""


class RegisterIn(Request):
    email: Email
    password: Password
    full_name: FullName
    phone: Phone
    role: Literal["customer", "driver"]
    vehicle_type: VehicleTypeName | None = None
    whatsapp_opt_in: bool = False


class LoginIn(Request):
    email: Email
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class RefreshIn(Request):
    refresh_token: Token


class LogoutIn(Request):
    refresh_token: Token | None = None


class ReasonIn(Request):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class UserOut(Response, omit_defaults=True):
    id: uuid.UUID
    email: str
    full_name: str
    phone: str
    role: str
    vehicle_type: str | None
    whatsapp_opt_in: bool
    created_at: datetime
    #: The phone was proven by a one-time code (`POST /me/phone/verify`).
    phone_verified: bool
    #: Admins only (absent for other roles): `full`, or `read_only` (reads every admin page, acts on
    #: nothing).
    admin_access: str | None = None

    @classmethod
    def of(cls, user: UserSnapshot) -> UserOut:
        return cls(id=user.id, email=user.email, full_name=user.full_name, phone=user.phone,
                   role=user.role, vehicle_type=user.vehicle_type, whatsapp_opt_in=user.whatsapp_opt_in,
                   created_at=user.created_at, phone_verified=user.phone_verified,
                   admin_access=user.admin_access if user.role == "admin" else None)


class TokensOut(Response):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"

    @classmethod
    def of(cls, tokens: TokenPair) -> TokensOut:
        return cls(access_token=tokens.access_token, refresh_token=tokens.refresh_token,
                   expires_in=tokens.expires_in)


class SessionOut(Response):
    user: UserOut
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"

    @classmethod
    def of(cls, session: Session) -> SessionOut:
        return cls(user=UserOut.of(session.user), access_token=session.tokens.access_token,
                   refresh_token=session.tokens.refresh_token, expires_in=session.tokens.expires_in)


class ErrorBody(Response):
    code: str
    message: str
    details: object = None


class ErrorOut(Response):
    error: ErrorBody


class HealthOut(Response):
    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)
