"""`/api/v1/admin/jobs/*`: the failed-jobs registry for admins — filters, count, one job, replay one,
replay matching, purge matching — and who may do what.

Failed jobs are the rows a worker writes when a job runs out of retries (`failed_job_row`, as the
worker's recorder builds them), some with their dead letter still in Redis. A replay writes its job
into the durable ledger; no worker runs here, so the ledger row is what the test checks (the
relay-to-worker path of a replay is `test_farmctl_jobs.py`'s)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from app import keys
from app.services.failed_jobs import failed_job_row
from app.settings import Settings
from models import AuditEntry, Job
from models.jobs import FailedJob
from tests.integration.conftest import Accounts, Client, bearer, error_code
from tests.integration.workers_support import broker_redis_fixture, count, db_fixture  # noqa: F401

URL = "/api/v1/admin/jobs/failed"
CAPTURE, SEND = keys.PAYMENTS_CAPTURE, keys.NOTIFICATIONS_SEND


class CardDeclined(Exception):
    pass


def add_failed(db: sessionmaker[Session], actor: str, queue: str, args: list[Any], kwargs: dict[str, Any], *,
               error: Exception, ago: timedelta, redis_id: str | None = None, traceback: bool = True,
               replayed_by: str | None = None) -> FailedJob:
    """A failed job as the worker records it, failed `ago` (its dead letter in Redis under `redis_id`)."""
    options: dict[str, Any] = {"max_retries": 3, "retries": 3}
    if redis_id:
        options["redis_message_id"] = redis_id
    row = failed_job_row(str(uuid.uuid4()), queue, actor, args, kwargs, options, error, None, source="worker",
                         attempts=4)
    row["failed_at"] = datetime.now(UTC) - ago
    if not traceback:
        row["traceback"] = ""
    if replayed_by:
        row.update(replay_count=1, replayed_at=datetime.now(UTC), replayed_by=replayed_by,
                   replay_message_id=str(uuid.uuid4()))
    with db() as session:
        job = session.scalars(insert(FailedJob).values(row).returning(FailedJob)).one()
        session.commit()
    return job


def dead_letter(client: redis.Redis, settings: Settings, queue: str, redis_id: str) -> None:
    key = f"{settings.redis.dramatiq_namespace}:{queue}.XQ"
    client.zadd(key, {redis_id: 1})
    client.hset(f"{key}.msgs", redis_id, b"{}")


def dead_letter_ids(client: redis.Redis, settings: Settings, queue: str) -> list[str]:
    key = f"{settings.redis.dramatiq_namespace}:{queue}.XQ"
    return sorted(item.decode() for item in client.zrange(key, 0, -1))  # type: ignore[union-attr]


@pytest.fixture
def three(api: Client, db: sessionmaker[Session], broker_redis: redis.Redis,
          settings: Settings) -> tuple[FailedJob, FailedJob, FailedJob]:
    """Three failed jobs, oldest first: two captures (the first dead-lettered too), one notification
    already replayed once."""
    dead_letter(broker_redis, settings, CAPTURE.queue, "dl-1")
    first = add_failed(db, CAPTURE.actor, CAPTURE.queue, ["ride-1"], {"amount": 2500, "note": "First Try"},
                       error=CardDeclined("card declined"), ago=timedelta(hours=3), redis_id="dl-1")
    notice = add_failed(db, SEND.actor, SEND.queue, [], {"rideId": "r-2", "channel": "sms"},
                        error=TimeoutError("twilio timed out"), ago=timedelta(hours=1),
                        replayed_by="ops@desk")
    third = add_failed(db, CAPTURE.actor, CAPTURE.queue, ["ride-3", {"retry": True}], {},
                       error=CardDeclined("100% refused"), ago=timedelta(minutes=10), traceback=False)
    return first, notice, third


async def admin_token(accounts: Accounts, *,
                      read_only: bool = False) -> tuple[dict[str, str], dict[str, Any]]:
    session = await accounts.admin(read_only=read_only)
    return bearer(session["accessToken"]), session["user"]


def audited(db: sessionmaker[Session], action: str) -> list[AuditEntry]:
    with db() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)
                                    .order_by(AuditEntry.id)))


def ledger(db: sessionmaker[Session]) -> list[Job]:
    with db() as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def reloaded(db: sessionmaker[Session], job: FailedJob) -> FailedJob:
    with db() as session:
        return session.get_one(FailedJob, job.id)


# --- reading -------------------------------------------------------------------------------------
async def test_filters_narrow_the_list_and_the_count_alike(
    api: Client, accounts: Accounts, three: tuple[FailedJob, FailedJob, FailedJob],
) -> None:
    # Given three failed jobs and an admin
    first, notice, third = three
    token, _ = await admin_token(accounts)

    async def listed(**params: str) -> list[uuid.UUID]:
        response = await api.get(URL, params=params, headers=token)
        assert response.status_code == 200, response.text
        counted = await api.get(f"{URL}/count", params=params, headers=token)
        assert counted.status_code == 200, counted.text
        ids = [uuid.UUID(item["id"]) for item in response.json()["items"]]
        assert counted.json() == {"count": len(ids)}, params
        return ids

    # When it filters, Then the list (newest first) and the count follow each filter
    assert await listed() == [third.id, notice.id, first.id]
    assert await listed(actor=CAPTURE.actor) == [third.id, first.id]
    assert await listed(queue=SEND.queue) == [notice.id]
    assert await listed(since="2h") == [third.id, notice.id]
    assert await listed(error="TIMED OUT") == [notice.id]
    assert await listed(error="carddeclined") == [third.id, first.id]
    assert await listed(replayed="true") == [notice.id]
    assert await listed(replayed="false") == [third.id, first.id]
    # And `args` finds text anywhere in args or kwargs, whatever its case; `%` and `_` are plain text
    assert await listed(args="first try") == [first.id]
    assert await listed(args="RIDE-") == [third.id, first.id]
    assert await listed(args="sms") == [notice.id]
    assert await listed(args="%") == []
    assert await listed(args="ride_1") == []
    # And a JSON object or array is containment in kwargs or args (typed: 2500 is not "2500")
    assert await listed(args='{"rideId": "r-2"}') == [notice.id]
    assert await listed(args='{"amount": 2500}') == [first.id]
    assert await listed(args='{"amount": "2500"}') == []
    assert await listed(args='["ride-3"]') == [third.id]
    assert await listed(args='[{"retry": true}]') == [third.id]
    assert await listed(args='["ride-3", "ride-1"]') == []
    # And filters combine
    assert await listed(actor=CAPTURE.actor, args="ride-1", since="1d") == [first.id]
    # And pages carry a cursor
    page = (await api.get(URL, params={"limit": 2}, headers=token)).json()
    rest = (await api.get(URL, params={"limit": 2, "cursor": page["nextCursor"]}, headers=token)).json()
    assert [i["id"] for i in page["items"] + rest["items"]] == [str(j.id) for j in (third, notice, first)]
    assert rest["nextCursor"] is None and "traceback" not in page["items"][0]

    # And bad values are 400 VALIDATION_ERROR on both routes
    for path in (URL, f"{URL}/count"):
        for params in ({"since": "soon"}, {"replayed": "maybe"}, {"args": "x" * 1001}):
            bad = await api.get(path, params=params, headers=token)
            assert bad.status_code == 400 and error_code(bad) == "VALIDATION_ERROR", (path, params)


async def test_one_failed_job_shows_its_traceback_and_its_replays(
    api: Client, accounts: Accounts, db: sessionmaker[Session], three: tuple[FailedJob, FailedJob, FailedJob],
) -> None:
    # Given a failed job, and an admin
    first, _, third = three
    token, user = await admin_token(accounts)

    # When the admin reads it
    response = await api.get(f"{URL}/{first.id}", headers=token)

    # Then it has every field of the list, the traceback, and no replay yet
    assert response.status_code == 200, response.text
    body = response.json()
    listed = (await api.get(URL, params={"actor": CAPTURE.actor}, headers=token)).json()["items"][1]
    assert {k: v for k, v in body.items() if k not in ("traceback", "replays")} == listed
    assert "CardDeclined: card declined" in body["traceback"] and body["replays"] == []
    # And a job recorded without a traceback says null
    assert (await api.get(f"{URL}/{third.id}", headers=token)).json()["traceback"] is None

    # When it is replayed, and the replay fails again (recorded under the replay's message id)
    replayed = (await api.post(f"{URL}/{first.id}/replay", json={}, headers=token)).json()
    again = add_failed(db, CAPTURE.actor, CAPTURE.queue, ["ride-1"], {}, error=CardDeclined("again"),
                       ago=timedelta(0))
    with db() as session:
        session.get_one(FailedJob, again.id).message_id = replayed["messageId"]
        session.commit()

    # Then the job's replays say when, by whom, as which message, and which failed job it became
    [replay] = (await api.get(f"{URL}/{first.id}", headers=token)).json()["replays"]
    assert replay == {"messageId": replayed["messageId"], "at": replay["at"], "by": user["email"],
                      "forced": False, "failedAgainJobId": str(again.id)}
    assert replay["at"].endswith("Z")

    # And an unknown id is 404 NOT_FOUND
    missing = await api.get(f"{URL}/{uuid.uuid4()}", headers=token)
    assert missing.status_code == 404 and error_code(missing) == "NOT_FOUND"


# --- replay --------------------------------------------------------------------------------------
async def test_replaying_one_job_sends_it_once_records_who_and_is_not_repeated_unless_forced(
    api: Client, accounts: Accounts, db: sessionmaker[Session], broker_redis: redis.Redis,
    settings: Settings, three: tuple[FailedJob, FailedJob, FailedJob],
) -> None:
    # Given a failed job whose dead letter Redis still holds, and an admin
    first, _, _ = three
    token, user = await admin_token(accounts)

    # When the admin replays it (no body needed)
    response = await api.post(f"{URL}/{first.id}/replay", headers=token)

    # Then it is sent again: a new job in the ledger, same actor, queue and arguments, fresh budget
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"id": str(first.id), "replayed": True, "messageId": body["messageId"], "skipped": None}
    [job] = ledger(db)
    assert (str(job.message_id), job.actor, job.queue, job.state) == (
        body["messageId"], CAPTURE.actor, CAPTURE.queue, "waiting")
    assert (job.args, job.kwargs) == (["ride-1"], {"amount": 2500, "note": "First Try"})
    assert job.options["retries"] == 0 and job.options["replay_of"] == first.message_id
    assert "redis_message_id" not in job.options
    # And the registry records the replay by the admin's email; its dead letter left Redis
    after = reloaded(db, first)
    assert (after.replay_count, after.replayed_by, after.replay_message_id) == (1, user["email"],
                                                                                body["messageId"])
    assert dead_letter_ids(broker_redis, settings, CAPTURE.queue) == []
    # And the audit log names the admin
    [entry] = audited(db, "job.replayed")
    assert (entry.actor_role, entry.operator, str(entry.actor_id), entry.target_type, entry.target_id) == (
        "admin", user["email"], user["id"], "failed_job", str(first.id))
    assert entry.details == {"actor": CAPTURE.actor, "queue": CAPTURE.queue, "messageId": body["messageId"],
                             "forced": False}

    # When it is replayed again without force
    again = await api.post(f"{URL}/{first.id}/replay", json={"force": False}, headers=token)
    # Then nothing is sent, and the answer (and the audit log) says why
    assert again.status_code == 200, again.text
    skipped = again.json()
    assert (skipped["replayed"], skipped["messageId"]) == (False, None)
    assert skipped["skipped"].startswith("already replayed once")
    assert len(ledger(db)) == 1 and reloaded(db, first).replay_count == 1
    [entry] = audited(db, "job.replay_skipped")
    assert (entry.operator, entry.target_id, entry.details["reason"]) == (user["email"], str(first.id),
                                                                          skipped["skipped"])

    # When it is forced
    forced = await api.post(f"{URL}/{first.id}/replay", json={"force": True}, headers=token)
    # Then it is sent once more, marked forced
    assert forced.status_code == 200 and forced.json()["replayed"] is True
    assert len(ledger(db)) == 2 and reloaded(db, first).replay_count == 2
    assert [e.details["forced"] for e in audited(db, "job.replayed")] == [False, True]

    # And a job of an actor this farm does not declare is not sent
    retired = add_failed(db, "retired.actor", CAPTURE.queue, [], {}, error=CardDeclined("x"),
                         ago=timedelta(0))
    refused = (await api.post(f"{URL}/{retired.id}/replay", json={}, headers=token)).json()
    assert refused["replayed"] is False and "not declared" in refused["skipped"] and len(ledger(db)) == 2
    # And an unknown id is 404, an unknown body field 400
    missing = await api.post(f"{URL}/{uuid.uuid4()}/replay", json={}, headers=token)
    assert missing.status_code == 404 and error_code(missing) == "NOT_FOUND"
    odd = await api.post(f"{URL}/{first.id}/replay", json={"forse": True}, headers=token)
    assert odd.status_code == 400 and error_code(odd) == "VALIDATION_ERROR"


async def test_replaying_matching_jobs_needs_the_count_the_operator_saw(
    api: Client, accounts: Accounts, db: sessionmaker[Session], three: tuple[FailedJob, FailedJob, FailedJob],
) -> None:
    # Given three failed jobs, two of them captures, and an admin who previews the captures
    first, notice, third = three
    token, user = await admin_token(accounts)
    filters = {"actor": CAPTURE.actor}
    preview = (await api.get(f"{URL}/count", params=filters, headers=token)).json()["count"]
    assert preview == 2

    # When the admin confirms a count that no longer holds
    stale = await api.post(f"{URL}/replay", json={"filters": filters, "expect": 3}, headers=token)
    # Then it is 409 CONFLICT with both counts, and nothing is sent or recorded
    assert stale.status_code == 409 and error_code(stale) == "CONFLICT"
    assert stale.json()["error"]["details"] == {"expected": 3, "matching": 2}
    assert ledger(db) == [] and audited(db, "job.replayed") == []
    assert audited(db, "job.replayed_matching") == []

    # When it confirms the previewed count
    response = await api.post(f"{URL}/replay", json={"filters": filters, "expect": preview}, headers=token)
    # Then both are sent, oldest first, each in the ledger
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["replayed"], body["skipped"]) == (2, 0)
    assert [(i["id"], i["replayed"], i["skipped"]) for i in body["items"]] == [
        (str(first.id), True, None), (str(third.id), True, None)]
    assert sorted(str(j.message_id) for j in ledger(db)) == sorted(i["messageId"] for i in body["items"])
    # And one audit entry tells the whole action; each job's replay has its own too
    [entry] = audited(db, "job.replayed_matching")
    assert (entry.operator, entry.actor_role, entry.details) == (user["email"], "admin", {
        "filter": filters, "matching": 2, "replayed": 2, "skipped": 0, "force": False})
    assert [e.target_id for e in audited(db, "job.replayed")] == [str(first.id), str(third.id)]

    # When every job is replayed without force: the ones replayed before are skipped
    everything = await api.post(f"{URL}/replay", json={"filters": {}, "expect": 3}, headers=token)
    assert everything.status_code == 200, everything.text
    assert (everything.json()["replayed"], everything.json()["skipped"]) == (0, 3)
    # And with the args and replayed filters
    again = await api.post(f"{URL}/replay", headers=token, json={
        "filters": {"args": '{"channel": "sms"}', "replayed": True}, "expect": 1, "force": True})
    assert again.status_code == 200 and again.json()["items"][0]["id"] == str(notice.id)
    assert again.json()["replayed"] == 1 and reloaded(db, notice).replay_count == 2
    # And a body without `expect`, or with an unknown filter, is 400
    for bad in ({"filters": filters}, {"filters": {"colour": "red"}, "expect": 1}, {"expect": -1}):
        response = await api.post(f"{URL}/replay", json=bad, headers=token)
        assert response.status_code == 400 and error_code(response) == "VALIDATION_ERROR", bad


async def test_more_than_a_thousand_matching_is_refused_until_narrowed(
    api: Client, accounts: Accounts, db: sessionmaker[Session],
) -> None:
    # Given 1001 failed jobs
    base = failed_job_row("x", CAPTURE.queue, CAPTURE.actor, [], {}, {}, CardDeclined("x"), None,
                          source="worker", attempts=1)
    with db() as session:
        session.execute(insert(FailedJob), [{**base, "message_id": f"m-{n}", "args": [f"ride-{n}"]}
                                            for n in range(1001)])
        session.commit()
    token, _ = await admin_token(accounts)

    # When the admin replays or purges all of them, with the right count
    for path in ("replay", "purge"):
        response = await api.post(f"{URL}/{path}", json={"filters": {}, "expect": 1001}, headers=token)
        # Then it is 400 VALIDATION_ERROR saying to narrow the filters, and nothing is done
        assert response.status_code == 400 and error_code(response) == "VALIDATION_ERROR", path
        details = response.json()["error"]["details"]
        assert details["matching"] == 1001 and details["limit"] == 1000 and "narrow" in details["filters"]
    assert count(db, FailedJob) == 1001 and ledger(db) == []

    # And narrowed to 1000, it goes through
    narrowed = {"filters": {"args": "ride-1000"}, "expect": 1}
    assert (await api.post(f"{URL}/purge", json=narrowed, headers=token)).json() == {"purged": 1}
    replayed = await api.post(f"{URL}/replay", json={"filters": {}, "expect": 1000}, headers=token)
    assert replayed.status_code == 200 and replayed.json()["replayed"] == 1000
    assert len(ledger(db)) == 1000


# --- purge ---------------------------------------------------------------------------------------
async def test_purging_matching_jobs_needs_the_count_and_drops_their_dead_letters(
    api: Client, accounts: Accounts, db: sessionmaker[Session], broker_redis: redis.Redis,
    settings: Settings, three: tuple[FailedJob, FailedJob, FailedJob],
) -> None:
    # Given three failed jobs (the first also a dead letter in Redis), and an admin
    first, notice, third = three
    token, user = await admin_token(accounts)
    filters = {"actor": CAPTURE.actor, "error": "declined"}

    # When it purges with a stale count: 409, nothing deleted
    stale = await api.post(f"{URL}/purge", json={"filters": filters, "expect": 1}, headers=token)
    assert stale.status_code == 409 and stale.json()["error"]["details"] == {"expected": 1, "matching": 2}
    assert count(db, FailedJob) == 3 and dead_letter_ids(broker_redis, settings, CAPTURE.queue) == ["dl-1"]

    # When it purges with the previewed count
    response = await api.post(f"{URL}/purge", json={"filters": filters, "expect": 2}, headers=token)

    # Then those jobs are gone from the registry and from Redis's dead letters; the other stays
    assert response.status_code == 200, response.text
    assert response.json() == {"purged": 2}
    with db() as session:
        assert list(session.scalars(select(FailedJob.id))) == [notice.id]
    assert dead_letter_ids(broker_redis, settings, CAPTURE.queue) == []
    # And the audit log has the purge, by the admin, with the filter and the count
    [entry] = audited(db, "job.purged_matching")
    assert (entry.actor_role, entry.operator, str(entry.actor_id)) == ("admin", user["email"], user["id"])
    assert entry.details == {"count": 2, "filter": filters}
    # And the purged ones are 404 now; a second purge finds nothing (expect 0 is fine)
    for gone in (first, third):
        assert (await api.get(f"{URL}/{gone.id}", headers=token)).status_code == 404
    nothing = await api.post(f"{URL}/purge", json={"filters": filters, "expect": 0}, headers=token)
    assert nothing.status_code == 200 and nothing.json() == {"purged": 0}


async def test_until_bounds_the_list_the_count_and_the_matching_actions_alike(
    api: Client, accounts: Accounts, db: sessionmaker[Session], three: tuple[FailedJob, FailedJob, FailedJob],
) -> None:
    # Given three failed jobs (3 h, 1 h and 10 min ago) and an admin (the console's "until" filter)
    first, notice, third = three
    token, _ = await admin_token(accounts)

    async def listed(**params: str) -> list[uuid.UUID]:
        response = await api.get(URL, params=params, headers=token)
        counted = await api.get(f"{URL}/count", params=params, headers=token)
        assert response.status_code == counted.status_code == 200, (response.text, counted.text)
        ids = [uuid.UUID(item["id"]) for item in response.json()["items"]]
        assert counted.json() == {"count": len(ids)}, params
        return ids

    # When it lists up to a moment, alone or with `since`, Then only the jobs failed before it
    assert await listed(until="2h") == [first.id]
    assert await listed(since="2h", until="30m") == [notice.id]
    moment = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    assert await listed(until=moment) == [notice.id, first.id]
    # And a bad value is 400 naming `until`
    bad = await api.get(URL, params={"until": "later"}, headers=token)
    assert bad.status_code == 400 and bad.json()["error"]["details"] == {"until": "later"}

    # When it purges what failed before 2 h ago, with the previewed count
    purged = await api.post(f"{URL}/purge", json={"filters": {"until": "2h"}, "expect": 1}, headers=token)
    # Then only that job is gone
    assert purged.status_code == 200 and purged.json() == {"purged": 1}, purged.text
    with db() as session:
        assert set(session.scalars(select(FailedJob.id))) == {notice.id, third.id}


# --- who may -------------------------------------------------------------------------------------
def refused_as_read_only(response: httpx.Response) -> bool:
    return (response.status_code == 403 and error_code(response) == "FORBIDDEN"
            and response.json()["error"]["details"] == {"reason": "READ_ONLY_ADMIN"})


async def test_a_read_only_admin_reads_everything_and_changes_nothing(
    api: Client, accounts: Accounts, db: sessionmaker[Session], three: tuple[FailedJob, FailedJob, FailedJob],
) -> None:
    # Given a read-only admin
    first, _, _ = three
    token, _ = await admin_token(accounts, read_only=True)

    # When it reads the list, the count and one job
    reads = [await api.get(path, headers=token, params={"args": "ride-"})
             for path in (URL, f"{URL}/count", f"{URL}/{first.id}")]
    # Then it sees them
    assert [r.status_code for r in reads] == [200, 200, 200], [r.text for r in reads]
    assert reads[1].json() == {"count": 2}

    # When it replays one, replays matching or purges matching
    writes = [await api.post(f"{URL}/{first.id}/replay", json={}, headers=token),
              await api.post(f"{URL}/replay", json={"filters": {}, "expect": 3}, headers=token),
              await api.post(f"{URL}/purge", json={"filters": {}, "expect": 3}, headers=token)]
    # Then each is refused as read-only, and nothing changed
    assert all(refused_as_read_only(w) for w in writes), [w.text for w in writes]
    assert count(db, FailedJob) == 3 and ledger(db) == [] and reloaded(db, first).replay_count == 0


@pytest.mark.parametrize("role", ["customer", "driver"])
async def test_other_accounts_may_neither_read_nor_act(
    api: Client, accounts: Accounts, db: sessionmaker[Session], role: str,
    three: tuple[FailedJob, FailedJob, FailedJob],
) -> None:
    # Given a signed-in customer or driver
    first, _, _ = three
    token = bearer((await accounts.register(role))["accessToken"])

    # When it calls every route
    answers = [await api.get(URL, headers=token), await api.get(f"{URL}/count", headers=token),
               await api.get(f"{URL}/{first.id}", headers=token),
               await api.post(f"{URL}/{first.id}/replay", json={}, headers=token),
               await api.post(f"{URL}/replay", json={"filters": {}, "expect": 3}, headers=token),
               await api.post(f"{URL}/purge", json={"filters": {}, "expect": 3}, headers=token)]

    # Then each is 403 FORBIDDEN, like every admin route, and nothing changed
    assert [(a.status_code, error_code(a)) for a in answers] == [(403, "FORBIDDEN")] * 6
    assert count(db, FailedJob) == 3 and ledger(db) == []
    # And without a token it is 401
    anonymous = await api.get(f"{URL}/count")
    assert anonymous.status_code == 401 and error_code(anonymous) == "INVALID_TOKEN"
