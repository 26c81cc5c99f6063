"""Money: one payment per accepted ride (its status machine in `models.payment_states`), an
append-only ledger, and Stripe events stored once."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, Numeric, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, created_at, uuid_pk
from models.payment_states import PaymentStatus as PaymentStatus
from models.payment_states import check_move


class Payment(Base):
    """What the customer pays for one ride or one booking, and where that money is at Stripe."""

    __tablename__ = "payments"

    id: Mapped[uuid.UUID] = uuid_pk()
    #: What is paid for: a ride or a booking (exactly one of them).
    ride_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("rides.id", ondelete="CASCADE"), unique=True)
    booking_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("bookings.id", ondelete="CASCADE"),
                                                         unique=True)
    customer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    driver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    method: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(32), default=PaymentStatus.PENDING.value)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    #: The region's rate when the bid was accepted, and the commission it gives on the full fare
    #: (Stripe's `application_fee_amount`; rounded down: the platform never takes more than its rate).
    commission_rate: Mapped[Decimal] = mapped_column(Numeric(5, 4))
    application_fee: Mapped[int] = mapped_column(BigInteger)
    #: The ride's status when it was cancelled (decides release vs cancellation fee).
    cancelled_from: Mapped[str | None] = mapped_column(String(24))
    #: The fee to take instead of the ride's policy when cancelled (a booking's, by time before start).
    cancellation_fee: Mapped[int | None] = mapped_column(BigInteger)
    stripe_account_id: Mapped[str | None] = mapped_column(String(64))
    payment_intent_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    client_secret: Mapped[str | None] = mapped_column(String(200))
    amount_captured: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    disputed: Mapped[bool] = mapped_column(default=False, server_default="false")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("application_fee >= 0 AND application_fee <= amount", name="fee_in_range"),
        CheckConstraint("method IN ('card', 'cash')", name="method_known"),
        CheckConstraint("amount_refunded <= amount_captured", name="refund_within_capture"),
        CheckConstraint("num_nonnulls(ride_id, booking_id) = 1", name="one_subject"),
    )

    @property
    def subject(self) -> str:
        """What the payment is for, as its keys spell it: `ride:<id>` or `booking:<id>` (the prefix of
        its idempotency and ledger keys)."""
        return f"ride:{self.ride_id}" if self.ride_id is not None else f"booking:{self.booking_id}"

    def move_to(self, target: PaymentStatus, at: datetime) -> None:
        """Change the status as `models.payment_states` allows (`InvalidPaymentTransition` if not;
        staying put is no move), stamped `at`."""
        self.status = check_move(PaymentStatus(self.status), target).value
        self.updated_at = at


class LedgerKind(enum.StrEnum):
    DRIVER_EARNING = "driver_earning"
    PLATFORM_COMMISSION = "platform_commission"
    #: Negative: the driver's and the platform's share of a refund.
    DRIVER_REFUND = "driver_refund"
    PLATFORM_REFUND = "platform_refund"
    #: Cash ride: the commission the driver collected in cash and owes the platform.
    CASH_COMMISSION_OWED = "cash_commission_owed"


class LedgerEntry(Base):
    """An append-only money movement (a trigger refuses UPDATE and DELETE).

    For every card ride the entries other than `cash_commission_owed` sum to what Stripe captured
    minus what it refunded; each entry is written once, by its `dedupe_key`.
    """

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    ride_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("rides.id", ondelete="RESTRICT"))
    booking_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("bookings.id", ondelete="RESTRICT"))
    driver_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    #: The Stripe object behind it (PaymentIntent, refund), when there is one.
    reference: Mapped[str | None] = mapped_column(String(64))
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (Index("ix_ledger_entries_driver", "driver_id", "id"),
                      Index("ix_ledger_entries_ride", "ride_id"),
                      Index("ix_ledger_entries_booking", "booking_id"),
                      CheckConstraint("num_nonnulls(ride_id, booking_id) = 1", name="one_subject"))


class StripeEvent(Base):
    """A verified Stripe webhook event, stored once by its id; `payments.handle_event` acts on it."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    account: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = created_at()
    processed_at: Mapped[datetime | None]
