"""Browser fixtures: the operations console in Debian's Chromium, driven by Playwright, against the
real farm (web, worker and clock from the Procfile, as in `tests/e2e`).

One farm and one Chromium serve the whole package (`scope="package"`): both stop when the last
browser test ends, before other packages' tests use the run's database. Each test gets its own
browser context (no shared cookies or storage) at 1280x800.

Chromium is Debian's (`/usr/bin/chromium`, installed by `scripts/run-tests.sh`); Playwright never
downloads a browser. Where it is missing or can't start, every browser test is skipped with the
reason and the command that installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Error, Page, Playwright, expect, sync_playwright

from app.settings import Settings
from tests.browser.console_support import PAGE_WAIT_MS, PASSWORD, Account, Ledger
from tests.e2e import conftest as e2e
from tests.e2e.conftest import ensure_region, running_farm
from tests.e2e.farm import REPO, Farm

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get install chromium (scripts/run-tests.sh does it when run as root)"
VIEWPORT = {"width": 1280, "height": 800}
#: The region the live map test rides in.
REGION = "BRW"
#: `CONSOLE_SCREENSHOTS=1` copies each page's screenshot into docs/console/ (README's pictures).
SCREENSHOTS_ENV = "CONSOLE_SCREENSHOTS"
SCREENSHOTS_DIR = REPO / "docs" / "console"

#: A failed browser test shows what the farm's processes printed (the e2e hook, registered here by name).
pytest_runtest_makereport = e2e.pytest_runtest_makereport

BROWSER_FARM_ENV = {
    # INFO: the worker's log says when its view of the paused queues changed (test_queues.py).
    "LOG_LEVEL": "INFO",
}


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless (`--no-sandbox`: CI runs the suite as root)."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM}: {INSTALL}")
    try:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
    except Error as error:
        first_line = error.message.splitlines()[0] if error.message else repr(error)
        pytest.skip(f"Chromium at {CHROMIUM} did not start under Playwright ({first_line}); "
                    f"reinstall it with: {INSTALL}")
    expect.set_options(timeout=PAGE_WAIT_MS)
    yield launched
    launched.close()


@pytest.fixture(scope="package")
def farm(browser: Browser, database: str, redis_prefix_cleanup: None, settings: Settings) -> Iterator[Farm]:
    """The real farm (started only once Chromium is known to run), with a region for the map."""
    ensure_region(settings, REGION)
    yield from running_farm(BROWSER_FARM_ENV)


@dataclass(frozen=True)
class Accounts:
    admin: Account
    support: Account
    customer: Account


def create_admin(email: str, *, read_only: bool) -> None:
    """`farmctl users create-admin EMAIL [--read-only]`, the password twice on stdin."""
    farmctl = Path(sys.executable).with_name("farmctl")
    argv = [str(farmctl), "users", "create-admin", email, *(["--read-only"] if read_only else [])]
    done = subprocess.run(argv, input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, text=True,
                          cwd=REPO, env=os.environ.copy(), timeout=60, check=False)
    assert done.returncode == 0, f"farmctl users create-admin failed: {done.stdout}{done.stderr}"


def register(http: httpx.Client, role: str, **extra: Any) -> Account:
    """A new customer or driver with a unique email, logged in."""
    email = f"browser-{role}-{uuid.uuid4().hex[:10]}@example.com"
    response = http.post("/auth/register", json={
        "email": email, "password": PASSWORD, "fullName": f"A {role}", "phone": "+491701234567", "role": role,
        **extra})
    assert response.status_code == 201, response.text
    body = response.json()
    return Account(email, PASSWORD, body["user"]["id"], body["accessToken"])


@pytest.fixture
def http(farm: Farm) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{farm.base_url}/api/v1", timeout=10.0) as client:
        yield client


@pytest.fixture(scope="package")
def accounts(farm: Farm) -> Accounts:
    """A full admin and a read-only one (made by farmctl, as operators make them) and a customer."""
    suffix = uuid.uuid4().hex[:8]
    admin, support = f"ops-{suffix}@example.com", f"support-{suffix}@example.com"
    create_admin(admin, read_only=False)
    create_admin(support, read_only=True)
    with httpx.Client(base_url=f"{farm.base_url}/api/v1", timeout=10.0) as client:
        customer = register(client, "customer")
    return Accounts(Account(admin, PASSWORD), Account(support, PASSWORD), customer)


@pytest.fixture
def page(browser: Browser, farm: Farm, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context at 1280x800 on the farm; a failed test leaves a screenshot of its page
    and the page's errors beside the farm's logs (which are then kept)."""
    context = browser.new_context(viewport=VIEWPORT, base_url=farm.base_url)  # type: ignore[arg-type]
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    failed_before = request.session.testsfailed
    yield opened
    if request.session.testsfailed > failed_before and farm.log_dir is not None:
        farm.keep_logs = True
        shot = farm.log_dir / f"{request.node.name}.png"
        opened.screenshot(path=str(shot), full_page=True)
        print(f"\nthe failed test's page: {opened.url} (screenshot {shot}); page errors: {errors}")
    context.close()


class Screenshots:
    """Each page of the console at 1280x800: always into a temporary folder (so the code runs in every
    CI run), and into docs/console/ only when `CONSOLE_SCREENSHOTS=1` (a normal run leaves the tree
    clean)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.publish = os.environ.get(SCREENSHOTS_ENV) == "1"

    def take(self, page: Page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path))
        if self.publish:
            SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS_DIR / path.name)
        return path


@pytest.fixture(scope="package")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Screenshots:
    return Screenshots(tmp_path_factory.mktemp("console-screenshots"))


@pytest.fixture(scope="package")
def ledger(database: str) -> Iterator[Ledger]:
    opened = Ledger(database)
    yield opened
    opened.close()
