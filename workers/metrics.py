"""Worker metrics: Dramatiq-style job metrics from a middleware, and the exporter that serves them.

`JobMetrics` (in the broker's middleware list) counts, per queue and actor, with the names of
Dramatiq's own Prometheus middleware so its dashboards work unchanged:

- `dramatiq_messages_total`: runs finished (or skipped); `dramatiq_message_errors_total`: runs
  that raised; `dramatiq_message_retries_total`: of those, the ones scheduled to run again;
  `dramatiq_message_rejects_total`: messages failed for good (dead-lettered, and recorded in
  `failed_jobs`);
- `dramatiq_messages_inprogress`: running now; `dramatiq_message_duration_milliseconds`: a histogram.

A Dramatiq worker is several processes (`WORKER_PROCESSES`, or the autoscaler's children), so
their figures are kept in prometheus_client's **multiprocess mode**: each process writes its own
mmap files in one directory and a single exporter per machine (or pod) merges them on scrape —
one scrape target however many processes, and counters that survive a process being replaced.
The exporter is either a Dramatiq fork of `python -m workers.run` (`serve_worker_metrics`, on
`WORKER_METRICS_PORT`) or the autoscaler itself (it tells its workers where to write and to serve
nothing). The exporter adds the broker's queue gauges, read at scrape time (`QueueCollector`), and folds the
figures of processes that are gone into one archive file per metric type, so files don't pile up
however often the autoscaler replaces workers.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.broker import MessageProxy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server, values
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from app.adapters.queue_stats import QueueInspector
from app.logging import configure_logging, get_logger
from app.observability.queues import QueueCollector
from app.redis_conn import create_sync_redis
from app.settings import Settings, get_settings
from workers.ledger import OUTCOME_OPTION

log = get_logger("worker.metrics")

LABELS = ("queue_name", "actor_name")
#: Dramatiq's own buckets (ms): jobs run from milliseconds to minutes.
DURATION_BUCKETS_MS = (5, 10, 25, 50, 75, 100, 250, 500, 750, 1_000, 2_500, 5_000, 7_500, 10_000, 30_000,
                       60_000, 600_000, 900_000, float("inf"))
#: Where each `workers.run` keeps its processes' figures when no directory is configured.
RUNS_ROOT = Path(tempfile.gettempdir()) / "dispatch-farm-metrics"


class JobSeries:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.processed = Counter("dramatiq_messages_total", "Messages processed (run or skipped).",
                                 LABELS, registry=registry)
        self.errors = Counter("dramatiq_message_errors_total", "Runs that raised.", LABELS, registry=registry)
        self.retries = Counter("dramatiq_message_retries_total", "Runs that raised and will run again.",
                               LABELS, registry=registry)
        self.rejects = Counter("dramatiq_message_rejects_total",
                               "Messages failed for good (dead-lettered).", LABELS, registry=registry)
        self.in_progress = Gauge("dramatiq_messages_inprogress", "Messages running now.", LABELS,
                                 registry=registry, multiprocess_mode="livesum")
        self.duration = Histogram("dramatiq_message_duration_milliseconds", "Time spent running a message.",
                                  LABELS, registry=registry, buckets=DURATION_BUCKETS_MS)


class JobMetrics(Middleware):
    """Counts and times every message this worker runs (list it before the retries middleware:
    its `after_process_message` must run after theirs to know whether a failed run will retry)."""

    def __init__(self, settings: Settings) -> None:
        self._port = settings.worker.metrics_port
        self._directory = settings.worker.metrics_dir
        self._multiprocess_dir: str | None = None
        self.registry = CollectorRegistry()
        self._series: JobSeries | None = None
        self._started: dict[str, float] = {}

    @property
    def forks(self) -> list[Any]:
        return [serve_worker_metrics] if self._port > 0 else []

    def after_process_boot(self, broker: Broker) -> None:
        # Only Dramatiq's CLI emits this: the process is one of several that one exporter serves.
        if self._port > 0 or self._directory:
            self._multiprocess_dir = self._directory or str(run_directory(os.getppid()))
            use_multiprocess_values(self._multiprocess_dir)
        self._ensure_series()

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self._ensure_series()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self._multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self._multiprocess_dir)

    def _ensure_series(self) -> JobSeries:
        if self._series is None:
            self._series = JobSeries(self.registry)
        return self._series

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self._ensure_series().in_progress.labels(message.queue_name, message.actor_name).inc()
        self._started[message.message_id] = time.perf_counter()

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: Any = None
    ) -> None:
        series = self._ensure_series()
        labels = (message.queue_name, message.actor_name)
        started = self._started.pop(message.message_id, None)
        if started is not None:
            series.in_progress.labels(*labels).dec()
            series.duration.labels(*labels).observe((time.perf_counter() - started) * 1000)
        series.processed.labels(*labels).inc()
        if exception is not None:
            series.errors.labels(*labels).inc()
            outcome = message.options.get(OUTCOME_OPTION)
            if outcome == "failed":  # settled in the ledger: recorded in failed_jobs, not dead-lettered
                series.rejects.labels(*labels).inc()
            elif not message.failed and outcome != "deferred":
                series.retries.labels(*labels).inc()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        series = self._ensure_series()
        labels = (message.queue_name, message.actor_name)
        if self._started.pop(message.message_id, None) is not None:
            series.in_progress.labels(*labels).dec()
        series.processed.labels(*labels).inc()

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        self._ensure_series().rejects.labels(message.queue_name, message.actor_name).inc()


# --- multiprocess bookkeeping ----------------------------------------------------------------------
def use_multiprocess_values(directory: str) -> None:
    """Keep this process's metric values in mmap files under `directory`.

    prometheus_client picks its value class from `PROMETHEUS_MULTIPROC_DIR` when first imported;
    a Dramatiq worker process learns its directory only once booted, so it sets the variable and
    picks again. Metric children made from now on write to the directory.
    """
    os.makedirs(directory, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.get_value_class()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_ticks(pid: int) -> str:
    """When `pid` started (clock ticks since boot): tells a reused PID from the one before."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def run_directory(parent_pid: int) -> Path:
    """The directory of one `workers.run` (its Dramatiq parent process), shared by its children."""
    return RUNS_ROOT / f"{parent_pid}-{_start_ticks(parent_pid)}"


def forget_finished_runs() -> None:
    """Remove the directories of `workers.run` processes that are gone."""
    if not RUNS_ROOT.is_dir():
        return
    for entry in RUNS_ROOT.iterdir():
        pid, _, ticks = entry.name.partition("-")
        if pid.isdigit() and not (_alive(int(pid)) and _start_ticks(int(pid)) == ticks):
            shutil.rmtree(entry, ignore_errors=True)


def fold_dead_processes(directory: str) -> None:
    """Account for the processes that are gone (replaced, scaled down, SIGKILLed).

    Their live gauges (in progress) are dropped; their counters and histograms are added into one
    archive file per type and their own files removed, so however many worker processes an
    autoscaler has run, a scrape reads the files of the live ones plus two — and no count is lost.
    """
    for path in sorted(glob.glob(os.path.join(directory, "*.db"))):
        kind, *_, pid = Path(path).stem.split("_")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if kind == "gauge":
            mark_process_dead(int(pid), directory)
        elif kind in ("counter", "histogram"):
            _fold_into_archive(directory, kind, path)


def _fold_into_archive(directory: str, kind: str, path: str) -> None:
    archive = os.path.join(directory, f"{kind}_archive.db")
    merged = MultiProcessCollector.merge([f for f in (archive, path) if os.path.exists(f)], accumulate=False)
    staged = f"{archive}.{os.getpid()}.tmp"
    store = MmapedDict(staged)
    try:
        for metric in merged:
            for sample in metric.samples:
                key = mmap_key(metric.name, sample.name, list(sample.labels), list(sample.labels.values()),
                               metric.documentation)
                store.write_value(key, sample.value, 0.0)
    finally:
        store.close()
    os.replace(staged, archive)
    os.remove(path)


class WorkerFigures(Collector):
    """Every worker process's job metrics, merged from the multiprocess directory."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._merged = MultiProcessCollector(None, path=directory)
        self._lock = threading.Lock()  # scrapes are served by concurrent threads

    def collect(self) -> Iterable[Any]:
        with self._lock:
            fold_dead_processes(self._directory)
            return list(self._merged.collect())


# --- the exporter ----------------------------------------------------------------------------------
def exporter_registry(settings: Settings, directory: str, *extra: Collector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(WorkerFigures(directory))

    def inspector() -> QueueInspector:
        client = create_sync_redis(settings.redis, decode_responses=False)
        return QueueInspector(client, settings.redis.dramatiq_namespace,
                              heartbeat_timeout_s=settings.worker.heartbeat_timeout_s)

    registry.register(QueueCollector(inspector))
    for collector in extra:
        registry.register(collector)
    return registry


def start_exporter(settings: Settings, directory: str, *extra: Collector) -> bool:
    """Serve the workers' metrics on WORKER_METRICS_HOST:PORT from a daemon thread."""
    host, port = settings.worker.metrics_host, settings.worker.metrics_port
    try:
        start_http_server(port, addr=host, registry=exporter_registry(settings, directory, *extra))
    except OSError as error:  # the port is taken: the workers run on, unobserved
        log.warning("metrics.exporter_unavailable", host=host, port=port, error=repr(error))
        return False
    log.info("metrics.exporter_started", host=host, port=port, directory=directory)
    return True


def serve_worker_metrics() -> int:
    """A Dramatiq fork of `workers.run` (see `JobMetrics.forks`): the exporter, until SIGTERM."""
    settings = get_settings()
    configure_logging(settings.log, process="worker-metrics")
    forget_finished_runs()
    directory = settings.worker.metrics_dir or str(run_directory(os.getppid()))
    os.makedirs(directory, exist_ok=True)
    if start_exporter(settings, directory):
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                signal.pause()  # Dramatiq's SIGTERM handler ends the process
    return 0
