"""Settings of what the farm runs on: PostgreSQL, Redis, the worker, autoscale and clock processes,
logs and the web listener."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.settings.declare import NOT_NEGATIVE, POSITIVE, Check, one_of, setting


@dataclass(frozen=True)
class DatabaseSettings:
    """PostgreSQL, through psycopg 3 (async in web, sync in workers). Each process logs its maximum
    number of connections at start as `db.connection_budget`
    ([deploy/README.md](../deploy/README.md#connection-budget))."""

    url: str = setting("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/dispatchfarm",
                       doc="PostgreSQL's URL")
    pool_size: int = setting("DB_POOL_SIZE", 10, check=POSITIVE,
                             doc="connections pooled per process")
    max_overflow: int = setting("DB_MAX_OVERFLOW", 10,
                                doc="connections a process may open beyond its pool under load")
    statement_pool_size: int = setting(
        "DB_STATEMENT_POOL_SIZE", 32, check=POSITIVE,
        doc="web only: autocommit connections for one-statement ingest (`POST /rides`, Stripe webhooks; "
            "`app/statements.py`), opened on demand and closed after 10 idle minutes; commits of "
            "concurrent statements share WAL flushes, so ingest throughput grows with it. Count them "
            "against PostgreSQL's `max_connections`: web processes x (this + `DB_POOL_SIZE` + "
            "`DB_MAX_OVERFLOW`)")
    pool_timeout_s: float = setting("DB_POOL_TIMEOUT", 5.0,
                                    doc="seconds to wait for a pooled connection before answering 503")
    connect_timeout_s: float = setting("DB_CONNECT_TIMEOUT", 3.0, doc="seconds to connect")
    statement_timeout_ms: int = setting("DB_STATEMENT_TIMEOUT_MS", 15_000, check=POSITIVE,
                                        doc="server-side statement timeout (ms)")
    lock_timeout_ms: int = setting(
        "DB_LOCK_TIMEOUT_MS", 2_000, check=POSITIVE,
        doc="web: longest wait (ms) for a row lock in the short transactions around Stripe calls "
            "(onboarding, payment intent; `SET LOCAL lock_timeout`); past it the request answers 503 "
            "`SERVICE_UNAVAILABLE`, reason `LOCK_TIMEOUT`, instead of hanging")
    echo: bool = setting("DB_ECHO", False, doc="log SQL")
    pgbouncer: bool = setting(
        "DB_PGBOUNCER", False,
        doc="behind PgBouncer in transaction mode: no server-side prepared statements and no `options` "
            "startup parameter (set `statement_timeout` on the role instead)")
    direct_url: str = setting(
        "DATABASE_DIRECT_URL", "", shown_default="empty (= `DATABASE_URL`)",
        doc="a URL straight to PostgreSQL, for what a transaction-mode pooler can't carry: the relay's "
            "`LISTEN` and migrations (`farmctl db upgrade`) when `DATABASE_URL` points at PgBouncer")

    @property
    def unpooled_url(self) -> str:
        return self.direct_url or self.url


@dataclass(frozen=True)
class RedisSettings:
    """Redis, for queues, caches, rate limits and the Socket.IO bus."""

    url: str = setting("REDIS_URL", "redis://127.0.0.1:6379/0", doc="Redis's URL")
    prefix: str = setting("REDIS_PREFIX", "farm",
                          doc="prefix of every application key and of the Socket.IO channel")
    dramatiq_namespace: str = setting(
        "DRAMATIQ_NAMESPACE", "dramatiq",
        doc="Dramatiq's key namespace (`<ns>:<queue>`, `<ns>:<queue>.msgs`, …)")
    socket_timeout_s: float = setting("REDIS_SOCKET_TIMEOUT", 2.0,
                                      doc="seconds per Redis call (one retry on a dropped connection)")
    health_check_interval_s: int = setting("REDIS_HEALTH_CHECK_INTERVAL", 10,
                                           doc="seconds between health checks of pooled connections")

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))


@dataclass(frozen=True)
class WorkerSettings:
    """Dramatiq worker processes (`worker`, `dispatch`), their maintenance and the ledger relay."""

    processes: int = setting("WORKER_PROCESSES", 1, check=POSITIVE,
                             doc="Dramatiq processes per `worker`")
    threads: int = setting("WORKER_THREADS", 8, check=POSITIVE, doc="threads per worker process")
    poll_timeout_ms: int = setting(
        "WORKER_POLL_TIMEOUT_MS", 100, check=POSITIVE,
        doc="how long (ms) an idle consumer waits on Redis before polling again (Dramatiq's "
            "worker_timeout)")
    queue_prefetch: int = setting("WORKER_QUEUE_PREFETCH", 32, check=POSITIVE,
                                  doc="messages a worker process prefetches per queue")
    shutdown_timeout_ms: int = setting("WORKER_SHUTDOWN_TIMEOUT_MS", 30_000,
                                       doc="grace period (ms) for running jobs on SIGTERM")
    heartbeat_timeout_s: int = setting(
        "WORKER_HEARTBEAT_TIMEOUT", 15, check=POSITIVE,
        doc="seconds without a heartbeat before a worker's unacked messages are requeued "
            "([docs/crash-recovery.md](crash-recovery.md))")
    maintenance_chance: int = setting(
        "WORKER_MAINTENANCE_CHANCE", 1000, check=POSITIVE,
        doc="broker commands per million that also run Dramatiq's maintenance, which requeues the "
            "unacked messages of workers silent for `WORKER_HEARTBEAT_TIMEOUT`")
    maintenance_interval_s: float = setting(
        "WORKER_MAINTENANCE_INTERVAL", 5.0,
        doc="seconds between the maintenance passes every worker process runs (`workers/maintenance.py`): "
            "a SIGKILLed worker's messages run again within `WORKER_HEARTBEAT_TIMEOUT` + this; 0 = only "
            "Dramatiq's random ones")
    relay_batch_size: int = setting(
        "RELAY_BATCH_SIZE", 500, check=POSITIVE, renamed_from=("OUTBOX_BATCH_SIZE",),
        doc="due jobs the ledger relay (`workers/relay.py`) hands to Redis per batch")
    relay_poll_interval_s: float = setting(
        "RELAY_POLL_INTERVAL", 2.0, renamed_from=("OUTBOX_POLL_INTERVAL",),
        doc="the ledger relay's longest sleep (s) when no `NOTIFY` wakes it (it also wakes when the next "
            "job is due)")
    ledger_lease_s: float = setting(
        "LEDGER_LEASE", 30.0,
        doc="seconds a handed-over job may stay not done before the relay checks it: renewed while Redis "
            "still holds its message, handed again when the message is gone")
    ledger_lease_check_interval_s: float = setting(
        "LEDGER_LEASE_CHECK_INTERVAL", 5.0,
        doc="seconds between two checks of lapsed leases by one relay (each also prunes done jobs)")
    ledger_done_retention_s: float = setting(
        "LEDGER_DONE_RETENTION", 3600.0,
        doc="seconds a done job stays in the ledger before a relay deletes it (a message redelivered later "
            "finds no row and is skipped just the same); failed jobs stay")
    ledger_prune_batch: int = setting("LEDGER_PRUNE_BATCH", 5000, check=POSITIVE,
                                      doc="done jobs one relay deletes per lease check, at most")
    metrics_host: str = setting("WORKER_METRICS_HOST", "127.0.0.1",
                                doc="where the workers' Prometheus exporter listens (`0.0.0.0` in a pod)")
    metrics_port: int = setting(
        "WORKER_METRICS_PORT", 9191,
        doc="port of the workers' Prometheus exporter (a fork of `workers.run`, or the autoscaler); "
            "0 = no exporter in this process tree")
    metrics_dir: str = setting(
        "WORKER_METRICS_DIR", "",
        doc="prometheus_client multiprocess directory shared by a supervisor and its workers (the "
            "autoscaler sets it for its children; leave it empty): empty = a fresh one per `workers.run`")


@dataclass(frozen=True)
class AutoscaleSettings:
    """`workers/autoscale.py`: how many worker processes run, and when that changes."""

    min_workers: int = setting("AUTOSCALE_MIN_WORKERS", 1, check=POSITIVE, renamed_from=("AUTOSCALE_MIN",),
                               doc="worker processes the autoscaler keeps running, at least")
    max_workers: int = setting("AUTOSCALE_MAX_WORKERS", 4, check=POSITIVE, renamed_from=("AUTOSCALE_MAX",),
                               doc="… and at most")
    interval_s: float = setting(
        "AUTOSCALE_INTERVAL", 5.0,
        doc="seconds between two looks at the queues (at most one worker is added or removed per look)")
    target_age_s: float = setting(
        "AUTOSCALE_TARGET_AGE", 10.0, renamed_from=("AUTOSCALE_TARGET_AGE_S",),
        doc="add a worker when the oldest ready message has waited longer than this (s) …")
    target_depth: int = setting("AUTOSCALE_TARGET_DEPTH", 100, check=POSITIVE,
                                doc="… or when more messages than this are ready per running worker")
    cooldown_s: float = setting(
        "AUTOSCALE_COOLDOWN", 60.0, renamed_from=("AUTOSCALE_COOLDOWN_S",),
        doc="remove a worker after this long (s) with nothing ready and little in flight (again for each "
            "further one)")


@dataclass(frozen=True)
class ClockSettings:
    """The `clock` process: how often it sends each periodic job."""

    tokens_cleanup_interval_s: int = setting(
        "TOKENS_CLEANUP_INTERVAL", 3600, check=POSITIVE,
        doc="how often (s) the clock sends `tokens.cleanup` (also sent at clock start)")
    reconcile_interval_s: int = setting(
        "RECONCILE_INTERVAL", 30, check=POSITIVE,
        doc="how often (s) stalled dispatches and notifications are looked for and re-driven "
            "(`rides.reconcile`, `notifications.reconcile`)")
    driver_prune_interval_s: int = setting(
        "DRIVER_PRUNE_INTERVAL", 60, check=POSITIVE,
        doc="how often (s) drivers gone quiet while online are taken offline and out of the index "
            "(`drivers.prune_stale`)")
    retention_interval_s: int = setting(
        "RETENTION_INTERVAL", 3600, check=POSITIVE,
        doc="how often (s) `retention.prune` deletes what the retention settings no longer keep")


@dataclass(frozen=True)
class LogSettings:
    """Logs are structured events (`auth.logged_in`, `tokens.cleaned_up`, `job.failed_permanently`)
    with `request_id` bound per request (echoed as `X-Request-ID`) and `message_id`/`actor`/`queue`
    per job."""

    level: str = setting("LOG_LEVEL", "INFO", check=one_of("DEBUG", "INFO", "WARNING", "ERROR"),
                         doc="`DEBUG`, `INFO`, `WARNING` or `ERROR`")
    format: Literal["console", "json"] = setting("LOG_FORMAT", "console",
                                                 doc="structlog renderer: `console` or `json`")


def _is_tile_template(url: str) -> bool:
    return url == "" or (url.startswith(("https://", "http://")) and "/" in url.split("://", 1)[1]
                         and all(part in url for part in ("{z}", "{x}", "{y}")))


TILE_URL = Check(_is_tile_template,
                 "{name} must be empty or an http(s) URL with {{z}}, {{x}} and {{y}}, got {value!r}")


@dataclass(frozen=True)
class WebSettings:
    """The `web` process (uvicorn, the API and Socket.IO)."""

    host: str = setting("WEB_HOST", "127.0.0.1", doc="where `web` listens")
    port: int = setting("PORT", 8000, check=POSITIVE, doc="the port `web` listens on")
    cors_origins: tuple[str, ...] = setting(
        "CORS_ORIGINS", (),
        doc="comma-separated origins allowed for browsers (API and Socket.IO); empty: same origin only "
            "(a socket from any other Origin is refused)")
    hsts_max_age_s: int = setting(
        "HSTS_MAX_AGE", 31_536_000, check=NOT_NEGATIVE,
        doc="`Strict-Transport-Security: max-age=…` on answers served over TLS (directly or behind a "
            "proxy that sets `X-Forwarded-Proto: https`); 0 sends none")
    ride_write_batch: int = setting(
        "RIDE_WRITE_BATCH", 64, check=POSITIVE,
        doc="`POST /rides` arriving together share one statement (`app.services.ride_creation`): at most "
            "this many rides per statement (1 = each ride alone) …")
    ride_write_concurrency: int = setting(
        "RIDE_WRITE_CONCURRENCY", 4, check=POSITIVE,
        doc="… and at most this many such statements of one web process in flight at once (each holds a "
            "connection of the statement pool, `DB_STATEMENT_POOL_SIZE`)")
    console_tile_url: str = setting(
        "CONSOLE_TILE_URL", "", check=TILE_URL,
        doc="raster map tiles under the operations console's live map, an OSM-style template such as "
            "`https://tiles.example.com/{z}/{x}/{y}.png` (its host is added to the console's "
            "`img-src`); empty: no tiles, the map draws rides and drivers only (air-gapped)")
