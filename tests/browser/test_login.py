"""Signing in to the console: who may, what they see, and leaving again."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Accounts
from tests.browser.console_support import WORKER_WAIT_MS, Console, Ledger, fail_a_job

pytestmark = pytest.mark.browser


def test_a_wrong_password_and_a_customer_are_refused(page: Page, accounts: Accounts) -> None:
    # Given the console's login form
    console = Console(page)
    console.open()
    expect(console("login-form")).to_be_visible()

    # When an admin mistypes the password, they are refused with the reason
    console.submit_login(accounts.admin, password="not the password")
    expect(console("login-error")).to_be_visible()
    expect(console("login-error")).not_to_be_empty()
    expect(console("whoami")).not_to_be_visible()

    # When a customer signs in with the right password (on a fresh page), they are refused too
    console.open()
    expect(console("login-error")).not_to_be_visible()
    console.submit_login(accounts.customer)
    expect(console("login-error")).to_be_visible()
    expect(console("login-error")).not_to_be_empty()
    expect(console("login-form")).to_be_visible()
    expect(console("whoami")).not_to_be_visible()


def test_a_full_admin_signs_in_sees_the_live_console_and_signs_out(page: Page, accounts: Accounts) -> None:
    # When the full admin signs in
    console = Console(page)
    console.login(accounts.admin)

    # Then the console says who and with which rights, shows its pages, and its socket is live
    expect(console("role-badge")).to_have_text("full")
    for link in ("nav-queues", "nav-failed", "nav-workers", "nav-schedules", "nav-map"):
        expect(console(link)).to_be_visible()
    expect(console("live-status")).to_have_attribute("data-state", "live", timeout=WORKER_WAIT_MS)
    expect(console("queues-table")).to_be_visible()  # `#/queues` is the default page

    # When they sign out, the login form is back (and a reload doesn't sign them in again)
    console("logout").click()
    expect(console("login-form")).to_be_visible()
    expect(console("whoami")).not_to_be_visible()
    page.reload()
    expect(console("login-form")).to_be_visible()


def test_a_read_only_admin_sees_everything_and_can_press_nothing(page: Page, accounts: Accounts,
                                                                 ledger: Ledger) -> None:
    # Given a failed job
    failed_id = fail_a_job(ledger, f"readonly-{uuid.uuid4().hex[:8]}")

    # When the read-only admin signs in
    console = Console(page)
    console.login(accounts.support)

    # Then the badge says so, and every write control is disabled
    expect(console("role-badge")).to_have_text("read-only")
    pause_buttons = console("queue-pause")
    expect(pause_buttons.first).to_be_visible()
    for index in range(pause_buttons.count()):
        expect(pause_buttons.nth(index)).to_be_disabled()
        expect(pause_buttons.nth(index)).to_have_attribute("title", re.compile(r"\S"))  # saying why
    console.go("/failed")
    expect(console.row("failed-row", id=failed_id)).to_be_visible()
    expect(console.row("failed-row", id=failed_id).get_by_test_id("failed-replay")).to_be_disabled()
    expect(console("replay-matching")).to_be_disabled()
    expect(console("purge-matching")).to_be_disabled()
    console.row("failed-row", id=failed_id).get_by_test_id("failed-open").click()
    expect(console("job-detail")).to_be_visible()
    expect(console.button("job-replay")).to_be_disabled()
    console.go("/schedules")
    expect(console("schedule-row").first).to_be_visible()
    expect(console("schedule-run").first).to_be_disabled()
