"""Alembic environment: migrates the database at the config's `sqlalchemy.url`.

`farmctl db upgrade` (and `models.migrate.upgrade`) set it from the farm's settings; the models
don't read settings or the environment themselves.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from models import Base

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: run `farmctl db upgrade`, which migrates DATABASE_URL")
    return url


url = _url()


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
