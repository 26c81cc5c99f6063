"""batched jobs: a wake-up channel and a due-time index for each runner of the ledger

Rounds and bid checks (`dispatch.step`, `dispatch.check_bids`) are run in batches by the
dispatchers, and `notifications.send` by the notification senders, straight from `jobs`; every
other job is still handed to Redis by the relay. Each gets a partial index of its waiting rows by
due time (a backlog of bid checks due minutes from now must not slow the relay's "what is due
next"), and the trigger wakes only the one whose job became waiting: `farm_dispatch`,
`farm_notifications` or `farm_outbox`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 12:00:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | Sequence[str] | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DISPATCH = "actor IN ('dispatch.step', 'dispatch.check_bids')"
NOTIFICATIONS = "actor IN ('notifications.send')"
OTHERS = "actor NOT IN ('dispatch.step', 'dispatch.check_bids', 'notifications.send')"


def upgrade() -> None:
    op.create_index('ix_jobs_waiting_dispatch_due_at', 'jobs', ['due_at'], unique=False,
                    postgresql_where=sa.text(f"state = 'waiting' AND {DISPATCH}"))
    op.create_index('ix_jobs_waiting_notifications_due_at', 'jobs', ['due_at'], unique=False,
                    postgresql_where=sa.text(f"state = 'waiting' AND {NOTIFICATIONS}"))
    op.create_index('ix_jobs_waiting_relay_due_at', 'jobs', ['due_at'], unique=False,
                    postgresql_where=sa.text(f"state = 'waiting' AND {OTHERS}"))
    op.execute(f"""
        CREATE FUNCTION farm_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.{DISPATCH} THEN
                PERFORM pg_notify('farm_dispatch', '');
            ELSIF NEW.{NOTIFICATIONS} THEN
                PERFORM pg_notify('farm_notifications', '');
            ELSE
                PERFORM pg_notify('farm_outbox', '');
            END IF;
            RETURN NULL;
        END $$;
        DROP TRIGGER jobs_notify ON jobs;
        CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OF state ON jobs
            FOR EACH ROW WHEN (NEW.state = 'waiting') EXECUTE FUNCTION farm_jobs_notify();
    """)


def downgrade() -> None:
    op.execute("""
        DROP TRIGGER jobs_notify ON jobs;
        CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OF state ON jobs
            FOR EACH ROW WHEN (NEW.state = 'waiting') EXECUTE FUNCTION farm_outbox_notify();
        DROP FUNCTION farm_jobs_notify();
    """)
    op.drop_index('ix_jobs_waiting_relay_due_at', table_name='jobs')
    op.drop_index('ix_jobs_waiting_notifications_due_at', table_name='jobs')
    op.drop_index('ix_jobs_waiting_dispatch_due_at', table_name='jobs')
