"""Payments against real PostgreSQL and Redis, the real stripe SDK and a local Stripe fake.

The fake keeps PaymentIntents, charges, refunds and Connect accounts, checks idempotency keys as
Stripe does, and emits the events Stripe would; webhooks are signed with Stripe's real scheme.
"""

from __future__ import annotations

import random
import time
import uuid

import pytest
from sqlalchemy import select

from app.services import payments
from models import Job, NotificationRequest
from tests.integration.conftest import Client
from tests.integration.market_support import Market, Person, assert_error, customer, market
from tests.integration.payments_support import STRIPE_WEBHOOK, PayBench, paid_settings, pay, stripe_fake

__all__ = ["customer", "market", "paid_settings", "pay", "stripe_fake"]  # fixtures



# --- the paid flow ---------------------------------------------------------------------------------
async def test_card_ride_is_held_captured_and_split_in_the_ledger(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id = await pay.accepted(customer, driver, amount=2500)

    payment = pay.payment(ride_id)
    assert (payment.status, payment.amount, payment.application_fee) == ("pending", 2500, 375)  # 15 %
    assert pay.queued("payments.authorize", ride_id) == 1  # written in the accept's transaction
    pay.run_queued("payments.authorize")
    intent = pay.fake.payment_intents[pay.payment(ride_id).payment_intent_id or ""]
    assert intent["capture_method"] == "manual"
    assert intent["application_fee_amount"] == 375
    assert intent["transfer_data"]["destination"] == pay.driver_account(driver)

    response = await pay.api.post(f"/api/v1/payments/{ride_id}/intent", headers=customer.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"clientSecret": intent["client_secret"], "status": "requires_payment_method"}
    pay.sdk.v1.payment_intents.confirm(intent["id"], {"payment_method": "pm_card_visa"})
    await pay.deliver_and_handle(pay.fake.events_of_type("payment_intent.amount_capturable_updated")[-1])
    assert pay.payment(ride_id).status == "authorized"

    await pay.market.walk(driver, ride_id, "COMPLETED")
    assert pay.run_queued("payments.capture") == 1
    payment = pay.payment(ride_id)
    assert (payment.status, payment.amount_captured) == ("captured", 2500)
    assert pay.fake.payment_intents[intent["id"]]["status"] == "succeeded"
    assert pay.ledger(ride_id) == {"driver_earning": 2125, "platform_commission": 375}
    assert pay.balance(ride_id) == pay.stripe_net(intent["id"]) == 2500
    assert ("payment:update", "captured") in [(e, p["status"]) for e, p, _ in pay.emitted]

    earnings = await pay.api.get("/api/v1/drivers/me/earnings", headers=driver.headers)
    assert earnings.status_code == 200, earnings.text
    body = earnings.json()
    assert body["totals"] == [{"currency": "EUR", "earnings": 2125, "refunds": 0, "cashCommissionOwed": 0,
                               "net": 2125}]
    assert [item["amount"] for item in body["items"]] == [{"amount": 2125, "currency": "EUR"}]


async def test_cancel_before_the_driver_sets_off_releases_the_hold(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id, intent_id = await pay.held(customer, driver)

    response = await pay.market.cancel(customer, ride_id, "changed my mind")
    assert response.status_code == 200, response.text
    assert pay.run_queued("payments.cancel") == 1
    assert pay.payment(ride_id).status == "released"
    assert pay.fake.payment_intents[intent_id]["status"] == "canceled"
    assert pay.ledger(ride_id) == {}
    assert pay.balance(ride_id) == pay.stripe_net(intent_id) == 0


async def test_cancel_after_the_driver_set_off_captures_the_cancellation_fee(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id, intent_id = await pay.held(customer, driver, amount=2500)
    await pay.market.walk(driver, ride_id, "DRIVER_ARRIVING")

    response = await pay.market.cancel(customer, ride_id)
    assert response.status_code == 200, response.text
    pay.run_queued("payments.cancel")
    payment = pay.payment(ride_id)
    assert (payment.status, payment.amount_captured) == ("captured", 500)  # 20 % of 2500
    assert pay.fake.payment_intents[intent_id]["amount_received"] == 500
    assert pay.ledger(ride_id) == {"driver_earning": 425, "platform_commission": 75}
    assert pay.balance(ride_id) == pay.stripe_net(intent_id) == 500


async def test_cash_ride_records_the_commission_the_driver_owes(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.market.driver()  # no Connect account needed for cash
    ride_id = await pay.accepted(customer, driver, amount=4000, card=False)
    calls_before = len(pay.fake.calls)

    await pay.market.walk(driver, ride_id, "COMPLETED")
    pay.run_queued("payments.capture")
    assert pay.payment(ride_id).status == "cash_due"
    assert pay.ledger(ride_id) == {"cash_commission_owed": 600}
    assert pay.balance(ride_id) == 0  # no money moved through Stripe
    assert len(pay.fake.calls) == calls_before
    earnings = (await pay.api.get("/api/v1/drivers/me/earnings", headers=driver.headers)).json()
    assert earnings["totals"][0]["cashCommissionOwed"] == 600
    assert earnings["totals"][0]["net"] == -600


# --- idempotency -------------------------------------------------------------------------------------
async def test_a_hold_job_delivered_three_times_creates_one_payment_intent(pay: PayBench) -> None:
    """Twice the run reaches Stripe and dies before its commit; the third commits: one PaymentIntent."""
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id = await pay.accepted(customer, driver)

    for _ in range(2):
        pay.run(payments.authorize, uuid.UUID(ride_id), commit=False)
        assert pay.payment(ride_id).payment_intent_id is None  # the run's changes were lost
    pay.run(payments.authorize, uuid.UUID(ride_id))
    pay.run(payments.authorize, uuid.UUID(ride_id))  # a redelivery after the commit: nothing to do

    creates = [c for c in pay.fake.calls if c.method == "POST" and c.path == "/v1/payment_intents"]
    assert len(creates) == 3
    assert {c.idempotency_key for c in creates} == {f"ride:{ride_id}:hold"}
    assert pay.fake.count("POST", "/v1/payment_intents") == 1
    assert len(pay.fake.payment_intents) == 1
    assert pay.payment(ride_id).payment_intent_id == next(iter(pay.fake.payment_intents))


async def test_the_intent_route_and_the_hold_job_share_one_payment_intent(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id = await pay.accepted(customer, driver)

    first = await pay.api.post(f"/api/v1/payments/{ride_id}/intent", headers=customer.headers)
    assert first.status_code == 200, first.text
    pay.run_queued("payments.authorize")  # the job comes after the route: same key, same answer
    again = await pay.api.post(f"/api/v1/payments/{ride_id}/intent", headers=customer.headers)
    assert again.json() == first.json()
    assert len(pay.fake.payment_intents) == 1


async def test_a_capture_replayed_after_it_reached_stripe_captures_once(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id, intent_id = await pay.held(customer, driver)
    await pay.market.walk(driver, ride_id, "COMPLETED")

    pay.run(payments.capture, uuid.UUID(ride_id), commit=False)  # Stripe captured; our commit was lost
    assert pay.fake.payment_intents[intent_id]["status"] == "succeeded"
    assert pay.ledger(ride_id) == {}
    pay.run(payments.capture, uuid.UUID(ride_id))  # the retry (or a replay by an admin)
    pay.run(payments.capture, uuid.UUID(ride_id))
    assert pay.fake.count("POST", f"/v1/payment_intents/{intent_id}/capture") == 1
    assert pay.ledger(ride_id) == {"driver_earning": 2125, "platform_commission": 375}
    assert pay.balance(ride_id) == pay.stripe_net(intent_id) == 2500


async def test_stripe_down_is_retried_not_swallowed(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id = await pay.accepted(customer, driver)

    pay.fake.fail_next(1, status=500)
    with pytest.raises(payments.ProviderError) as raised:
        pay.run(payments.authorize, uuid.UUID(ride_id))
    assert raised.value.transient  # the job's retry policy retries it
    assert pay.payment(ride_id).payment_intent_id is None
    pay.run(payments.authorize, uuid.UUID(ride_id))
    assert pay.payment(ride_id).status == "requires_payment_method"
    assert len(pay.fake.payment_intents) == 1


# --- refusals ----------------------------------------------------------------------------------------
async def test_the_driver_cannot_set_off_until_the_card_hold_is_authorized(pay: PayBench) -> None:
    # Given a card ride accepted, its hold created but not yet confirmed by the customer
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id = await pay.accepted(customer, driver)
    pay.run_queued("payments.authorize")

    # When the driver sets off: refused, naming why, and nothing changed
    details = assert_error(await pay.market.move(driver, ride_id, "DRIVER_ARRIVING"), 409, "CONFLICT")
    assert details == {"reason": "PAYMENT_NOT_AUTHORIZED", "paymentStatus": "requires_payment_method"}
    ride = await pay.market.read(customer, ride_id)
    assert (ride["status"], len(ride["history"])) == ("BID_ACCEPTED", 2)
    # (a step further along is still the state machine's refusal)
    assert_error(await pay.market.move(driver, ride_id, "PICKUP_ARRIVED"), 409, "INVALID_TRANSITION")

    # When the customer's card is confirmed and Stripe says the fare is held
    intent_id = pay.payment(ride_id).payment_intent_id or ""
    pay.sdk.v1.payment_intents.confirm(intent_id, {"payment_method": "pm_card_visa"})
    await pay.deliver_and_handle(pay.fake.events_of_type("payment_intent.amount_capturable_updated")[-1])

    # Then the driver sets off
    response = await pay.market.move(driver, ride_id, "DRIVER_ARRIVING")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "DRIVER_ARRIVING"


async def test_a_driver_without_payouts_cannot_be_accepted_for_a_card_ride(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.market.driver()
    ride = await pay.card_ride(customer)
    bid = await pay.market.offered_bid(driver, ride["id"])
    response = await pay.market.accept(customer, ride["id"], bid["id"])
    details = assert_error(response, 409, "CONFLICT")
    assert details["reason"] == "DRIVER_PAYOUTS_NOT_ENABLED"
    assert (await pay.market.read(customer, ride["id"]))["status"] == "PENDING_BIDS"
    assert await pay.market.active_ride_of(driver) is None


async def test_card_rides_are_refused_with_how_to_enable_them_when_stripe_is_off(
    market: Market, customer: Person, api: Client,
) -> None:
    body = {"pickup": {"lat": 52.52, "lng": 13.405}, "dropoff": {"lat": 52.5, "lng": 13.42},
            "vehicleType": "van", "region": "BER", "paymentMethod": "card"}
    response = await api.post("/api/v1/rides", json=body, headers=customer.headers)
    assert assert_error(response, 409, "CONFLICT") == {"reason": "PAYMENTS_DISABLED"}
    assert "STRIPE_SECRET_KEY" in response.json()["error"]["message"]
    response = await api.post("/api/v1/rides", json={**body, "paymentMethod": "cash"},
                              headers=customer.headers)
    assert response.status_code == 201, response.text


async def test_payouts_onboarding_is_refused_with_how_to_enable_it_when_stripe_is_off(
    market: Market, api: Client,
) -> None:
    driver = await market.driver()

    response = await api.post("/api/v1/drivers/me/payouts/onboard", headers=driver.headers)

    assert assert_error(response, 409, "CONFLICT") == {"reason": "PAYMENTS_DISABLED"}
    assert "STRIPE_SECRET_KEY" in response.json()["error"]["message"]


# --- webhooks ------------------------------------------------------------------------------------------
async def test_webhooks_with_a_bad_or_old_signature_store_nothing(pay: PayBench) -> None:
    account = pay.fake.seed_account()
    event = pay.fake.set_account(account["id"], payouts_enabled=False)

    forged = await pay.deliver(event, secret="whsec_someone_else")
    assert_error(forged, 400, "INVALID_SIGNATURE")
    stale = await pay.deliver(event, timestamp=int(time.time()) - 3600)
    assert_error(stale, 400, "INVALID_SIGNATURE")
    unsigned = await pay.api.post("/webhooks/stripe", content=b"{}",
                                  headers={"Content-Type": "application/json"})
    assert_error(unsigned, 400, "INVALID_SIGNATURE")
    assert pay.stored_events() == 0
    assert pay.queued("payments.handle_event") == 0


@pytest.mark.parametrize("path", [STRIPE_WEBHOOK, "/webhooks/stripe"], ids=["api-v1", "root-alias"])
async def test_stripe_webhooks_are_taken_at_the_contract_path_and_at_the_root_alias(
    pay: PayBench, path: str,
) -> None:
    account = pay.fake.seed_account()
    event = pay.fake.set_account(account["id"], payouts_enabled=False)

    # A bad signature is 400 and stores nothing
    forged = await pay.deliver(event, secret="whsec_someone_else", path=path)
    assert_error(forged, 400, "INVALID_SIGNATURE")
    assert pay.stored_events() == 0

    # A good one is stored, with its job
    stored = await pay.deliver(event, path=path)
    assert stored.status_code == 200, stored.text
    assert stored.json() == {"received": True, "duplicate": False}
    assert pay.stored_events() == 1
    assert pay.queued("payments.handle_event") == 1


async def test_a_replayed_event_id_is_stored_and_handled_once(pay: PayBench) -> None:
    account = pay.fake.seed_account(ready=False)
    event = pay.fake.set_account(account["id"], charges_enabled=True)
    first = await pay.deliver(event)
    again = await pay.deliver(event)
    assert first.status_code == again.status_code == 200
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert pay.stored_events() == 1
    assert pay.queued("payments.handle_event") == 1


async def test_out_of_order_events_settle_on_stripes_current_state(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id = await pay.accepted(customer, driver)
    pay.run_queued("payments.authorize")
    intent_id = pay.payment(ride_id).payment_intent_id or ""
    pay.sdk.v1.payment_intents.confirm(intent_id, {"payment_method": "pm_card_visa"})
    held_event = pay.fake.events_of_type("payment_intent.amount_capturable_updated")[-1]
    pay.sdk.v1.payment_intents.capture(intent_id)  # captured from the dashboard, say
    succeeded_event = pay.fake.events_of_type("payment_intent.succeeded")[-1]

    await pay.deliver_and_handle(succeeded_event)  # the later event arrives first
    await pay.deliver_and_handle(held_event)       # the earlier one must not undo it
    payment = pay.payment(ride_id)
    assert (payment.status, payment.amount_captured) == ("captured", 2500)
    assert pay.ledger(ride_id) == {"driver_earning": 2125, "platform_commission": 375}


async def test_a_declined_card_marks_the_payment_and_tells_the_customer(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id = await pay.accepted(customer, driver)
    pay.run_queued("payments.authorize")
    intent_id = pay.payment(ride_id).payment_intent_id or ""
    with pytest.raises(Exception):  # noqa: B017 - the SDK's CardError, as Stripe.js would show it
        pay.sdk.v1.payment_intents.confirm(intent_id, {"payment_method": "pm_card_chargeDeclined"})
    await pay.deliver_and_handle(pay.fake.events_of_type("payment_intent.payment_failed")[-1])

    payment = pay.payment(ride_id)
    assert payment.status == "requires_payment_method"
    assert payment.last_error
    with pay.market.db() as session:
        templates = session.scalars(select(NotificationRequest.template).where(
            NotificationRequest.user_id == uuid.UUID(customer.id))).all()
    assert "payment_failed" in templates
    assert ("payment:update", "requires_payment_method") in [(e, p["status"]) for e, p, _ in pay.emitted]


async def test_disputes_and_connect_account_updates_are_applied(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id, intent_id = await pay.held(customer, driver)
    await pay.market.walk(driver, ride_id, "COMPLETED")
    pay.run_queued("payments.capture")

    await pay.deliver_and_handle(pay.fake.dispute(intent_id))
    assert pay.payment(ride_id).disputed
    assert ("payment:update", "disputed") in [(e, p["status"]) for e, p, _ in pay.emitted]

    account = pay.driver_account(driver) or ""
    await pay.deliver_and_handle(pay.fake.set_account(account, payouts_enabled=False))
    ride = await pay.card_ride(customer)
    bid = await pay.market.offered_bid(driver, ride["id"])
    assert_error(await pay.market.accept(customer, ride["id"], bid["id"]), 409, "CONFLICT")


# --- refunds and the ledger's balance ------------------------------------------------------------------
async def test_refunds_come_back_from_driver_and_platform_and_are_ledgered_once(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    admin = await pay.market.admin()
    ride_id, intent_id = await pay.held(customer, driver, amount=2000)
    await pay.market.walk(driver, ride_id, "COMPLETED")
    pay.run_queued("payments.capture")

    response = await pay.api.post(f"/api/v1/admin/rides/{ride_id}/refund", json={"amount": 1000},
                                  headers=admin.headers)
    assert response.status_code == 200, response.text
    pay.run_queued("payments.refund")
    payment = pay.payment(ride_id)
    assert (payment.status, payment.amount_refunded) == ("partially_refunded", 1000)
    assert pay.ledger(ride_id) == {"driver_earning": 1700, "platform_commission": 300,
                                   "driver_refund": -850, "platform_refund": -150}
    # Stripe's own charge.refunded for the same refund changes nothing more
    await pay.deliver_and_handle(pay.fake.events_of_type("charge.refunded")[-1])
    assert pay.payment(ride_id).amount_refunded == 1000
    assert pay.balance(ride_id) == pay.stripe_net(intent_id) == 1000

    # a refund made in Stripe's dashboard arrives only as a webhook
    pay.sdk.v1.refunds.create({"payment_intent": intent_id, "amount": 400})
    await pay.deliver_and_handle(pay.fake.events_of_type("charge.refunded")[-1])
    assert pay.payment(ride_id).amount_refunded == 1400
    assert pay.balance(ride_id) == pay.stripe_net(intent_id) == 600


async def test_a_three_decimal_fare_is_split_and_refunded_in_amounts_stripe_takes(pay: PayBench) -> None:
    # Given a region charging in TND (three decimals; Stripe wants the last digit 0)
    await pay.market.region_currency("TND")
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    admin = await pay.market.admin()

    # When a 12.340 TND card ride is completed
    ride_id, intent_id = await pay.held(customer, driver, amount=12340, currency="TND")
    # Then the 15 % commission asked of Stripe is rounded down to 1.850 TND (not 1.851)
    assert pay.fake.payment_intents[intent_id]["application_fee_amount"] == 1850
    await pay.market.walk(driver, ride_id, "COMPLETED")
    pay.run_queued("payments.capture")
    assert pay.ledger(ride_id) == {"driver_earning": 10490, "platform_commission": 1850}

    # When 5.000 TND are refunded, then the rest from Stripe's dashboard
    response = await pay.api.post(f"/api/v1/admin/rides/{ride_id}/refund", json={"amount": 5000},
                                  headers=admin.headers)
    assert response.status_code == 200, response.text
    pay.run_queued("payments.refund")
    # Then the platform gives back its fee's share rounded up to a valid amount (749.6 → 750)
    assert pay.ledger(ride_id) == {"driver_earning": 10490, "platform_commission": 1850,
                                   "driver_refund": -4250, "platform_refund": -750}
    pay.sdk.v1.refunds.create({"payment_intent": intent_id, "amount": 7340})
    await pay.deliver_and_handle(pay.fake.events_of_type("charge.refunded")[-1])
    # And at the full refund the platform has given back exactly its fee, the driver its share
    assert pay.ledger(ride_id) == {"driver_earning": 10490, "platform_commission": 1850,
                                   "driver_refund": -10490, "platform_refund": -1850}
    assert pay.balance(ride_id) == pay.stripe_net(intent_id) == 0


async def test_a_late_cancellation_fee_in_isk_is_whole_kronur(pay: PayBench) -> None:
    # Given a region charging in ISK (two decimals at Stripe, whole krónur only)
    await pay.market.region_currency("ISK")
    customer = await pay.market.customer()
    driver = await pay.payable_driver()
    ride_id, intent_id = await pay.held(customer, driver, amount=50900, currency="ISK")

    # When the customer cancels once the driver is at the pickup
    await pay.market.walk(driver, ride_id, "PICKUP_ARRIVED")
    await pay.market.cancel(customer, ride_id)
    pay.run_queued("payments.cancel")

    # Then 20 % of 509 ISK is rounded down to 101 ISK, and its commission to 15 ISK
    payment = pay.payment(ride_id)
    assert (payment.status, payment.amount_captured) == ("captured", 10100)
    assert pay.ledger(ride_id) == {"driver_earning": 8600, "platform_commission": 1500}
    assert pay.balance(ride_id) == pay.stripe_net(intent_id) == 10100


async def test_the_ledger_balances_with_stripe_over_many_rides(pay: PayBench) -> None:
    """Completed, cancelled early and late, refunded in part or in full: for every ride the ledger
    sums to what Stripe captured minus what it refunded."""
    rng = random.Random(7)
    customer = await pay.market.customer()
    admin = await pay.market.admin()
    drivers = [await pay.payable_driver() for _ in range(3)]
    checked: list[tuple[str, str]] = []
    for n in range(12):
        driver = drivers[n % len(drivers)]
        amount = rng.randrange(700, 9000)
        ride_id, intent_id = await pay.held(customer, driver, amount=amount)
        outcome = n % 4
        if outcome == 0:
            await pay.market.cancel(customer, ride_id)
            pay.run_queued("payments.cancel")
        elif outcome == 1:
            await pay.market.walk(driver, ride_id, "PICKUP_ARRIVED")
            await pay.market.cancel(customer, ride_id)
            pay.run_queued("payments.cancel")
        else:
            await pay.market.walk(driver, ride_id, "COMPLETED")
            pay.run_queued("payments.capture")
            if outcome == 3:
                part = rng.choice([None, rng.randrange(1, amount)])
                await pay.api.post(f"/api/v1/admin/rides/{ride_id}/refund",
                                   json={"amount": part} if part else {}, headers=admin.headers)
                pay.run_queued("payments.refund")
        checked.append((ride_id, intent_id))
    for ride_id, intent_id in checked:
        payment = pay.payment(ride_id)
        assert pay.balance(ride_id) == payment.amount_captured - payment.amount_refunded \
            == pay.stripe_net(intent_id), ride_id
    with pay.market.db() as session:
        leftover = session.scalars(
            select(Job.actor).where(Job.actor.like("payments.%"))).all()
    assert leftover == []


async def test_the_ledger_refuses_edits(pay: PayBench) -> None:
    customer = await pay.market.customer()
    driver = await pay.market.driver()
    ride_id = await pay.accepted(customer, driver, card=False)
    await pay.market.walk(driver, ride_id, "COMPLETED")
    pay.run_queued("payments.capture")
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError, match="append-only"), pay.market.db.begin() as session:
        session.execute(text("UPDATE ledger_entries SET amount = 0"))
    assert pay.ledger(ride_id) == {"cash_commission_owed": 375}
