"""`farmctl queues [--watch]`: what Dramatiq's Redis holds per queue, the registry's failures, pauses,
workers; `farmctl queues pause Q [--reason R]` / `farmctl queues resume Q` (audited)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy.exc

from app.settings import get_settings
from app.timestamps import rfc3339
from scripts.cli import output
from scripts.cli.arguments import command, operator_name, seconds
from scripts.cli.connections import broker_redis, database_sessions, unit_of_work
from scripts.cli.outcomes import EXIT_OK, first_line, print_error


def _queue_report(queues: Sequence[str]) -> dict[str, Any]:
    from app.adapters.queue_stats import QueueInspector
    from app.services.failed_jobs import count_by_queue
    from app.services.job_ledger import LedgerCounts, ledger_counts
    from app.services.queue_pauses import pauses

    settings = get_settings()
    client = broker_redis()
    try:
        snapshot = QueueInspector(client, settings.redis.dramatiq_namespace, queues=tuple(queues),
                                  heartbeat_timeout_s=settings.worker.heartbeat_timeout_s).snapshot()
    finally:
        client.close()
    failed: dict[str, int] | None
    ledger: dict[str, LedgerCounts] | None
    paused: dict[str, Any] | None
    try:
        with database_sessions() as sessions, sessions() as session:
            failed = count_by_queue(session)
            ledger = ledger_counts(session, list(queues))
            paused = pauses(session)
    except sqlalchemy.exc.DBAPIError as error:  # Redis's figures still help; dead letters show there
        print_error(f"the job ledger and failed-jobs registry are unavailable ({first_line(error)})")
        failed = ledger = paused = None
    return {
        "at": rfc3339(datetime.fromtimestamp(snapshot.taken_at, UTC)),
        "queues": [{"queue": q.queue, "ready": q.ready, "delayed": q.delayed, "inFlight": q.in_flight,
                    "dead": q.dead, "failed": None if failed is None else failed.get(q.queue, 0),
                    "oldestReadyAgeS": q.oldest_ready_age_s,
                    "ledger": None if ledger is None else _ledger_entry(ledger[q.queue]),
                    **_pause_entry(paused, q.queue)}
                   for q in snapshot.queues],
        "workers": [{"id": w.worker_id, "lastBeatAgeS": w.last_beat_age_s, "alive": w.alive,
                     "host": w.card.get("host"), "pid": w.card.get("pid"), "queues": w.card.get("queues"),
                     "threads": w.card.get("threads")}
                    for w in snapshot.workers if w.card is not None],
        "liveWorkers": snapshot.live_workers,
        "otherClients": sum(1 for w in snapshot.workers if w.card is None and w.alive),
    }


def _pause_entry(paused: dict[str, Any] | None, queue: str) -> dict[str, Any]:
    """`paused` (None: PostgreSQL unavailable) and, when paused, by whom, since when and why."""
    row = None if paused is None else paused.get(queue)
    return {"paused": None if paused is None else row is not None,
            "pausedAt": rfc3339(row.paused_at) if row else None,
            "pausedBy": row.paused_by if row else None, "pauseReason": row.reason if row else None}


def _ledger_entry(counts: Any) -> dict[str, Any]:
    return {"due": counts.due, "later": counts.later, "handed": counts.handed, "overdue": counts.overdue,
            "oldestDueS": counts.oldest_due_s}


def _render_ledger(report: dict[str, Any]) -> list[str]:
    if any(q["ledger"] is None for q in report["queues"]):
        return ["\njob ledger (PostgreSQL): unavailable"]
    rows = [[q["queue"], str(q["ledger"]["due"]), str(q["ledger"]["later"]), str(q["ledger"]["handed"]),
             str(q["ledger"]["overdue"])] for q in report["queues"]]
    return ["", "job ledger (PostgreSQL, the truth Redis is handed from):",
            *output.table(["QUEUE", "WAITING (DUE)", "DUE LATER", "HANDED OVER", "OVERDUE"], rows,
                          right={1, 2, 3, 4})]


def _render_queues(report: dict[str, Any]) -> str:
    rows = [[q["queue"], str(q["ready"]), str(q["delayed"]), str(q["inFlight"]), str(q["dead"]),
             "?" if q["failed"] is None else str(q["failed"]),
             output.age(q["oldestReadyAgeS"]) if q["ready"] else "-",
             "?" if q["paused"] is None else "PAUSED" if q["paused"] else "-"] for q in report["queues"]]
    lines = output.table(["QUEUE", "READY", "DELAYED", "IN FLIGHT", "DEAD (REDIS)", "FAILED (REGISTRY)",
                          "OLDEST READY", "PAUSED"], rows, right={1, 2, 3, 4, 5, 6})
    lines.extend(f"  {q['queue']} paused by {q['pausedBy']} since {q['pausedAt']}"
                 f"{': ' + q['pauseReason'] if q['pauseReason'] else ''}"
                 for q in report["queues"] if q["paused"])
    lines.extend(_render_ledger(report))
    workers = report["workers"]
    lines.append(f"\nworkers alive: {report['liveWorkers']}")
    lines.extend(f"  {w['host']}:{w['pid']}  {w['threads']} threads  queues {','.join(w['queues'] or [])}"
                 f"  last beat {output.age(w['lastBeatAgeS'])} ago"
                 f"{'' if w['alive'] else '  (dead: its messages go back after the heartbeat timeout)'}"
                 for w in workers)
    if report["otherClients"]:
        lines.append(f"  (+ {report['otherClients']} other broker client(s) that only enqueue: web, clock)")
    return "\n".join(lines)


def cmd_queues(args: argparse.Namespace) -> int:
    from app.keys import QUEUES

    queues = args.queue or list(QUEUES)
    live = args.watch is not None and sys.stdout.isatty() and not args.json
    try:
        while True:
            report = _queue_report(queues)
            text = output.json_line(report) if args.json else _render_queues(report)
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


def cmd_queues_pause(args: argparse.Namespace) -> int:
    from app.services import audit, queue_pauses

    with database_sessions() as sessions, unit_of_work(sessions) as uow:
        row = queue_pauses.pause(uow.session, args.queue, audit.Operator.at_terminal(operator_name(args)),
                                 args.reason)
        shown = f"{row.queue}: paused by {row.paused_by} since {rfc3339(row.paused_at)}"
    print(f"{shown}; workers take none of its jobs until `farmctl queues resume {args.queue}`")
    return EXIT_OK


def cmd_queues_resume(args: argparse.Namespace) -> int:
    from app.services import audit, queue_pauses

    with database_sessions() as sessions, unit_of_work(sessions) as uow:
        operator = audit.Operator.at_terminal(operator_name(args))
        was_paused = queue_pauses.resume(uow.session, args.queue, operator)
    print(f"{args.queue}: resumed" if was_paused else f"{args.queue}: was not paused (nothing changed)")
    return EXIT_OK


def _add_pause_parsers(queues: argparse.ArgumentParser) -> None:
    from app.keys import QUEUES

    actions = queues.add_subparsers(dest="queues_action", metavar="ACTION")
    pause = command(actions, "pause", "pause a queue: workers take none of its jobs (the relay still hands "
                    "them to Redis, where they wait as ready) until it is resumed; audited",
                    ["farmctl queues pause payments --reason 'Stripe incident'",
                     "farmctl queues pause notifications --by alice"], cmd_queues_pause, audited=True)
    pause.add_argument("queue", choices=QUEUES, help="the queue to pause")
    pause.add_argument("--reason", help="why, shown with the pause and kept in the audit log")
    resume = command(actions, "resume", "resume a paused queue: workers take its jobs again within a "
                     "second; audited", ["farmctl queues resume payments"], cmd_queues_resume, audited=True)
    resume.add_argument("queue", choices=QUEUES, help="the queue to resume")


def add_queues_parser(sub: Any) -> None:
    queues = command(
        sub, "queues",
        "per queue: ready, delayed, in flight, dead letters, failed jobs, oldest ready, paused; the job "
        "ledger (waiting, due later, handed over, overdue); live workers. `queues pause|resume Q` "
        "pauses or resumes a queue",
        ["farmctl queues", "farmctl queues --watch", "farmctl queues --watch 5 --json",
         "farmctl queues --queue payments --queue dispatch", "farmctl queues pause payments --reason R",
         "farmctl queues resume payments"], cmd_queues)
    queues.add_argument("--watch", nargs="?", const=2.0, type=seconds, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until Ctrl-C")
    queues.add_argument("--json", action="store_true", help="one JSON object per snapshot")
    queues.add_argument("--queue", action="append", help="only this queue (repeatable; default: the farm's)")
    _add_pause_parsers(queues)
