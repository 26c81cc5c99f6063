"""bookings: providers' weeks and exceptions, bookings with no overlap, payments of bookings

A booking keeps `blocked` (its range plus the provider's buffer) from every other live booking of
the provider: the exclusion constraint `ex_bookings_no_overlap` (GiST, with `btree_gist` for the
uuid's equality) refuses an overlapping insert. A payment, and a ledger entry, is now of a ride or
of a booking (exactly one of them).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 17:29:30.500575

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0010'
down_revision: str | Sequence[str] | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    _bookings()
    _providers()
    _payments_of_bookings()


def _bookings() -> None:
    op.create_table('bookings',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('customer_id', sa.UUID(), nullable=False),
    sa.Column('provider_id', sa.UUID(), nullable=False),
    sa.Column('region_code', sa.String(length=16), nullable=False),
    sa.Column('service', sa.String(length=120), nullable=True),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('blocked', postgresql.TSTZRANGE(), nullable=False),
    sa.Column('time_zone', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('payment_method', sa.String(length=8), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('hold_expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    postgresql.ExcludeConstraint((sa.column('provider_id'), '='), (sa.column('blocked'), '&&'), where=sa.text("status IN ('HELD', 'CONFIRMED')"), using='gist', name='ex_bookings_no_overlap'),
    sa.CheckConstraint("payment_method IN ('card', 'cash')", name=op.f('ck_bookings_method_known')),
    sa.CheckConstraint("status IN ('HELD', 'CONFIRMED', 'EXPIRED', 'CANCELLED', 'COMPLETED', 'NO_SHOW')", name=op.f('ck_bookings_status_known')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_bookings_amount_positive')),
    sa.CheckConstraint('ends_at > starts_at', name=op.f('ck_bookings_range_order')),
    sa.ForeignKeyConstraint(['customer_id'], ['users.id'], name=op.f('fk_bookings_customer_id_users')),
    sa.ForeignKeyConstraint(['provider_id'], ['users.id'], name=op.f('fk_bookings_provider_id_users')),
    sa.ForeignKeyConstraint(['region_code'], ['regions.code'], name=op.f('fk_bookings_region_code_regions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bookings'))
    )
    op.create_index('ix_bookings_created', 'bookings', [sa.literal_column('created_at DESC')], unique=False)
    op.create_index('ix_bookings_customer_created', 'bookings', ['customer_id', sa.literal_column('created_at DESC')], unique=False)
    op.create_index('ix_bookings_held_expiry', 'bookings', ['hold_expires_at'], unique=False, postgresql_where=sa.text("status = 'HELD'"))
    op.create_index('ix_bookings_provider_starts', 'bookings', ['provider_id', 'starts_at'], unique=False)
    op.create_table('booking_history',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('booking_id', sa.UUID(), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('actor_id', sa.UUID(), nullable=True),
    sa.Column('actor_role', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['booking_id'], ['bookings.id'], name=op.f('fk_booking_history_booking_id_bookings'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_booking_history'))
    )
    op.create_index('ix_booking_history_booking', 'booking_history', ['booking_id', 'id'], unique=False)


def _providers() -> None:
    op.create_table('provider_schedules',
    sa.Column('provider_id', sa.UUID(), nullable=False),
    sa.Column('region_code', sa.String(length=16), nullable=False),
    sa.Column('time_zone', sa.String(length=64), nullable=False),
    sa.Column('slot_minutes', sa.SmallInteger(), nullable=True),
    sa.Column('buffer_minutes', sa.SmallInteger(), nullable=True),
    sa.Column('price_amount', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('buffer_minutes IS NULL OR buffer_minutes BETWEEN 0 AND 240', name=op.f('ck_provider_schedules_buffer_range')),
    sa.CheckConstraint('price_amount > 0', name=op.f('ck_provider_schedules_price_positive')),
    sa.CheckConstraint('slot_minutes IS NULL OR slot_minutes BETWEEN 5 AND 720', name=op.f('ck_provider_schedules_slot_range')),
    sa.ForeignKeyConstraint(['provider_id'], ['users.id'], name=op.f('fk_provider_schedules_provider_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['region_code'], ['regions.code'], name=op.f('fk_provider_schedules_region_code_regions')),
    sa.PrimaryKeyConstraint('provider_id', name=op.f('pk_provider_schedules'))
    )
    op.create_table('provider_exceptions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('provider_id', sa.UUID(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('start_time', sa.Time(), nullable=True),
    sa.Column('end_time', sa.Time(), nullable=True),
    sa.CheckConstraint('(start_time IS NULL) = (end_time IS NULL)', name=op.f('ck_provider_exceptions_both_or_neither')),
    sa.CheckConstraint('end_time IS NULL OR end_time > start_time', name=op.f('ck_provider_exceptions_period_order')),
    sa.ForeignKeyConstraint(['provider_id'], ['provider_schedules.provider_id'], name=op.f('fk_provider_exceptions_provider_id_provider_schedules'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_exceptions'))
    )
    op.create_index('ix_provider_exceptions_provider_day', 'provider_exceptions', ['provider_id', 'day'], unique=False)
    op.create_table('provider_hours',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('provider_id', sa.UUID(), nullable=False),
    sa.Column('weekday', sa.SmallInteger(), nullable=False),
    sa.Column('start_time', sa.Time(), nullable=False),
    sa.Column('end_time', sa.Time(), nullable=False),
    sa.CheckConstraint('end_time > start_time', name=op.f('ck_provider_hours_period_order')),
    sa.CheckConstraint('weekday BETWEEN 0 AND 6', name=op.f('ck_provider_hours_weekday_range')),
    sa.ForeignKeyConstraint(['provider_id'], ['provider_schedules.provider_id'], name=op.f('fk_provider_hours_provider_id_provider_schedules'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_provider_hours'))
    )
    op.create_index(op.f('ix_provider_hours_provider_id'), 'provider_hours', ['provider_id'], unique=False)


def _payments_of_bookings() -> None:
    op.add_column('ledger_entries', sa.Column('booking_id', sa.UUID(), nullable=True))
    op.alter_column('ledger_entries', 'ride_id',
               existing_type=sa.UUID(),
               nullable=True)
    op.create_index('ix_ledger_entries_booking', 'ledger_entries', ['booking_id'], unique=False)
    op.create_foreign_key(op.f('fk_ledger_entries_booking_id_bookings'), 'ledger_entries', 'bookings', ['booking_id'], ['id'], ondelete='RESTRICT')
    op.add_column('payments', sa.Column('booking_id', sa.UUID(), nullable=True))
    op.add_column('payments', sa.Column('cancellation_fee', sa.BigInteger(), nullable=True))
    op.alter_column('payments', 'ride_id',
               existing_type=sa.UUID(),
               nullable=True)
    op.create_unique_constraint(op.f('uq_payments_booking_id'), 'payments', ['booking_id'])
    op.create_foreign_key(op.f('fk_payments_booking_id_bookings'), 'payments', 'bookings', ['booking_id'], ['id'], ondelete='CASCADE')
    op.add_column('regions', sa.Column('slot_minutes', sa.Integer(), server_default='60', nullable=False))
    op.add_column('regions', sa.Column('slot_buffer_minutes', sa.Integer(), server_default='0', nullable=False))
    op.create_check_constraint(op.f('ck_payments_one_subject'), 'payments',
                               'num_nonnulls(ride_id, booking_id) = 1')
    op.create_check_constraint(op.f('ck_ledger_entries_one_subject'), 'ledger_entries',
                               'num_nonnulls(ride_id, booking_id) = 1')


def downgrade() -> None:
    op.drop_constraint(op.f('ck_ledger_entries_one_subject'), 'ledger_entries', type_='check')
    op.drop_constraint(op.f('ck_payments_one_subject'), 'payments', type_='check')
    # The money ledger is append-only: a farm whose bookings moved money can't go back before them.
    op.execute("""DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM ledger_entries WHERE booking_id IS NOT NULL) THEN
            RAISE EXCEPTION 'ledger entries of bookings exist: 0010 cannot be downgraded';
        END IF;
    END $$""")
    op.execute("DELETE FROM payments WHERE booking_id IS NOT NULL")
    op.drop_column('regions', 'slot_buffer_minutes')
    op.drop_column('regions', 'slot_minutes')
    op.drop_constraint(op.f('fk_payments_booking_id_bookings'), 'payments', type_='foreignkey')
    op.drop_constraint(op.f('uq_payments_booking_id'), 'payments', type_='unique')
    op.alter_column('payments', 'ride_id',
               existing_type=sa.UUID(),
               nullable=False)
    op.drop_column('payments', 'cancellation_fee')
    op.drop_column('payments', 'booking_id')
    op.drop_constraint(op.f('fk_ledger_entries_booking_id_bookings'), 'ledger_entries', type_='foreignkey')
    op.drop_index('ix_ledger_entries_booking', table_name='ledger_entries')
    op.alter_column('ledger_entries', 'ride_id',
               existing_type=sa.UUID(),
               nullable=False)
    op.drop_column('ledger_entries', 'booking_id')
    op.drop_index(op.f('ix_provider_hours_provider_id'), table_name='provider_hours')
    op.drop_table('provider_hours')
    op.drop_index('ix_provider_exceptions_provider_day', table_name='provider_exceptions')
    op.drop_table('provider_exceptions')
    op.drop_index('ix_booking_history_booking', table_name='booking_history')
    op.drop_table('booking_history')
    op.drop_table('provider_schedules')
    op.drop_index('ix_bookings_provider_starts', table_name='bookings')
    op.drop_index('ix_bookings_held_expiry', table_name='bookings', postgresql_where=sa.text("status = 'HELD'"))
    op.drop_index('ix_bookings_customer_created', table_name='bookings')
    op.drop_index('ix_bookings_created', table_name='bookings')
    op.drop_table('bookings')
