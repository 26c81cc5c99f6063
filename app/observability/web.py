"""The web process's Prometheus metrics, served at `GET /metrics` (public, at the root).

- `farm_http_requests_total` and `farm_http_request_duration_seconds` by method, **route
  template** (`/api/v1/rides/{ride_id}`, never the raw path: ids would make a series per ride)
  and status. Only routed requests count: a path no route matches has no template.
- `farm_socketio_connections`: authenticated Socket.IO connections open on this process.
- The broker's queue gauges (`app/observability/queues.py`), read when scraped, cached 1 s.
- The process's CPU, memory, file descriptors and garbage collections (prometheus_client's own).

Each app gets its own registry over the process-wide metric objects, so building several apps in
one process (the tests do) never registers a name twice.
"""

from __future__ import annotations

import time

import anyio.to_thread
import redis
from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from app.adapters.queue_stats import QueueInspector
from app.observability.queues import QueueCollector
from app.redis_conn import create_sync_redis
from app.settings import Settings

LABELS = ("method", "route", "status")
HTTP_REQUESTS = Counter("farm_http_requests_total", "HTTP requests answered, by route template and status.",
                        LABELS, registry=None)
HTTP_DURATION = Histogram(
    "farm_http_request_duration_seconds", "Time to answer an HTTP request, by route template and status.",
    LABELS, registry=None,
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SOCKET_CONNECTIONS = Gauge("farm_socketio_connections",
                           "Authenticated Socket.IO connections open on this process.", registry=None)


class _RequestSeries:
    """The counter and histogram children per (method, route, status), looked up once each."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = self._children.setdefault(key, (HTTP_REQUESTS.labels(*labels),
                                                       HTTP_DURATION.labels(*labels)))
        children[0].inc()
        children[1].observe(seconds)


_requests = _RequestSeries()


def request_metrics_middleware(app: ASGIApp) -> ASGIApp:
    """Counts and times every routed HTTP request by its route template and status."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises past every handler

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_with_status)
        finally:
            _requests.observe(str(scope.get("method", "GET")), scope.get("path_template") or "unrouted",
                              status, time.perf_counter() - started)

    return middleware


class WebMetrics:
    """One app's registry; the queue gauges' Redis client is made on the first scrape."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._redis: redis.Redis | None = None
        self.registry = CollectorRegistry()
        for metric in (HTTP_REQUESTS, HTTP_DURATION, SOCKET_CONNECTIONS):
            self.registry.register(metric)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(QueueCollector(self._inspector))

    def _inspector(self) -> QueueInspector:
        self._redis = create_sync_redis(self._settings.redis, decode_responses=False)
        return QueueInspector(self._redis, self._settings.redis.dramatiq_namespace,
                              heartbeat_timeout_s=self._settings.worker.heartbeat_timeout_s)

    def render(self) -> bytes:
        """The exposition text (blocking: the queue gauges may ask Redis)."""
        return generate_latest(self.registry)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None


def metrics_route(metrics: WebMetrics) -> HTTPRouteHandler:
    """`GET /metrics` for one app (rendered off the event loop: it may wait on Redis)."""

    @get("/metrics", tags=["ops"], summary="Prometheus metrics", media_type=CONTENT_TYPE_LATEST)
    async def prometheus_metrics() -> Response[bytes]:
        """Prometheus text format: requests by route and status, sockets, queues, the process."""
        body = await anyio.to_thread.run_sync(metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return prometheus_metrics
