"""The Workers and Schedules pages: the farm's live worker process is listed with its queues, the
clock's periodic jobs are listed, and "run now" queues one at once."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from app.keys import QUEUES, RETENTION_PRUNE, TOKENS_CLEANUP
from tests.browser.conftest import Accounts, Screenshots
from tests.browser.console_support import WORKER_WAIT_MS, Console

pytestmark = pytest.mark.browser

#: Sent by the clock once an hour (and at its start): nothing else is waiting when we run it now.
RUN_NOW = RETENTION_PRUNE.actor


def test_the_workers_page_lists_the_live_worker_and_its_queues(
    page: Page, accounts: Accounts, screenshots: Screenshots,
) -> None:
    # When the admin opens the Workers page
    console = Console(page)
    console.login(accounts.admin, "/workers")

    # Then the farm's worker process is there, beating, on every queue
    worker = console("worker-row").first
    expect(worker).to_be_visible(timeout=WORKER_WAIT_MS)
    expect(worker.get_by_test_id("worker-pid")).to_have_text(re.compile(r"^\d+$"))
    for queue in QUEUES:
        expect(worker.get_by_test_id("worker-queues")).to_contain_text(queue)
    expect(worker.get_by_test_id("worker-heartbeat")).to_contain_text("ago")
    expect(console("autoscaler-table")).to_be_visible()
    screenshots.take(page, "workers")


def test_the_schedules_page_lists_the_clock_jobs_and_runs_one_now(
    page: Page, accounts: Accounts, screenshots: Screenshots,
) -> None:
    # When the admin opens the Schedules page, the clock's jobs are listed
    console = Console(page)
    console.login(accounts.admin, "/schedules")
    for name in (TOKENS_CLEANUP.actor, RUN_NOW):
        expect(console.row("schedule-row", name=name)).to_be_visible()
    row = console.row("schedule-row", name=RUN_NOW)
    expect(row.get_by_test_id("schedule-every")).not_to_be_empty()

    # When they run one now, it is queued, and its last run says it was theirs
    row.get_by_test_id("schedule-run").click()
    console.toast_ok()
    expect(row.get_by_test_id("schedule-last")).to_contain_text("manual", timeout=WORKER_WAIT_MS)
    screenshots.take(page, "schedules")
