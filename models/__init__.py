"""SQLAlchemy 2 entities of the farm. Migrations live in `models/migrations` (Alembic)."""

from models.audit import AuditEntry
from models.base import Base
from models.jobs import FailedJob, OutboxMessage
from models.users import Driver, RefreshToken, RevokedSession, Role, User, VehicleType

__all__ = [
    "AuditEntry",
    "Base",
    "Driver",
    "FailedJob",
    "OutboxMessage",
    "RefreshToken",
    "RevokedSession",
    "Role",
    "User",
    "VehicleType",
]
