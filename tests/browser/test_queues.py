"""Pausing a queue from the console: the farm's worker takes none of its jobs until it is resumed.

"Not taken" is shown, never hoped for: once the worker has said its view of the paused queues
changed, a job written for the queue waits in Redis as `ready` (the console's row counts it) and
its ledger row stays unfinished for three of that view's refresh intervals; after the resume the
worker runs it (its row is done) and the row's count goes back to zero.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from app.keys import PAYMENTS_CAPTURE
from app.services import audit, queue_pauses
from tests.browser.conftest import Accounts, Screenshots
from tests.browser.console_support import (
    WORKER_WAIT_MS,
    Console,
    Ledger,
    held,
    wait_until,
    worker_sees_paused,
)
from tests.e2e.farm import Farm

pytestmark = pytest.mark.browser

#: A queue nothing else in this farm writes to, and a job on it that finishes at once: the capture
#: of a ride that has no payment (nothing to take, the run is done).
QUEUE, JOB = PAYMENTS_CAPTURE.queue, PAYMENTS_CAPTURE
HELD_S = 3 * queue_pauses.REFRESH_S


@pytest.fixture
def resumed_afterwards(ledger: Ledger) -> Iterator[None]:
    """Whatever the test did, the queue runs again when it ends (the farm serves other tests)."""
    yield
    with ledger.session() as session, session.begin():
        queue_pauses.resume(session, QUEUE, audit.Operator.at_terminal("browser-tests"))


def test_a_paused_queue_holds_its_jobs_until_it_is_resumed(
    page: Page, accounts: Accounts, farm: Farm, ledger: Ledger, screenshots: Screenshots,
    resumed_afterwards: None,
) -> None:
    # Given the queues page, the payments queue running
    console = Console(page)
    console.login(accounts.admin, "/queues")
    row = console.row("queue-row", queue=QUEUE)
    expect(row).to_have_attribute("data-paused", "false")
    expect(row.get_by_test_id("queue-sparkline")).to_be_visible()
    expect(console("workers-alive")).to_have_text("1", timeout=WORKER_WAIT_MS)  # the farm runs one

    # When the admin pauses it, with a reason
    row.get_by_test_id("queue-pause").click()
    console("pause-reason").fill("browser test: payments on hold")
    console("pause-confirm").click()

    # Then the row says paused and offers resume, and the worker's view has taken it in
    expect(row).to_have_attribute("data-paused", "true")
    console.toast_ok()
    expect(row.get_by_test_id("queue-resume")).to_be_enabled()
    wait_until(lambda: worker_sees_paused(farm, QUEUE), what=f"the worker's paused queues list {QUEUE}")

    # When a job is written for the paused queue
    message_id = ledger.write(JOB, str(uuid.uuid4()))

    # Then it waits in Redis (the row counts it ready) and the worker does not take it
    expect(row.get_by_test_id("queue-ready")).to_have_text("1", timeout=WORKER_WAIT_MS)
    held(lambda: ledger.state(message_id) in ("waiting", "handed"),
         what=f"a {JOB.actor} job stays untaken while {QUEUE} is paused", for_s=HELD_S)
    screenshots.take(page, "queues")

    # When the admin resumes the queue, the worker runs the job and the queue drains
    row.get_by_test_id("queue-resume").click()
    expect(row).to_have_attribute("data-paused", "false")
    wait_until(lambda: ledger.state(message_id) == "done", what=f"the {JOB.actor} job runs after the resume")
    expect(row.get_by_test_id("queue-ready")).to_have_text("0", timeout=WORKER_WAIT_MS)
    expect(row.get_by_test_id("queue-pause")).to_be_enabled()
