"""The clock's schedule: what it sends and how often (no scheduler is started)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.settings import ClockSettings, Settings
from workers import clock


def test_the_clock_sends_tokens_cleanup_at_the_configured_interval() -> None:
    # Given a cleanup interval of 15 minutes
    settings = Settings(clock=ClockSettings(tokens_cleanup_interval_s=900))
    # When the schedule is built
    scheduler = clock.build_scheduler(settings)
    # Then it has one job, sending `tokens.cleanup` every 15 minutes, the first one at start
    [job] = scheduler.get_jobs()
    assert job.id == "tokens.cleanup"
    assert job.func is clock.send
    assert list(job.args) == ["tokens.cleanup"]
    assert job.trigger.interval == timedelta(minutes=15)
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
