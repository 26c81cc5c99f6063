"""What the durable job ledger costs per job: the same cheap job, sent straight to Redis vs through
the ledger (row written, handed over by the relay, claimed done in the job's transaction).

    .venv/bin/python scripts/bench/bench_ledger.py              # 20,000 jobs each way, 3 rounds
    .venv/bin/python scripts/bench/bench_ledger.py --jobs 50000 --rounds 1

One worker process from the Procfile's `worker` line (8 threads) runs `sessions.end_sockets` for
users without sockets: one SMEMBERS, one log line — so what is measured is the per-message
machinery. Each round, with the worker idle and ready:

- **direct**: the bench enqueues N messages through the farm's broker (as `actor.send()` does);
- **ledger**: the bench writes N ledger rows in one statement (as a producer's transaction does);

and waits until every job is done (Redis queue drained / every row `done`). It prints jobs/s,
worker CPU per job (ms) and the whole machine's CPU per job (ms: worker + PostgreSQL + Redis +
the bench's own enqueueing), and the ledger's extra cost per job. Exit codes: 0 done, 2 it could
not run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import dramatiq
import psycopg

from scripts.bench.harness import BenchError, BenchStack, say
from scripts.bench.measure import MachineCpu
from scripts.bench.processes import WorkerProcess, wait_until
from scripts.bench.session import BenchSession, run_on_stack

ACTOR = "sessions.end_sockets"
QUEUE = "maintenance"


@dataclass
class Round:
    mode: str
    jobs: int
    seconds: float
    worker_cpu_s: float
    machine_cpu_s: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def worker_ms(self) -> float:
        return self.worker_cpu_s * 1000 / self.jobs

    @property
    def machine_ms(self) -> float:
        return self.machine_cpu_s * 1000 / self.jobs


def wait_for(check: Callable[[], bool], *, what: str, worker: WorkerProcess) -> None:
    if not wait_until(check, timeout_s=600, process=worker, poll_s=0.02):
        raise BenchError(f"timed out waiting for {what}")


def direct_round(stack: BenchStack, worker: WorkerProcess, jobs: int) -> Round:
    import redis

    from workers.broker import build_broker

    broker = build_broker(stack.settings())
    client = redis.Redis.from_url(stack.redis_url)
    ns = f"{stack.prefix}-dramatiq"
    try:
        cpu0, machine = worker.cpu_seconds(), MachineCpu()
        started = time.perf_counter()
        for _ in range(jobs):
            broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name=ACTOR,
                                            args=(str(uuid.uuid4()), "bench"), kwargs={}, options={}))
        wait_for(lambda: client.hlen(f"{ns}:{QUEUE}.msgs") == 0, what="the direct jobs", worker=worker)
        return Round("direct", jobs, time.perf_counter() - started, worker.cpu_seconds() - cpu0,
                     machine.busy_seconds())
    finally:
        broker.client.close()
        client.close()


def ledger_round(stack: BenchStack, worker: WorkerProcess, jobs: int) -> Round:
    with psycopg.connect(stack.libpq_dsn, autocommit=True) as conn:
        cpu0, machine = worker.cpu_seconds(), MachineCpu()
        started = time.perf_counter()
        conn.execute(
            "INSERT INTO jobs (message_id, queue, actor, args, kwargs, options, created_at, due_at) "
            "SELECT gen_random_uuid(), %s, %s, jsonb_build_array(gen_random_uuid()::text, 'bench'), "
            "'{}'::jsonb, '{}'::jsonb, now(), now() FROM generate_series(1, %s)", (QUEUE, ACTOR, jobs))

        def done() -> bool:
            row = conn.execute("SELECT count(*) FROM jobs WHERE state IN ('waiting', 'handed')").fetchone()
            return row is not None and row[0] == 0

        wait_for(done, what="the ledger jobs", worker=worker)
        elapsed = time.perf_counter() - started
        failed = conn.execute("SELECT count(*) FROM jobs WHERE state = 'failed'").fetchone()
        if failed and failed[0]:
            raise BenchError(f"{failed[0]} ledger jobs failed")
        result = Round("ledger", jobs, elapsed, worker.cpu_seconds() - cpu0, machine.busy_seconds())
        conn.execute("DELETE FROM jobs")
        return result


def measure(args: argparse.Namespace, session: BenchSession) -> dict[str, list[Round]]:
    """Warm up with 500 jobs each way, then `args.rounds` rounds of direct and ledger jobs."""
    stack = session.stack
    worker = session.start_worker({"WORKER_THREADS": str(args.threads), "WORKER_QUEUE_PREFETCH": "100",
                                   "WORKER_METRICS_PORT": "0"})
    time.sleep(3)  # boot: import, connect, first relay pass
    ledger_round(stack, worker, 500)  # warm-up
    direct_round(stack, worker, 500)
    results: dict[str, list[Round]] = {"direct": [], "ledger": []}
    for n in range(args.rounds):
        for run in (direct_round, ledger_round):
            result = run(stack, worker, args.jobs)
            results[result.mode].append(result)
            say(f"round {n + 1} {result.mode}: {result.rate:,.0f} jobs/s, "
                f"worker {result.worker_ms:.3f} ms/job, machine {result.machine_ms:.3f} ms/job")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    measured = run_on_stack(lambda session: measure(args, session))
    if measured is None:
        return 2
    results = measured

    def median(mode: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in results[mode])

    print(f"\nledger cost per job: {args.jobs:,} jobs x {args.rounds} rounds, 1 worker process x "
          f"{args.threads} threads, medians")
    print(f"{'path':<8} {'jobs/s':>10} {'worker CPU ms/job':>19} {'machine CPU ms/job':>20}")
    for mode in ("direct", "ledger"):
        print(f"{mode:<8} {median(mode, 'rate'):>10,.0f} {median(mode, 'worker_ms'):>19.3f} "
              f"{median(mode, 'machine_ms'):>20.3f}")
    print(f"{'extra':<8} {'':>10} {median('ledger', 'worker_ms') - median('direct', 'worker_ms'):>+19.3f} "
          f"{median('ledger', 'machine_ms') - median('direct', 'machine_ms'):>+20.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
