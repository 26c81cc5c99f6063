"""ops console: paused queues and the clock's last runs

`queue_pauses` holds one row per paused queue (workers take nothing from it while the row
exists); `schedule_runs` the last time each periodic job was written, by the clock or by an
operator's "run now".

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 09:10:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | Sequence[str] | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'queue_pauses',
        sa.Column('queue', sa.String(length=64), nullable=False),
        sa.Column('paused_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('paused_by', sa.String(length=200), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('queue', name=op.f('pk_queue_pauses')),
    )
    op.create_table(
        'schedule_runs',
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('last_run_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('last_trigger', sa.String(length=16), nullable=False),
        sa.Column('last_by', sa.String(length=200), nullable=True),
        sa.Column('last_job_id', sa.UUID(), nullable=True),
        sa.Column('runs', sa.Integer(), server_default='1', nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_schedule_runs')),
    )


def downgrade() -> None:
    op.drop_table('schedule_runs')
    op.drop_table('queue_pauses')
