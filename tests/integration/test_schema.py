"""The migrated schema is the models' schema, and the audit log refuses edits."""

from __future__ import annotations

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from app.db import libpq_dsn
from models import Base


def test_the_migrations_build_exactly_what_the_models_declare(database: str) -> None:
    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            drift = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert drift == []


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET action = 'edited' WHERE id = %(id)s",
    "DELETE FROM audit_log WHERE id = %(id)s",
])
def test_an_audit_entry_can_be_neither_edited_nor_deleted(database: str, statement: str) -> None:
    with psycopg.connect(libpq_dsn(database)) as conn:
        entry = conn.execute(
            "INSERT INTO audit_log (actor_role, action, details, operator) "
            "VALUES ('cli', 'test.append_only', '{}', 'ops@host') RETURNING id"
        ).fetchone()
        assert entry is not None
        conn.commit()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(statement, {"id": entry[0]})
        conn.rollback()
        kept = conn.execute("SELECT action FROM audit_log WHERE id = %s", (entry[0],)).fetchone()
    assert kept == ("test.append_only",)
