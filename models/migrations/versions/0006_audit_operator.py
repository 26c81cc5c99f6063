"""the audit log names its operator and is append-only

`operator` is the person behind an action: an admin's email for the API, `--by` (default
`user@host`) for the CLI. Rows are never edited or deleted (a trigger refuses both), so the log
can be trusted as a record of what was done; `at` is indexed for the newest-first reads.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 00:30:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('audit_log', sa.Column('operator', sa.String(length=200), nullable=True))
    op.create_index(op.f('ix_audit_log_at'), 'audit_log', ['at'], unique=False)
    op.execute("""
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
        END $$;
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_log_append_only ON audit_log;"
               "DROP FUNCTION audit_log_append_only();")
    op.drop_index(op.f('ix_audit_log_at'), table_name='audit_log')
    op.drop_column('audit_log', 'operator')
