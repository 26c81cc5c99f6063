"""Accounts, drivers and the tokens that authenticate them."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Enum, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, created_at, utcnow, uuid_pk


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    DRIVER = "driver"
    ADMIN = "admin"


class AdminAccess(enum.StrEnum):
    """What an admin may do: everything, or only read (support staff: every admin page and list,
    no action). Meaningless for other roles (they keep the default)."""

    FULL = "full"
    READ_ONLY = "read_only"


class VehicleType(enum.StrEnum):
    MOTORBIKE = "motorbike"
    CAR = "car"
    VAN = "van"
    TRUCK = "truck"


def _str_enum(cls: type[enum.StrEnum], name: str) -> Enum:
    return Enum(cls, name=name, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = uuid_pk()
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str] = mapped_column(String(16))
    role: Mapped[Role] = mapped_column(_str_enum(Role, "user_role"))
    admin_access: Mapped[AdminAccess] = mapped_column(
        _str_enum(AdminAccess, "admin_access"), default=AdminAccess.FULL,
        server_default=AdminAccess.FULL.value)
    whatsapp_opt_in: Mapped[bool] = mapped_column(default=False)
    is_active: Mapped[bool] = mapped_column(default=True)
    #: Bumped by logout-all and suspension: access tokens carrying an older generation are refused.
    token_generation: Mapped[int] = mapped_column(default=0)
    deactivated_at: Mapped[datetime | None]
    #: When the account proved it receives SMS at `phone` (a one-time code); None: unverified.
    phone_verified_at: Mapped[datetime | None]
    deactivation_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    driver: Mapped[Driver | None] = relationship(back_populates="user", uselist=False, lazy="raise")

    __table_args__ = (
        Index("uq_users_email_lower", text("lower(email)"), unique=True),
        CheckConstraint("admin_access IN ('full', 'read_only')", name="admin_access"),
    )


class DriverAvailability(enum.StrEnum):
    OFFLINE = "offline"
    ONLINE = "online"


class Driver(Base):
    """The driver side of a user with role `driver`: vehicle, availability, last known position."""

    __tablename__ = "drivers"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    vehicle_type: Mapped[VehicleType] = mapped_column(_str_enum(VehicleType, "vehicle_type"))
    availability: Mapped[DriverAvailability] = mapped_column(
        _str_enum(DriverAvailability, "driver_availability"), default=DriverAvailability.OFFLINE,
        server_default=DriverAvailability.OFFLINE.value,
    )
    #: The ride the driver is assigned to and has not finished: a driver with one is busy.
    active_ride_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    last_lat: Mapped[float | None]
    last_lng: Mapped[float | None]
    last_heading: Mapped[float | None]
    last_speed_kph: Mapped[float | None]
    last_seen_at: Mapped[datetime | None]
    #: Stripe Connect Express account receiving this driver's card earnings (created once).
    stripe_account_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: Copied from the account by `account.updated` webhooks; a card ride needs both.
    charges_enabled: Mapped[bool] = mapped_column(default=False, server_default="false")
    payouts_enabled: Mapped[bool] = mapped_column(default=False, server_default="false")
    created_at: Mapped[datetime] = created_at()

    user: Mapped[User] = relationship(back_populates="driver", lazy="raise")


class PhoneVerification(Base):
    """The one-time code last sent to a user's phone: stored as an HMAC, never in clear; one row
    per user (a new code replaces the old), spent by a right guess or `max_attempts` wrong ones."""

    __tablename__ = "phone_verifications"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    #: The number the code was sent to (a phone changed since then is not verified by it).
    phone: Mapped[str] = mapped_column(String(16))
    code_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = created_at()


class RefreshToken(Base):
    """A single-use refresh token, stored as a SHA-256 hash. A login starts a family (session)."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_refresh_tokens_cleanup", "expires_at"),
        Index("ix_refresh_tokens_revoked_at", "revoked_at", postgresql_where=text("revoked_at IS NOT NULL")),
    )


class RevokedSession(Base):
    """A session (login) whose access tokens are refused: logout or refresh-token reuse.

    Durable here; Redis caches it for the per-request check until `expires_at`, after which no
    access token of the session can still be valid.
    """

    __tablename__ = "revoked_sessions"

    session_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)
