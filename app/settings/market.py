"""Settings of the marketplace: dispatch, what it costs, the payment and messaging providers, and how
long rows are kept."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from decimal import Decimal

from app.settings.declare import DAYS, NOT_NEGATIVE, POSITIVE, Check, setting

RADII = Check(lambda radii: all(0 < r < math.inf for r in radii)
              and all(b > a for a, b in itertools.pairwise(radii)),
              "{name} must be finite, positive and strictly increasing, e.g. 5,10,20")


@dataclass(frozen=True)
class DispatchSettings:
    """Dispatch rounds, bids and drivers' freshness."""

    radii_km: tuple[float, ...] = setting("DISPATCH_RADII_KM", (5.0, 10.0, 20.0), check=RADII,
                                          doc="the dispatch rounds' radii (km), one round each")
    bid_window_s: int = setting("DISPATCH_BID_WINDOW", 180, check=POSITIVE,
                                doc="seconds a round's offers stay open")
    max_offers_per_round: int = setting("DISPATCH_MAX_OFFERS_PER_ROUND", 20, check=POSITIVE,
                                        renamed_from=("DISPATCH_MAX_OFFERS",),
                                        doc="drivers offered per round")
    driver_stale_after_s: int = setting("DRIVER_STALE_AFTER", 120, check=POSITIVE,
                                        doc="seconds without a position before a driver is not offered rides")
    accept_window_s: int = setting(
        "DISPATCH_ACCEPT_WINDOW", 600, check=POSITIVE,
        doc="seconds the customer has to accept a bid, counted from the bid check that found bids (when "
            "`bids:ready` was sent); then the system cancels the ride (`app.services.ride_expiry`)")
    driver_prune_after_s: int = setting(
        "DRIVER_PRUNE_AFTER", 15 * 60, check=POSITIVE,
        doc="seconds without a position before an online driver (not on a ride) is set offline and out "
            "of the index by `drivers.prune_stale`; longer than `DRIVER_STALE_AFTER` (a tunnel is not a "
            "goodbye)")
    batched: bool = setting(
        "DISPATCH_BATCHED", True,
        doc="rounds and bid checks run in batches by each dispatch worker's dispatcher threads "
            "(`workers/dispatcher.py`), straight from the ledger; `false`: one Dramatiq message each")
    batch_size: int = setting(
        "DISPATCH_BATCH_SIZE", 200, check=POSITIVE,
        doc="at most this many due rounds and bid checks per batch (one transaction, one GEO pipeline)")
    threads: int = setting(
        "DISPATCH_THREADS", 2, check=POSITIVE,
        doc="dispatcher threads per worker process serving `dispatch` (each holds a pooled connection and "
            "a `LISTEN` one): while one waits on PostgreSQL or Redis, another runs")
    schedule_lead_s: int = setting(
        "DISPATCH_SCHEDULE_LEAD", 30 * 60, check=NOT_NEGATIVE,
        doc="seconds before a scheduled ride's `scheduledFor` its first round is due (the due time of its "
            "`dispatch.step` job); a ride scheduled sooner than this is dispatched at once")
    schedule_min_ahead_s: int = setting(
        "DISPATCH_SCHEDULE_MIN_AHEAD", 15 * 60, check=POSITIVE,
        doc="seconds a ride's `scheduledFor` must be ahead of its request at least (sooner: book it without "
            "`scheduledFor`); earlier is 400 `VALIDATION_ERROR`")
    schedule_horizon_days: int = setting(
        "DISPATCH_SCHEDULE_HORIZON_DAYS", 30, check=POSITIVE,
        doc="days ahead a ride may be scheduled at most; later is 400 `VALIDATION_ERROR`")


#: Stripe redelivers an event for up to three days: its id is kept at least that long.
MIN_STRIPE_EVENT_DAYS = 3


@dataclass(frozen=True)
class RetentionSettings:
    """How long `retention.prune` keeps rows nobody needs any more, in days (0 = keep forever).

    `failed_jobs` and `ledger_entries` are never pruned.
    """

    offers_days: int = setting("RETENTION_OFFERS_DAYS", 30, check=DAYS,
                               doc="offers of rides in a final state are deleted this many days after they "
                                   "were made")
    notifications_days: int = setting(
        "RETENTION_NOTIFICATIONS_DAYS", 30, check=DAYS,
        doc="notifications done with (sent, delivered, failed, undelivered, skipped) are deleted this many "
            "days after they were written")
    stripe_events_days: int = setting(
        "RETENTION_STRIPE_EVENTS_DAYS", 30, check=DAYS,
        doc=f"handled Stripe events are deleted this many days after handling (0 or at least "
            f"{MIN_STRIPE_EVENT_DAYS}: Stripe redelivers an event for up to three days)")
    ride_history_days: int = setting(
        "RETENTION_RIDE_HISTORY_DAYS", 0, check=DAYS,
        doc="the history (`history[]`, which the API shows) of rides finished this many days ago is "
            "deleted; opt-in")
    max_rows_per_run: int = setting("RETENTION_MAX_ROWS_PER_RUN", 10_000, check=POSITIVE,
                                    doc="rows deleted per table per run, at most …")
    batch_size: int = setting("RETENTION_BATCH_SIZE", 1_000, check=POSITIVE,
                              doc="… and per statement (each batch its own transaction)")


@dataclass(frozen=True)
class StripeSettings:
    """Stripe: card rides and the drivers' Connect payouts. Without a secret key card rides and payouts
    onboarding answer 409 `CONFLICT`, `details.reason = "PAYMENTS_DISABLED"` (cash rides work)."""

    secret_key: str = setting("STRIPE_SECRET_KEY", "", doc="Stripe's secret API key")
    webhook_secret: str = setting("STRIPE_WEBHOOK_SECRET", "",
                                  doc="the webhook signing secret; without it every webhook is 400 "
                                      "`INVALID_SIGNATURE`")
    api_base: str = setting("STRIPE_API_BASE", "", shown_default="empty (Stripe's)",
                            doc="another Stripe API address (the tests' local fake)")
    connect_base: str = setting("STRIPE_CONNECT_BASE", "", shown_default="empty (Stripe's)",
                                doc="another Stripe Connect address (the tests' local fake)")
    connect_return_url: str = setting(
        "STRIPE_CONNECT_RETURN_URL", "http://127.0.0.1:8000/onboarding/done",
        doc="where Stripe sends a driver back after Connect onboarding")
    connect_refresh_url: str = setting(
        "STRIPE_CONNECT_REFRESH_URL", "http://127.0.0.1:8000/onboarding/retry",
        doc="… and where when the onboarding link expired")
    connect_country: str = setting("STRIPE_CONNECT_COUNTRY", "US",
                                   doc="country of the drivers' Connect Express accounts")
    hold_timeout_s: int = setting(
        "PAYMENT_HOLD_TIMEOUT", 900, check=POSITIVE,
        doc="seconds from a card ride's accept for its hold to be authorized; then the system cancels the "
            "ride and releases whatever was held (`app.services.ride_expiry`)")
    webhook_tolerance_s: int = setting(
        "STRIPE_WEBHOOK_TOLERANCE", 300, check=POSITIVE,
        doc="seconds a signed webhook's timestamp may be old (Stripe's default tolerance is 300)")
    request_timeout_s: float = setting("STRIPE_REQUEST_TIMEOUT", 20.0, renamed_from=("STRIPE_TIMEOUT",),
                                       doc="seconds per Stripe call")
    max_network_retries: int = setting("STRIPE_MAX_NETWORK_RETRIES", 2,
                                       doc="retries per Stripe call (the SDK retries with the same "
                                           "idempotency key)")
    circuit_failures: int = setting(
        "STRIPE_CIRCUIT_FAILURES", 5, check=POSITIVE,
        doc="transient failures in a row (per process) after which Stripe calls pause; jobs wait without "
            "spending retries")
    circuit_pause_s: float = setting("STRIPE_CIRCUIT_PAUSE", 10.0,
                                     doc="seconds of the first pause (doubled after each failed trial call, "
                                         "up to 120)")

    @property
    def enabled(self) -> bool:
        return bool(self.secret_key)


FRACTION = Check(lambda rate: rate.is_finite() and Decimal(0) <= rate <= Decimal(1),
                 "{name} must be a fraction between 0 and 1 (0.2 is 20 %), got {value}")


@dataclass(frozen=True)
class PricingSettings:
    """What the marketplace charges, whichever provider collects it."""

    cancellation_fee_rate: Decimal = setting(
        "PAYMENT_CANCELLATION_FEE_RATE", Decimal("0.20"), check=FRACTION,
        doc="share of the fare captured when a card ride is cancelled once the driver is on the way "
            "(cancelled from `DRIVER_ARRIVING` or later); before that the hold is released in full")


@dataclass(frozen=True)
class TwilioSettings:
    """Twilio: SMS and WhatsApp. Without both the account SID and the auth token every notification
    uses the `console` channel (the worker's log) and `POST /api/v1/webhooks/twilio/status` answers
    403."""

    account_sid: str = setting("TWILIO_ACCOUNT_SID", "", doc="Twilio account SID")
    auth_token: str = setting("TWILIO_AUTH_TOKEN", "", doc="Twilio auth token")
    sms_from: str = setting("TWILIO_SMS_FROM", "",
                            doc="sender of SMS (E.164 number, short code or alphanumeric id)")
    whatsapp_from: str = setting(
        "TWILIO_WHATSAPP_FROM", "",
        doc="WhatsApp sender (E.164; the `whatsapp:` prefix is added); without it users who opted in get "
            "SMS")
    api_base: str = setting("TWILIO_API_BASE", "", shown_default="empty (Twilio's)",
                            doc="another address for `https://api.twilio.com` (the tests' and benchmarks' "
                                "local fake)")
    status_callback_url: str = setting(
        "TWILIO_STATUS_CALLBACK_URL", "",
        doc="the **public** URL of `POST /api/v1/webhooks/twilio/status` as Twilio reaches it (e.g. "
            "`https://farm.example.com/api/v1/webhooks/twilio/status`; the root alias "
            "`/webhooks/twilio/status` works too), given to Twilio with each message and used to verify "
            "`X-Twilio-Signature`; without it no status callbacks are asked for and the route answers 403")
    timeout_s: float = setting("TWILIO_TIMEOUT", 10.0,
                               doc="seconds to connect to and to wait for Twilio per request (a timeout is "
                                   "retried as transient)")
    circuit_failures: int = setting("TWILIO_CIRCUIT_FAILURES", 5, check=POSITIVE,
                                    doc="transient failures in a row (per process) after which sends pause")
    circuit_pause_s: float = setting("TWILIO_CIRCUIT_PAUSE", 10.0,
                                     doc="seconds of the first pause (doubled after each failed trial call, "
                                         "up to 120)")
    #: Messages go only to verified numbers; others are recorded `skipped`. Not a variable of its own:
    #: it is `PhoneSettings.verification_required` (PHONE_VERIFICATION_REQUIRED).
    verified_numbers_only: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.account_sid and self.auth_token)


@dataclass(frozen=True)
class NotificationSettings:
    """Sending notifications (`workers/notifier.py`, `jobs/notifications.py`)."""

    max_attempts: int = setting("NOTIFY_MAX_ATTEMPTS", 8, check=POSITIVE,
                                doc="sends tried per notification before a transient failure (429, 5xx, "
                                    "timeout) fails it")
    lease_s: int = setting("NOTIFY_LEASE", 60, check=POSITIVE,
                           doc="seconds a sender's claim (`sending`) holds; a crashed sender's row is "
                               "re-claimed after it")
    stuck_after_s: int = setting(
        "NOTIFY_STUCK_AFTER", 600, check=POSITIVE,
        doc="a `queued` (or lapsed `sending`) row untouched this long (s) has lost its job (Redis "
            "restarted empty): `notifications.reconcile` enqueues it again")
    batched: bool = setting(
        "NOTIFY_BATCHED", True,
        doc="sends run in batches by each notifications worker's sender thread, straight from the "
            "ledger; `false`: one Dramatiq message per notification")
    batch_size: int = setting("NOTIFY_BATCH_SIZE", 100, check=POSITIVE,
                              doc="at most this many notifications per batch (one claim, one record "
                                  "statement) …")
    send_concurrency: int = setting("NOTIFY_SEND_CONCURRENCY", 16, check=POSITIVE,
                                    doc="… sent this many at a time (threads of the sender; the Twilio SDK "
                                        "is blocking)")
