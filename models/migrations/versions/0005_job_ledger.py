"""the durable job ledger replaces the outbox

Every job stays a row of `jobs` until its own transaction marks it done: waiting (until due),
handed to Redis (under a lease), done or failed. Rows still in `outbox_messages` move over as
waiting jobs, due when their delay ends.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 17:00:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005'
down_revision: str | Sequence[str] | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('message_id', sa.UUID(), nullable=False),
    sa.Column('queue', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('kwargs', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('options', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='waiting', nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('handed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('epoch', sa.String(length=40), nullable=True),
    sa.Column('redis_message_id', sa.String(length=40), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('dedupe_key', sa.String(length=200), nullable=True),
    sa.CheckConstraint("state IN ('waiting', 'handed', 'done', 'failed')", name=op.f('ck_jobs_state')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('message_id', name=op.f('uq_jobs_message_id'))
    )
    op.create_index('ix_jobs_waiting_due_at', 'jobs', ['due_at'], unique=False,
                    postgresql_where=sa.text("state = 'waiting'"))
    op.create_index('ix_jobs_handed_lease_until', 'jobs', ['lease_until'], unique=False,
                    postgresql_where=sa.text("state = 'handed'"))
    op.create_index('ix_jobs_finished_at', 'jobs', ['finished_at'], unique=False,
                    postgresql_where=sa.text("state = 'done'"))
    op.create_index('uq_jobs_live_dedupe_key', 'jobs', ['dedupe_key'], unique=True,
                    postgresql_where=sa.text("dedupe_key IS NOT NULL AND state IN ('waiting', 'handed')"))
    op.execute("""
        INSERT INTO jobs (message_id, queue, actor, args, kwargs, options, due_at, created_at)
        SELECT message_id, queue, actor, args, kwargs, options - 'delay_ms',
               created_at + make_interval(secs => COALESCE((options->>'delay_ms')::float8, 0) / 1000),
               created_at
        FROM outbox_messages
    """)
    op.execute("DROP TRIGGER IF EXISTS outbox_messages_notify ON outbox_messages")
    op.drop_table('outbox_messages')
    # Wake the relay when a job becomes waiting (a new one, a retry, a re-hand): pg_notify folds
    # identical notifications of one transaction into one, so a batch insert wakes it once.
    op.execute("""
        CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OF state ON jobs
            FOR EACH ROW WHEN (NEW.state = 'waiting') EXECUTE FUNCTION farm_outbox_notify();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_notify ON jobs")
    op.create_table('outbox_messages',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('message_id', sa.UUID(), nullable=False),
    sa.Column('queue', sa.String(length=64), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('kwargs', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('options', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages')),
    sa.UniqueConstraint('message_id', name=op.f('uq_outbox_messages_message_id'))
    )
    op.execute("""
        INSERT INTO outbox_messages (message_id, queue, actor, args, kwargs, options, created_at)
        SELECT message_id, queue, actor, args, kwargs, options, created_at FROM jobs
        WHERE state IN ('waiting', 'handed')
    """)
    op.execute("""
        CREATE TRIGGER outbox_messages_notify AFTER INSERT ON outbox_messages
            FOR EACH STATEMENT EXECUTE FUNCTION farm_outbox_notify();
    """)
    op.drop_table('jobs')
