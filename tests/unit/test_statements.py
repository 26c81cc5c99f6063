"""`psycopg_named`: SQL written once with SQLAlchemy's `:name` parameters runs on raw psycopg."""

from __future__ import annotations

import pytest

from app.statements import psycopg_named


def test_named_parameters_become_psycopg_parameters_and_casts_stay() -> None:
    sql = "INSERT INTO t (a, b) SELECT :a_1, CAST(:b AS jsonb), '{}'::jsonb, x::text FROM u WHERE id = :id"
    assert psycopg_named(sql) == (
        "INSERT INTO t (a, b) SELECT %(a_1)s, CAST(%(b)s AS jsonb), '{}'::jsonb, x::text "
        "FROM u WHERE id = %(id)s"
    )


def test_a_literal_percent_is_refused_rather_than_misread() -> None:
    with pytest.raises(ValueError):
        psycopg_named("SELECT * FROM t WHERE name LIKE 'a%' AND id = :id")
