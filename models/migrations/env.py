"""Alembic environment: migrates the database named by DATABASE_URL (or the config's url)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from app.settings import get_settings
from models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().db.url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
