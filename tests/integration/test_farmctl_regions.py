"""`farmctl regions set`: a region's currency must be one the currency table knows."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from sqlalchemy import select

from models import Region
from scripts.farmctl import main
from tests.integration.conftest import own_session

pytestmark = pytest.mark.usefixtures("clean")  # a migrated, empty database


async def farmctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `farmctl argv` in this process, off the test's event loop (it runs its own)."""
    capsys.readouterr()

    def run() -> int:
        with structlog.testing.capture_logs():
            return main(list(argv), configure_logs=False)

    code = await asyncio.to_thread(run)
    out, err = capsys.readouterr()
    return code, out, err


async def region(code: str) -> tuple[str, str] | None:
    async with own_session() as session:
        row = (await session.execute(select(Region.name, Region.currency).where(Region.code == code))).first()
    return (row[0], row[1]) if row else None


async def test_a_region_is_set_in_a_known_currency(capsys: pytest.CaptureFixture[str]) -> None:
    # When an operator sets a region in Tunisian dinars (lower case is fine)
    code, out, _ = await farmctl(capsys, "regions", "set", "TUN", "--name", "Tunis", "--currency", "tnd",
                                 "--commission", "0.15")

    # Then it is stored in TND
    assert code == 0 and "TND" in out
    assert await region("TUN") == ("Tunis", "TND")


@pytest.mark.parametrize("currency", ["ZZZ", "BGN", "XAU", "EURO"],
                         ids=["not-iso", "withdrawn", "no-minor-unit", "not-a-code"])
async def test_an_unknown_currency_is_refused_and_nothing_changes(
    capsys: pytest.CaptureFixture[str], currency: str
) -> None:
    # Given a region in EUR
    assert (await farmctl(capsys, "regions", "set", "SOF", "--name", "Sofia", "--currency", "EUR",
                          "--commission", "0.15"))[0] == 0

    # When an operator moves it to a currency the table does not know
    code, _, err = await farmctl(capsys, "regions", "set", "SOF", "--name", "Sofia", "--currency", currency,
                                 "--commission", "0.15")

    # Then it is bad usage (exit 2) saying why, and the region keeps its currency
    assert code == 2 and "VALIDATION_ERROR" in err and "ISO 4217" in err
    assert await region("SOF") == ("Sofia", "EUR")
