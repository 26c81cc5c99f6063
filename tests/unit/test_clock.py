"""The clock's schedule: what it sends and how often (no scheduler is started)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.settings import ClockSettings, Settings
from workers import clock


def test_the_clock_sends_each_periodic_job_at_its_configured_interval() -> None:
    # Given a cleanup interval of 15 minutes, a reconcile interval of 20 seconds, a driver prune
    # every 45 seconds and retention every 2 hours
    settings = Settings(clock=ClockSettings(tokens_cleanup_interval_s=900, reconcile_interval_s=20,
                                            driver_prune_interval_s=45, retention_interval_s=7200))
    # When the schedule is built
    scheduler = clock.build_scheduler(settings)
    # Then it sends each job at its own interval, first at start (and the ops snapshot every 2 s)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"tokens.cleanup", "rides.reconcile", "notifications.reconcile",
                         "drivers.prune_stale", "retention.prune", "ops.snapshot"}
    assert jobs["ops.snapshot"].func is clock.send_ops_snapshot
    assert jobs["ops.snapshot"].trigger.interval == timedelta(seconds=2)
    for name, interval in (
        ("tokens.cleanup", timedelta(minutes=15)),
        ("rides.reconcile", timedelta(seconds=20)),
        ("notifications.reconcile", timedelta(seconds=20)),
        ("drivers.prune_stale", timedelta(seconds=45)),
        ("retention.prune", timedelta(hours=2)),
    ):
        job = jobs[name]
        assert job.func is clock.send
        assert list(job.args) == [name]
        assert job.trigger.interval == interval
        assert abs(job.next_run_time - datetime.now(UTC)) < timedelta(seconds=5)


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append(("info", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.events.append(("error", event, fields))


def test_a_send_that_fails_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an actor name no worker knows
    log = RecordingLog()
    monkeypatch.setattr(clock, "log", log)
    # When the clock sends it
    clock.send("no.such_actor")
    # Then the clock keeps running and says what failed
    [(level, event, fields)] = log.events
    assert (level, event, fields["actor"]) == ("error", "clock.send_failed", "no.such_actor")
