"""SQLAlchemy 2 entities of the farm. Migrations live in `models/migrations` (Alembic)."""

from models.audit import AuditEntry
from models.base import Base
from models.jobs import FailedJob, Job, JobState
from models.payment_states import PaymentStatus
from models.payments import LedgerEntry, LedgerKind, Payment, StripeEvent
from models.rides import (
    Bid,
    BidStatus,
    NotificationRequest,
    Offer,
    PaymentMethod,
    Region,
    Ride,
    RideEvent,
    RideStatus,
)
from models.users import (
    Driver,
    DriverAvailability,
    PhoneVerification,
    RefreshToken,
    RevokedSession,
    Role,
    User,
    VehicleType,
)

__all__ = [
    "AuditEntry",
    "Base",
    "Bid",
    "BidStatus",
    "Driver",
    "DriverAvailability",
    "FailedJob",
    "Job",
    "JobState",
    "LedgerEntry",
    "LedgerKind",
    "NotificationRequest",
    "Offer",
    "Payment",
    "PaymentMethod",
    "PaymentStatus",
    "PhoneVerification",
    "RefreshToken",
    "Region",
    "RevokedSession",
    "Ride",
    "RideEvent",
    "RideStatus",
    "Role",
    "StripeEvent",
    "User",
    "VehicleType",
]
