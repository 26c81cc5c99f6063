"""The autoscaler with real worker processes: a burst of slow jobs adds workers, the drain removes
them, a SIGTERM stops them gracefully — and no job is lost or runs twice.

`python -m workers.autoscale tests.e2e.probe_jobs --queues probe` runs on the test run's Redis
namespace and database, with intervals and cool-downs in fractions of a second. The jobs
(`probe.sleep`) record every run in Redis; the worker count is read from the autoscaler's own
metrics endpoint, which also serves the workers' merged job metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from app.adapters.queue_stats import QueueInspector
from app.settings import Settings
from tests.e2e import probe_jobs
from tests.e2e.farm import REPO, free_port
from tests.integration.workers_support import wait_for
from workers.autoscale import Supervisor

pytestmark = pytest.mark.e2e

JOBS = 40
JOB_S = 0.4
SCALE_ENV = {
    "AUTOSCALE_MIN": "1",
    "AUTOSCALE_MAX": "3",
    "AUTOSCALE_INTERVAL": "0.25",
    "AUTOSCALE_TARGET_AGE_S": "1",
    "AUTOSCALE_TARGET_DEPTH": "4",
    "AUTOSCALE_COOLDOWN_S": "1.5",
    "WORKER_THREADS": "2",
    "WORKER_QUEUE_PREFETCH": "2",  # prefetch near the threads: the backlog stays visible in Redis
    "WORKER_SHUTDOWN_TIMEOUT_MS": "15000",
    "WORKER_METRICS_DIR": "",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "PYTHONUNBUFFERED": "1",
}


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(child) for child in (task / "children").read_text().split())
    return found


class Autoscaler:
    """`python -m workers.autoscale` started by this test, with its log and metrics endpoint."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {**os.environ, **SCALE_ENV, "WORKER_METRICS_PORT": str(self.port)}
        with log_path.open("wb") as log_file:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "workers.autoscale", "tests.e2e.probe_jobs",
                 "--queues", probe_jobs.QUEUE],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.seen_pids: set[int] = set()

    def metric(self, name: str, **labels: str) -> float:
        self.remember_processes()
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.TransportError:
            assert self.popen.poll() is None, f"the autoscaler exited:\n{self.output()[-3000:]}"
            return -1
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    def workers(self) -> float:
        return self.metric("farm_autoscaler_workers", pool="probe")

    def remember_processes(self) -> None:
        """Every process it started, so none outlives the test even if the autoscaler dies."""
        queue = [self.popen.pid]
        while queue:
            pid = queue.pop()
            self.seen_pids.add(pid)
            queue.extend(_children(pid))

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.output().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == name:
                        found.append(event)
        return found

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        self.remember_processes()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout_s)
        for pid in self.seen_pids:  # whatever is left of what it started (only after a failure)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.popen.wait(timeout=5)
        return self.popen.returncode


@pytest.fixture
def autoscaler(clean: None, tmp_path: Path) -> Iterator[Autoscaler]:
    started = Autoscaler(tmp_path / "autoscale.log")
    try:
        # Given an autoscaler whose one worker is up (it heart-beats)
        wait_for(lambda: started.metric("farm_broker_heartbeats") >= 1, what="the first worker", timeout=30)
        yield started
    finally:
        started.stop()


@pytest.fixture
def runs(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    yield client
    client.close()


def ran(client: redis.Redis) -> dict[int, int]:
    """Job number → how many times it ran."""
    recorded: dict[str, str] = client.hgetall(probe_jobs.runs_key())  # type: ignore[assignment]
    return {int(job): int(times) for job, times in recorded.items()}


def test_a_burst_adds_workers_and_the_drain_removes_them_losing_nothing(
        autoscaler: Autoscaler, runs: redis.Redis) -> None:
    assert autoscaler.workers() == 1

    # When a burst of slow jobs arrives
    for job in range(JOBS):
        probe_jobs.sleep.send(job, JOB_S)

    # Then workers are added while the backlog waits, up to the maximum
    peak, deadline = 0.0, time.monotonic() + 30
    while len(ran(runs)) < JOBS and time.monotonic() < deadline:
        peak = max(peak, autoscaler.workers())
        time.sleep(0.1)
    assert len(ran(runs)) == JOBS, autoscaler.output()[-3000:]
    assert peak == 3

    # And once drained, they are removed one cool-down at a time, down to the minimum
    wait_for(lambda: autoscaler.workers() == 1
             and autoscaler.metric("farm_autoscaler_workers_stopping", pool="probe") == 0,
             what="the workers to be removed", timeout=20)

    # And every job ran exactly once, spread over several worker processes
    assert ran(runs) == {job: 1 for job in range(JOBS)}, autoscaler.output()[-4000:]
    assert len(runs.smembers(probe_jobs.pids_key())) >= 2

    # And each decision was logged with the figures behind it
    ups, downs = autoscaler.events("autoscale.scale_up"), autoscaler.events("autoscale.scale_down")
    assert len(ups) == 2 and len(downs) == 2
    figures = {"reason", "workers", "ready", "in_flight", "oldest_ready_age_s", "ready_per_worker"}
    assert figures <= set(ups[0])
    assert ups[0]["ready"] > 0 and all(down["ready"] == 0 and down["reason"] == "idle" for down in downs)
    stopped = autoscaler.events("autoscale.worker_stopped")
    assert all(event["exit_code"] == 0 for event in stopped), (stopped, autoscaler.output()[-4000:])

    # And the exporter adds up the job metrics of every worker, the removed ones included
    sleep = {"queue_name": probe_jobs.QUEUE, "actor_name": "probe.sleep"}
    assert autoscaler.metric("dramatiq_messages_total", **sleep) == JOBS
    assert autoscaler.metric("dramatiq_message_duration_milliseconds_count", **sleep) == JOBS
    assert autoscaler.metric("dramatiq_messages_inprogress", **sleep) == 0


def test_a_sigterm_lets_running_jobs_finish_and_leaves_the_rest_queued(
        autoscaler: Autoscaler, runs: redis.Redis, settings: Settings) -> None:
    # Given slow jobs running
    for job in range(6):
        probe_jobs.sleep.send(job, 1.5)
    sleep = {"queue_name": probe_jobs.QUEUE, "actor_name": "probe.sleep"}
    wait_for(lambda: autoscaler.metric("dramatiq_messages_inprogress", **sleep) >= 1, what="a job to start")

    # When the autoscaler is told to stop
    assert autoscaler.stop() == 0, autoscaler.output()[-3000:]

    # Then no job ran twice, every job either ran or waits in the queue, and nothing is left in flight
    done = ran(runs)
    assert done and set(done.values()) == {1}
    queue = f"{settings.redis.dramatiq_namespace}:{probe_jobs.QUEUE}"
    ready = int(runs.llen(queue))
    assert len(done) + ready == 6
    assert int(runs.hlen(f"{queue}.msgs")) == ready
    stopped = autoscaler.events("autoscale.worker_stopped")
    assert all(event["exit_code"] == 0 for event in stopped), (stopped, autoscaler.output()[-4000:])


def test_a_sigkilled_autoscaler_leaves_no_worker_behind(autoscaler: Autoscaler) -> None:
    # Given the autoscaler with its worker running
    wait_for(lambda: autoscaler.workers() == 1, what="the first worker")
    autoscaler.remember_processes()
    workers = autoscaler.seen_pids - {autoscaler.popen.pid}
    assert workers

    # When the autoscaler itself is SIGKILLed (no chance to stop anything)
    autoscaler.popen.kill()
    autoscaler.popen.wait(timeout=5)

    # Then its workers get SIGTERM from the kernel and stop on their own
    def all_gone() -> bool:
        alive = []
        for pid in workers:
            with contextlib.suppress(OSError):  # gone between the open and the read: gone
                if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
                    alive.append(pid)
        return not alive

    wait_for(all_gone, what="the orphaned workers to stop", timeout=30)


def test_a_worker_told_to_stop_while_it_is_still_starting_stops_cleanly(
        clean: None, settings: Settings, tmp_path: Path) -> None:
    # Given a worker the supervisor has just started (its interpreter is still loading)
    client = redis.Redis.from_url(settings.redis.url)
    inspector = QueueInspector(client, settings.redis.dramatiq_namespace, queues=(probe_jobs.QUEUE,),
                               heartbeat_timeout_s=settings.worker.heartbeat_timeout_s)
    supervisor = Supervisor(settings, ["tests.e2e.probe_jobs", "--queues", probe_jobs.QUEUE], inspector,
                            str(tmp_path), name="probe")
    supervisor.start_worker("test")
    worker = supervisor.workers[0]
    try:
        # When it is told to stop at once (a scale-down or a shutdown right after a scale-up)
        supervisor.stop_worker(worker, "test")

        # Then it stops as a worker that had been running would: cleanly, not killed by the signal
        assert worker.popen.wait(timeout=60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        client.close()
