"""The `autoscale` process: Dramatiq worker processes between AUTOSCALE_MIN_WORKERS and
AUTOSCALE_MAX_WORKERS.

`python -m workers.autoscale [module ...] [dramatiq options]` supervises workers that each run what
`python -m workers.run` runs, as one Dramatiq process (`WORKER_PROCESSES=1`), with the same
arguments: extra actor modules first, then options such as `--queues dispatch`. Every
`AUTOSCALE_INTERVAL` seconds it reads the queues it serves (`QueueInspector`: a pipeline of O(1)
commands) and

- adds one worker when the oldest ready message has waited longer than `AUTOSCALE_TARGET_AGE`
  or there are more than `AUTOSCALE_TARGET_DEPTH` ready messages per running worker;
- removes one (the newest) after `AUTOSCALE_COOLDOWN` of idleness: nothing ready and no more in
  flight than half the threads of one worker fewer could run; each removal needs a fresh cool-down;
- restarts a worker that exited on its own, to keep at least the minimum (backing off if they
  keep dying at start-up).

A worker is always stopped with SIGTERM: Dramatiq lets running jobs finish and requeues what it
had prefetched. Only after `WORKER_SHUTDOWN_TIMEOUT_MS` plus a grace period is its process group
(the one this process created for it) sent SIGKILL. SIGTERM or SIGINT to the autoscaler stops
every worker that way, then the autoscaler exits. Each worker runs in a session of its own, so a
terminal's Ctrl-C or a process manager's group signal reaches the autoscaler alone, and every
worker gets exactly one SIGTERM (Dramatiq kills a worker on the second). If the autoscaler itself
dies (SIGKILL, OOM), the kernel sends each worker SIGTERM (`PR_SET_PDEATHSIG`): no orphans.
A worker stopped while it is still starting keeps the signal blocked until Dramatiq handles it,
so it too stops cleanly (exit 0) rather than dying of the signal.

Metrics: the workers write their job metrics to one prometheus_client multiprocess directory and
the autoscaler serves them, the queue gauges and its own (`farm_autoscaler_*`) on
`WORKER_METRICS_PORT` (see `workers/metrics.py`).

Queue age counts the ready list only: a worker's prefetched messages are in flight, not ready, so
keep `WORKER_QUEUE_PREFETCH` near `WORKER_THREADS` for slow jobs, or one worker hoards the backlog
a new worker could have taken.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.adapters.queue_stats import LedgerBacklog, QueueInspector
from app.adapters.worker_registry import DecisionLog
from app.db import libpq_dsn
from app.keys import QUEUE_DISPATCH, QUEUES, RedisKeys, actors_sql, batched_actors
from app.logging import configure_logging, get_logger
from app.redis_conn import create_sync_redis
from app.settings import Settings, get_settings
from workers.metrics import start_exporter
from workers.run import dramatiq_command
from workers.scale_policy import Load, ScalePolicy

log = get_logger("worker.autoscale")

#: Beyond the worker's own shutdown timeout, time for Dramatiq to requeue and exit.
STOP_GRACE_S = 5.0
#: A worker that exits sooner than this after its start counts as crashing at start-up.
QUICK_EXIT_S = 10.0
MAX_RESTART_BACKOFF_S = 60.0
#: prctl(2) option: the signal a child gets when its parent (thread) exits.
_PR_SET_PDEATHSIG = 1
#: Looked up here, in the parent: the forked child only calls it (no dlopen between fork and exec).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
#: What Dramatiq's CLI handles (and blocks while it starts its processes).
WORKER_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@dataclass
class WorkerProcess:
    popen: subprocess.Popen[bytes]
    started_at: float
    stopping_since: float | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Counts:
    added: int = 0
    removed: int = 0
    restarted: int = 0


class Supervisor:
    """Runs the workers: starts, stops, reaps and restarts them, and decides how many."""

    def __init__(self, settings: Settings, worker_args: list[str], inspector: QueueInspector,
                 metrics_dir: str, *, clock: Callable[[], float] = time.monotonic, name: str = "",
                 decisions: DecisionLog | None = None) -> None:
        self.name = name or ",".join(inspector.queues)
        self.settings = settings
        self.worker_args = worker_args
        self.inspector = inspector
        self.metrics_dir = metrics_dir
        self.clock = clock
        self.policy = ScalePolicy(settings.autoscale, settings.worker.threads)
        self.workers: list[WorkerProcess] = []
        self.counts = Counts()
        self.decisions = decisions  # each worker started or stopped, for `GET /admin/workers`
        self._quick_exits = 0
        self._restart_not_before = 0.0
        self.stop_timeout_s = settings.worker.shutdown_timeout_ms / 1000 + STOP_GRACE_S

    # --- processes --------------------------------------------------------------------------------
    @property
    def running(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.stopping_since is None]

    def start_worker(self, reason: str) -> None:
        argv, env = worker_command(self.settings, self.worker_args, self.metrics_dir)
        popen = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                 preexec_fn=_prepare_worker)
        self.workers.append(WorkerProcess(popen, self.clock()))
        self._decided("add", len(self.running) - 1, reason)
        log.info("autoscale.worker_started", pool=self.name, pid=popen.pid, reason=reason,
                 workers=len(self.running))

    def stop_worker(self, worker: WorkerProcess, reason: str) -> None:
        if worker.stopping_since is not None or worker.popen.poll() is not None:
            return
        worker.stopping_since = self.clock()
        worker.popen.send_signal(signal.SIGTERM)
        self._decided("remove", len(self.running) + 1, reason)
        log.info("autoscale.worker_stopping", pid=worker.pid, reason=reason, workers=len(self.running))

    def _decided(self, action: str, before: int, reason: str) -> None:
        if self.decisions is not None:
            self.decisions.record(pool=self.name, action=action, before=before, after=len(self.running),
                                  reason=reason)

    def reap(self) -> None:
        """Forget exited workers; SIGKILL the ones that outlived their shutdown timeout."""
        now = self.clock()
        for worker in list(self.workers):
            code = worker.popen.poll()
            if code is None:
                if worker.stopping_since is not None and now - worker.stopping_since > self.stop_timeout_s:
                    log.warning("autoscale.worker_killed", pid=worker.pid,
                                after_s=round(now - worker.stopping_since, 1))
                    self._kill(worker)
                continue
            self.workers.remove(worker)
            if worker.stopping_since is not None:
                log.info("autoscale.worker_stopped", pid=worker.pid, exit_code=code,
                         stop_s=round(now - worker.stopping_since, 2))
                continue
            lived = now - worker.started_at
            self._quick_exits = self._quick_exits + 1 if lived < QUICK_EXIT_S else 0
            backoff = min(2.0 ** self._quick_exits, MAX_RESTART_BACKOFF_S) if self._quick_exits else 0.0
            self._restart_not_before = now + backoff
            log.error("autoscale.worker_exited", pid=worker.pid, exit_code=code, lived_s=round(lived, 1),
                      restart_in_s=backoff, workers=len(self.running))

    def _kill(self, worker: WorkerProcess) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)  # the session we created for it: the worker's tree

    # --- decisions --------------------------------------------------------------------------------
    def tick(self) -> None:
        self.reap()
        now = self.clock()
        while len(self.running) < self.settings.autoscale.min_workers and now >= self._restart_not_before:
            self.counts.restarted += 1
            self.start_worker("replaces_exited_worker")
        try:
            snapshot = self.inspector.snapshot()
        except Exception as error:  # Redis away: keep what runs, decide again next time
            log.warning("autoscale.queues_unreadable", error=repr(error), workers=len(self.running))
            return
        running = self.running
        load = Load.of(snapshot, len(running))
        decision = self.policy.decide(load, now)
        figures = {"workers": load.workers, "ready": load.ready, "in_flight": load.in_flight,
                   "oldest_ready_age_s": load.oldest_ready_age_s,
                   "ready_per_worker": round(load.ready / max(load.workers, 1), 1),
                   "target_age_s": self.settings.autoscale.target_age_s,
                   "target_depth": self.settings.autoscale.target_depth}
        if decision.action == "add" and now >= self._restart_not_before:
            log.info("autoscale.scale_up", reason=decision.reason, **figures)
            self.counts.added += 1
            self.start_worker(decision.reason)
        elif decision.action == "remove":
            log.info("autoscale.scale_down", reason=decision.reason,
                     cooldown_s=self.settings.autoscale.cooldown_s, **figures)
            self.counts.removed += 1
            self.stop_worker(running[-1], decision.reason)
        else:
            log.debug("autoscale.hold", reason=decision.reason, **figures)

    # --- the loop ---------------------------------------------------------------------------------
    def begin(self) -> None:
        scale = self.settings.autoscale
        log.info("autoscale.started", pool=self.name, min=scale.min_workers, max=scale.max_workers,
                 interval_s=scale.interval_s, target_age_s=scale.target_age_s,
                 target_depth=scale.target_depth, cooldown_s=scale.cooldown_s,
                 queues=list(self.inspector.queues), worker_args=self.worker_args)
        for _ in range(scale.min_workers):
            self.start_worker("minimum")

    def stop_all(self) -> None:
        for worker in self.workers:
            self.stop_worker(worker, "shutdown")

    def kill_remaining(self) -> None:
        for worker in self.workers:
            log.warning("autoscale.worker_killed", pool=self.name, pid=worker.pid,
                        after_s=self.stop_timeout_s)
            self._kill(worker)
            worker.popen.wait(timeout=10)


class Pools:
    """The supervisors of one autoscale process, each over its own queues, ticked in one loop and
    stopped together. By default dispatch has a pool of its own, so a backlog (or a failing
    provider) on payments or notifications never holds a dispatch job up."""

    def __init__(self, supervisors: list[Supervisor]) -> None:
        self.supervisors = supervisors
        self._stop_signal: int | None = None
        self._wake = threading.Event()

    def request_stop(self, signum: int, _frame: object = None) -> None:
        self._stop_signal = signum
        self._wake.set()

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.request_stop)
        interval = min(s.settings.autoscale.interval_s for s in self.supervisors)
        try:
            for supervisor in self.supervisors:
                supervisor.begin()
            while self._stop_signal is None:
                for supervisor in self.supervisors:
                    supervisor.tick()
                self._wake.wait(interval)
        except BaseException:
            log.exception("autoscale.failed")
            self.shutdown()  # never leave workers behind
            raise
        return self.shutdown()

    def shutdown(self) -> int:
        log.info("autoscale.stopping", signal=signal.Signals(self._stop_signal or signal.SIGTERM).name,
                 workers=sum(len(s.workers) for s in self.supervisors))
        for supervisor in self.supervisors:
            supervisor.stop_all()
        deadline = time.monotonic() + max(s.stop_timeout_s for s in self.supervisors) + 1
        while any(s.workers for s in self.supervisors) and time.monotonic() < deadline:
            for supervisor in self.supervisors:
                supervisor.reap()
            time.sleep(0.05)
        for supervisor in self.supervisors:
            supervisor.kill_remaining()
        log.info("autoscale.stopped")
        return 0


class SupervisorCollector(Collector):
    """`farm_autoscaler_*`: workers running and stopping, bounds, and what the autoscaler did."""

    def __init__(self, supervisors: list[Supervisor]) -> None:
        self.supervisors = supervisors

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        families = {
            "workers": GaugeMetricFamily("farm_autoscaler_workers", "Worker processes running.",
                                         labels=["pool"]),
            "stopping": GaugeMetricFamily("farm_autoscaler_workers_stopping",
                                          "Worker processes finishing their jobs.", labels=["pool"]),
            "min": GaugeMetricFamily("farm_autoscaler_min_workers", "AUTOSCALE_MIN_WORKERS.",
                                     labels=["pool"]),
            "max": GaugeMetricFamily("farm_autoscaler_max_workers", "AUTOSCALE_MAX_WORKERS.",
                                     labels=["pool"]),
        }
        events = CounterMetricFamily("farm_autoscaler_events", "Workers added, removed and restarted.",
                                     labels=["pool", "event"])
        for sup in self.supervisors:
            scale, running = sup.settings.autoscale, len(sup.running)
            families["workers"].add_metric([sup.name], running)
            families["stopping"].add_metric([sup.name], len(sup.workers) - running)
            families["min"].add_metric([sup.name], scale.min_workers)
            families["max"].add_metric([sup.name], scale.max_workers)
            for name in ("added", "removed", "restarted"):
                events.add_metric([sup.name, name], getattr(sup.counts, name))
        yield from families.values()
        yield events


def worker_command(settings: Settings, worker_args: list[str],
                   metrics_dir: str) -> tuple[list[str], dict[str, str]]:
    """What `python -m workers.run` execs, as one process writing its metrics to `metrics_dir`."""
    one = dataclasses.replace(settings, worker=dataclasses.replace(settings.worker, processes=1))
    argv, env = dramatiq_command(one, worker_args)
    env.update({"WORKER_PROCESSES": "1", "WORKER_METRICS_PORT": "0", "WORKER_METRICS_DIR": metrics_dir})
    return argv, env


@dataclass
class Arguments:
    worker_args: list[str]
    queues: tuple[str, ...] = field(default=QUEUES)
    #: Given `--queues`: one pool over them. Without: dispatch's own pool and one for the rest.
    pools: list[tuple[str, ...]] = field(default_factory=list)

    def pool_args(self, queues: tuple[str, ...]) -> list[str]:
        """The worker arguments of the pool over `queues`."""
        if self.pools == [self.queues]:
            return self.worker_args
        return [*self.worker_args, "--queues", *queues]


#: The default pools: dispatch never waits behind another queue (nor shares threads with one).
DEFAULT_POOLS: tuple[tuple[str, ...], ...] = (
    (QUEUE_DISPATCH,), tuple(q for q in QUEUES if q != QUEUE_DISPATCH))


def parse_arguments(argv: list[str]) -> Arguments:
    """Everything is passed to each worker; `--queues` also says which queues to watch."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--queues", "-Q", nargs="+")
    known, _ = parser.parse_known_args(argv)
    if known.queues:
        queues = tuple(known.queues)
        return Arguments(worker_args=list(argv), queues=queues, pools=[queues])
    return Arguments(worker_args=list(argv), queues=QUEUES, pools=list(DEFAULT_POOLS))


def _prepare_worker() -> None:
    """In the forked child, before exec.

    SIGTERM it if the autoscaler dies, even by SIGKILL (Linux `PR_SET_PDEATHSIG`), so a killed
    supervisor leaves no orphaned workers; they stop as on any SIGTERM, finishing running jobs and
    requeueing the rest.

    Dramatiq's stop signals are blocked across the exec: the mask is inherited, and Dramatiq
    unblocks them only once its handlers are installed. A worker told to stop while it is still
    starting (the interpreter and Dramatiq's CLI take a fraction of a second) keeps the signal
    pending and stops cleanly then, instead of dying of it with nothing to clean up.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_STOP_SIGNALS)
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    configure_logging(settings.log, process="autoscale")
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    client = create_sync_redis(settings.redis, decode_responses=False)
    metrics_dir = settings.worker.metrics_dir or tempfile.mkdtemp(prefix="dispatch-farm-autoscale-")
    os.makedirs(metrics_dir, exist_ok=True)
    for stale in os.listdir(metrics_dir):  # no worker of ours has started yet
        os.remove(os.path.join(metrics_dir, stale))
    batched = batched_actors(settings)
    ledger = LedgerBacklog(libpq_dsn(settings.db.url), actors_sql(batched)) if batched else None
    decisions = DecisionLog(client, RedisKeys(settings.redis).autoscale_decisions())
    supervisors = [
        Supervisor(settings, arguments.pool_args(queues),
                   QueueInspector(client, settings.redis.dramatiq_namespace, queues=queues,
                                  heartbeat_timeout_s=settings.worker.heartbeat_timeout_s, ledger=ledger),
                   metrics_dir, decisions=decisions)
        for queues in arguments.pools]
    if settings.worker.metrics_port > 0:
        start_exporter(settings, metrics_dir, SupervisorCollector(supervisors))
    try:
        return Pools(supervisors).run()
    finally:
        client.close()
        if ledger is not None:
            ledger.close()
        if not settings.worker.metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
