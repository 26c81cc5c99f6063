"""SQLAlchemy 2 entities of the farm. Migrations live in `models/migrations` (Alembic)."""

from models.audit import AuditEntry
from models.base import Base
from models.bookings import (
    LIVE_BOOKING_STATUSES,
    Booking,
    BookingEvent,
    BookingStatus,
    ProviderException,
    ProviderHours,
    ProviderSchedule,
)
from models.jobs import FailedJob, Job, JobState
from models.ops import QueuePause, ScheduleRun
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
    AdminAccess,
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
    "LIVE_BOOKING_STATUSES",
    "AdminAccess",
    "AuditEntry",
    "Base",
    "Bid",
    "BidStatus",
    "Booking",
    "BookingEvent",
    "BookingStatus",
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
    "ProviderException",
    "ProviderHours",
    "ProviderSchedule",
    "QueuePause",
    "RefreshToken",
    "Region",
    "RevokedSession",
    "Ride",
    "RideEvent",
    "RideStatus",
    "Role",
    "ScheduleRun",
    "StripeEvent",
    "User",
    "VehicleType",
]
