"""What messages say, which channel they take, and which provider errors are worth a retry (no I/O)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException

from app.adapters.twilio_sender import _rest_error, callback_url
from app.currencies import CURRENCIES
from app.services.notification_delivery import RANK, TWILIO_STATUSES
from app.services.notifications import TEMPLATES, channels, money, place, render, short_ride
from app.settings import TwilioSettings

RIDE = uuid.UUID("3f2a91c0-1111-4222-8333-444455556666")
LONG_ADDRESS = "Karl-Liebknecht-Strasse 13, Hinterhaus, 4. Etage links, 10178 Berlin"
PARAMS: dict[str, dict[str, Any]] = {
    "booking_confirmed": {"vehicleType": "truck", "pickup": place(LONG_ADDRESS, 0, 0)},
    "ride_scheduled": {"vehicleType": "motorbike", "pickup": place(LONG_ADDRESS, 0, 0),
                       "scheduledFor": "2026-12-03T14:30:59.123456Z"},
    "bids_ready": {"count": 3, "lowestAmount": 123456, "currency": "EUR"},
    "driver_assigned": {"amount": 123456, "currency": "EUR", "etaMinutes": 12,
                        "pickup": place(LONG_ADDRESS, 0, 0)},
    "bid_accepted": {"amount": 123456, "currency": "EUR", "pickup": place(LONG_ADDRESS, 0, 0)},
    "driver_arriving": {"etaMinutes": 12, "pickup": place(LONG_ADDRESS, 0, 0)},
    "ride_completed": {"amount": 123456, "currency": "EUR", "dropoff": place(LONG_ADDRESS, 0, 0)},
    "no_drivers": {},
    "payment_failed": {"amount": 123456, "currency": "EUR"},
    "ride_cancelled": {"by": "the customer", "pickup": place(LONG_ADDRESS, 0, 0), "reason": "x" * 300},
    "bids_expired": {"pickup": place(LONG_ADDRESS, 0, 0)},
    "payment_expired": {"amount": 123456, "currency": "EUR", "pickup": place(LONG_ADDRESS, 0, 0)},
    "phone_code": {"code": "123456", "minutes": 10},
    "slot_confirmed": {"bookingId": str(RIDE), "when": "Sat 06 Dec 09:00 CEST", "service": "x" * 120},
    "slot_booked": {"bookingId": str(RIDE), "when": "Sat 06 Dec 09:00 CEST", "service": "x" * 120},
    "booking_reminder": {"bookingId": str(RIDE), "when": "Sat 06 Dec 09:00 CEST", "service": "x" * 120,
                         "lead": "24 hours"},
    "booking_cancelled": {"bookingId": str(RIDE), "when": "Sat 06 Dec 09:00 CEST", "by": "the provider",
                          "feeAmount": 123456, "currency": "EUR", "reason": "x" * 300},
    "booking_payment_failed": {"bookingId": str(RIDE), "amount": 123456, "currency": "EUR"},
}
GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
           "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")


@pytest.mark.parametrize("ahead", [False, True], ids=["now", "booked-ahead"])
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_fits_one_sms_segment_with_long_values(template: str, ahead: bool) -> None:
    when = {"scheduledFor": "2026-12-03T14:30:00.123456Z"} if ahead else {}  # any message of such a ride
    body = render(template, {"rideId": str(RIDE), **PARAMS[template], **when})

    assert body.startswith("Dispatch Farm: ")
    assert ("3F2A91C0" in body) is (template != "phone_code")
    assert len(body) <= 160, body
    assert set(body) <= GSM7, set(body) - GSM7  # a character outside GSM-7 halves the segment


def test_a_ride_booked_ahead_is_told_its_pickup_time_in_utc_instead_of_an_eta() -> None:
    ahead = {"rideId": str(RIDE), "pickup": "Alexanderplatz 1", "vehicleType": "van", "amount": 2500,
             "currency": "EUR", "etaMinutes": 7, "scheduledFor": "2026-12-24T15:30:00+01:00"}

    assert render("ride_scheduled", ahead) == ("Dispatch Farm: ride 3F2A91C0 is booked for 14:30 UTC on "
                                               "2026-12-24 (van from Alexanderplatz 1). We will ask drivers "
                                               "before then.")
    assert render("driver_assigned", ahead).endswith("pickup at Alexanderplatz 1 at 14:30 UTC on 2026-12-24.")
    assert render("bid_accepted", ahead).endswith("Pickup: Alexanderplatz 1 at 14:30 UTC on 2026-12-24.")
    now = {key: value for key, value in ahead.items() if key != "scheduledFor"}
    assert render("driver_assigned", now).endswith("pickup at Alexanderplatz 1 in about 7 min.")
    assert render("bid_accepted", now).endswith("Pickup: Alexanderplatz 1.")


def test_bodies_name_prices_counts_and_etas_as_people_read_them() -> None:
    assert render("bids_ready", {"rideId": str(RIDE), "count": 1, "lowestAmount": 2500, "currency": "eur"}) \
        == "Dispatch Farm: 1 bid on ride 3F2A91C0, from 25.00 EUR. Open the app to choose your driver."
    assert "about 7 min" in render("driver_arriving", {"rideId": str(RIDE), "pickup": "A", "etaMinutes": 7})
    assert render("driver_arriving", {"rideId": str(RIDE), "pickup": "A"}).endswith("(ride 3F2A91C0).")
    assert money(1999, "JPY") == "1999 JPY" and money(5, "USD") == "0.05 USD"
    assert place(None, 52.52191, 13.41321) == "52.5219, 13.4132"
    assert short_ride(RIDE) == "3F2A91C0"


@pytest.mark.parametrize(("amount", "currency", "shown"), [
    (2500, "EUR", "25.00 EUR"), (2500, "JPY", "2500 JPY"), (12340, "TND", "12.340 TND"),
    (50000, "ISK", "500 ISK"), (500, "UGX", "5 UGX"), (17500, "HUF", "175.00 HUF"),
    (2500, "usd", "25.00 USD"),
])
def test_amounts_are_shown_in_each_currencys_own_decimals(amount: int, currency: str, shown: str) -> None:
    # Given a price in minor units as our API means them (Stripe's `amount`)
    # Then the message shows what the customer pays: TND has three decimals, ISK none
    assert money(amount, currency) == shown
    assert shown in render("payment_failed", {"rideId": str(RIDE), "amount": amount, "currency": currency})


def test_every_currency_in_the_table_is_shown_by_it() -> None:
    for code, currency in CURRENCIES.items():
        assert money(currency.step * 123, code) == currency.display(currency.step * 123)


def test_a_template_missing_a_value_fails_loudly() -> None:
    with pytest.raises(KeyError):
        render("driver_assigned", {"rideId": str(RIDE), "pickup": "A"})


def test_the_channel_follows_the_configuration_and_the_opt_in() -> None:
    assert channels(None) == ("console", "console")
    assert channels(TwilioSettings(sms_from="+15557654321")) == ("console", "console")  # no credentials
    configured = TwilioSettings(account_sid="AC1", auth_token="t", sms_from="+15557654321")
    assert channels(configured) == ("sms", "sms")  # no WhatsApp sender: opted-in users get SMS
    with_whatsapp = TwilioSettings(account_sid="AC1", auth_token="t", sms_from="+1", whatsapp_from="+2")
    assert channels(with_whatsapp) == ("whatsapp", "sms")


@pytest.mark.parametrize(("status", "code", "transient"), [
    (400, 21211, False), (400, 21610, False), (404, 20404, False), (401, 20003, False),
    (429, 20429, True), (500, 20500, True), (503, None, True),
])
def test_only_rate_limits_and_server_errors_are_retried(status: int, code: int | None,
                                                         transient: bool) -> None:
    error = _rest_error(TwilioRestException(status, "https://api.twilio.com/x", msg="no", code=code))

    assert error.transient is transient
    assert error.details["code"] == (str(code) if code else f"HTTP_{status}")


def test_callbacks_only_move_forward_and_read_counts_as_delivered() -> None:
    assert TWILIO_STATUSES["read"] == "delivered"
    assert {TWILIO_STATUSES[s] for s in ("accepted", "queued", "sending", "sent")} == {"sent"}
    assert RANK["queued"] < RANK["sending"] < RANK["sent"] < RANK["delivered"]
    assert RANK["delivered"] == RANK["undelivered"] == RANK["failed"]  # final: none replaces another


def test_the_callback_url_carries_the_notification() -> None:
    assert callback_url("https://farm.example/webhooks/twilio/status", RIDE) == \
        f"https://farm.example/webhooks/twilio/status?notification={RIDE}"
    assert callback_url("https://farm.example/cb?k=1", "n1") == "https://farm.example/cb?k=1&notification=n1"
