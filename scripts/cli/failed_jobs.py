"""`farmctl jobs …`: the failed-jobs registry — list, show, replay, purge, import dead letters."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from scripts.cli import output
from scripts.cli.arguments import command, operator_name, positive
from scripts.cli.connections import broker_redis, database_sessions, dead_letters, unit_of_work
from scripts.cli.outcomes import EXIT_NOTHING, EXIT_OK, NothingMatched, UsageError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from app.adapters.dead_letters import DeadLetters
    from app.services.failed_jobs import JobFilter
    from models.jobs import FailedJob


def _job_filter(args: argparse.Namespace) -> JobFilter:
    from app.services.failed_jobs import JobFilter, parse_since

    return JobFilter(actor=args.actor, queue=args.queue,
                     since=parse_since(args.since) if args.since else None, error=args.error,
                     replayed=args.replayed, args=args.args)


def _has_filters(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.actor, args.queue, args.since, args.error, args.replayed,
                                       args.args))


def _replayed_cell(job: FailedJob) -> str:
    return f"{job.replay_count}x" if job.replay_count else "-"


def _error_cell(job: FailedJob) -> str:
    return f"{job.exception_type.rsplit('.', 1)[-1]}: {job.exception_message}"


def cmd_jobs_failed(args: argparse.Namespace) -> int:
    from app.records import FailedJobOut
    from app.services import failed_jobs

    where = _job_filter(args)
    if args.import_dead_letters:
        _import_dead_letters([args.queue] if args.queue else None, sys.stderr, by=operator_name(args))
    with database_sessions() as sessions, sessions() as session:
        rows, more = failed_jobs.list_failed(session, where, limit=args.limit)
        total = failed_jobs.count_failed(session, where) if more else len(rows)
    if not rows:
        raise NothingMatched("no failed job matches")
    if args.json:
        for row in rows:
            print(output.json_line(FailedJobOut.of(row)))
        return EXIT_OK
    table = [[str(job.id)[:8], output.when(job.failed_at), job.queue, job.actor, str(job.attempts),
              _replayed_cell(job), _error_cell(job)] for job in rows]
    headers = ["ID", "FAILED AT (UTC)", "QUEUE", "ACTOR", "TRIES", "REPLAYED", "ERROR"]
    used = sum(max(len(h), *(len(r[i]) for r in table)) + 2 for i, h in enumerate(headers[:-1]))
    width = shutil.get_terminal_size((160, 24)).columns - used if sys.stdout.isatty() else 200
    print("\n".join(output.table(headers, table, right={4}, last_width=max(30, width))))
    if total > len(rows):
        print(f"{len(rows)} of {total} shown, newest first (--limit N for more)", file=sys.stderr)
    return EXIT_OK


def cmd_jobs_show(args: argparse.Namespace) -> int:
    from app.records import FailedJobDetail, ReplayOut
    from app.services import failed_jobs

    with database_sessions() as sessions, sessions() as session:
        job = failed_jobs.resolve(session, args.id)
        replays = failed_jobs.replays_of(session, job.id)
        again = failed_jobs.failures_of_replays(session, [r.message_id for r in replays])
    detail = FailedJobDetail.of_detail(job, [ReplayOut.of(r, again.get(r.message_id)) for r in replays])
    if args.json:
        print(output.json_line(detail))
        return EXIT_OK

    def pretty(value: Any) -> str:
        return "\n".join("  " + line for line in json.dumps(value, indent=2, sort_keys=True,
                                                            default=str).splitlines())

    fields = [("failed job", str(job.id)), ("message id", job.message_id), ("actor", job.actor),
              ("queue", job.queue), ("attempts", str(job.attempts)),
              ("enqueued at", output.when(job.enqueued_at)), ("failed at", output.when(job.failed_at)),
              ("source", job.source), ("error", f"{job.exception_type}: {job.exception_message}")]
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
        print(f"  {output.when(replay.replayed_at)}  by {replay.replayed_by}  as message {replay.message_id}"
              f"{notes}")
    return EXIT_OK


def cmd_jobs_replay(args: argparse.Namespace) -> int:
    from app.services import failed_jobs

    if bool(args.ids) == bool(args.all):
        raise UsageError("name the failed jobs to replay (IDs), or give --all with optional filters")
    if args.ids and _has_filters(args):
        raise UsageError("filters (--actor, --queue, --since, --error, --args, --replayed) go with --all, "
                         "not with IDs")
    where = _job_filter(args)
    if args.all and where.replayed is None and not args.force:
        where = dataclasses.replace(where, replayed=False)
    import jobs  # declares every actor on the farm's broker

    broker = jobs.broker

    def known(actor: str) -> bool:
        return actor in broker.actors

    with database_sessions() as sessions:
        with sessions() as session:
            targets = failed_jobs.replay_targets(session, references=args.ids, where=where)
        if not targets:
            raise NothingMatched("no failed job to replay matches" + (
                " (already replayed ones are left out; --force includes them)" if args.all else ""))
        if args.dry_run:
            return _replay_plan(targets, force=args.force, known=known)
        client = broker_redis()
        try:
            replayed = _replay_each(targets, sessions, by=operator_name(args), force=args.force,
                                    known=known, letters=dead_letters(client))
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
                 known: Callable[[str], bool], letters: DeadLetters) -> int:
    """Replay one job per transaction (its ledger row and its record commit together); returns how
    many were sent."""
    from app.errors import NotFound
    from app.services.failed_jobs import replay

    progress = output.Progress(len(targets), "replaying")
    replayed = skipped = 0
    try:
        for target in targets:
            short = f"{str(target.id)[:8]}  {target.actor} on {target.queue}"
            try:
                with unit_of_work(sessions) as uow:
                    outcome = replay(uow, target.id, by=by, force=force,
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
    with database_sessions() as sessions:
        if args.dry_run:
            with sessions() as session:
                count = failed_jobs.count_failed(session, where)
            print(f"would delete {count} failed job{'s' * (count != 1)}; nothing was deleted")
            return EXIT_OK if count else EXIT_NOTHING
        client = broker_redis()
        try:
            with unit_of_work(sessions) as uow:
                count = failed_jobs.purge(uow, where, by=operator_name(args),
                                            dead_letters=dead_letters(client))
        finally:
            client.close()
    if not count:
        raise NothingMatched("no failed job matches; nothing was deleted")
    print(f"deleted {count} failed job{'s' * (count != 1)}")
    return EXIT_OK


def cmd_jobs_import(args: argparse.Namespace) -> int:
    handled = _import_dead_letters(args.queue, sys.stdout, by=operator_name(args))
    return EXIT_OK if handled else EXIT_NOTHING


def _import_dead_letters(queues: Sequence[str] | None, out: Any, *, by: str) -> int:
    """Move Redis's dead letters of `queues` (default: the farm's) into the registry; how many moved."""
    from app.keys import QUEUES
    from app.services import audit
    from app.services.failed_jobs import ImportReport, import_dead_letters

    client = broker_redis()
    letters = dead_letters(client)
    handled = 0
    try:
        with database_sessions() as sessions:
            for queue in queues or QUEUES:
                report = ImportReport(queue=queue)
                ids = letters.ids(queue)
                for start in range(0, len(ids), 500):
                    with unit_of_work(sessions) as uow:
                        import_dead_letters(uow, letters, queue, ids[start:start + 500], report)
                handled += report.imported + report.already_recorded
                left = f", {len(report.undecodable)} undecodable left in Redis" if report.undecodable else ""
                print(f"{queue}: {report.imported} imported, {report.already_recorded} already recorded"
                      f"{left}", file=out)
                if report.imported:
                    with unit_of_work(sessions) as uow:
                        audit.record(uow.session, audit.Operator.at_terminal(by), "jobs.imported",
                                     target_type="queue", target_id=queue,
                                     details={"imported": report.imported})
    finally:
        client.close()
    return handled


# --- arguments -----------------------------------------------------------------------------
def _add_filters(parser: argparse.ArgumentParser) -> None:
    found = parser.add_argument_group("filters")
    found.add_argument("--actor", help="only this actor, e.g. payments.capture")
    found.add_argument("--queue", help="only this queue, e.g. payments")
    found.add_argument("--since", help="failed since: 30m, 2h, 7d, 1w, or a date-time (2026-01-31T12:00Z)")
    found.add_argument("--error", help="text in the exception's type or message (case-insensitive)")
    found.add_argument("--args", metavar="TEXT",
                       help="the arguments contain: text in the args/kwargs JSON (case-insensitive), or a "
                            "JSON object/array they contain, e.g. '{\"ride_id\": \"r-1\"}'")
    replayed = found.add_mutually_exclusive_group()
    replayed.add_argument("--replayed", dest="replayed", action="store_const", const=True,
                          help="only jobs replayed at least once")
    replayed.add_argument("--not-replayed", dest="replayed", action="store_const", const=False,
                          help="only jobs never replayed")


def add_jobs_parsers(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="the failed-jobs registry: list, show, replay, purge, import")
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")

    failed = command(actions, "failed", "list failed jobs, newest first (a table, or JSON lines)", [
        "farmctl jobs failed", "farmctl jobs failed --actor payments.capture --since 2h",
        "farmctl jobs failed --queue dispatch --error timeout --limit 200",
        "farmctl jobs failed --args ride-42", "farmctl jobs failed --args '[\"ride-42\"]'",
        "farmctl jobs failed --json | jq -r .id", "farmctl jobs failed --import-dead-letters",
    ], cmd_jobs_failed)
    _add_filters(failed)
    failed.add_argument("--limit", type=positive, default=50, help="at most N jobs (default 50)")
    failed.add_argument("--json", action="store_true", help="one JSON object per line (camelCase)")
    failed.add_argument("--import-dead-letters", action="store_true",
                        help="first import what Redis's dead-letter queues hold (see import-dead-letters)")

    show = command(actions, "show", "one failed job: every field, arguments, traceback, replays", [
        "farmctl jobs show 3f2a9c1e", "farmctl jobs show 3f2a9c1e-5b7d-4b8e-9f1a-0c2d3e4f5a6b --json",
    ], cmd_jobs_show)
    show.add_argument("id", metavar="ID", help="the failed job's id (or a unique prefix), or its message id")
    show.add_argument("--json", action="store_true", help="everything as one JSON object")

    replay = command(
        actions, "replay",
        "send failed jobs again: new message id, fresh timestamp and retry budget, same queue and arguments",
        ["farmctl jobs replay 3f2a9c1e", "farmctl jobs replay 3f2a9c1e 77b0c4d2 --dry-run",
         "farmctl jobs replay --all --actor payments.capture --since 1d",
         "farmctl jobs replay --all --args '{\"note\": \"first\"}' --dry-run",
         "farmctl jobs replay 3f2a9c1e --force        # once more, although it was replayed before"],
        cmd_jobs_replay, audited=True)
    replay.add_argument("ids", nargs="*", metavar="ID", help="failed job ids (or unique prefixes)")
    replay.add_argument("--all", action="store_true", help="every failed job matching the filters")
    _add_filters(replay)
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed; send nothing")
    replay.add_argument("--force", action="store_true", help="replay jobs that were replayed before too")

    purge = command(actions, "purge", "delete failed jobs (and their Redis dead letters) for good", [
        "farmctl jobs purge --replayed --yes", "farmctl jobs purge --actor test.noop --dry-run",
        "farmctl jobs purge --since 30d --queue notifications --yes",
    ], cmd_jobs_purge, audited=True)
    _add_filters(purge)
    purge.add_argument("--yes", action="store_true", help="really delete (refused without it)")
    purge.add_argument("--dry-run", action="store_true", help="only count what would be deleted")

    dead = command(
        actions, "import-dead-letters",
        "move Redis's dead letters (<namespace>:<queue>.XQ) into the registry, once per message id",
        ["farmctl jobs import-dead-letters", "farmctl jobs import-dead-letters --queue payments"],
        cmd_jobs_import, audited=True)
    dead.add_argument("--queue", action="append", help="only this queue (repeatable; default: the farm's)")
