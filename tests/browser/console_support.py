"""What the browser tests share: the console as a user drives it (found only by the `data-testid`s of
docs/console-contract.md), the job ledger as a worker sees it, and bounded waits."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from playwright.sync_api import Locator, Page, expect
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.keys import RIDES_EXPIRE_BIDS, JobKind
from app.outbox import job_insert
from models import Job
from models.jobs import FailedJob
from tests.e2e.farm import Farm

T = TypeVar("T")

#: How long an assertion waits for what a worker or the clock must do first (a busy 2-core CI box).
WORKER_WAIT_MS = 20_000
#: ... and for what only the web process and the page do.
PAGE_WAIT_MS = 10_000
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    id: str = ""
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


class Console:
    """The operations console in one browser tab."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def __call__(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    def open(self, route: str = "") -> None:
        """Load the console (a fresh document) at a hash route such as `/failed?args=x`."""
        self.page.goto(f"/console/#{route}" if route else "/console/")

    def go(self, route: str) -> None:
        """Follow a hash route in the page already loaded (no reload)."""
        self.page.evaluate("route => { window.location.hash = route; }", f"#{route}")

    def submit_login(self, account: Account, password: str | None = None) -> None:
        self("login-email").fill(account.email)
        self("login-password").fill(password if password is not None else account.password)
        self("login-submit").click()

    def login(self, account: Account, route: str = "") -> None:
        """Log in from the login form and wait until the console says who is in."""
        self.open(route)
        self.submit_login(account)
        expect(self("whoami")).to_have_text(account.email)

    def row(self, testid: str, **data: str) -> Locator:
        """The element `testid` whose `data-*` attributes have these values (`data_id="…"`)."""
        attributes = "".join(f'[data-{name.replace("_", "-")}="{value}"]' for name, value in data.items())
        return self.page.locator(f'[data-testid="{testid}"]{attributes}')

    def button(self, testid: str) -> Locator:
        """The button `testid` (the contract gives a replay's row and the replay button one name)."""
        return self(testid).and_(self.page.get_by_role("button"))

    def toast_ok(self) -> None:
        """The last action's outcome is shown, and it went well."""
        expect(self("toast")).to_be_visible()
        expect(self("toast")).to_have_attribute("data-kind", "ok")


def hash_route(pattern: str) -> re.Pattern[str]:
    """The page's URL ends in this hash route (a regular expression after `#`)."""
    return re.compile(rf".*/console/?#{pattern}$")


# --- waiting ---------------------------------------------------------------------------------------
def wait_until(check: Callable[[], T | None], *, what: str, timeout_s: float = WORKER_WAIT_MS / 1000) -> T:
    """Poll `check()` until it returns something other than None/False; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.1)


def held(check: Callable[[], bool], *, what: str, for_s: float) -> None:
    """`check()` is true now and stays true for `for_s` seconds."""
    until = time.monotonic() + for_s
    while time.monotonic() < until:
        assert check(), what
        time.sleep(0.1)


# --- the job ledger --------------------------------------------------------------------------------
class Ledger:
    """The run's job ledger, read and written as the farm's own code does (`app.outbox`)."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url)
        self._sessions = sessionmaker(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def write(self, kind: JobKind, *args: Any, options: dict[str, Any] | None = None) -> str:
        """A job of `kind` for the farm's workers (the relay hands it over at once); its message id."""
        statement, message_id = job_insert(kind, args, {}, options=options)
        with self._sessions.begin() as session:
            session.execute(statement)
        return str(message_id)

    def state(self, message_id: str) -> str | None:
        with self._sessions() as session:
            return session.scalar(select(Job.state).where(Job.message_id == uuid.UUID(message_id)))

    def failed_job(self, message_id: str) -> str | None:
        """The id of the failed-jobs record the worker wrote for this message, if it wrote one."""
        with self._sessions() as session:
            found = session.scalar(select(FailedJob.id).where(FailedJob.message_id == message_id))
            return None if found is None else str(found)

    def session(self) -> Session:
        return self._sessions()


# --- the worker's view of paused queues ------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PAUSED = re.compile(r"\bpaused=\[([^\]]*)\]")


def worker_sees_paused(farm: Farm, queue: str) -> bool:
    """Whether the worker's last word on its paused queues (`queue_pauses.changed`, said when its view
    changes) lists `queue`; False when it never said anything."""
    lines = [line for line in _ANSI.sub("", farm.process("worker").output()).splitlines()
             if "queue_pauses.changed" in line]
    if not lines:
        return False
    match = _PAUSED.search(lines[-1])
    return match is not None and f"'{queue}'" in match.group(1)


# --- failed jobs -----------------------------------------------------------------------------------
#: A real actor that fails for good on a malformed ride id (`uuid.UUID` refuses it): with no retry
#: left in its options, the worker records it as a failed job on its first run.
FAILING = RIDES_EXPIRE_BIDS


def fail_a_job(ledger: Ledger, marker: str) -> str:
    """Have the farm's worker fail `rides.expire_bids` on ride "ride-<marker>"; the failed job's id."""
    message_id = ledger.write(FAILING, f"ride-{marker}", 1, options={"max_retries": 0})
    return wait_until(lambda: ledger.failed_job(message_id),
                      what=f"the worker records {FAILING.actor}(ride-{marker}) as failed")
