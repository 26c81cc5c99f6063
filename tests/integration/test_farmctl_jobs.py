"""`farmctl jobs …` against real failures: test actors fail in a real Dramatiq worker on the run's
Redis and PostgreSQL, and the command (in this process through `main(argv)`, or as a subprocess
for exit codes) lists, shows, replays, purges and imports them. Also `GET /admin/jobs/failed`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
import redis
import structlog
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

import jobs
from app.settings import Settings, get_settings
from jobs.base import JobContext, job
from models import AuditEntry
from models.jobs import FailedJob, FailedJobReplay
from scripts.farmctl import main
from tests.integration.conftest import Accounts, Client, bearer, error_code
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    Runs,
    WorkerFactory,
    broker_redis_fixture,
    count,
    db_fixture,
    dead_letters,
    drain,
    failed_jobs,
    start_worker_fixture,
    wait_for,
)
from workers.resources import get_resources

QUEUE = "test-farmctl"
runs = Runs()
#: Whether `flaky` fails (tests flip it to let a replay succeed).
carrier = {"down": True}


class CarrierDown(Exception):
    """A failure worth retrying."""


class Refused(Exception):
    """A failure no retry can fix."""


@job("test.farmctl.flaky", queue=QUEUE, max_retries=2, min_backoff_ms=10, max_backoff_ms=30)
def flaky(ctx: JobContext, ride_id: str, *, note: str = "") -> None:
    runs.record(ctx.message_id)
    if carrier["down"]:
        raise CarrierDown(f"carrier down for ride {ride_id}")
    runs.record("ok", ctx.message_id)


@job("test.farmctl.refused", queue=QUEUE, max_retries=5, throws=(Refused,))
def refused(ctx: JobContext, ride_id: str) -> None:
    runs.record(ctx.message_id)
    raise Refused(f"card declined for ride {ride_id}")


@pytest.fixture(autouse=True)
def _fresh() -> None:
    runs.clear()
    carrier["down"] = True


def farmctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `farmctl argv` in this process: (exit code, stdout, stderr); its log events are kept apart."""
    capsys.readouterr()
    with structlog.testing.capture_logs():
        code = main(list(argv), configure_logs=False)
    out, err = capsys.readouterr()
    return code, out, err


def farmctl_processes(*commands: tuple[list[str], dict[str, str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run `python -m scripts.farmctl argv` for each (argv, extra env), side by side, with this run's
    environment; their results in order."""
    started = [(argv, subprocess.Popen([sys.executable, "-m", "scripts.farmctl", *argv], text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       env={**os.environ, **env}))
               for argv, env in commands]
    results = []
    for argv, process in started:
        out, err = process.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(argv, process.returncode, out, err))
    return results


def farmctl_process(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m scripts.farmctl argv` with this run's environment (plus `env`)."""
    [result] = farmctl_processes((list(argv), env or {}))
    return result


def failed(db: sessionmaker[Session], message_id: str) -> FailedJob:
    [row] = wait_for(lambda: failed_jobs(db, message_id), what=f"the failure of {message_id}")
    return row


def audited(db: sessionmaker[Session],
            action: str) -> list[tuple[str, str | None, str | None, dict[str, Any]]]:
    """The audit log's rows of `action`, oldest first: (role, operator, target id, details)."""
    with db() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))
        return [(row.actor_role, row.operator, row.target_id, row.details) for row in rows]


def fail_both(db: sessionmaker[Session]) -> tuple[FailedJob, FailedJob]:
    """A retried job that ran out of retries, then one refused at once (newer)."""
    first = failed(db, flaky.send("ride-1", note="first").message_id)
    time.sleep(0.01)
    second = failed(db, refused.send("ride-2").message_id)
    drain(QUEUE)
    return first, second


# --- listing and showing -------------------------------------------------------------------------
def test_failed_lists_newest_first_and_filters(
    start_worker: WorkerFactory, db: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two real failures of two actors
    start_worker(relay=get_settings())
    flaky_row, refused_row = fail_both(db)

    # When the admin lists them
    code, out, _ = farmctl(capsys, "jobs", "failed")
    # Then a table shows both, newest first, with tries, the error on one line and no replay yet
    assert code == 0
    header, *lines = out.strip().splitlines()
    assert header.split()[:5] == ["ID", "FAILED", "AT", "(UTC)", "QUEUE"]
    assert [line.split()[0] for line in lines] == [str(refused_row.id)[:8], str(flaky_row.id)[:8]]
    assert "test.farmctl.refused" in lines[0] and "Refused: card declined for ride ride-2" in lines[0]
    assert "CarrierDown: carrier down for ride ride-1" in lines[1]
    assert lines[1].split()[5:7] == ["3", "-"]  # three tries, not replayed

    # And each filter narrows the list
    for argv, expected in [
        (["--actor", "test.farmctl.flaky"], [flaky_row]),
        (["--error", "DECLINED"], [refused_row]),
        (["--error", "CarrierDown"], [flaky_row]),
        (["--queue", QUEUE, "--since", "1h"], [refused_row, flaky_row]),
        (["--not-replayed"], [refused_row, flaky_row]),
        (["--args", "RIDE-2"], [refused_row]),  # text anywhere in args or kwargs, any case
        (["--args", "FIRST"], [flaky_row]),
        (["--args", "ride-"], [refused_row, flaky_row]),
        (["--args", '{"note": "first"}'], [flaky_row]),  # a JSON object: contained in kwargs
        (["--args", '["ride-2"]'], [refused_row]),  # a JSON array: contained in args
        (["--args", "ride", "--actor", "test.farmctl.flaky"], [flaky_row]),
    ]:
        code, out, _ = farmctl(capsys, "jobs", "failed", "--json", *argv)
        assert code == 0, argv
        assert [json.loads(line)["id"] for line in out.splitlines()] == [str(r.id) for r in expected], argv

    # And JSON lines carry what scripts need
    code, out, _ = farmctl(capsys, "jobs", "failed", "--json", "--actor", "test.farmctl.flaky")
    [item] = [json.loads(line) for line in out.splitlines()]
    assert item["messageId"] == flaky_row.message_id
    assert item["args"] == ["ride-1"] and item["kwargs"] == {"note": "first"}
    assert item["attempts"] == 3 and item["replayCount"] == 0 and item["source"] == "worker"
    assert item["exceptionType"].endswith("CarrierDown") and item["failedAt"].endswith("Z")

    # And --limit says there is more
    code, out, err = farmctl(capsys, "jobs", "failed", "--limit", "1")
    assert code == 0 and len(out.strip().splitlines()) == 2
    assert "1 of 2 shown" in err
    # And nothing matching is exit 1, with one line on stderr
    for argv in (["--actor", "nobody"], ["--since", "2099-01-01T00:00:00Z"], ["--replayed"],
                 ["--args", '{"note": "second"}'], ["--args", "ride_1"]):
        code, out, err = farmctl(capsys, "jobs", "failed", *argv)
        assert (code, out) == (1, ""), argv
        assert err.strip() == "farmctl: no failed job matches"
    # And a bad value is exit 2, whether the parser or the command finds it
    for argv in (["--since", "yesterday-ish"], ["--limit", "0"], ["--replayed", "--not-replayed"]):
        code, out, err = farmctl(capsys, "jobs", "failed", *argv)
        assert (code, out) == (2, ""), argv
        assert err.splitlines()[-1].startswith("farmctl") and "Traceback" not in err, argv


def test_show_prints_every_field_arguments_and_the_full_traceback(
    start_worker: WorkerFactory, db: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a real failure
    start_worker(relay=get_settings())
    row, _ = fail_both(db)

    # When the admin shows it by a short prefix of its id
    code, out, _ = farmctl(capsys, "jobs", "show", str(row.id)[:6])

    # Then every field is there, the arguments pretty-printed, the whole traceback, no replays yet
    assert code == 0
    assert f"failed job   {row.id}" in out
    assert f"message id   {row.message_id}" in out
    assert "actor        test.farmctl.flaky" in out and f"queue        {QUEUE}" in out
    assert "attempts     3" in out and "source       worker" in out
    assert f"error        {__name__}.CarrierDown: carrier down for ride ride-1" in out
    assert 'args:\n  [\n    "ride-1"\n  ]' in out
    assert 'kwargs:\n  {\n    "note": "first"\n  }' in out
    assert '"max_retries"' not in out or "options:" in out
    assert "traceback:\n  Traceback (most recent call last):" in out
    assert 'raise CarrierDown(f"carrier down for ride {ride_id}")' in out
    assert out.rstrip().endswith("replays: none")
    # And the message id works too, and --json has everything
    code, out, _ = farmctl(capsys, "jobs", "show", row.message_id, "--json")
    detail = json.loads(out)
    assert code == 0 and detail["id"] == str(row.id) and detail["replays"] == []
    assert "CarrierDown" in detail["traceback"] and detail["options"]["retries"] == 3

    # When the id matches nothing, or is not an id
    assert farmctl(capsys, "jobs", "show", "ffffffff")[0] == 1
    code, _, err = farmctl(capsys, "jobs", "show", "not-an-id")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


# --- replay --------------------------------------------------------------------------------------
def test_a_replay_runs_again_with_a_fresh_budget_is_recorded_and_is_not_repeated_unless_forced(
    start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis, settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a job that ran out of its retries (3 runs), its dead letter also in Redis
    start_worker(relay=get_settings())
    original = failed(db, flaky.send("ride-7").message_id)
    drain(QUEUE)
    assert runs.count(original.message_id) == 3
    assert [m.message_id for m in dead_letters(broker_redis, settings, QUEUE)] == [original.message_id]

    # When the admin replays it while the carrier is still down
    code, out, err = farmctl(capsys, "jobs", "replay", str(original.id)[:8], "--by", "ops@desk")

    # Then it is sent again as a new message on its queue, with a fresh retry budget: 3 more runs,
    # then recorded as its own failure, pointing back at the original
    assert code == 0, err
    assert "replayed as message" in out and "replayed 1, skipped 0 (by ops@desk)" in err
    replayed = _reloaded(db, original)
    assert replayed.replay_count == 1 and replayed.replayed_by == "ops@desk"
    assert replayed.replay_message_id and replayed.replay_message_id != original.message_id
    again = failed(db, replayed.replay_message_id)
    drain(QUEUE)
    assert runs.count(replayed.replay_message_id) == 3
    assert again.options["replay_of"] == original.message_id
    # and the original's dead letter left Redis (the registry tracks it); the replay ran from the job
    # ledger, which recorded its failure in the registry alone (no dead letter)
    assert dead_letters(broker_redis, settings, QUEUE) == []

    # When the admin replays the original again, without --force
    code, out, err = farmctl(capsys, "jobs", "replay", str(original.id))
    # Then nothing is sent
    assert code == 1
    assert "skipped: already replayed once" in out and "--force" in out
    assert _reloaded(db, original).replay_count == 1

    # When the carrier is back and the admin forces the replay
    carrier["down"] = False
    code, out, err = farmctl(capsys, "jobs", "replay", str(original.id), "--force", "--by", "ops@desk")
    # Then it runs once more, and succeeds: no new failure
    assert code == 0, err
    forced = _reloaded(db, original)
    wait_for(lambda: forced.replay_message_id in runs.values("ok"), what="the forced replay to succeed")
    drain(QUEUE)
    assert count(db, FailedJob) == 2
    assert forced.replay_count == 2
    with db() as session:
        history = session.scalars(select(FailedJobReplay).where(FailedJobReplay.failed_job_id == original.id)
                                  .order_by(FailedJobReplay.id)).all()
    assert [(h.message_id, h.replayed_by, h.forced) for h in history] == [
        (again.message_id, "ops@desk", False), (forced.replay_message_id, "ops@desk", True)]
    # And the audit log names the operator of each replay that was sent (the skipped one is absent)
    assert audited(db, "job.replayed") == [
        ("cli", "ops@desk", str(original.id), {"actor": "test.farmctl.flaky", "queue": QUEUE,
                                               "messageId": again.message_id, "forced": False}),
        ("cli", "ops@desk", str(original.id), {"actor": "test.farmctl.flaky", "queue": QUEUE,
                                               "messageId": forced.replay_message_id, "forced": True})]

    # And `show` tells the replay story
    code, out, _ = farmctl(capsys, "jobs", "show", str(original.id))
    assert "replays: 2" in out
    assert f"as message {again.message_id}  failed again: {str(again.id)[:8]}" in out
    assert f"as message {forced.replay_message_id} (forced)" in out
    # And the list marks it replayed
    code, out, _ = farmctl(capsys, "jobs", "failed", "--replayed", "--json")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [str(original.id)]


def test_replay_all_with_filters_dry_run_first(
    start_worker: WorkerFactory, db: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two failures of two actors
    start_worker(relay=get_settings())
    flaky_row, refused_row = fail_both(db)
    carrier["down"] = False

    # When the admin dry-runs a replay of one actor's failures
    code, out, err = farmctl(capsys, "jobs", "replay", "--all", "--actor", "test.farmctl.flaky", "--dry-run")
    # Then it says what it would do and sends nothing
    assert code == 0
    assert out.splitlines() == [f"{str(flaky_row.id)[:8]}  test.farmctl.flaky on {QUEUE}  would replay"]
    assert "nothing was sent" in err
    assert _reloaded(db, flaky_row).replay_count == 0

    # When it replays them for real
    code, out, _ = farmctl(capsys, "jobs", "replay", "--all", "--actor", "test.farmctl.flaky")
    # Then only that actor's job runs again (and succeeds)
    assert code == 0
    message_id = _reloaded(db, flaky_row).replay_message_id
    wait_for(lambda: message_id in runs.values("ok"), what="the replay to run")
    assert _reloaded(db, refused_row).replay_count == 0
    # And a second --all leaves replayed jobs out: nothing matches
    code, _, err = farmctl(capsys, "jobs", "replay", "--all", "--actor", "test.farmctl.flaky")
    assert code == 1 and "--force includes them" in err

    # And bad usage is exit 2, one line
    for argv in ([], [str(flaky_row.id), "--all"], [str(flaky_row.id), "--actor", "x"]):
        code, out, err = farmctl(capsys, "jobs", "replay", *argv)
        assert (code, out) == (2, ""), argv
        assert err.count("\n") == 1 and err.startswith("farmctl: "), argv
    # And an unknown id sends nothing at all, even next to a known one
    code, _, err = farmctl(capsys, "jobs", "replay", str(refused_row.id), "abcdef12")
    assert code == 1 and "abcdef12" in err
    assert _reloaded(db, refused_row).replay_count == 0


def test_a_replay_gets_a_fresh_timestamp_so_an_expired_age_limit_does_not_stop_it(
    start_worker: WorkerFactory, db: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a message with a 2 s age limit, first sent a minute ago: refused by AgeLimit, never run
    carrier["down"] = False
    start_worker(relay=get_settings())
    stale = flaky.message_with_options(args=("ride-9",), max_age=2_000).copy(
        message_timestamp=int(time.time() * 1000) - 60_000)
    jobs.broker.enqueue(stale)
    row = failed(db, stale.message_id)
    drain(QUEUE)
    assert runs.count(stale.message_id) == 0 and row.exception_type.endswith("SkipMessage")

    # When the admin replays it
    code, _, err = farmctl(capsys, "jobs", "replay", str(row.id))

    # Then it runs (its age counts from the replay), keeping its age limit
    assert code == 0, err
    message_id = _reloaded(db, row).replay_message_id
    wait_for(lambda: message_id in runs.values("ok"), what="the replayed message to run")
    drain(QUEUE)
    assert count(db, FailedJob) == 1
    with db() as session:
        assert session.scalar(select(FailedJob.options).where(FailedJob.id == row.id))["max_age"] == 2_000


# --- purge ---------------------------------------------------------------------------------------
def test_purge_needs_yes_counts_on_dry_run_and_deletes_with_the_dead_letters(
    start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis, settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given two failures (also dead-lettered in Redis)
    start_worker(relay=get_settings())
    flaky_row, refused_row = fail_both(db)
    assert len(dead_letters(broker_redis, settings, QUEUE)) == 2

    # When the admin purges without --yes: refused, nothing deleted
    code, out, err = farmctl(capsys, "jobs", "purge", "--actor", "test.farmctl.refused")
    assert (code, out) == (2, "") and "--yes" in err
    # When it dry-runs: the count, nothing deleted
    code, out, _ = farmctl(capsys, "jobs", "purge", "--actor", "test.farmctl.refused", "--dry-run")
    assert code == 0 and out.strip() == "would delete 1 failed job; nothing was deleted"
    assert count(db, FailedJob) == 2

    # When it purges with --yes
    code, out, _ = farmctl(capsys, "jobs", "purge", "--actor", "test.farmctl.refused", "--yes")
    # Then that job is gone, from the registry and from Redis's dead letters; the other stays
    assert (code, out.strip()) == (0, "deleted 1 failed job")
    assert [r.id for r in failed_jobs(db)] == [flaky_row.id]
    assert [m.message_id for m in dead_letters(broker_redis, settings, QUEUE)] == [flaky_row.message_id]
    # And the purge is in the audit log with the filter, the count and who ran it (user@host)
    [(role, operator, target, details)] = audited(db, "jobs.purged")
    assert (role, target, details) == ("cli", None, {"count": 1, "filter": {"actor": "test.farmctl.refused"}})
    assert operator and "@" in operator
    # And purging again matches nothing
    assert farmctl(capsys, "jobs", "purge", "--actor", "test.farmctl.refused", "--yes")[0] == 1
    assert refused_row.id not in {r.id for r in failed_jobs(db)}


def test_replay_and_purge_pick_jobs_by_their_arguments(
    start_worker: WorkerFactory, db: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two real failures, for ride-1 and ride-2
    start_worker(relay=get_settings())
    flaky_row, refused_row = fail_both(db)

    # When the admin dry-runs a replay of the jobs whose arguments mention ride-1
    code, out, _ = farmctl(capsys, "jobs", "replay", "--all", "--args", "ride-1", "--dry-run")
    # Then only that job would be sent
    assert code == 0
    assert out.splitlines() == [f"{str(flaky_row.id)[:8]}  test.farmctl.flaky on {QUEUE}  would replay"]

    # When it purges the jobs called with ["ride-2"] (dry run, then for real)
    code, out, _ = farmctl(capsys, "jobs", "purge", "--args", '["ride-2"]', "--dry-run")
    assert code == 0 and out.strip() == "would delete 1 failed job; nothing was deleted"
    code, out, _ = farmctl(capsys, "jobs", "purge", "--args", '["ride-2"]', "--yes", "--by", "ops@desk")
    # Then only that one is gone, and the audit log keeps the filter as given
    assert (code, out.strip()) == (0, "deleted 1 failed job")
    assert [r.id for r in failed_jobs(db)] == [flaky_row.id]
    assert refused_row.id not in {r.id for r in failed_jobs(db)}
    assert audited(db, "jobs.purged") == [("cli", "ops@desk", None,
                                           {"count": 1, "filter": {"args": '["ride-2"]'}})]
    # And --args goes with --all, not with IDs
    code, out, err = farmctl(capsys, "jobs", "replay", str(flaky_row.id), "--args", "ride-1")
    assert (code, out) == (2, "") and "--args" in err


# --- dead letters --------------------------------------------------------------------------------
@pytest.fixture
def registry_down(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Makes the worker's failure recorder unable to reach PostgreSQL (jobs themselves don't use it)."""
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/unreachable",
                           connect_args={"connect_timeout": 1})
    resources = get_resources()
    monkeypatch.setattr(resources, "sessions", sessionmaker(engine))
    yield monkeypatch
    engine.dispose()


def test_a_failure_postgres_could_not_record_stays_in_redis_and_is_imported_once(
    start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis, settings: Settings,
    registry_down: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a worker that can't write to the registry, and a job that runs out of retries
    start_worker(relay=get_settings())
    message = flaky.send("ride-3", note="lost?")
    [letter] = wait_for(lambda: dead_letters(broker_redis, settings, QUEUE), what="the dead letter")
    drain(QUEUE)
    registry_down.undo()
    # Then the registry doesn't have it, but Redis's dead-letter queue does, and `queues` shows it
    assert failed_jobs(db) == [] and letter.message_id == message.message_id
    code, out, _ = farmctl(capsys, "queues", "--queue", QUEUE, "--json")
    [stats] = json.loads(out)["queues"]
    assert (stats["dead"], stats["failed"]) == (1, 0)

    # When an import runs while PostgreSQL is unreachable (its own process, a wrong address)
    process = farmctl_process("jobs", "import-dead-letters", "--queue", QUEUE,
                              env={"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x"})
    # Then it says so in one line (exit 3), and the dead letter is still in Redis
    assert process.returncode == 3, process.stderr
    assert process.stderr.startswith("farmctl: PostgreSQL is unreachable")
    assert "Traceback" not in process.stderr
    assert len(dead_letters(broker_redis, settings, QUEUE)) == 1

    # When the admin imports with the registry back
    code, out, _ = farmctl(capsys, "jobs", "import-dead-letters", "--queue", QUEUE)
    # Then it is in the registry, marked as imported, with what replay needs; Redis no longer holds it
    assert code == 0 and out.strip() == f"{QUEUE}: 1 imported, 0 already recorded"
    [row] = failed_jobs(db)
    assert (row.message_id, row.actor, row.queue, row.source) == (
        message.message_id, "test.farmctl.flaky", QUEUE, "dead-letter")
    assert (row.args, row.kwargs, row.attempts) == (["ride-3"], {"note": "lost?"}, 3)
    assert row.exception_type == f"{__name__}.CarrierDown"  # from the last retried run's traceback
    assert "carrier down for ride ride-3" in row.traceback
    assert dead_letters(broker_redis, settings, QUEUE) == []
    # And a second import finds nothing; the row stays single
    assert farmctl(capsys, "jobs", "import-dead-letters", "--queue", QUEUE)[0] == 1
    assert count(db, FailedJob) == 1

    # And the imported job replays like any other
    carrier["down"] = False
    assert farmctl(capsys, "jobs", "replay", str(row.id))[0] == 0
    message_id = _reloaded(db, row).replay_message_id
    wait_for(lambda: message_id in runs.values("ok"), what="the imported job's replay")


def test_importing_dead_letters_of_recorded_failures_adds_nothing_and_clears_redis(
    start_worker: WorkerFactory, db: sessionmaker[Session], broker_redis: redis.Redis, settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given two recorded failures, whose dead letters Redis also keeps (as it always does)
    start_worker(relay=get_settings())
    fail_both(db)
    assert len(dead_letters(broker_redis, settings, QUEUE)) == 2
    # When `jobs failed --import-dead-letters` runs
    code, out, err = farmctl(capsys, "jobs", "failed", "--import-dead-letters", "--queue", QUEUE)
    # Then nothing is duplicated, the copies leave Redis, and the list follows
    assert code == 0 and f"{QUEUE}: 0 imported, 2 already recorded" in err
    assert len(out.strip().splitlines()) == 3
    assert count(db, FailedJob) == 2
    assert dead_letters(broker_redis, settings, QUEUE) == []


def test_an_undecodable_dead_letter_is_reported_and_left_in_redis(
    clean: None, broker_redis: redis.Redis, settings: Settings, db: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a corrupt entry in a dead-letter queue
    key = f"{settings.redis.dramatiq_namespace}:{QUEUE}.XQ"
    broker_redis.zadd(key, {"broken-1": time.time() * 1000})
    broker_redis.hset(f"{key}.msgs", "broken-1", b"not a message")
    # When it is imported
    code, out, _ = farmctl(capsys, "jobs", "import-dead-letters", "--queue", QUEUE)
    # Then nothing is imported and the entry stays for a human to look at
    assert code == 1 and "1 undecodable left in Redis" in out
    assert broker_redis.zcard(key) == 1 and failed_jobs(db) == []


# --- exit codes, as a process --------------------------------------------------------------------
def test_exit_codes_and_one_line_errors_as_a_real_process(
    start_worker: WorkerFactory, db: sessionmaker[Session]
) -> None:
    # Given two real failures
    start_worker(relay=get_settings())
    flaky_row, refused_row = fail_both(db)

    # When the command runs as a process, in various ways
    expected = [
        (["jobs", "failed", "--actor", "nobody"], 1),  # nothing matched
        (["jobs", "purge", "--actor", "test.farmctl.flaky"], 2),  # purge without --yes
    ]
    listed, down, *others = farmctl_processes(
        (["jobs", "failed", "--json"], {}), (["queues"], {"REDIS_URL": "redis://127.0.0.1:1/0"}),
        *((argv, {}) for argv, _ in expected))

    # Then listing is 0, with JSON lines newest first
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [
        str(refused_row.id), str(flaky_row.id)]
    # And nothing matched is 1 and bad usage 2, with the reason on stderr and no traceback
    for (argv, code), process in zip(expected, others, strict=True):
        assert process.returncode == code, (argv, process.stderr)
        assert process.stdout == "" and "Traceback" not in process.stderr, argv
        assert process.stderr.splitlines()[-1].startswith("farmctl"), argv
    # And an unreachable Redis is 3, in one line
    assert down.returncode == 3 and down.stderr.startswith("farmctl: Redis is unreachable")
    assert down.stderr.count("\n") == 1
    assert count(db, FailedJob) == 2


def test_every_command_has_help_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [["jobs", "failed"], ["jobs", "show"], ["jobs", "replay"], ["jobs", "purge"],
                ["jobs", "import-dead-letters"], ["queues"], ["drivers", "suspend"], ["drivers", "activate"],
                ["users", "create-admin"], ["regions", "set"], ["db", "upgrade"], ["demo", "seed"]]
    for command in commands:
        code, out, _ = farmctl(capsys, *command, "--help")
        assert code == 0 and "example" in out and f"farmctl {' '.join(command)}" in out, command


# --- the same registry over HTTP -----------------------------------------------------------------
async def test_admins_read_failed_jobs_over_http_newest_first_with_a_cursor(
    api: Client, accounts: Accounts, start_worker: WorkerFactory, db: sessionmaker[Session],
) -> None:
    # Given three real failures and an admin
    start_worker(relay=get_settings())
    rows = [failed(db, flaky.send(f"ride-{n}").message_id) for n in range(2)]
    rows.append(failed(db, refused.send("ride-9").message_id))
    drain(QUEUE)
    admin = bearer((await accounts.admin())["accessToken"])
    url = "/api/v1/admin/jobs/failed"

    # When it reads them two at a time
    first = await api.get(url, params={"limit": 2}, headers=admin)
    assert first.status_code == 200, first.text
    page = first.json()
    second = (await api.get(url, params={"limit": 2, "cursor": page["nextCursor"]}, headers=admin)).json()
    # Then they come newest first, each once, the last page without a cursor
    newest_first = sorted(rows, key=lambda r: r.failed_at, reverse=True)
    assert [i["id"] for i in page["items"] + second["items"]] == [str(r.id) for r in newest_first]
    assert page["nextCursor"] and second["nextCursor"] is None
    item = page["items"][0]
    assert item["actor"] == "test.farmctl.refused" and item["args"] == ["ride-9"]
    assert item["exceptionMessage"] == "card declined for ride ride-9" and "traceback" not in item

    # And the filters apply
    async def ids(**params: str) -> list[str]:
        response = await api.get(url, params=params, headers=admin)
        assert response.status_code == 200, response.text
        return [i["id"] for i in response.json()["items"]]

    assert await ids(actor="test.farmctl.flaky") == [str(r.id) for r in newest_first if r.actor.endswith("y")]
    assert await ids(queue="nope") == []
    assert len(await ids(queue=QUEUE, since="1h")) == 3
    assert await ids(since="2099-01-01T00:00:00Z") == []
    # And a bad `since` is a 400; a driver may not look
    bad = await api.get(url, params={"since": "soon"}, headers=admin)
    assert bad.status_code == 400 and error_code(bad) == "VALIDATION_ERROR"
    driver = await accounts.register("driver")
    refused_read = await api.get(url, headers=bearer(driver["accessToken"]))
    assert refused_read.status_code == 403 and error_code(refused_read) == "FORBIDDEN"


def _reloaded(db: sessionmaker[Session], row: FailedJob) -> FailedJob:
    with db() as session:
        return session.get_one(FailedJob, row.id)


def test_output_cut_short_by_its_reader_ends_quietly(db: sessionmaker[Session]) -> None:
    # Given `farmctl queues` writing into a pipe whose reader has already gone (`… | head -0`)
    process = subprocess.Popen([sys.executable, "-m", "scripts.farmctl", "queues"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()

    # When it finishes
    errors = process.stderr.read()
    status = process.wait(timeout=60)

    # Then it says nothing (no traceback) and exits as a shell's SIGPIPE'd writer does
    assert (status, errors) == (141, "")
