"""The pure parts of `farmctl jobs`: what a replayed message looks like, and how `--since` reads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.errors import ValidationFailed
from app.services.failed_job_filter import json_document
from app.services.failed_jobs import JobFilter, parse_since, replay_message
from models.jobs import FailedJob

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def a_failed_job(**options: object) -> FailedJob:
    return FailedJob(id=uuid.uuid4(), message_id="m-1", queue="payments", actor="payments.capture",
                     args=["ride-1"], kwargs={"amount": 5}, options=options, exception_type="x",
                     exception_message="y", traceback="z", attempts=13, replay_count=0)


def test_a_replay_is_a_new_message_with_a_fresh_timestamp_and_retry_budget() -> None:
    # Given a job that failed on its 13th run, delayed, with a traceback and an age limit
    job = a_failed_job(retries=12, eta=1, traceback="Traceback …", redis_message_id="r-1",
                       requeue_timestamp=2, max_age=60_000, max_retries=12)
    # When its replay message is made
    message = replay_message(job, now_ms=1_800_000_000_000)
    # Then it goes to the same queue and actor with the same arguments, as a new message sent now,
    # with no delivery state left and its own limits kept
    assert (message.queue_name, message.actor_name) == ("payments", "payments.capture")
    assert (message.args, message.kwargs) == (("ride-1",), {"amount": 5})
    assert message.message_id != "m-1" and uuid.UUID(message.message_id)
    assert message.message_timestamp == 1_800_000_000_000
    assert message.options == {"retries": 0, "max_age": 60_000, "max_retries": 12, "replay_of": "m-1"}
    # And the stored job is untouched
    assert job.options["retries"] == 12


@pytest.mark.parametrize(("text", "ago"), [
    ("30s", timedelta(seconds=30)), ("45m", timedelta(minutes=45)), ("2h", timedelta(hours=2)),
    ("7d", timedelta(days=7)), ("1w", timedelta(weeks=1)), (" 3 h ", timedelta(hours=3)),
])
def test_since_reads_durations_back_from_now(text: str, ago: timedelta) -> None:
    assert parse_since(text, now=NOW) == NOW - ago


def test_since_reads_moments_utc_when_no_offset_is_given() -> None:
    assert parse_since("2026-11-20T08:30:00Z", now=NOW) == datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
    assert parse_since("2026-11-20T08:30:00+02:00", now=NOW) == datetime(2026, 11, 20, 6, 30, tzinfo=UTC)
    assert parse_since("2026-11-20", now=NOW) == datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize("text", ["yesterday", "2 hours", "-1h", "h", ""])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_since(text, now=NOW)


def test_an_empty_filter_matches_everything_and_each_field_narrows() -> None:
    assert JobFilter().clauses() == []
    assert len(JobFilter(actor="a", queue="q", since=NOW, error="50%_off", replayed=False).clauses()) == 5
    assert len(JobFilter(args="ride-1").clauses()) == 1


@pytest.mark.parametrize(("text", "document"), [
    ('{"ride_id": "r-1"}', {"ride_id": "r-1"}), ('["r-1", 2]', ["r-1", 2]), ("[]", []),
    ("r-1", None), ("42", None), ('"r-1"', None), ("true", None), ("{not json", None),
])
def test_args_is_json_containment_only_for_an_object_or_an_array(text: str, document: object) -> None:
    assert json_document(text) == document


def test_args_text_is_searched_as_text_and_described_as_given() -> None:
    from sqlalchemy.dialects import postgresql

    contains = JobFilter(args='{"ride_id": "r-1"}').clauses()[0]
    text = JobFilter(args="50%").clauses()[0]
    assert "@>" in str(contains.compile(dialect=postgresql.dialect()))
    assert "ILIKE" in str(text.compile(dialect=postgresql.dialect())).upper()
    assert JobFilter(args="50%", actor="a").describe() == {"actor": "a", "args": "50%"}


def test_a_dead_letter_is_named_by_the_error_its_traceback_ends_with() -> None:
    from app.services.failed_jobs import _exception_from_traceback

    row = {"exception_type": "unknown", "exception_message": "no exception was recorded with the message"}
    _exception_from_traceback(row, 'Traceback (most recent call last):\n  File "jobs/x.py", line 3, in run\n'
                                   '    raise ProviderError("Twilio said 503")\n    ^^^^^^^^^^^^^\n'
                                   "app.errors.ProviderError: Twilio said 503\nService Unavailable\n")
    assert row == {"exception_type": "app.errors.ProviderError",
                   "exception_message": "Twilio said 503\nService Unavailable"}
