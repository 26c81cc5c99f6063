"""phone verification, skipped notifications, the open-ride cap's index

`users.phone_verified_at` and `phone_verifications` (one HMAC'd one-time code per user);
notifications may be written `skipped` (never sent, `error_code` naming why: an unverified number
when verification is required); `ix_rides_customer_open` serves the count of a customer's open
rides that the open-ride cap makes on every `POST /rides`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 08:00:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | Sequence[str] | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = "status NOT IN ('COMPLETED', 'CANCELLED', 'NO_DRIVERS_AVAILABLE')"
_STATUSES = "'queued', 'sending', 'sent', 'delivered', 'failed', 'undelivered'"


def upgrade() -> None:
    op.add_column('users', sa.Column('phone_verified_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        'phone_verifications',
        sa.Column('user_id', sa.UUID(), nullable=False),
        sa.Column('phone', sa.String(length=16), nullable=False),
        sa.Column('code_hash', sa.String(length=64), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_phone_verifications_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', name=op.f('pk_phone_verifications')),
    )
    op.drop_constraint(op.f('ck_notifications_status_known'), 'notifications', type_='check')
    op.create_check_constraint(op.f('ck_notifications_status_known'), 'notifications',
                               f"status IN ({_STATUSES}, 'skipped')")
    op.create_index('ix_rides_customer_open', 'rides', ['customer_id'], unique=False,
                    postgresql_where=sa.text(_OPEN))


def downgrade() -> None:
    op.drop_index('ix_rides_customer_open', table_name='rides', postgresql_where=sa.text(_OPEN))
    op.execute("DELETE FROM notifications WHERE status = 'skipped'")
    op.drop_constraint(op.f('ck_notifications_status_known'), 'notifications', type_='check')
    op.create_check_constraint(op.f('ck_notifications_status_known'), 'notifications', f"status IN ({_STATUSES})")
    op.drop_table('phone_verifications')
    op.drop_column('users', 'phone_verified_at')
