"""Regions, rides and their history, offers and bids."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at, utcnow, uuid_pk
from models.users import VehicleType


def _str_enum(cls: type[enum.StrEnum], name: str, length: int = 24) -> Enum:
    return Enum(cls, name=name, native_enum=False, length=length,
                values_callable=lambda e: [m.value for m in e])


class RideStatus(enum.StrEnum):
    PENDING_BIDS = "PENDING_BIDS"
    NO_DRIVERS_AVAILABLE = "NO_DRIVERS_AVAILABLE"
    BID_ACCEPTED = "BID_ACCEPTED"
    DRIVER_ARRIVING = "DRIVER_ARRIVING"
    PICKUP_ARRIVED = "PICKUP_ARRIVED"
    LOADING = "LOADING"
    IN_TRANSIT = "IN_TRANSIT"
    DROPOFF_ARRIVED = "DROPOFF_ARRIVED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class PaymentMethod(enum.StrEnum):
    CARD = "card"
    CASH = "cash"


class BidStatus(enum.StrEnum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


class Region(Base):
    """A market: its currency and the platform's commission on each ride."""

    __tablename__ = "regions"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    currency: Mapped[str] = mapped_column(String(3))
    commission_rate: Mapped[Decimal] = mapped_column(Numeric(5, 4))
    #: Time-slot bookings: the slot length and the buffer after each slot, unless a provider sets its own.
    slot_minutes: Mapped[int] = mapped_column(default=60, server_default="60")
    slot_buffer_minutes: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        CheckConstraint("commission_rate >= 0 AND commission_rate < 1", name="commission_rate_range"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
    )


class Ride(Base):
    __tablename__ = "rides"

    id: Mapped[uuid.UUID] = uuid_pk()
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    vehicle_type: Mapped[VehicleType] = mapped_column(_str_enum(VehicleType, "ride_vehicle_type", 16))
    payment_method: Mapped[PaymentMethod] = mapped_column(_str_enum(PaymentMethod, "payment_method", 8))
    pickup_lat: Mapped[float]
    pickup_lng: Mapped[float]
    pickup_address: Mapped[str | None] = mapped_column(String(500))
    dropoff_lat: Mapped[float]
    dropoff_lng: Mapped[float]
    dropoff_address: Mapped[str | None] = mapped_column(String(500))
    notes: Mapped[str | None] = mapped_column(String(1000))
    distance_km: Mapped[float]
    status: Mapped[RideStatus] = mapped_column(_str_enum(RideStatus, "ride_status"))
    driver_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    accepted_bid_id: Mapped[uuid.UUID | None]
    #: The last dispatch round started (None before the first); compare-and-set by `dispatch.step`.
    dispatch_round: Mapped[int | None]
    #: The last round whose bids were checked; compare-and-set by `dispatch.check_bids`.
    checked_round: Mapped[int | None]
    #: When the customer wants the pickup (None: as soon as possible). Its first round is due
    #: `DISPATCH_SCHEDULE_LEAD` before (`app.services.ride_creation`).
    scheduled_for: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_rides_customer_created", "customer_id", text("created_at DESC")),
        Index("ix_rides_driver_created", "driver_id", text("created_at DESC")),
        Index("ix_rides_pending", "created_at", postgresql_where=text("status = 'PENDING_BIDS'")),
        #: The open-ride cap counts a customer's rides not yet final.
        Index("ix_rides_customer_open", "customer_id", postgresql_where=text(
            "status NOT IN ('COMPLETED', 'CANCELLED', 'NO_DRIVERS_AVAILABLE')")),
    )


class RideEvent(Base):
    """One status change of a ride: who made it, when, from and to (the first is the creation)."""

    __tablename__ = "ride_history"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    ride_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rides.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str] = mapped_column(String(24))
    actor_id: Mapped[uuid.UUID | None]
    actor_role: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[datetime] = created_at()

    __table_args__ = (Index("ix_ride_history_ride", "ride_id", "id"),)


class Offer(Base):
    """A ride offered to a driver in a dispatch round; a driver is offered a ride at most once."""

    __tablename__ = "offers"

    ride_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rides.id", ondelete="CASCADE"), primary_key=True)
    driver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    round: Mapped[int]
    distance_km: Mapped[float]
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (Index("ix_offers_driver", "driver_id", text("created_at DESC")),)


class Bid(Base):
    __tablename__ = "bids"

    id: Mapped[uuid.UUID] = uuid_pk()
    ride_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rides.id", ondelete="CASCADE"))
    driver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    eta_minutes: Mapped[int]
    status: Mapped[BidStatus] = mapped_column(
        _str_enum(BidStatus, "bid_status", 16), default=BidStatus.PENDING
    )
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (
        Index("uq_bids_ride_driver", "ride_id", "driver_id", unique=True),
        Index("uq_bids_one_accepted", "ride_id", unique=True, postgresql_where=text("status = 'ACCEPTED'")),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("eta_minutes >= 0", name="eta_non_negative"),
    )


class NotificationRequest(Base):
    """A message a user must be sent, written in the transaction of the change that causes it.

    The row is the outbox: `notifications.send` delivers it (Twilio WhatsApp/SMS, or the console
    channel when Twilio is not configured) and never twice — the status moves
    `queued → sending → sent → delivered | failed | undelivered` by compare-and-set, and Twilio's
    status callbacks move it on from `sent`. A row written `skipped` is never sent (`error_code`
    says why, e.g. `PHONE_NOT_VERIFIED`).
    """

    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    template: Mapped[str] = mapped_column(String(64))
    #: One notification per cause, e.g. `ride:<id>:bids_ready:0`.
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    params: Mapped[dict[str, object]] = mapped_column(JSONB, default=dict)
    #: `whatsapp`, `sms` or `console` (no Twilio credentials), fixed when the row is written.
    channel: Mapped[str] = mapped_column(String(16), default="console", server_default="console")
    #: E.164 phone number (without the `whatsapp:` prefix).
    recipient: Mapped[str] = mapped_column(String(32), default="", server_default="")
    body: Mapped[str] = mapped_column(Text, default="", server_default="")
    status: Mapped[str] = mapped_column(String(16), default="queued")
    provider_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    #: While `sending`: when a crashed sender's claim lapses and another attempt may take the row.
    lease_until: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("status IN ('queued', 'sending', 'sent', 'delivered', 'failed', 'undelivered', "
                        "'skipped')", name="status_known"),
        CheckConstraint("channel IN ('whatsapp', 'sms', 'console')", name="channel_known"),
    )
