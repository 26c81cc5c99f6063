"""scheduled rides: `rides.scheduled_for`

A ride may be booked for later (`POST /rides` with `scheduledFor`): the column holds when the
customer wants the pickup (NULL for an immediate ride). Its first round's `dispatch.step` job is
written with the ride, due `DISPATCH_SCHEDULE_LEAD` before it, so the job ledger's due-time indexes
already serve it; no index is added (the reconciler reads the column only on `PENDING_BIDS` rides,
which `ix_rides_pending` finds).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 09:00:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | Sequence[str] | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('rides', sa.Column('scheduled_for', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('rides', 'scheduled_for')
