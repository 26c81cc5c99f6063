"""Prometheus metrics, read the way Prometheus reads them, over real PostgreSQL, Redis and workers.

- `GET /metrics` on the web app: requests by route template and status, the broker's queues,
  Socket.IO connections (a real socket server under uvicorn).
- Worker job metrics from the broker's `JobMetrics` middleware, after real actor runs in a real
  worker; the exporter of `python -m workers.run` (a Dramatiq fork serving every worker
  process's figures with the queue gauges); and the figures of worker processes that are gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dramatiq
import httpx
import pytest
import socketio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import jobs
from app.settings import Settings
from tests.e2e import probe_jobs
from tests.integration.conftest import Accounts, Client, free_port
from tests.integration.workers_support import (  # noqa: F401  (fixtures)
    WorkerFactory,
    db_fixture,
    start_worker_fixture,
    wait_for,
)
from workers.metrics import JobMetrics, WorkerFigures

REPO = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """`{(sample name, labels): value}` of a Prometheus text exposition."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def scrape(client: Client) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


# --- web -------------------------------------------------------------------------------------------
async def test_requests_are_counted_and_timed_by_route_template_and_status(api: Client) -> None:
    # Given the counts so far
    before = await scrape(api)
    ride_route = {"method": "GET", "route": "/api/v1/rides/{ride_id}", "status": "401"}

    # When a ride is asked for, by id, without a token, three times, and the health twice
    ride_id = uuid.uuid4()
    for _ in range(3):
        assert (await api.get(f"/api/v1/rides/{ride_id}")).status_code == 401
    for _ in range(2):
        assert (await api.get("/health")).status_code == 200

    # Then the metrics count them under the route's template, never the raw path
    after = await scrape(api)
    assert value(after, "farm_http_requests_total", **ride_route) - value(
        before, "farm_http_requests_total", **ride_route) == 3
    assert value(after, "farm_http_request_duration_seconds_count", **ride_route) - value(
        before, "farm_http_request_duration_seconds_count", **ride_route) == 3
    assert value(after, "farm_http_request_duration_seconds_bucket", le="+Inf", **ride_route) >= 3
    health = {"method": "GET", "route": "/health", "status": "200"}
    assert value(after, "farm_http_requests_total", **health) - value(
        before, "farm_http_requests_total", **health) == 2
    assert str(ride_id) not in after


async def test_the_queue_gauges_show_what_the_broker_holds(api: Client, settings: Settings) -> None:
    # Given three ready messages on the dispatch queue and one delayed on maintenance
    broker = jobs.broker
    for n in range(3):
        broker.enqueue(dramatiq.Message(queue_name="dispatch", actor_name="dispatch.step", args=(str(n), 0),
                                        kwargs={}, options={}))
    broker.enqueue(dramatiq.Message(queue_name="maintenance", actor_name="tokens.cleanup", args=(),
                                    kwargs={}, options={}), delay=60_000)

    # When Prometheus scrapes
    text = await scrape(api)

    # Then the gauges say so
    assert value(text, "farm_queue_stats_up") == 1
    assert value(text, "farm_queue_ready_messages", queue="dispatch") == 3
    assert value(text, "farm_queue_oldest_ready_age_seconds", queue="dispatch") >= 0
    assert value(text, "farm_queue_delayed_messages", queue="maintenance") == 1
    assert value(text, "farm_queue_ready_messages", queue="payments") == 0


async def test_the_socket_gauge_follows_connections(web: str, accounts: Accounts) -> None:
    async with httpx.AsyncClient(base_url=web, timeout=10) as http:
        async def connections() -> float:
            return value((await http.get("/metrics")).text, "farm_socketio_connections")

        # Given a customer, and the gauge before
        customer = await accounts.register("customer")
        before = await connections()

        # When it connects a socket, and a stranger is refused
        sock = socketio.AsyncClient(reconnection=False)
        await sock.connect(web, transports=["websocket"], auth={"token": customer["accessToken"]},
                           socketio_path="socket.io", wait_timeout=10)
        refused = socketio.AsyncClient(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(web, transports=["websocket"], auth={"token": "garbage"},
                                  socketio_path="socket.io", wait_timeout=10)

        # Then one more connection is counted; and one less once it disconnects
        try:
            assert await connections() == before + 1
        finally:
            await sock.disconnect()
        deadline = time.monotonic() + 10
        while await connections() != before and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert await connections() == before


# --- workers ---------------------------------------------------------------------------------------
def job_metrics() -> JobMetrics:
    return next(m for m in jobs.broker.middleware if isinstance(m, JobMetrics))


def test_a_worker_counts_times_and_fails_jobs_by_actor(start_worker: WorkerFactory) -> None:
    # Given the worker's job metrics so far
    registry = job_metrics().registry
    sleep = {"queue_name": "probe", "actor_name": "probe.sleep"}
    explode = {"queue_name": "probe", "actor_name": "probe.explode"}

    def read() -> str:
        return generate_latest(registry).decode()

    before = read()

    # When a real worker runs two jobs that succeed and one that always fails (one retry)
    start_worker()
    probe_jobs.sleep.send(1, 0.05)
    probe_jobs.sleep.send(2, 0.0)
    probe_jobs.explode.send()

    # Then each is counted by actor and queue: processed, failed, retried, dead-lettered, timed
    def delta(name: str, labels: dict[str, str]) -> float:
        return value(read(), name, **labels) - value(before, name, **labels)

    wait_for(lambda: delta("dramatiq_message_rejects_total", explode) == 1, what="the failing job to be dead")
    wait_for(lambda: delta("dramatiq_messages_total", sleep) == 2, what="both sleeps to run")
    assert delta("dramatiq_message_errors_total", sleep) == 0
    assert delta("dramatiq_message_duration_milliseconds_count", sleep) == 2
    assert delta("dramatiq_message_duration_milliseconds_sum", sleep) >= 50
    assert delta("dramatiq_messages_total", explode) == 2
    assert delta("dramatiq_message_errors_total", explode) == 2
    assert delta("dramatiq_message_retries_total", explode) == 1
    assert value(read(), "dramatiq_messages_inprogress", **sleep) == 0


@pytest.mark.e2e
def test_the_worker_process_serves_its_jobs_and_the_queues_on_its_metrics_port(
        clean: None, settings: Settings, tmp_path: Path) -> None:
    # Given `python -m workers.run` (the Procfile's worker) with two worker processes, its exporter
    # on a free port
    port = free_port()
    env = {**os.environ, "WORKER_PROCESSES": "2", "WORKER_THREADS": "2", "WORKER_METRICS_PORT": str(port),
           "WORKER_METRICS_DIR": "", "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen([sys.executable, "-m", "workers.run"], cwd=REPO, env=env,
                                  stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    cleanup = {"queue_name": "maintenance", "actor_name": "tokens.cleanup"}
    try:
        def scraped() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                assert worker.poll() is None, log_path.read_text(errors="replace")[-3000:]
                return ""

        wait_for(lambda: value(scraped(), "farm_broker_heartbeats") >= 2, what="two live workers", timeout=30)

        # When six real jobs run
        for _ in range(6):
            jobs.tokens.cleanup.send()

        # Then the exporter adds up both processes' figures, next to the queue gauges
        wait_for(lambda: value(scraped(), "dramatiq_messages_total", **cleanup) == 6, what="six jobs counted",
                 timeout=20)
        text = scraped()
        assert value(text, "dramatiq_message_duration_milliseconds_count", **cleanup) == 6
        assert value(text, "dramatiq_message_errors_total", **cleanup) == 0
        assert value(text, "farm_queue_stats_up") == 1
        assert value(text, "farm_queue_ready_messages", queue="maintenance") == 0
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)  # the session we created: the worker's processes
            worker.wait(timeout=5)
    assert worker.returncode == 0, log_path.read_text(errors="replace")[-3000:]


_COUNTING_PROCESS = """
import sys
from prometheus_client import CollectorRegistry
from workers.metrics import JobSeries, use_multiprocess_values

use_multiprocess_values(sys.argv[1])
series, labels = JobSeries(CollectorRegistry()), ("probe", "probe.sleep")
series.processed.labels(*labels).inc(3)
series.duration.labels(*labels).observe(12)
series.in_progress.labels(*labels).inc()  # and dies in the middle of a job
"""


def test_the_exporter_keeps_the_counts_of_worker_processes_that_are_gone(tmp_path: Path) -> None:
    # Given two worker processes that counted jobs in the multiprocess directory, then died
    def worker_process() -> None:
        subprocess.run([sys.executable, "-c", _COUNTING_PROCESS, str(tmp_path)], cwd=REPO, check=True)

    worker_process()
    worker_process()
    registry = CollectorRegistry()
    registry.register(WorkerFigures(str(tmp_path)))
    labels = {"queue_name": "probe", "actor_name": "probe.sleep"}

    # When Prometheus scrapes, twice, with a third process's figures in between
    first = generate_latest(registry).decode()
    worker_process()
    second = generate_latest(registry).decode()

    # Then every process's counts are there, and none of the dead ones' jobs is in progress
    assert value(first, "dramatiq_messages_total", **labels) == 6
    assert value(first, "dramatiq_message_duration_milliseconds_count", **labels) == 2
    assert value(first, "dramatiq_message_duration_milliseconds_bucket", le="25.0", **labels) == 2
    assert value(first, "dramatiq_messages_inprogress", **labels) == 0
    assert value(second, "dramatiq_messages_total", **labels) == 9
    assert value(second, "dramatiq_message_duration_milliseconds_sum", **labels) == 36
    # And the gone processes' files were folded into one archive per metric type
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_archive.db", "histogram_archive.db"]
