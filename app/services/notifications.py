"""Notifications: what users are told on WhatsApp or SMS, written in the transaction of its cause.

`notify()` / `notify_async()` write a `notifications` row (the user's phone, the channel, the
rendered body) and its `notifications.send` outbox row in ONE statement — or, when messages go to
verified numbers only (`PHONE_VERIFICATION_REQUIRED`) and the user's is not, the row `skipped`
with error code `PHONE_NOT_VERIFIED` and no job (recorded, never silently dropped); a second call with the
same dedupe key (a redelivered job, a replayed request) writes nothing. The channel is fixed
when the row is written: `console` on a farm without Twilio credentials, `whatsapp` for a user
who opted in (when a WhatsApp sender is configured), `sms` otherwise. Delivery, retries and
status callbacks: `app.services.notification_delivery`.

The ride-level helpers at the bottom (`driver_assigned_async`, `ride_moved_async`,
`ride_cancelled_async`, `bids_ready`, `no_drivers`, `bids_expired`, `hold_expired`,
`payment_failed`) are what the services call; `booking_confirmed` (`ride_scheduled` for a ride
booked for later) is written inside `POST /rides`' own statement (`app.services.ride_creation`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app import currencies
from app.keys import NOTIFICATIONS_SEND
from app.outbox import INSERT_JOB
from app.settings import TwilioSettings
from app.timestamps import rfc3339
from models import Bid, Ride, RideStatus
from models.ride_states import ADMIN, CUSTOMER

# --- templates ---------------------------------------------------------------------------------------
#: Short bodies in the GSM-7 alphabet (one SMS segment is 160 of them; an em dash would halve it).
TEMPLATES: Final[dict[str, str]] = {
    "booking_confirmed": "Dispatch Farm: ride {ride} is booked ({vehicle} from {pickup}). "
                         "We are asking drivers nearby; you will hear when bids come in.",
    # A ride booked for later (`scheduledFor`): its rounds start `DISPATCH_SCHEDULE_LEAD` before.
    "ride_scheduled": "Dispatch Farm: ride {ride} is booked for {when} ({vehicle} from {pickup}). "
                      "We will ask drivers before then.",
    "bids_ready": "Dispatch Farm: {count} bid{plural} on ride {ride}, from {lowest}. "
                  "Open the app to choose your driver.",
    "driver_assigned": "Dispatch Farm: your driver accepted ride {ride} for {price}; "
                       "pickup at {pickup} {pickup_when}.",
    "bid_accepted": "Dispatch Farm: your bid of {price} for ride {ride} was accepted. "
                    "Pickup: {pickup}{when_text}.",
    "driver_arriving": "Dispatch Farm: your driver is on the way to {pickup} (ride {ride}){eta_text}.",
    "ride_completed": "Dispatch Farm: ride {ride} is complete, dropped off at {dropoff}.{fare} Thank you!",
    "no_drivers": "Dispatch Farm: sorry, no driver was free for ride {ride}. "
                  "Please book again in a few minutes.",
    "payment_failed": "Dispatch Farm: the payment of {price} for ride {ride} failed. "
                      "Please check your card in the app.",
    "ride_cancelled": "Dispatch Farm: ride {ride} ({pickup}) was cancelled by {by}.{reason}",
    "bids_expired": "Dispatch Farm: no bid on ride {ride} was accepted in time, so it was cancelled. "
                    "Book again whenever you are ready.",
    "payment_expired": "Dispatch Farm: the card payment of {price} for ride {ride} was not authorized "
                       "in time, so the ride was cancelled. Please book again.",
    # time-slot bookings (`app.services.bookings.notices`)
    "slot_confirmed": "Dispatch Farm: booking {booking}{service_text} is confirmed for {when}. "
                      "We will remind you before it starts.",
    "slot_booked": "Dispatch Farm: new booking {booking}{service_text} for {when}.",
    "booking_reminder": "Dispatch Farm: reminder, booking {booking}{service_text} starts in {lead}, "
                        "at {when}.",
    "booking_cancelled": "Dispatch Farm: booking {booking} for {when} was cancelled by {by}."
                         "{fee_text}{reason}",
    "booking_payment_failed": "Dispatch Farm: the card payment of {price} for booking {booking} failed. "
                              "Please check your card in the app.",
    # The code is in the body only (never in `params`), and the body is redacted once sent.
    "phone_code": "Dispatch Farm: your verification code is {code}. It expires in {minutes} minutes. "
                  "Never share it.",
}
#: Templates whose body is a secret: sent to unverified numbers too, redacted once handed over.
SECRET_TEMPLATES: Final = frozenset({"phone_code"})
#: Why a message was not sent (`notifications.error_code` of a `skipped` row).
SKIPPED_UNVERIFIED: Final = "PHONE_NOT_VERIFIED"

_PLACE_CHARS: Final = 40
#: GSM-7 characters in one SMS segment.
ONE_SEGMENT: Final = 160


def short_ride(ride_id: object) -> str:
    """The ride as people read it in a message: the first 8 hex digits of its id, upper case."""
    return str(ride_id).replace("-", "")[:8].upper()


def money(amount: int, currency: str) -> str:
    """`2500, "EUR"` → `25.00 EUR`, `2500, "JPY"` → `2500 JPY`, `12340, "TND"` → `12.340 TND`,
    `50000, "ISK"` → `500 ISK`: as `app.currencies` reads our amounts."""
    return currencies.of(currency).display(amount)


def place(address: str | None, lat: float, lng: float) -> str:
    """A pickup or drop-off as a message names it: its address, else its coordinates."""
    text_ = address.strip() if address else f"{lat:.4f}, {lng:.4f}"
    return text_ if len(text_) <= _PLACE_CHARS else text_[:_PLACE_CHARS - 3] + "..."


def pickup_time(moment: datetime) -> str:
    """A scheduled pickup as a message names it: `14:30 UTC on 2026-12-03` (to the minute)."""
    return moment.astimezone(UTC).strftime("%H:%M UTC on %Y-%m-%d")


def render(template: str, params: Mapping[str, Any]) -> str:
    """The body of `template` for these params (`KeyError` names what a template is missing)."""
    shown: dict[str, Any] = {"ride": short_ride(params["rideId"])} if "rideId" in params else {}
    if "bookingId" in params:
        shown["booking"] = short_ride(params["bookingId"])
    service = " ".join(str(params.get("service") or "").split())
    shown["service_text"] = f" ({service if len(service) <= 24 else service[:21] + '...'})" if service else ""
    shown["fee_text"] = (f" A fee of {money(int(params['feeAmount']), str(params['currency']))} was charged."
                         if params.get("feeAmount") else "")
    for key in ("vehicleType", "pickup", "dropoff", "etaMinutes", "count", "by", "code", "minutes", "when",
                "lead"):
        if key in params:
            shown[{"vehicleType": "vehicle", "etaMinutes": "eta"}.get(key, key)] = params[key]
    if "amount" in params:
        shown["price"] = money(int(params["amount"]), str(params["currency"]))
    if "lowestAmount" in params:
        shown["lowest"] = money(int(params["lowestAmount"]), str(params["currency"]))
    if "count" in params:
        shown["plural"] = "" if int(params["count"]) == 1 else "s"
    when = pickup_time(datetime.fromisoformat(str(params["scheduledFor"]))) \
        if params.get("scheduledFor") else None  # a ride booked ahead: its pickup time, not an ETA
    shown["when"] = when
    shown["when_text"] = f" at {when}" if when else ""
    shown["pickup_when"] = f"at {when}" if when else f"in about {params.get('etaMinutes')} min"
    shown["eta_text"] = f", about {params['etaMinutes']} min" if "etaMinutes" in params else ""
    shown["fare"] = f" Fare {shown['price']}." if "price" in shown else ""
    shown["reason"] = ""
    body = TEMPLATES[template].format_map(shown)
    reason = " ".join(str(params.get("reason") or "").split())
    if reason and "{reason}" in TEMPLATES[template]:  # what is left of one SMS segment, if anything
        room = ONE_SEGMENT - len(body) - len(" Reason: ")
        if room >= 10:
            body += " Reason: " + (reason if len(reason) <= room else reason[:room - 3] + "...")
    return body


# --- the one statement -------------------------------------------------------------------------------
def channels(settings: TwilioSettings | None) -> tuple[str, str]:
    """(channel for users opted in to WhatsApp, channel for everyone else)."""
    if settings is None or not settings.enabled:
        return "console", "console"
    return ("whatsapp" if settings.whatsapp_from else "sms"), "sms"


def notification_ctes(name: str) -> str:
    """Two CTEs, `{name}` and `{name}_job`: the row (from the user's phone and opt-in; nothing on a
    duplicate dedupe key) and, only when the row was written `queued`, its `notifications.send` job.
    With `verified_only`, a user whose phone is not verified gets the row `skipped` (error code
    `PHONE_NOT_VERIFIED`), recorded and never sent.
    Bind with `notification_params(name, ...)`; usable inside a larger statement (`POST /rides`)."""
    p = name
    unverified = f"(:{p}_verified_only AND u.phone_verified_at IS NULL)"
    return f"""
{name} AS (
    INSERT INTO notifications (id, user_id, template, dedupe_key, params, channel, recipient, body,
                               status, error_code, error_message, attempts, created_at, updated_at)
    SELECT :{p}_id, u.id, :{p}_template, :{p}_dedupe_key, CAST(:{p}_params AS jsonb),
           CASE WHEN u.whatsapp_opt_in THEN :{p}_opt_in_channel ELSE :{p}_channel END,
           u.phone, :{p}_body, CASE WHEN {unverified} THEN 'skipped' ELSE 'queued' END,
           CASE WHEN {unverified} THEN '{SKIPPED_UNVERIFIED}' END,
           CASE WHEN {unverified} THEN 'not sent: the phone number is not verified' END,
           0, :{p}_now, :{p}_now
    FROM users u WHERE u.id = :{p}_user_id
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id, status
), {name}_job AS (
    {INSERT_JOB}
    SELECT gen_random_uuid(), {NOTIFICATIONS_SEND.sql}, jsonb_build_array(CAST(id AS text)),
           '{{}}'::jsonb, '{{}}'::jsonb, :{p}_now, :{p}_now
    FROM {name} WHERE status = 'queued'
)"""


def notification_params(name: str, *, user_id: uuid.UUID, template: str, dedupe_key: str,
                        params: Mapping[str, Any], settings: TwilioSettings | None,
                        now: datetime | None = None, secret: Mapping[str, Any] | None = None,
                        ) -> dict[str, Any]:
    """The bind parameters of `notification_ctes(name)` (the body is rendered here, from `params`
    and the `secret` ones, which are not stored; a secret template goes to unverified numbers)."""
    opt_in_channel, channel = channels(settings)
    verified_only = bool(settings and settings.verified_numbers_only) and template not in SECRET_TEMPLATES
    values = {
        "id": uuid.uuid4(), "user_id": user_id, "template": template, "dedupe_key": dedupe_key,
        "params": msgspec.json.encode(dict(params)).decode(),
        "body": render(template, {**params, **(secret or {})}),
        "opt_in_channel": opt_in_channel, "channel": channel, "now": now or datetime.now(UTC),
        "verified_only": verified_only,
    }
    return {f"{name}_{key}": value for key, value in values.items()}


_NOTIFY = text(f"WITH {notification_ctes('note')} SELECT id, status FROM note")


def notify(session: Session, *, user_id: uuid.UUID, template: str, dedupe_key: str,
           params: Mapping[str, Any], settings: TwilioSettings | None) -> bool:
    """Record a notification for delivery, once per dedupe key; True if this call wrote it."""
    bound = notification_params("note", user_id=user_id, template=template, dedupe_key=dedupe_key,
                                params=params, settings=settings)
    return session.execute(_NOTIFY, bound).first() is not None


async def notify_async(session: AsyncSession, *, user_id: uuid.UUID, template: str, dedupe_key: str,
                       params: Mapping[str, Any], settings: TwilioSettings | None,
                       secret: Mapping[str, Any] | None = None) -> bool:
    """`notify` for the web process's async session."""
    bound = notification_params("note", user_id=user_id, template=template, dedupe_key=dedupe_key,
                                params=params, settings=settings, secret=secret)
    return (await session.execute(_NOTIFY, bound)).first() is not None


# --- what the ride services call ---------------------------------------------------------------------
def ride_key(ride_id: object, template: str, *suffix: object) -> str:
    """`ride:{id}:{template}[:suffix…]`: one notification per cause."""
    return ":".join((f"ride:{ride_id}", template, *(str(s) for s in suffix)))


def _ride_params(ride: Ride, **extra: Any) -> dict[str, Any]:
    when = {"scheduledFor": rfc3339(ride.scheduled_for)} if ride.scheduled_for else {}
    return {"rideId": str(ride.id), "pickup": place(ride.pickup_address, ride.pickup_lat, ride.pickup_lng),
            **when, **extra}


async def driver_assigned_async(session: AsyncSession, ride: Ride, bid: Bid,
                                settings: TwilioSettings | None) -> None:
    """The customer learns the price and ETA; the driver that its bid won (it may not be in the app)."""
    price = {"amount": bid.amount, "currency": bid.currency}
    await notify_async(session, user_id=ride.customer_id, template="driver_assigned",
                       dedupe_key=ride_key(ride.id, "driver_assigned"), settings=settings,
                       params=_ride_params(ride, etaMinutes=bid.eta_minutes, **price))
    await notify_async(session, user_id=bid.driver_id, template="bid_accepted",
                       dedupe_key=ride_key(ride.id, "bid_accepted"), settings=settings,
                       params=_ride_params(ride, **price))


async def ride_moved_async(session: AsyncSession, ride: Ride, target: RideStatus,
                           settings: TwilioSettings | None) -> None:
    """DRIVER_ARRIVING and COMPLETED are worth a message to the customer; other steps are not."""
    if target not in (RideStatus.DRIVER_ARRIVING, RideStatus.COMPLETED):
        return
    bid = await session.get(Bid, ride.accepted_bid_id) if ride.accepted_bid_id else None
    extra: dict[str, Any] = {}
    if target == RideStatus.DRIVER_ARRIVING:
        template = "driver_arriving"
        if bid is not None:
            extra["etaMinutes"] = bid.eta_minutes
    else:
        template = "ride_completed"
        extra["dropoff"] = place(ride.dropoff_address, ride.dropoff_lat, ride.dropoff_lng)
        if bid is not None:
            extra |= {"amount": bid.amount, "currency": bid.currency}
    await notify_async(session, user_id=ride.customer_id, template=template,
                       dedupe_key=ride_key(ride.id, template), params=_ride_params(ride, **extra),
                       settings=settings)


async def ride_cancelled_async(session: AsyncSession, ride: Ride, *, by_role: str, reason: str | None,
                               settings: TwilioSettings | None) -> None:
    """The other party is told: the customer cancelled → the assigned driver; an admin → both."""
    recipients: list[tuple[str, uuid.UUID]] = []
    if by_role == ADMIN:
        recipients.append((CUSTOMER, ride.customer_id))
    if ride.driver_id is not None and by_role in (ADMIN, CUSTOMER):
        recipients.append(("driver", ride.driver_id))
    by = "support" if by_role == ADMIN else "the customer"
    for role, user_id in recipients:
        await notify_async(session, user_id=user_id, template="ride_cancelled",
                           dedupe_key=ride_key(ride.id, "ride_cancelled", role), settings=settings,
                           params=_ride_params(ride, by=by, reason=reason or ""))


def bids_ready(session: Session, *, ride_id: uuid.UUID, customer_id: uuid.UUID, count: int, round_: int,
               lowest: int | None, currency: str | None, settings: TwilioSettings | None) -> None:
    """A round's bid window closed with bids: the customer chooses (told once per round)."""
    notify(session, user_id=customer_id, template="bids_ready", settings=settings,
           dedupe_key=ride_key(ride_id, "bids_ready", round_),
           params={"rideId": str(ride_id), "count": count, "round": round_, "lowestAmount": lowest,
                   "currency": currency})


def no_drivers(session: Session, *, ride_id: uuid.UUID, customer_id: uuid.UUID,
               settings: TwilioSettings | None) -> None:
    """The last round ended without a bid (NO_DRIVERS_AVAILABLE): the customer books again."""
    notify(session, user_id=customer_id, template="no_drivers", settings=settings,
           dedupe_key=ride_key(ride_id, "no_drivers"), params={"rideId": str(ride_id)})


def bids_expired(session: Session, ride: Ride, settings: TwilioSettings | None) -> None:
    """The system cancelled the ride: no bid was accepted within the acceptance window."""
    notify(session, user_id=ride.customer_id, template="bids_expired", settings=settings,
           dedupe_key=ride_key(ride.id, "bids_expired"), params=_ride_params(ride))


def hold_expired(session: Session, ride: Ride, *, amount: int, currency: str, reason: str,
                 settings: TwilioSettings | None) -> None:
    """The system cancelled the ride, its card hold not authorized in time: the customer and the
    assigned driver (who should not set off) are told."""
    notify(session, user_id=ride.customer_id, template="payment_expired", settings=settings,
           dedupe_key=ride_key(ride.id, "payment_expired"),
           params=_ride_params(ride, amount=amount, currency=currency))
    if ride.driver_id is not None:
        notify(session, user_id=ride.driver_id, template="ride_cancelled", settings=settings,
               dedupe_key=ride_key(ride.id, "ride_cancelled", "driver"),
               params=_ride_params(ride, by="the system", reason=reason))


def payment_failed(session: Session, *, ride_id: uuid.UUID, customer_id: uuid.UUID, amount: int,
                   currency: str, failure_key: str, settings: TwilioSettings | None) -> bool:
    """Tell the customer a payment failed (`failure_key`: the PaymentIntent or event that failed,
    so each failure is told once and a later, different failure is told too)."""
    return notify(session, user_id=customer_id, template="payment_failed",
                  dedupe_key=ride_key(ride_id, "payment_failed", failure_key), settings=settings,
                  params={"rideId": str(ride_id), "amount": amount, "currency": currency})


def booking_payment_failed(session: Session, *, booking_id: uuid.UUID, customer_id: uuid.UUID,
                           amount: int, currency: str, failure_key: str,
                           settings: TwilioSettings | None) -> bool:
    """`payment_failed` for a time-slot booking's card hold."""
    return notify(session, user_id=customer_id, template="booking_payment_failed",
                  dedupe_key=f"booking:{booking_id}:payment_failed:{failure_key}", settings=settings,
                  params={"bookingId": str(booking_id), "amount": amount, "currency": currency})


async def payment_failed_async(session: AsyncSession, *, ride_id: uuid.UUID, customer_id: uuid.UUID,
                               amount: int, currency: str, failure_key: str,
                               settings: TwilioSettings | None) -> bool:
    """`payment_failed` for the web process's async session."""
    return await notify_async(session, user_id=customer_id, template="payment_failed",
                              dedupe_key=ride_key(ride_id, "payment_failed", failure_key),
                              settings=settings,
                              params={"rideId": str(ride_id), "amount": amount, "currency": currency})
