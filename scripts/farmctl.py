"""`farmctl`: the operator's command line.

Exit codes: 0 done, 1 nothing matched, 2 bad usage, 3 PostgreSQL or Redis unreachable (or the
database not migrated). Each command parses its arguments and calls one service; errors are one
clear line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import json
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import sqlalchemy.exc

from app.errors import AppError
from app.settings import SettingsError, get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from app.db import UnitOfWork
    from app.services.failed_jobs import DeadLetters, JobFilter
    from models.jobs import FailedJob

T = TypeVar("T")

EXIT_OK, EXIT_NOTHING, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


class UsageError(Exception):
    """A mistake in how the command was called (exit 2)."""


class NothingMatched(Exception):
    """The command found nothing to show or act on (exit 1)."""


def _print_err(message: str) -> None:
    print(f"farmctl: {message}", file=sys.stderr)


def _run_async(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())  # type: ignore[arg-type]


async def _with_uow(action: Callable[[Any], Awaitable[T]]) -> T:
    """Run `action(uow)` in one transaction on the async engine, committing on success."""
    from app.db import AsyncUnitOfWork, async_session_factory, create_async_db_engine

    engine = create_async_db_engine(get_settings().db)
    try:
        uow = AsyncUnitOfWork(async_session_factory(engine)())
        try:
            result = await action(uow)
            await uow.commit()
            return result
        except BaseException:
            await uow.rollback()
            raise
        finally:
            await uow.close()
    finally:
        await engine.dispose()


@contextlib.contextmanager
def _sessions() -> Iterator[sessionmaker[Session]]:
    """Sync sessions on a small engine of the command's own (disposed at the end)."""
    from app.db import create_sync_engine, sync_session_factory

    engine = create_sync_engine(get_settings().db, pool_size=1)
    try:
        yield sync_session_factory(engine)
    finally:
        engine.dispose()


@contextlib.contextmanager
def _unit_of_work(sessions: sessionmaker[Session]) -> Iterator[UnitOfWork]:
    """One transaction: committed (then its after-commit actions run) unless the block raises."""
    from app.db import UnitOfWork

    uow = UnitOfWork(sessions())
    try:
        yield uow
        uow.commit()
    except BaseException:
        uow.rollback()
        raise
    finally:
        uow.close()


def _broker_redis() -> redis.Redis:
    from app.redis_conn import create_sync_redis

    return create_sync_redis(get_settings().redis, decode_responses=False)


def _dead_letters(client: redis.Redis) -> DeadLetters:
    from app.services.failed_jobs import DeadLetters

    return DeadLetters(client, get_settings().redis.dramatiq_namespace)


def _operator() -> str:
    """Who runs the command, for the records: `user@host`."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (e.g. a bare container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:200]


# --- output --------------------------------------------------------------------------------
def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _one_line(text: str, width: int) -> str:
    lines = text.strip().splitlines() or [""]
    line = lines[0] + (" …" if len(lines) > 1 else "")
    return line if len(line) <= width else line[:max(1, width - 1)] + "…"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Collection[int] = (),
           last_width: int | None = None) -> list[str]:
    """Aligned columns (numbers in `right` right-aligned); the last column is cut at `last_width`."""
    if last_width is not None:
        rows = [[*row[:-1], _one_line(row[-1], last_width)] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).rjust(w) if i in right else str(cell).ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _json_line(value: Any) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()


class _Progress:
    """A progress bar on stderr for long runs, drawn only when stderr is a terminal."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.enabled = total > 1 and sys.stderr.isatty()
        self._drawn_at = 0.0

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.enabled and (now - self._drawn_at > 0.1 or self.done == self.total):
            self._drawn_at = now
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}")
            sys.stderr.flush()

    def say(self, line: str) -> None:
        """Print a line on stdout without tearing the bar."""
        if self.enabled:
            sys.stderr.write("\r\033[K")
        print(line, flush=self.enabled)

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


# --- db ------------------------------------------------------------------------------------
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from models.migrate import upgrade

    upgrade(get_settings().db.url, args.revision)
    print(f"database migrated to {args.revision}")
    return EXIT_OK


# --- users ---------------------------------------------------------------------------------
def _read_password_twice() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Password again: ")
    else:
        lines = sys.stdin.read().splitlines()
        if len(lines) < 2:
            raise UsageError("give the password twice on standard input (two lines)")
        first, second = lines[0], lines[1]
    if first != second:
        raise UsageError("the two passwords differ")
    if len(first) < 8:
        raise UsageError("the password needs at least 8 characters")
    return first


def cmd_users_create_admin(args: argparse.Namespace) -> int:
    from app.services.accounts import create_admin

    password = _read_password_twice()
    user = _run_async(lambda: _with_uow(
        lambda uow: create_admin(uow, args.email, password, args.name, args.phone)))
    print(f"admin {user.email} created with id {user.id}")
    return EXIT_OK


# --- regions -------------------------------------------------------------------------------
def cmd_regions_set(args: argparse.Namespace) -> int:
    from decimal import Decimal, InvalidOperation

    from app.services.regions import set_region

    try:
        commission = Decimal(args.commission)
    except InvalidOperation as error:
        raise UsageError(f"--commission must be a decimal fraction such as 0.15, got {args.commission!r}") \
            from error
    region = _run_async(lambda: _with_uow(lambda uow: set_region(
        uow, args.code, name=args.name, currency=args.currency, commission_rate=commission)))
    print(f"region {region.code} ({region.name}): {region.currency}, commission {region.commission_rate}")
    return EXIT_OK


# --- demo ----------------------------------------------------------------------------------
def cmd_demo_seed(args: argparse.Namespace) -> int:
    import time

    from app.adapters.driver_index import DriverIndexReader
    from app.keys import RedisKeys
    from app.redis_conn import create_sync_redis
    from app.services.demo import DEMO_PASSWORD, DemoAccount, seed

    settings = get_settings()
    client = create_sync_redis(settings.redis)
    index = DriverIndexReader(client, RedisKeys(settings.redis))

    def place(accounts: list[DemoAccount]) -> None:
        seen = time.time()
        for account in accounts:
            if account.vehicle_type and account.lat is not None and account.lng is not None:
                index.place(account.user_id, account.vehicle_type, account.lat, account.lng, seen)

    try:
        accounts = _run_async(lambda: _with_uow(lambda uow: seed(
            uow, region=args.region, lat=args.lat, lng=args.lng, drivers=args.drivers,
            radius_km=args.radius_km, index_later=place)))
    finally:
        client.close()
    print(f"region {args.region} · password for every demo account: {DEMO_PASSWORD}")
    for account in accounts:
        where = f"  {account.vehicle_type:<9} at {account.lat:.5f},{account.lng:.5f}" if account.lat else ""
        print(f"{account.role:<9} {account.email:<32} {account.user_id}{where}")
    print("drivers stay offerable for DRIVER_STALE_AFTER seconds; run the seed again to refresh them")
    return EXIT_OK


# --- jobs ----------------------------------------------------------------------------------
def _job_filter(args: argparse.Namespace) -> JobFilter:
    from app.services.failed_jobs import JobFilter, parse_since

    return JobFilter(actor=args.actor, queue=args.queue,
                     since=parse_since(args.since) if args.since else None, error=args.error,
                     replayed=args.replayed)


def _has_filters(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.actor, args.queue, args.since, args.error, args.replayed))


def _replayed_cell(job: FailedJob) -> str:
    return f"{job.replay_count}x" if job.replay_count else "-"


def _error_cell(job: FailedJob) -> str:
    return f"{job.exception_type.rsplit('.', 1)[-1]}: {job.exception_message}"


def cmd_jobs_failed(args: argparse.Namespace) -> int:
    from app.api.schemas_admin import FailedJobOut
    from app.services import failed_jobs

    where = _job_filter(args)
    if args.import_dead_letters:
        _import_dead_letters([args.queue] if args.queue else None, sys.stderr)
    with _sessions() as sessions, sessions() as session:
        rows, more = failed_jobs.list_failed(session, where, limit=args.limit)
        total = failed_jobs.count_failed(session, where) if more else len(rows)
    if not rows:
        raise NothingMatched("no failed job matches")
    if args.json:
        for row in rows:
            print(_json_line(FailedJobOut.of(row)))
        return EXIT_OK
    table = [[str(job.id)[:8], _when(job.failed_at), job.queue, job.actor, str(job.attempts),
              _replayed_cell(job), _error_cell(job)] for job in rows]
    headers = ["ID", "FAILED AT (UTC)", "QUEUE", "ACTOR", "TRIES", "REPLAYED", "ERROR"]
    used = sum(max(len(h), *(len(r[i]) for r in table)) + 2 for i, h in enumerate(headers[:-1]))
    width = shutil.get_terminal_size((160, 24)).columns - used if sys.stdout.isatty() else 200
    print("\n".join(_table(headers, table, right={4}, last_width=max(30, width))))
    if total > len(rows):
        print(f"{len(rows)} of {total} shown, newest first (--limit N for more)", file=sys.stderr)
    return EXIT_OK


def cmd_jobs_show(args: argparse.Namespace) -> int:
    from app.api.schemas_admin import FailedJobDetail, ReplayOut
    from app.services import failed_jobs

    with _sessions() as sessions, sessions() as session:
        job = failed_jobs.resolve(session, args.id)
        replays = failed_jobs.replays_of(session, job.id)
        again = failed_jobs.failures_of_replays(session, [r.message_id for r in replays])
    detail = FailedJobDetail.of_detail(job, [ReplayOut.of(r, again.get(r.message_id)) for r in replays])
    if args.json:
        print(_json_line(detail))
        return EXIT_OK

    def pretty(value: Any) -> str:
        return "\n".join("  " + line for line in json.dumps(value, indent=2, sort_keys=True,
                                                            default=str).splitlines())

    fields = [("failed job", str(job.id)), ("message id", job.message_id), ("actor", job.actor),
              ("queue", job.queue), ("attempts", str(job.attempts)), ("enqueued at", _when(job.enqueued_at)),
              ("failed at", _when(job.failed_at)), ("source", job.source),
              ("error", f"{job.exception_type}: {job.exception_message}")]
    for name, value in fields:
        print(f"{name:<12} {value}")
    for name, data in (("args", job.args), ("kwargs", job.kwargs), ("options", job.options)):
        print(f"\n{name}:\n{pretty(data)}")
    print("\ntraceback:")
    print("\n".join("  " + line for line in (job.traceback or "(none recorded)").rstrip().splitlines()))
    print(f"\nreplays: {len(replays) or 'none'}")
    for replay in replays:
        failed = again.get(replay.message_id)
        notes = " (forced)" if replay.forced else ""
        notes += f"  failed again: {str(failed)[:8]}" if failed else ""
        print(f"  {_when(replay.replayed_at)}  by {replay.replayed_by}  as message {replay.message_id}"
              f"{notes}")
    return EXIT_OK


def cmd_jobs_replay(args: argparse.Namespace) -> int:
    from app.services import failed_jobs

    if bool(args.ids) == bool(args.all):
        raise UsageError("name the failed jobs to replay (IDs), or give --all with optional filters")
    if args.ids and _has_filters(args):
        raise UsageError("filters (--actor, --queue, --since, --error, --replayed) go with --all, "
                         "not with IDs")
    where = _job_filter(args)
    if args.all and where.replayed is None and not args.force:
        where = dataclasses.replace(where, replayed=False)
    import jobs  # declares every actor on the farm's broker

    broker = jobs.broker

    def known(actor: str) -> bool:
        return actor in broker.actors

    with _sessions() as sessions:
        with sessions() as session:
            targets = failed_jobs.replay_targets(session, references=args.ids, where=where)
        if not targets:
            raise NothingMatched("no failed job to replay matches" + (
                " (already replayed ones are left out; --force includes them)" if args.all else ""))
        if args.dry_run:
            return _replay_plan(targets, force=args.force, known=known)
        client = _broker_redis()
        try:
            replayed = _replay_each(targets, sessions, by=args.by or _operator(), force=args.force,
                                    enqueue=broker.enqueue, known=known, letters=_dead_letters(client))
        finally:
            client.close()
    return EXIT_OK if replayed else EXIT_NOTHING


def _replay_plan(targets: list[FailedJob], *, force: bool, known: Callable[[str], bool]) -> int:
    from app.services.failed_jobs import skip_reason

    would = 0
    for job in targets:
        reason = skip_reason(job, force=force, known_actor=known)
        would += reason is None
        verdict = "would replay" if reason is None else f"would skip: {reason}"
        print(f"{str(job.id)[:8]}  {job.actor} on {job.queue}  {verdict}")
    print(f"dry run: {would} of {len(targets)} would be replayed; nothing was sent", file=sys.stderr)
    return EXIT_OK if would else EXIT_NOTHING


def _replay_each(targets: list[FailedJob], sessions: sessionmaker[Session], *, by: str, force: bool,
                 enqueue: Callable[[Any], Any], known: Callable[[str], bool], letters: DeadLetters) -> int:
    """Replay one job per transaction (enqueue, then record and commit); returns how many were sent."""
    from app.errors import NotFound
    from app.services.failed_jobs import replay

    progress = _Progress(len(targets), "replaying")
    replayed = skipped = 0
    try:
        for target in targets:
            short = f"{str(target.id)[:8]}  {target.actor} on {target.queue}"
            try:
                with _unit_of_work(sessions) as uow:
                    outcome = replay(uow, target.id, enqueue=enqueue, by=by, force=force,
                                     known_actor=known, dead_letters=letters)
            except NotFound as gone:
                skipped += 1
                progress.say(f"{short}  skipped: {gone.message}")
            else:
                if outcome.message_id:
                    replayed += 1
                    progress.say(f"{short}  replayed as message {outcome.message_id}")
                else:
                    skipped += 1
                    progress.say(f"{short}  skipped: {outcome.skipped}")
            progress.advance()
    finally:
        progress.close()
        print(f"replayed {replayed}, skipped {skipped} (by {by})", file=sys.stderr)
    return replayed


def cmd_jobs_purge(args: argparse.Namespace) -> int:
    from app.services import failed_jobs

    if not args.yes and not args.dry_run:
        raise UsageError("purge deletes failed jobs for good: add --yes (or --dry-run to count them)")
    where = _job_filter(args)
    with _sessions() as sessions:
        if args.dry_run:
            with sessions() as session:
                count = failed_jobs.count_failed(session, where)
            print(f"would delete {count} failed job{'s' * (count != 1)}; nothing was deleted")
            return EXIT_OK if count else EXIT_NOTHING
        client = _broker_redis()
        try:
            with _unit_of_work(sessions) as uow:
                count = failed_jobs.purge(uow, where, dead_letters=_dead_letters(client))
        finally:
            client.close()
    if not count:
        raise NothingMatched("no failed job matches; nothing was deleted")
    print(f"deleted {count} failed job{'s' * (count != 1)}")
    return EXIT_OK


def cmd_jobs_import(args: argparse.Namespace) -> int:
    handled = _import_dead_letters(args.queue, sys.stdout)
    return EXIT_OK if handled else EXIT_NOTHING


def _import_dead_letters(queues: Sequence[str] | None, out: Any) -> int:
    """Move Redis's dead letters of `queues` (default: the farm's) into the registry; how many moved."""
    from app.keys import QUEUES
    from app.services.failed_jobs import ImportReport, import_dead_letters

    client = _broker_redis()
    letters = _dead_letters(client)
    handled = 0
    try:
        with _sessions() as sessions:
            for queue in queues or QUEUES:
                report = ImportReport(queue=queue)
                ids = letters.ids(queue)
                for start in range(0, len(ids), 500):
                    with _unit_of_work(sessions) as uow:
                        import_dead_letters(uow, letters, queue, ids[start:start + 500], report)
                handled += report.imported + report.already_recorded
                left = f", {len(report.undecodable)} undecodable left in Redis" if report.undecodable else ""
                print(f"{queue}: {report.imported} imported, {report.already_recorded} already recorded"
                      f"{left}", file=out)
    finally:
        client.close()
    return handled


# --- queues --------------------------------------------------------------------------------
def _queue_report(queues: Sequence[str]) -> dict[str, Any]:
    from app.adapters.queue_stats import QueueInspector
    from app.services.failed_jobs import count_by_queue

    settings = get_settings()
    client = _broker_redis()
    try:
        snapshot = QueueInspector(client, settings.redis.dramatiq_namespace, queues=tuple(queues),
                                  heartbeat_timeout_s=settings.worker.heartbeat_timeout_s).snapshot()
    finally:
        client.close()
    failed: dict[str, int] | None
    try:
        with _sessions() as sessions, sessions() as session:
            failed = count_by_queue(session)
    except sqlalchemy.exc.DBAPIError as error:  # Redis's figures still help; dead letters show there
        _print_err(f"the failed-jobs registry is unavailable ({_first_line(error)})")
        failed = None
    return {
        "at": datetime.fromtimestamp(snapshot.taken_at, UTC).isoformat().replace("+00:00", "Z"),
        "queues": [{"queue": q.queue, "ready": q.ready, "delayed": q.delayed, "inFlight": q.in_flight,
                    "dead": q.dead, "failed": None if failed is None else failed.get(q.queue, 0),
                    "oldestReadyAgeS": q.oldest_ready_age_s} for q in snapshot.queues],
        "workers": [{"id": w.worker_id, "lastBeatAgeS": w.last_beat_age_s, "alive": w.alive}
                    for w in snapshot.workers],
        "liveWorkers": snapshot.live_workers,
    }


def _render_queues(report: dict[str, Any]) -> str:
    rows = [[q["queue"], str(q["ready"]), str(q["delayed"]), str(q["inFlight"]), str(q["dead"]),
             "?" if q["failed"] is None else str(q["failed"]),
             _age(q["oldestReadyAgeS"]) if q["ready"] else "-"] for q in report["queues"]]
    lines = _table(["QUEUE", "READY", "DELAYED", "IN FLIGHT", "DEAD (REDIS)", "FAILED (REGISTRY)",
                    "OLDEST READY"], rows, right={1, 2, 3, 4, 5, 6})
    workers = report["workers"]
    lines.append(f"\nworkers alive: {report['liveWorkers']} ({len(workers)} heartbeat"
                 f"{'s' * (len(workers) != 1)} in Redis)")
    lines.extend(f"  {w['id']}  last beat {_age(w['lastBeatAgeS'])} ago{'' if w['alive'] else '  (dead)'}"
                 for w in workers)
    return "\n".join(lines)


def cmd_queues(args: argparse.Namespace) -> int:
    from app.keys import QUEUES

    queues = args.queue or list(QUEUES)
    live = args.watch is not None and sys.stdout.isatty() and not args.json
    try:
        while True:
            report = _queue_report(queues)
            text = _json_line(report) if args.json else _render_queues(report)
            if live:
                print("\033[H\033[2J", end="")
                text = f"{report['at']} · every {args.watch:g}s · Ctrl-C to stop\n\n{text}"
            print(text, flush=True)
            if args.watch is None:
                return EXIT_OK
            time.sleep(args.watch)
            if not live and not args.json:
                print()
    except KeyboardInterrupt:
        return EXIT_OK


# --- drivers -------------------------------------------------------------------------------
def _driver_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError as error:
        raise UsageError(f"{text!r} is not a driver id (a UUID)") from error


async def _driver_action(driver_id: uuid.UUID, reason: str, *, suspend: bool) -> None:
    from app.adapters.driver_index import DriverIndex
    from app.adapters.token_store import TokenStore
    from app.keys import RedisKeys
    from app.redis_conn import create_async_redis
    from app.services import accounts

    settings = get_settings()
    client = create_async_redis(settings.redis)
    keys = RedisKeys(settings.redis)
    store = TokenStore(client, keys, settings.auth.user_cache_ttl_s)
    try:
        if suspend:
            await _with_uow(lambda uow: accounts.suspend_driver(
                uow, store, driver_id, reason, index=DriverIndex(client, keys), actor_id=None,
                actor_role="cli"))
        else:
            await _with_uow(lambda uow: accounts.activate_driver(
                uow, store, driver_id, reason, actor_id=None, actor_role="cli"))
    finally:
        await client.aclose()


def cmd_drivers_suspend(args: argparse.Namespace) -> int:
    driver_id = _driver_id(args.id)
    _run_async(lambda: _driver_action(driver_id, args.reason, suspend=True))
    print(f"driver {driver_id} suspended: every token refused from now on; its live sockets are "
          "disconnected by a worker (sessions.end_sockets)")
    return EXIT_OK


def cmd_drivers_activate(args: argparse.Namespace) -> int:
    driver_id = _driver_id(args.id)
    _run_async(lambda: _driver_action(driver_id, args.reason, suspend=False))
    print(f"driver {driver_id} active again: it logs in anew (tokens from before stay refused)")
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="farmctl",
        description="Operate a Dispatch Farm: database, users, drivers, regions, failed jobs and queues.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  farmctl db upgrade\n  farmctl users create-admin ops@example.com\n"
               "  farmctl jobs failed --since 2h\n  farmctl queues --watch\n\n" + _EXIT_CODES,
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at LOG_LEVEL on stderr (default: warnings and errors only)")
    sub = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    upgrade = db.add_parser("upgrade", help="create the database if needed and migrate it",
                            epilog="example:\n  farmctl db upgrade",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=cmd_db_upgrade)

    users = sub.add_parser("users", help="accounts").add_subparsers(dest="action", required=True)
    admin = users.add_parser(
        "create-admin", help="create an admin (password prompted twice, or two lines on stdin)",
        epilog="examples:\n  farmctl users create-admin ops@example.com\n"
               "  printf 'pw12345678\\npw12345678\\n' | farmctl users create-admin ops@example.com",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    admin.add_argument("email")
    admin.add_argument("--name", default="Administrator")
    admin.add_argument("--phone", default="+10000000000")
    admin.set_defaults(func=cmd_users_create_admin)

    regions = sub.add_parser("regions", help="markets").add_subparsers(dest="action", required=True)
    region = regions.add_parser(
        "set", help="create or update a region",
        epilog="example:\n  farmctl regions set BER --name Berlin --currency EUR --commission 0.15",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    region.add_argument("code")
    region.add_argument("--name", required=True)
    region.add_argument("--currency", required=True, help="ISO 4217, e.g. EUR")
    region.add_argument("--commission", required=True, help="the platform's share, e.g. 0.15")
    region.set_defaults(func=cmd_regions_set)

    demo = sub.add_parser("demo", help="demo data").add_subparsers(dest="action", required=True)
    seed = demo.add_parser(
        "seed", help="a region, a customer and online drivers around a point (prints credentials)",
        epilog="examples:\n  farmctl demo seed\n  farmctl demo seed --lat 48.137 --lng 11.575 --region MUC",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    seed.add_argument("--region", default="BER")
    seed.add_argument("--lat", type=float, default=52.5219)
    seed.add_argument("--lng", type=float, default=13.4132)
    seed.add_argument("--drivers", type=int, default=12)
    seed.add_argument("--radius-km", type=float, default=4.0)
    seed.set_defaults(func=cmd_demo_seed)

    _add_jobs_parsers(sub)
    _add_queues_parser(sub)
    _add_drivers_parsers(sub)
    return parser


_EXIT_CODES = ("exit codes: 0 done, 1 nothing matched, 2 bad usage, "
               "3 PostgreSQL or Redis unreachable (or the database not migrated)")


def _command(group: Any, name: str, help_: str, examples: Sequence[str],
             func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples) + "\n\n" + _EXIT_CODES)
    parser.set_defaults(func=func)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _add_filters(parser: argparse.ArgumentParser) -> None:
    found = parser.add_argument_group("filters")
    found.add_argument("--actor", help="only this actor, e.g. payments.capture")
    found.add_argument("--queue", help="only this queue, e.g. payments")
    found.add_argument("--since", help="failed since: 30m, 2h, 7d, 1w, or a date-time (2026-01-31T12:00Z)")
    found.add_argument("--error", help="text in the exception's type or message (case-insensitive)")
    replayed = found.add_mutually_exclusive_group()
    replayed.add_argument("--replayed", dest="replayed", action="store_const", const=True,
                          help="only jobs replayed at least once")
    replayed.add_argument("--not-replayed", dest="replayed", action="store_const", const=False,
                          help="only jobs never replayed")


def _add_jobs_parsers(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="the failed-jobs registry: list, show, replay, purge, import")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")

    failed = _command(actions, "failed", "list failed jobs, newest first (a table, or JSON lines)", [
        "farmctl jobs failed", "farmctl jobs failed --actor payments.capture --since 2h",
        "farmctl jobs failed --queue dispatch --error timeout --limit 200",
        "farmctl jobs failed --json | jq -r .id", "farmctl jobs failed --import-dead-letters",
    ], cmd_jobs_failed)
    _add_filters(failed)
    failed.add_argument("--limit", type=_positive, default=50, help="at most N jobs (default 50)")
    failed.add_argument("--json", action="store_true", help="one JSON object per line (camelCase)")
    failed.add_argument("--import-dead-letters", action="store_true",
                        help="first import what Redis's dead-letter queues hold (see import-dead-letters)")

    show = _command(actions, "show", "one failed job: every field, arguments, traceback, replays", [
        "farmctl jobs show 3f2a9c1e", "farmctl jobs show 3f2a9c1e-5b7d-4b8e-9f1a-0c2d3e4f5a6b --json",
    ], cmd_jobs_show)
    show.add_argument("id", metavar="ID", help="the failed job's id (or a unique prefix), or its message id")
    show.add_argument("--json", action="store_true", help="everything as one JSON object")

    replay = _command(
        actions, "replay",
        "send failed jobs again: new message id, fresh timestamp and retry budget, same queue and arguments",
        ["farmctl jobs replay 3f2a9c1e", "farmctl jobs replay 3f2a9c1e 77b0c4d2 --dry-run",
         "farmctl jobs replay --all --actor payments.capture --since 1d",
         "farmctl jobs replay 3f2a9c1e --force        # once more, although it was replayed before"],
        cmd_jobs_replay)
    replay.add_argument("ids", nargs="*", metavar="ID", help="failed job ids (or unique prefixes)")
    replay.add_argument("--all", action="store_true", help="every failed job matching the filters")
    _add_filters(replay)
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed; send nothing")
    replay.add_argument("--force", action="store_true", help="replay jobs that were replayed before too")
    replay.add_argument("--by", help="who replays, for the records (default: user@host)")

    purge = _command(actions, "purge", "delete failed jobs (and their Redis dead letters) for good", [
        "farmctl jobs purge --replayed --yes", "farmctl jobs purge --actor test.noop --dry-run",
        "farmctl jobs purge --since 30d --queue notifications --yes",
    ], cmd_jobs_purge)
    _add_filters(purge)
    purge.add_argument("--yes", action="store_true", help="really delete (refused without it)")
    purge.add_argument("--dry-run", action="store_true", help="only count what would be deleted")

    dead = _command(
        actions, "import-dead-letters",
        "move Redis's dead letters (<namespace>:<queue>.XQ) into the registry, once per message id",
        ["farmctl jobs import-dead-letters", "farmctl jobs import-dead-letters --queue payments"],
        cmd_jobs_import)
    dead.add_argument("--queue", action="append", help="only this queue (repeatable; default: the farm's)")


def _add_queues_parser(sub: Any) -> None:
    queues = _command(
        sub, "queues",
        "per queue: ready, delayed, in flight, dead letters, failed jobs, oldest ready; live workers",
        ["farmctl queues", "farmctl queues --watch", "farmctl queues --watch 5 --json",
         "farmctl queues --queue payments --queue dispatch"], cmd_queues)
    queues.add_argument("--watch", nargs="?", const=2.0, type=_seconds, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until Ctrl-C")
    queues.add_argument("--json", action="store_true", help="one JSON object per snapshot")
    queues.add_argument("--queue", action="append", help="only this queue (repeatable; default: the farm's)")


def _add_drivers_parsers(sub: Any) -> None:
    drivers = sub.add_parser("drivers", help="suspend or re-activate drivers (audited)")
    actions = drivers.add_subparsers(dest="action", required=True, metavar="ACTION")
    suspend = _command(
        actions, "suspend", "suspend a driver: every token refused at once, live sockets disconnected",
        ["farmctl drivers suspend 6c1f0b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b --reason 'documents expired'"],
        cmd_drivers_suspend)
    activate = _command(
        actions, "activate", "re-activate a suspended driver (it logs in again)",
        ["farmctl drivers activate 6c1f0b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b --reason 'documents renewed'"],
        cmd_drivers_activate)
    for parser in (suspend, activate):
        parser.add_argument("id", metavar="ID", help="the driver's user id")
        parser.add_argument("--reason", required=True, help="why (kept in the audit log)")


def _configure_logs(*, verbose: bool) -> None:
    """Logs go to stderr, below WARNING only with --verbose: a command's answer is its own output."""
    import logging

    from app.logging import configure_logging

    settings = get_settings().log
    if not verbose and logging.getLevelName(settings.level) < logging.WARNING:
        settings = dataclasses.replace(settings, level="WARNING")
    configure_logging(settings, process="cli")


def main(argv: Sequence[str] | None = None, *, configure_logs: bool = True) -> int:
    """Run one command; `configure_logs=False` leaves the process's logging as it is (tests)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        if configure_logs:
            _configure_logs(verbose=args.verbose)
        return int(args.func(args))
    except UsageError as error:
        _print_err(str(error))
        return EXIT_USAGE
    except NothingMatched as error:
        _print_err(str(error))
        return EXIT_NOTHING
    except SettingsError as error:
        _print_err(f"configuration: {error}")
        return EXIT_USAGE
    except AppError as error:
        _print_err(f"{error.code}: {error.message}")
        if error.status_code == 503:
            return EXIT_UNAVAILABLE
        return EXIT_NOTHING if error.status_code == 404 else EXIT_USAGE
    except sqlalchemy.exc.ProgrammingError as error:
        if "does not exist" not in str(error.orig):
            raise
        _print_err(f"the database is not migrated ({_first_line(error)}): run farmctl db upgrade")
        return EXIT_UNAVAILABLE
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as error:
        _print_err(f"PostgreSQL is unreachable: {_first_line(error)}")
        return EXIT_UNAVAILABLE
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        _print_err(f"Redis is unreachable: {_first_line(error)}")
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


if __name__ == "__main__":
    sys.exit(main())
