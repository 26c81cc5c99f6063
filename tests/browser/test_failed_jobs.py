"""Failed jobs in the console: a job the farm's worker failed for good is listed, found by its
argument, opened (arguments and traceback), replayed, and leaves the default list (which hides
replayed jobs); everything matching a filter is replayed after a confirmation showing the count.

Each job here is a real `rides.expire_bids` run by the farm's worker on a malformed ride id (it
raises `ValueError`), written into the ledger with no retry left. Its replay fails the same way
and is recorded as a new failed job: the one replayed still leaves the list.
"""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Accounts, Screenshots
from tests.browser.console_support import FAILING, Console, Ledger, fail_a_job, hash_route

pytestmark = pytest.mark.browser


def test_a_failed_job_is_found_by_its_argument_opened_replayed_and_leaves_the_list(
    page: Page, accounts: Accounts, ledger: Ledger, screenshots: Screenshots,
) -> None:
    # Given two jobs the worker failed for good, one on a ride id carrying our marker
    marker = f"find-{uuid.uuid4().hex[:10]}"
    other_id = fail_a_job(ledger, f"other-{uuid.uuid4().hex[:10]}")
    failed_id = fail_a_job(ledger, marker)

    # When the admin opens the failed jobs, both are listed with their actor
    console = Console(page)
    console.login(accounts.admin, "/failed")
    ours = console.row("failed-row", id=failed_id)
    expect(ours).to_have_attribute("data-actor", FAILING.actor)
    expect(console.row("failed-row", id=other_id)).to_be_visible()
    screenshots.take(page, "failed")

    # When they filter by the argument, only ours is left, and the hash holds the filter
    console("filter-args").fill(marker)
    console("filter-apply").click()
    expect(page).to_have_url(hash_route(rf"/failed\?(.*&)?args={re.escape(marker)}(&.*)?"))
    expect(console("failed-count")).to_have_text("1")
    expect(console("failed-row")).to_have_count(1)
    expect(console("failed-row")).to_have_attribute("data-id", failed_id)

    # When they open it, its arguments and the worker's traceback are shown
    ours.get_by_test_id("failed-open").click()
    expect(page).to_have_url(hash_route(f"/failed/{failed_id}"))
    expect(console("job-detail")).to_be_visible()
    expect(console("job-actor")).to_have_text(FAILING.actor)
    expect(console("job-queue")).to_have_text(FAILING.queue)
    expect(console("job-args")).to_contain_text(f"ride-{marker}")
    expect(console("job-traceback")).to_contain_text("ValueError")

    # When they replay it, the replay is recorded on the job
    console.button("job-replay").click()
    console.toast_ok()
    expect(console("job-replays").get_by_test_id("job-replay")).to_have_count(1)
    screenshots.take(page, "job")

    # Then, back on the list, it is gone (replayed), and the other one is still there
    console("job-back").click()
    expect(console("failed-table")).to_be_visible()
    expect(console.row("failed-row", id=other_id)).to_be_visible()
    expect(console.row("failed-row", id=failed_id)).to_have_count(0)

    # When they include replayed jobs, it is listed again
    console("filter-include-replayed").check()
    console("filter-apply").click()
    expect(console.row("failed-row", id=failed_id)).to_be_visible()


def test_replay_matching_confirms_the_count_then_replays_them_all(
    page: Page, accounts: Accounts, ledger: Ledger,
) -> None:
    # Given two failed jobs whose ride ids carry the same marker, and one that doesn't
    marker = f"bulk-{uuid.uuid4().hex[:10]}"
    ids = [fail_a_job(ledger, f"{marker}-{n}") for n in (1, 2)]
    unrelated = fail_a_job(ledger, f"unrelated-{uuid.uuid4().hex[:10]}")

    # When the admin follows a link to the filtered list
    console = Console(page)
    console.login(accounts.admin, f"/failed?args={marker}")
    expect(console("failed-row")).to_have_count(2)
    for failed_id in ids:
        expect(console.row("failed-row", id=failed_id)).to_be_visible()

    # When they ask to replay everything matching, the dialog shows how many; cancel does nothing
    console("replay-matching").click()
    expect(console("confirm-dialog")).to_be_visible()
    expect(console("confirm-count")).to_have_text("2")
    console("confirm-cancel").click()
    expect(console("confirm-dialog")).not_to_be_visible()
    expect(console("failed-row")).to_have_count(2)

    # When they confirm it, both are replayed and leave the list
    console("replay-matching").click()
    expect(console("confirm-count")).to_have_text("2")
    console("confirm-ok").click()
    console.toast_ok()
    for failed_id in ids:
        expect(console.row("failed-row", id=failed_id)).to_have_count(0)

    # Then the job outside the filter was left alone
    console.go("/failed")
    expect(console.row("failed-row", id=unrelated)).to_be_visible()
