"""The retention rules as data (`app/services/retention.py`): what may be pruned, and what never."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy.orm import Session

from app.services import retention
from app.settings import RetentionSettings


class NoDatabase:
    def execute(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no statement should run")


def test_no_rule_prunes_failed_jobs_the_ledger_or_the_audit_log() -> None:
    assert {rule.table for rule in retention.RULES}.isdisjoint(retention.KEPT)
    assert {"failed_jobs", "ledger_entries"} <= retention.KEPT


def test_every_rule_reads_its_own_setting_and_ride_history_is_kept_by_default() -> None:
    defaults = RetentionSettings()
    days = {rule.table: rule.days(defaults) for rule in retention.RULES}
    assert days == {"offers": 30, "notifications": 30, "stripe_events": 30, "ride_history": 0}


def test_a_rule_naming_a_kept_table_or_keeping_forever_runs_no_statement() -> None:
    # Given a rule on the ledger (by mistake) and one whose setting keeps forever
    rules = (retention.Rule("ledger_entries", "created_at", "TRUE", lambda s: 1),
             retention.Rule("offers", "created_at", "TRUE", lambda s: 0))
    # When retention runs them, then nothing is asked of the database
    batches = list(retention.prune(cast(Session, NoDatabase()), RetentionSettings(), now=datetime.now(UTC),
                                   rules=rules))
    assert batches == []
