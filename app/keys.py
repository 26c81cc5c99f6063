"""Every Redis key, channel, room and queue name of the farm, in one place."""

from __future__ import annotations

import hashlib
from typing import Final, NamedTuple

from app.settings import RedisSettings, Settings

# Dramatiq queues: separate so a notification backlog never delays dispatch.
QUEUE_DISPATCH: Final = "dispatch"
QUEUE_PAYMENTS: Final = "payments"
QUEUE_NOTIFICATIONS: Final = "notifications"
QUEUE_MAINTENANCE: Final = "maintenance"
QUEUES: Final = (QUEUE_DISPATCH, QUEUE_PAYMENTS, QUEUE_NOTIFICATIONS, QUEUE_MAINTENANCE)


class JobKind(NamedTuple):
    """What a job row names: the actor that runs it and the queue that actor listens on."""

    actor: str
    queue: str

    @property
    def sql(self) -> str:
        """`'<queue>', '<actor>'`: the two literals in `app.outbox.INSERT_JOB`'s column order, for
        hot-path statements that write job rows with `INSERT_JOB SELECT ...`."""
        assert "'" not in self.actor + self.queue
        return f"'{self.queue}', '{self.actor}'"


# Every job the farm writes, beside the queue it runs on (`jobs/` declares an actor for each).
DISPATCH_STEP: Final = JobKind("dispatch.step", QUEUE_DISPATCH)
DISPATCH_CHECK_BIDS: Final = JobKind("dispatch.check_bids", QUEUE_DISPATCH)
RIDES_EXPIRE_BIDS: Final = JobKind("rides.expire_bids", QUEUE_DISPATCH)
RIDES_EXPIRE_HOLD: Final = JobKind("rides.expire_hold", QUEUE_DISPATCH)
PAYMENTS_AUTHORIZE: Final = JobKind("payments.authorize", QUEUE_PAYMENTS)
PAYMENTS_CAPTURE: Final = JobKind("payments.capture", QUEUE_PAYMENTS)
PAYMENTS_CANCEL: Final = JobKind("payments.cancel", QUEUE_PAYMENTS)
PAYMENTS_REFUND: Final = JobKind("payments.refund", QUEUE_PAYMENTS)
PAYMENTS_HANDLE_EVENT: Final = JobKind("payments.handle_event", QUEUE_PAYMENTS)
NOTIFICATIONS_SEND: Final = JobKind("notifications.send", QUEUE_NOTIFICATIONS)
NOTIFICATIONS_RECONCILE: Final = JobKind("notifications.reconcile", QUEUE_MAINTENANCE)
RIDES_RECONCILE: Final = JobKind("rides.reconcile", QUEUE_MAINTENANCE)
SESSIONS_END_SOCKETS: Final = JobKind("sessions.end_sockets", QUEUE_MAINTENANCE)
TOKENS_CLEANUP: Final = JobKind("tokens.cleanup", QUEUE_MAINTENANCE)
DRIVERS_PRUNE_STALE: Final = JobKind("drivers.prune_stale", QUEUE_MAINTENANCE)
RETENTION_PRUNE: Final = JobKind("retention.prune", QUEUE_MAINTENANCE)
#: Time-slot bookings: make the payment follow the booking; release a lapsed hold; remind.
BOOKINGS_SETTLE: Final = JobKind("bookings.settle", QUEUE_PAYMENTS)
BOOKINGS_EXPIRE_HOLD: Final = JobKind("bookings.expire_hold", QUEUE_DISPATCH)
BOOKINGS_REMIND: Final = JobKind("bookings.remind", QUEUE_NOTIFICATIONS)

# Inside the Dramatiq namespace (`<ns>:` + this): a hash of the worker processes alive, by broker
# id. Dramatiq's own `__heartbeats__` also lists every process that only enqueues (web, clock).
WORKER_REGISTRY: Final = "__farm_workers__"
# ... and a hash of the jobs each of those workers is running now (messages and batch rows), by
# broker id (`workers/in_progress.py`).
WORKER_IN_PROGRESS: Final = "__farm_in_progress__"

# PostgreSQL NOTIFY channel that wakes the outbox relay.
OUTBOX_CHANNEL: Final = "farm_outbox"
# ... and the one that wakes the dispatchers: a job of one of `DISPATCH_ACTORS` became waiting.
DISPATCH_CHANNEL: Final = "farm_dispatch"
# ... and the one that wakes the notification senders: a `notifications.send` became waiting.
NOTIFICATIONS_CHANNEL: Final = "farm_notifications"
# ... and the one that tells every worker process an operator paused or resumed a queue
# (`app.services.queue_pauses`); the payload is the queue's name.
OPS_CHANNEL: Final = "farm_ops"
# The jobs that the dispatchers (`workers/dispatcher.py`) and the notification senders
# (`workers/notifier.py`) run in batches straight from the ledger; the relay hands over the rest.
# The same lists are in migration 0008 (trigger and partial indexes) and `models.jobs`.
DISPATCH_ACTORS: Final = (DISPATCH_STEP.actor, DISPATCH_CHECK_BIDS.actor)
NOTIFICATION_ACTORS: Final = (NOTIFICATIONS_SEND.actor,)


def batched_actors(settings: Settings) -> tuple[str, ...]:
    """The actors whose rows batch threads run (the relay hands every other row to Redis)."""
    return ((DISPATCH_ACTORS if settings.dispatch.batched else ())
            + (NOTIFICATION_ACTORS if settings.notifications.batched else ()))


def actors_sql(actors: tuple[str, ...], *, negate: bool = False) -> str:
    """`actor [NOT] IN (...)`, written as migration 0008's partial indexes are (so they are used)."""
    listed = ", ".join(f"'{actor}'" for actor in actors)
    return f"actor {'NOT IN' if negate else 'IN'} ({listed})"


def user_room(user_id: object) -> str:
    return f"user:{user_id}"


def driver_room(driver_id: object) -> str:
    return f"driver:{driver_id}"


def ride_room(ride_id: object) -> str:
    return f"ride:{ride_id}"


def map_room(region: str) -> str:
    """The admins watching a region's live map (`map:ride`, `map:driver`)."""
    return f"{MAP_ROOM_PREFIX}{region}"


#: Rooms whose events are published only while some socket is in them (`WatchedRooms`).
MAP_ROOM_PREFIX: Final = "map:"
#: The admins watching the farm's queues and workers (`ops:snapshot`).
OPS_ROOM: Final = "ops"


def calendar_room(provider_id: object) -> str:
    """The viewers of a provider's calendar (`slots:changed`)."""
    return f"calendar:{provider_id}"


class RedisKeys:
    """Key builders bound to one prefix (each test run uses its own)."""

    def __init__(self, settings: RedisSettings) -> None:
        self.prefix = settings.prefix

    def _k(self, *parts: object) -> str:
        return ":".join((self.prefix, *(str(p) for p in parts)))

    # auth
    def revoked_session(self, session_id: object) -> str:
        return self._k("auth", "revoked-session", session_id)

    def revoked_sessions_index(self) -> str:
        """Sorted set of revoked session ids scored by when their revocation lapses (epoch s)."""
        return self._k("auth", "revoked-sessions")

    def auth_changes_channel(self) -> str:
        """Pub/sub channel announcing revocations and user changes to every web process."""
        return self._k("auth", "changes")

    def revocations_loaded(self) -> str:
        """Present while the revocation cache mirrors PostgreSQL (absent after a Redis restart)."""
        return self._k("auth", "revocations-loaded")

    def revocations_rebuild_lock(self) -> str:
        return self._k("auth", "revocations-rebuild")

    def user_snapshot(self, user_id: object) -> str:
        return self._k("auth", "user", user_id)

    def login_failures(self, email: str) -> str:
        """Failed logins of one account, by a digest of its normalised email (no address in keys)."""
        digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
        return self._k("login-failures", digest)

    def rate_limit(self, scope: str, subject: str) -> str:
        return self._k("rl", scope, subject)

    # realtime
    def socketio_channel(self) -> str:
        return self._k("socketio")

    def socket_servers(self) -> str:
        """Sorted set: socket server id → its last heartbeat (epoch seconds)."""
        return self._k("sockets", "servers")

    def socket_end_channel(self) -> str:
        """Pub/sub: requests to end sockets (a user's, or one session's), for every socket server."""
        return self._k("sockets", "end")

    def socket_end_acks(self, request_id: str) -> str:
        """Set: the socket servers that carried out end request `request_id`."""
        return self._k("sockets", "end-acks", request_id)

    # dispatch
    def driver_geo(self, vehicle_type: str) -> str:
        return self._k("geo", "drivers", vehicle_type)

    def driver_seen(self, vehicle_type: str) -> str:
        """Sorted set: driver id → when its indexed position was reported (epoch seconds)."""
        return self._k("geo", "seen", vehicle_type)

    def driver_index_versions(self, vehicle_type: str) -> str:
        """Sorted set: driver id → version (epoch µs) of the last index change applied to it."""
        return self._k("geo", "versions", vehicle_type)

    # operations console
    def queue_minute(self, queue: str, minute: int) -> str:
        """Hash of one queue's jobs in one minute (epoch s // 60): fields `finished` (runs that
        ended, failed ones included) and `failed` (runs that raised); kept 2 h."""
        return self._k("queue-minute", queue, minute)

    def autoscale_decisions(self) -> str:
        """List: the autoscaler's last decisions, newest first (JSON each, capped)."""
        return self._k("ops", "autoscale")

    def watched_rooms(self) -> str:
        """Hash: a watched-only room (`map:{region}`, `ops`) → JSON {until (epoch s), bounds}."""
        return self._k("ops", "watched")
