"""admin access: full or read-only admins

`users.admin_access` says what an admin may do: `full`, or `read_only` (support staff: every admin
read, no action). Every existing account keeps `full`; it means nothing for other roles.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 04:30:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | Sequence[str] | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('users', sa.Column(
        'admin_access', sa.Enum('full', 'read_only', name='admin_access', native_enum=False, length=16),
        server_default='full', nullable=False))
    op.create_check_constraint('ck_users_admin_access', 'users', "admin_access IN ('full', 'read_only')")


def downgrade() -> None:
    op.drop_constraint('ck_users_admin_access', 'users', type_='check')
    op.drop_column('users', 'admin_access')
