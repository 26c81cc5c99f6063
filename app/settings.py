"""Typed settings, grouped per concern and built once per process.

Values come from the environment, then from an optional `.env` file in the working directory
(the environment wins), then from defaults that work on a development machine with PostgreSQL
and Redis on loopback. Nothing else in the code base reads `os.environ`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values

DEV_JWT_SECRET = "dev-only-secret-change-me-in-production-0123456789"

Environment = Literal["development", "test", "production"]


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/dispatchfarm"
    pool_size: int = 10
    max_overflow: int = 10
    #: Autocommit connections per web process for one-statement ingest (`app/statements.py`):
    #: opened on demand, closed after 10 idle minutes. Concurrent commits share WAL flushes, so
    #: webhook ingest scales with it (1,000 events/s needed ~32 here; 10 gave ~590).
    statement_pool_size: int = 32
    pool_timeout_s: float = 5.0
    connect_timeout_s: float = 3.0
    statement_timeout_ms: int = 15_000
    #: Longest wait (ms) for a row lock in the web's short transactions around provider calls
    #: (`SET LOCAL lock_timeout`): past it the request answers 503 instead of hanging.
    lock_timeout_ms: int = 2_000
    echo: bool = False
    #: Behind PgBouncer in transaction mode: no server-side prepared statements and no `options`
    #: startup parameter (set `statement_timeout` on the role instead; docs/operations.md).
    pgbouncer: bool = False
    #: A URL straight to PostgreSQL, for what a transaction-mode pooler can't carry: the relay's
    #: `LISTEN` and migrations. Empty: `url`.
    direct_url: str = ""

    @property
    def unpooled_url(self) -> str:
        return self.direct_url or self.url


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "farm"
    dramatiq_namespace: str = "dramatiq"
    socket_timeout_s: float = 2.0
    health_check_interval_s: int = 10

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))


@dataclass(frozen=True)
class AuthSettings:
    jwt_secret: str = DEV_JWT_SECRET
    #: Access tokens are HS256 (the verifier is specialised for it).
    jwt_algorithm: str = "HS256"
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 7 * 24 * 3600
    #: Spent, revoked or expired refresh tokens are kept this long (for reuse detection and audit).
    token_retention_s: int = 7 * 24 * 3600
    #: Requests allowed per client address and auth route in one window.
    rate_limit_requests: int = 20
    rate_limit_window_s: int = 60
    #: Proxies (CIDRs) whose `X-Forwarded-For` is believed: the client is the right-most address
    #: not in them. Empty: the socket peer is the client, whatever the header says.
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    #: Failed logins of one account allowed before each further one locks it, doubling from 1 s.
    login_failures_allowed: int = 5
    login_max_lock_s: int = 900
    #: A failure count is forgotten this long after the account's last failed login.
    login_forget_after_s: int = 3600
    #: The `kid` header of tokens signed with `jwt_secret` (default: derived from it).
    jwt_key_id: str = ""
    #: After a rotation: the secret before it, its key id, and when it was replaced (epoch s).
    #: Its tokens verify only if they expire within one access-token lifetime of `jwt_rotated_at`.
    jwt_previous_secret: str = ""
    jwt_previous_key_id: str = ""
    jwt_rotated_at: float = 0.0
    #: Cached user snapshots (status, token generation, profile) live this long in Redis.
    user_cache_ttl_s: int = 3600
    #: argon2id cost (the library's defaults; lower only for test suites).
    password_time_cost: int = 3
    password_memory_kib: int = 65536


@dataclass(frozen=True)
class WorkerSettings:
    processes: int = 1
    threads: int = 8
    #: How long an idle consumer waits on Redis before polling again (Dramatiq's worker_timeout).
    poll_timeout_ms: int = 100
    queue_prefetch: int = 32
    shutdown_timeout_ms: int = 30_000
    #: Seconds without a heartbeat before a worker's unacked messages are requeued.
    heartbeat_timeout_s: int = 15
    #: Broker commands (per million) that also run Dramatiq's maintenance, which requeues the
    #: unacked messages of workers whose heartbeat is older than `heartbeat_timeout_s`.
    maintenance_chance: int = 1000
    #: Seconds between the maintenance passes every worker process runs (`workers/maintenance.py`):
    #: a SIGKILLed worker's messages run again within heartbeat_timeout_s + this. 0 = off.
    maintenance_interval_s: float = 5.0
    #: Ledger relay (`workers/relay.py`): jobs handed to Redis per batch, and the longest sleep
    #: between two passes when no notification wakes it (it wakes when the next job is due).
    relay_batch_size: int = 500
    relay_poll_interval_s: float = 2.0
    #: A handed-over job not done within this lease (s) is checked: renewed while Redis still
    #: holds its message, handed again when the message is gone.
    ledger_lease_s: float = 30.0
    #: Seconds between two checks of lapsed leases by one relay (each also prunes done jobs).
    ledger_lease_check_interval_s: float = 5.0
    #: Done jobs are deleted this long (s) after they finished (a message redelivered later finds
    #: no row and is skipped just the same), at most `ledger_prune_batch` per check and relay.
    ledger_done_retention_s: float = 3600.0
    ledger_prune_batch: int = 5000
    #: Where the worker's Prometheus exporter listens (0 = no exporter in this process tree).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9191
    #: Prometheus multiprocess directory shared by a supervisor and its workers (the autoscaler
    #: sets it for its children); empty = a fresh directory per `workers.run`.
    metrics_dir: str = ""


@dataclass(frozen=True)
class AutoscaleSettings:
    """`workers/autoscale.py`: how many worker processes run, and when that changes."""

    min_workers: int = 1
    max_workers: int = 4
    #: Seconds between two looks at the queues (at most one worker is added or removed per look).
    interval_s: float = 5.0
    #: Add a worker when the oldest ready message has waited longer than this (s) ...
    target_age_s: float = 10.0
    #: ... or when there are more ready messages per running worker than this.
    target_depth: int = 100
    #: Remove a worker after this long (s) with nothing ready and little in flight.
    cooldown_s: float = 60.0


@dataclass(frozen=True)
class ClockSettings:
    tokens_cleanup_interval_s: int = 3600
    #: How often stalled dispatches are looked for (and re-driven).
    reconcile_interval_s: int = 30
    #: How often drivers gone quiet while online are taken offline and out of the index.
    driver_prune_interval_s: int = 60
    #: How often `retention.prune` deletes what the retention settings no longer keep.
    retention_interval_s: int = 3600


@dataclass(frozen=True)
class DispatchSettings:
    radii_km: tuple[float, ...] = (5.0, 10.0, 20.0)
    bid_window_s: int = 180
    max_offers_per_round: int = 20
    driver_stale_after_s: int = 120
    #: Seconds the customer has to accept a bid, counted from the bid check that found bids (when
    #: `bids:ready` was sent); then the system cancels the ride (`app.services.ride_expiry`).
    accept_window_s: int = 600
    #: An online driver without a position report this long (s) is taken offline and out of the
    #: index by `drivers.prune_stale` (well above `driver_stale_after_s`: a tunnel is not a goodbye).
    driver_prune_after_s: int = 15 * 60
    #: Rounds and bid checks are run in batches by each dispatch worker's dispatcher thread
    #: (`workers/dispatcher.py`), straight from the ledger; off: one Dramatiq message per job.
    batched: bool = True
    #: At most this many due rounds and bid checks per batch (one transaction, one GEO pipeline).
    batch_size: int = 200
    #: Dispatcher threads per worker process: while one waits on PostgreSQL or Redis, another runs.
    threads: int = 2


@dataclass(frozen=True)
class RetentionSettings:
    """How long `retention.prune` keeps rows nobody needs any more, in days (0 = keep forever).

    `failed_jobs` and `ledger_entries` are never pruned.
    """

    #: Offers of rides in a final state, by when they were made.
    offers_days: int = 30
    #: Notifications done with (sent, delivered, failed, undelivered, skipped), by when written.
    notifications_days: int = 30
    #: Stripe events handled, by when they were (Stripe redelivers for up to 3 days).
    stripe_events_days: int = 30
    #: The history of rides finished this long ago (the API shows it): kept unless asked.
    ride_history_days: int = 0
    #: At most this many rows per table per run, deleted (and committed) per batch.
    max_rows_per_run: int = 10_000
    batch_size: int = 1_000


@dataclass(frozen=True)
class StripeSettings:
    secret_key: str = ""
    webhook_secret: str = ""
    api_base: str = ""
    connect_base: str = ""
    #: Where Stripe sends a driver back after Connect onboarding (and when the link expired).
    connect_return_url: str = "http://127.0.0.1:8000/onboarding/done"
    connect_refresh_url: str = "http://127.0.0.1:8000/onboarding/retry"
    #: Country of the drivers' Connect Express accounts.
    connect_country: str = "US"
    #: Share of the fare captured when a card ride is cancelled once the driver is on the way
    #: (cancelled from DRIVER_ARRIVING or later); before that the hold is released in full.
    cancellation_fee_rate: Decimal = Decimal("0.20")
    #: Seconds from a card ride's accept for its hold to be authorized; then the system cancels the
    #: ride and releases whatever was held (`app.services.ride_expiry`).
    hold_timeout_s: int = 900
    #: Seconds a signed webhook's timestamp may be old (Stripe's default tolerance is 300).
    webhook_tolerance_s: int = 300
    request_timeout_s: float = 20.0
    max_network_retries: int = 2
    #: Transient failures in a row (per process) after which Stripe calls pause, and the first
    #: pause (s; doubled after each failed trial, up to 2 min). Jobs wait without spending retries.
    circuit_failures: int = 5
    circuit_pause_s: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.secret_key)


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str = ""
    auth_token: str = ""
    sms_from: str = ""
    whatsapp_from: str = ""
    api_base: str = ""
    #: The public URL Twilio calls for status callbacks (signatures are computed over it).
    status_callback_url: str = ""
    #: Seconds to connect to / wait for Twilio per request (a timeout is retried as transient).
    timeout_s: float = 10.0
    #: Transient failures in a row (per process) after which sends pause, and the first pause (s).
    circuit_failures: int = 5
    circuit_pause_s: float = 10.0
    #: Messages go only to verified numbers; others are recorded `skipped` (set by
    #: PHONE_VERIFICATION_REQUIRED, like `PhoneSettings.verification_required`).
    verified_numbers_only: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.account_sid and self.auth_token)


@dataclass(frozen=True)
class NotificationSettings:
    #: Sends tried per notification before a transient failure (5xx, 429, timeout) fails it.
    max_attempts: int = 8
    #: Seconds a sender's claim (`sending`) holds; a crashed sender's row is re-claimed after it.
    lease_s: int = 60
    #: A `queued` row untouched this long (s) has lost its job (Redis restarted empty): re-enqueued.
    stuck_after_s: int = 600
    #: Sends run in batches by each notifications worker's sender thread (`workers/notifier.py`),
    #: straight from the ledger; off: one Dramatiq message per notification.
    batched: bool = True
    #: At most this many notifications per batch (one claim, one record statement) ...
    batch_size: int = 100
    #: ... sent this many at a time (threads of the sender; the Twilio SDK is blocking).
    send_concurrency: int = 16


@dataclass(frozen=True)
class Bucket:
    """A per-user token bucket: `rate_per_s` sustained, `burst` at once; rate 0 = no limit."""

    rate_per_s: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0


@dataclass(frozen=True)
class LimitSettings:
    """Per-user limits on authenticated writes (Redis-backed, shared by every web process) and
    the cap on a customer's open rides (`app.api.limits`, `app.services.rides`)."""

    #: `POST /rides`.
    rides: Bucket = Bucket(2.0, 20)
    #: Bids, accepts, cancels, status moves, online/offline.
    writes: Bucket = Bucket(5.0, 30)
    #: `PUT /drivers/me/location`.
    location: Bucket = Bucket(5.0, 10)
    #: Provider calls on the user's behalf: payouts onboarding, a ride's payment intent.
    payment_setup: Bucket = Bucket(0.5, 5)
    #: Rides not in a final state a customer may have at once (0 = no cap).
    open_rides_per_customer: int = 5


#: Outside production the same limits are looser, so demos, scripted clients and test suites that
#: book many rides with one account keep working (each still overridable by its variable).
DEVELOPMENT_LIMITS = LimitSettings(rides=Bucket(50.0, 500), writes=Bucket(50.0, 300),
                                   location=Bucket(20.0, 100), payment_setup=Bucket(5.0, 50),
                                   open_rides_per_customer=100)


@dataclass(frozen=True)
class PhoneSettings:
    """Phone verification by a one-time SMS code (`app.services.phone_verification`)."""

    #: A customer's first ride needs a verified phone, and SMS/WhatsApp go only to verified numbers
    #: (default: on with APP_ENV=production only).
    verification_required: bool = False
    code_ttl_s: int = 600
    #: Wrong codes allowed per code before it is spent.
    max_attempts: int = 5
    #: Codes sent per user per hour.
    sends_per_hour: int = 5


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    format: Literal["console", "json"] = "console"


@dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    cors_origins: tuple[str, ...] = ()
    #: `Strict-Transport-Security: max-age=…` on answers served over TLS (directly or behind a
    #: proxy that sets `X-Forwarded-Proto: https`); 0 sends none.
    hsts_max_age_s: int = 31_536_000
    #: `POST /rides` arriving together share one statement (`app.services.ride_creation`): at most
    #: this many rides per statement (1 = each ride alone) ...
    ride_write_batch: int = 64
    #: ... and at most this many such statements of one web process in flight at once (each holds a
    #: connection of the statement pool, `DB_STATEMENT_POOL_SIZE`).
    ride_write_concurrency: int = 4


@dataclass(frozen=True)
class Settings:
    env: Environment = "development"
    db: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    autoscale: AutoscaleSettings = field(default_factory=AutoscaleSettings)
    clock: ClockSettings = field(default_factory=ClockSettings)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    stripe: StripeSettings = field(default_factory=StripeSettings)
    twilio: TwilioSettings = field(default_factory=TwilioSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    phone: PhoneSettings = field(default_factory=PhoneSettings)
    log: LogSettings = field(default_factory=LogSettings)
    web: WebSettings = field(default_factory=WebSettings)


class _Source:
    """Reads typed values from one merged mapping and remembers which names it was asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def _raw(self, name: str) -> str | None:
        value = self._values.get(name)
        return None if value is None or value == "" else value

    def text(self, name: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else value

    def integer(self, name: str, default: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError as exc:
            raise SettingsError(f"{name} must be an integer, got {value!r}") from exc

    def positive(self, name: str, default: int) -> int:
        value = self.integer(name, default)
        if value <= 0:
            raise SettingsError(f"{name} must be a positive integer, got {value}")
        return value

    def number(self, name: str, default: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError as exc:
            raise SettingsError(f"{name} must be a number, got {value!r}") from exc

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f"{name} must be true or false, got {value!r}")

    def floats(self, name: str, default: tuple[float, ...]) -> tuple[float, ...]:
        value = self._raw(name)
        if value is None:
            return default
        try:
            parsed = tuple(float(part) for part in value.split(",") if part.strip())
        except ValueError as exc:
            raise SettingsError(f"{name} must be comma-separated numbers, got {value!r}") from exc
        if not parsed:
            raise SettingsError(f"{name} must list at least one number")
        return parsed

    def strs(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._raw(name)
        if value is None:
            return default
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Build settings from `environ` (default: the process environment) over an optional `.env`."""
    merged: dict[str, str] = {}
    dotenv_path = env_file if env_file is not None else Path.cwd() / ".env"
    if dotenv_path.is_file():
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    src = _Source(merged)

    env = src.choice("APP_ENV", "development", ("development", "test", "production"))
    phone_required = src.flag("PHONE_VERIFICATION_REQUIRED", env == "production")
    jwt_secret = _jwt_secret(src, "JWT_SECRET", env)

    radii = src.floats("DISPATCH_RADII_KM", DispatchSettings.radii_km)
    if any(not 0 < r < math.inf for r in radii) or any(b <= a for a, b in itertools.pairwise(radii)):
        raise SettingsError(
            "DISPATCH_RADII_KM must be finite, positive and strictly increasing, e.g. 5,10,20"
        )

    return Settings(
        env=env,  # type: ignore[arg-type]
        db=DatabaseSettings(
            url=src.text("DATABASE_URL", DatabaseSettings.url),
            pool_size=src.positive("DB_POOL_SIZE", DatabaseSettings.pool_size),
            statement_pool_size=src.positive("DB_STATEMENT_POOL_SIZE", DatabaseSettings.statement_pool_size),
            max_overflow=src.integer("DB_MAX_OVERFLOW", DatabaseSettings.max_overflow),
            pool_timeout_s=src.number("DB_POOL_TIMEOUT", DatabaseSettings.pool_timeout_s),
            connect_timeout_s=src.number("DB_CONNECT_TIMEOUT", DatabaseSettings.connect_timeout_s),
            statement_timeout_ms=src.positive(
                "DB_STATEMENT_TIMEOUT_MS", DatabaseSettings.statement_timeout_ms
            ),
            lock_timeout_ms=src.positive("DB_LOCK_TIMEOUT_MS", DatabaseSettings.lock_timeout_ms),
            echo=src.flag("DB_ECHO", False),
            pgbouncer=src.flag("DB_PGBOUNCER", False),
            direct_url=src.text("DATABASE_DIRECT_URL", ""),
        ),
        redis=RedisSettings(
            url=src.text("REDIS_URL", RedisSettings.url),
            prefix=src.text("REDIS_PREFIX", RedisSettings.prefix),
            dramatiq_namespace=src.text("DRAMATIQ_NAMESPACE", RedisSettings.dramatiq_namespace),
            socket_timeout_s=src.number("REDIS_SOCKET_TIMEOUT", RedisSettings.socket_timeout_s),
            health_check_interval_s=src.integer(
                "REDIS_HEALTH_CHECK_INTERVAL", RedisSettings.health_check_interval_s
            ),
        ),
        auth=AuthSettings(
            jwt_secret=jwt_secret,
            access_token_ttl_s=src.positive("ACCESS_TOKEN_TTL", AuthSettings.access_token_ttl_s),
            refresh_token_ttl_s=src.positive("REFRESH_TOKEN_TTL", AuthSettings.refresh_token_ttl_s),
            token_retention_s=src.positive("TOKEN_RETENTION", AuthSettings.token_retention_s),
            rate_limit_requests=src.positive("AUTH_RATE_LIMIT", AuthSettings.rate_limit_requests),
            rate_limit_window_s=src.positive("AUTH_RATE_WINDOW", AuthSettings.rate_limit_window_s),
            trusted_proxies=_trusted_proxies(src),
            login_failures_allowed=src.positive("LOGIN_FAILURES_ALLOWED",
                                                AuthSettings.login_failures_allowed),
            login_max_lock_s=src.positive("LOGIN_MAX_LOCK", AuthSettings.login_max_lock_s),
            login_forget_after_s=src.positive("LOGIN_FORGET_AFTER", AuthSettings.login_forget_after_s),
            **_key_rotation(src, env, jwt_secret),
            user_cache_ttl_s=src.positive("USER_CACHE_TTL", AuthSettings.user_cache_ttl_s),
            password_time_cost=src.positive("PASSWORD_HASH_TIME_COST", AuthSettings.password_time_cost),
            password_memory_kib=src.positive("PASSWORD_HASH_MEMORY_KIB", AuthSettings.password_memory_kib),
        ),
        worker=WorkerSettings(
            processes=src.positive("WORKER_PROCESSES", WorkerSettings.processes),
            threads=src.positive("WORKER_THREADS", WorkerSettings.threads),
            poll_timeout_ms=src.positive("WORKER_POLL_TIMEOUT_MS", WorkerSettings.poll_timeout_ms),
            queue_prefetch=src.positive("WORKER_QUEUE_PREFETCH", WorkerSettings.queue_prefetch),
            shutdown_timeout_ms=src.integer("WORKER_SHUTDOWN_TIMEOUT_MS", WorkerSettings.shutdown_timeout_ms),
            heartbeat_timeout_s=src.positive("WORKER_HEARTBEAT_TIMEOUT", WorkerSettings.heartbeat_timeout_s),
            maintenance_chance=src.positive("WORKER_MAINTENANCE_CHANCE", WorkerSettings.maintenance_chance),
            maintenance_interval_s=src.number("WORKER_MAINTENANCE_INTERVAL",
                                              WorkerSettings.maintenance_interval_s),
            relay_batch_size=src.positive("OUTBOX_BATCH_SIZE", WorkerSettings.relay_batch_size),
            relay_poll_interval_s=src.number("OUTBOX_POLL_INTERVAL", WorkerSettings.relay_poll_interval_s),
            ledger_lease_s=src.number("LEDGER_LEASE", WorkerSettings.ledger_lease_s),
            ledger_lease_check_interval_s=src.number("LEDGER_LEASE_CHECK_INTERVAL",
                                                     WorkerSettings.ledger_lease_check_interval_s),
            ledger_done_retention_s=src.number("LEDGER_DONE_RETENTION",
                                               WorkerSettings.ledger_done_retention_s),
            ledger_prune_batch=src.positive("LEDGER_PRUNE_BATCH", WorkerSettings.ledger_prune_batch),
            metrics_host=src.text("WORKER_METRICS_HOST", WorkerSettings.metrics_host),
            metrics_port=src.integer("WORKER_METRICS_PORT", WorkerSettings.metrics_port),
            metrics_dir=src.text("WORKER_METRICS_DIR", ""),
        ),
        autoscale=_autoscale_settings(src),
        clock=ClockSettings(
            tokens_cleanup_interval_s=src.positive(
                "TOKENS_CLEANUP_INTERVAL", ClockSettings.tokens_cleanup_interval_s
            ),
            reconcile_interval_s=src.positive("RECONCILE_INTERVAL", ClockSettings.reconcile_interval_s),
            driver_prune_interval_s=src.positive(
                "DRIVER_PRUNE_INTERVAL", ClockSettings.driver_prune_interval_s
            ),
            retention_interval_s=src.positive("RETENTION_INTERVAL", ClockSettings.retention_interval_s),
        ),
        dispatch=_dispatch_settings(src, radii),
        retention=_retention_settings(src),
        stripe=StripeSettings(
            secret_key=src.text("STRIPE_SECRET_KEY", ""),
            webhook_secret=src.text("STRIPE_WEBHOOK_SECRET", ""),
            api_base=src.text("STRIPE_API_BASE", ""),
            connect_base=src.text("STRIPE_CONNECT_BASE", ""),
            connect_return_url=src.text("STRIPE_CONNECT_RETURN_URL", StripeSettings.connect_return_url),
            connect_refresh_url=src.text("STRIPE_CONNECT_REFRESH_URL", StripeSettings.connect_refresh_url),
            connect_country=src.text("STRIPE_CONNECT_COUNTRY", StripeSettings.connect_country),
            cancellation_fee_rate=_fee_rate(src),
            hold_timeout_s=src.positive("PAYMENT_HOLD_TIMEOUT", StripeSettings.hold_timeout_s),
            webhook_tolerance_s=src.positive("STRIPE_WEBHOOK_TOLERANCE", StripeSettings.webhook_tolerance_s),
            request_timeout_s=src.number("STRIPE_TIMEOUT", StripeSettings.request_timeout_s),
            max_network_retries=src.integer("STRIPE_MAX_NETWORK_RETRIES", StripeSettings.max_network_retries),
            circuit_failures=src.positive("STRIPE_CIRCUIT_FAILURES", StripeSettings.circuit_failures),
            circuit_pause_s=src.number("STRIPE_CIRCUIT_PAUSE", StripeSettings.circuit_pause_s),
        ),
        twilio=TwilioSettings(
            account_sid=src.text("TWILIO_ACCOUNT_SID", ""),
            auth_token=src.text("TWILIO_AUTH_TOKEN", ""),
            sms_from=src.text("TWILIO_SMS_FROM", ""),
            whatsapp_from=src.text("TWILIO_WHATSAPP_FROM", ""),
            api_base=src.text("TWILIO_API_BASE", ""),
            status_callback_url=src.text("TWILIO_STATUS_CALLBACK_URL", ""),
            timeout_s=src.number("TWILIO_TIMEOUT", TwilioSettings.timeout_s),
            circuit_failures=src.positive("TWILIO_CIRCUIT_FAILURES", TwilioSettings.circuit_failures),
            circuit_pause_s=src.number("TWILIO_CIRCUIT_PAUSE", TwilioSettings.circuit_pause_s),
            verified_numbers_only=phone_required,
        ),
        notifications=NotificationSettings(
            max_attempts=src.positive("NOTIFY_MAX_ATTEMPTS", NotificationSettings.max_attempts),
            lease_s=src.positive("NOTIFY_LEASE", NotificationSettings.lease_s),
            stuck_after_s=src.positive("NOTIFY_STUCK_AFTER", NotificationSettings.stuck_after_s),
            batched=src.flag("NOTIFY_BATCHED", NotificationSettings.batched),
            batch_size=src.positive("NOTIFY_BATCH_SIZE", NotificationSettings.batch_size),
            send_concurrency=src.positive("NOTIFY_SEND_CONCURRENCY", NotificationSettings.send_concurrency),
        ),
        limits=_limit_settings(src, env),
        phone=_phone_settings(src, phone_required),
        log=LogSettings(
            level=src.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            format=src.choice(  # type: ignore[arg-type]
                "LOG_FORMAT", "json" if env == "production" else "console", ("console", "json")
            ),
        ),
        web=WebSettings(
            host=src.text("WEB_HOST", WebSettings.host),
            port=src.positive("PORT", WebSettings.port),
            cors_origins=src.strs("CORS_ORIGINS", ()),
            hsts_max_age_s=_non_negative(src, "HSTS_MAX_AGE", WebSettings.hsts_max_age_s),
            ride_write_batch=src.positive("RIDE_WRITE_BATCH", WebSettings.ride_write_batch),
            ride_write_concurrency=src.positive("RIDE_WRITE_CONCURRENCY", WebSettings.ride_write_concurrency),
        ),
    )


#: Parts of the values that examples, manifests and tutorials put where a secret belongs.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "placeholder", "example", "replace-me",
                       "replace_me", "your-secret", "your_secret", "dev-only", "insecure", "xxxxxxxx")


def _jwt_secret(src: _Source, name: str, env: str) -> str:
    """The signing secret: anything of 32+ characters in development and test (the built-in dev
    secret by default); elsewhere it must be given, and not a placeholder or a low-entropy one."""
    given = src.text(name, "")
    if env in ("development", "test"):
        secret = given or DEV_JWT_SECRET
        if len(secret) < 32:
            raise SettingsError(f"{name} must be at least 32 characters")
        return secret
    how = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
    if not given:
        raise SettingsError(f"{name} must be set when APP_ENV={env}; {how}")
    lowered = given.lower()
    if given == DEV_JWT_SECRET or any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        raise SettingsError(f"{name} is a placeholder, not a secret; {how}")
    if len(given) < 32 or len(set(given)) < 12:
        raise SettingsError(f"{name} is too guessable (at least 32 characters, at least 12 distinct); {how}")
    return given


def key_id_of(secret: str) -> str:
    """A token header's `kid` for `secret`: a short digest, which tells keys apart and reveals none."""
    return hashlib.sha256(b"dispatch-farm-kid:" + secret.encode()).hexdigest()[:16]


def _key_rotation(src: _Source, env: str, secret: str) -> dict[str, Any]:
    previous = src.text("JWT_PREVIOUS_SECRET", "")
    fields: dict[str, Any] = {"jwt_key_id": src.text("JWT_KEY_ID", "") or key_id_of(secret)}
    if not previous:
        return fields
    previous = _jwt_secret(src, "JWT_PREVIOUS_SECRET", env)
    rotated = src.text("JWT_ROTATED_AT", "")
    try:
        rotated_at = datetime.fromisoformat(rotated.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SettingsError("JWT_PREVIOUS_SECRET needs JWT_ROTATED_AT, the RFC 3339 time the secret "
                            f"was replaced (e.g. 2026-12-03T08:00:00Z), got {rotated!r}") from exc
    if rotated_at.tzinfo is None:
        rotated_at = rotated_at.replace(tzinfo=UTC)
    if previous == secret:
        raise SettingsError("JWT_PREVIOUS_SECRET is the same as JWT_SECRET")
    if rotated_at.timestamp() > datetime.now(UTC).timestamp() + 300:
        raise SettingsError("JWT_ROTATED_AT is in the future: it would keep the previous key alive longer")
    return {**fields, "jwt_previous_secret": previous,
            "jwt_previous_key_id": src.text("JWT_PREVIOUS_KEY_ID", "") or key_id_of(previous),
            "jwt_rotated_at": rotated_at.timestamp()}


def _trusted_proxies(src: _Source) -> tuple[IPv4Network | IPv6Network, ...]:
    if src.flag("TRUST_FORWARDED_FOR", False):
        raise SettingsError("TRUST_FORWARDED_FOR trusted any client's X-Forwarded-For and is gone: list "
                            "your proxies' addresses in TRUSTED_PROXIES (CIDRs, e.g. 10.0.0.0/8)")
    networks = []
    for part in src.strs("TRUSTED_PROXIES", ()):
        try:
            networks.append(ip_network(part, strict=False))
        except ValueError as exc:
            raise SettingsError(f"TRUSTED_PROXIES must list CIDRs such as 10.0.0.0/8, got {part!r}") from exc
    return tuple(networks)


def _non_negative(src: _Source, name: str, default: int) -> int:
    value = src.integer(name, default)
    if value < 0:
        raise SettingsError(f"{name} must be 0 or more, got {value}")
    return value


def _fee_rate(src: _Source) -> Decimal:
    """The share of the fare a late cancellation costs: a fraction in [0, 1]."""
    name = "PAYMENT_CANCELLATION_FEE_RATE"
    rate = Decimal(str(src.number(name, float(StripeSettings.cancellation_fee_rate))))
    if not rate.is_finite() or not Decimal(0) <= rate <= Decimal(1):
        raise SettingsError(f"{name} must be a fraction between 0 and 1 (0.2 is 20 %), got {rate}")
    return rate


def _dispatch_settings(src: _Source, radii: tuple[float, ...]) -> DispatchSettings:
    dispatch = DispatchSettings(
        radii_km=radii,
        bid_window_s=src.positive("DISPATCH_BID_WINDOW", DispatchSettings.bid_window_s),
        max_offers_per_round=src.positive("DISPATCH_MAX_OFFERS", DispatchSettings.max_offers_per_round),
        driver_stale_after_s=src.positive("DRIVER_STALE_AFTER", DispatchSettings.driver_stale_after_s),
        driver_prune_after_s=src.positive("DRIVER_PRUNE_AFTER", DispatchSettings.driver_prune_after_s),
        accept_window_s=src.positive("DISPATCH_ACCEPT_WINDOW", DispatchSettings.accept_window_s),
        batched=src.flag("DISPATCH_BATCHED", DispatchSettings.batched),
        batch_size=src.positive("DISPATCH_BATCH_SIZE", DispatchSettings.batch_size),
        threads=src.positive("DISPATCH_THREADS", DispatchSettings.threads),
    )
    if dispatch.driver_prune_after_s <= dispatch.driver_stale_after_s:
        raise SettingsError(f"DRIVER_PRUNE_AFTER ({dispatch.driver_prune_after_s}) must be longer than "
                            f"DRIVER_STALE_AFTER ({dispatch.driver_stale_after_s})")
    return dispatch


def _limit_settings(src: _Source, env: str) -> LimitSettings:
    defaults = LimitSettings() if env == "production" else DEVELOPMENT_LIMITS

    def bucket(name: str, default: Bucket) -> Bucket:
        rate = src.number(f"{name}_RATE_LIMIT", default.rate_per_s)
        if not 0 <= rate < math.inf:
            raise SettingsError(f"{name}_RATE_LIMIT must be 0 (no limit) or requests per second, got {rate}")
        return Bucket(rate_per_s=rate, burst=src.positive(f"{name}_RATE_BURST", default.burst))

    cap = src.integer("OPEN_RIDES_PER_CUSTOMER", defaults.open_rides_per_customer)
    if cap < 0:
        raise SettingsError(f"OPEN_RIDES_PER_CUSTOMER must be 0 (no cap) or a number of rides, got {cap}")
    return LimitSettings(rides=bucket("RIDE", defaults.rides), writes=bucket("WRITE", defaults.writes),
                         location=bucket("LOCATION", defaults.location),
                         payment_setup=bucket("PAYMENT_SETUP", defaults.payment_setup),
                         open_rides_per_customer=cap)


def _phone_settings(src: _Source, required: bool) -> PhoneSettings:
    defaults = PhoneSettings()
    return PhoneSettings(
        verification_required=required,
        code_ttl_s=src.positive("PHONE_CODE_TTL", defaults.code_ttl_s),
        max_attempts=src.positive("PHONE_CODE_MAX_ATTEMPTS", defaults.max_attempts),
        sends_per_hour=src.positive("PHONE_CODE_SENDS_PER_HOUR", defaults.sends_per_hour),
    )


#: Stripe redelivers an event for up to three days: its id is kept at least that long.
MIN_STRIPE_EVENT_DAYS = 3


def _retention_settings(src: _Source) -> RetentionSettings:
    defaults = RetentionSettings()

    def days(name: str, default: int) -> int:
        value = src.integer(name, default)
        if value < 0:
            raise SettingsError(f"{name} must be 0 (keep forever) or a number of days, got {value}")
        return value

    retention = RetentionSettings(
        offers_days=days("RETENTION_OFFERS_DAYS", defaults.offers_days),
        notifications_days=days("RETENTION_NOTIFICATIONS_DAYS", defaults.notifications_days),
        stripe_events_days=days("RETENTION_STRIPE_EVENTS_DAYS", defaults.stripe_events_days),
        ride_history_days=days("RETENTION_RIDE_HISTORY_DAYS", defaults.ride_history_days),
        max_rows_per_run=src.positive("RETENTION_MAX_ROWS_PER_RUN", defaults.max_rows_per_run),
        batch_size=src.positive("RETENTION_BATCH_SIZE", defaults.batch_size),
    )
    if 0 < retention.stripe_events_days < MIN_STRIPE_EVENT_DAYS:
        raise SettingsError(f"RETENTION_STRIPE_EVENTS_DAYS must be 0 or at least {MIN_STRIPE_EVENT_DAYS} "
                            "(Stripe redelivers an event for up to three days)")
    return retention


def _autoscale_settings(src: _Source) -> AutoscaleSettings:
    defaults = AutoscaleSettings()
    scale = AutoscaleSettings(
        min_workers=src.positive("AUTOSCALE_MIN", defaults.min_workers),
        max_workers=src.positive("AUTOSCALE_MAX", defaults.max_workers),
        interval_s=src.number("AUTOSCALE_INTERVAL", defaults.interval_s),
        target_age_s=src.number("AUTOSCALE_TARGET_AGE_S", defaults.target_age_s),
        target_depth=src.positive("AUTOSCALE_TARGET_DEPTH", defaults.target_depth),
        cooldown_s=src.number("AUTOSCALE_COOLDOWN_S", defaults.cooldown_s),
    )
    if scale.max_workers < scale.min_workers:
        raise SettingsError(f"AUTOSCALE_MAX ({scale.max_workers}) must be at least AUTOSCALE_MIN "
                            f"({scale.min_workers})")
    if min(scale.interval_s, scale.target_age_s, scale.cooldown_s) <= 0:
        raise SettingsError("AUTOSCALE_INTERVAL, AUTOSCALE_TARGET_AGE_S and AUTOSCALE_COOLDOWN_S "
                            "must be positive")
    return scale


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use."""
    return load_settings()
