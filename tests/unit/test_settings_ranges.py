"""Settings that are fractions or durations refuse values outside their range, by name."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from app.settings import SettingsError, load_settings


@pytest.fixture
def no_env_file(tmp_path: Path) -> Path:
    return tmp_path / "missing.env"


@pytest.mark.parametrize("value", ["-0.1", "1.5", "20", "nan", "inf"])
def test_a_cancellation_fee_rate_outside_0_to_1_is_refused(no_env_file: Path, value: str) -> None:
    with pytest.raises(SettingsError, match="PAYMENT_CANCELLATION_FEE_RATE must be a fraction between 0"):
        load_settings({"PAYMENT_CANCELLATION_FEE_RATE": value}, env_file=no_env_file)


@pytest.mark.parametrize(("value", "rate"), [("0", Decimal(0)), ("1", Decimal(1)), ("0.35", Decimal("0.35"))])
def test_a_cancellation_fee_rate_in_range_is_taken(no_env_file: Path, value: str, rate: Decimal) -> None:
    settings = load_settings({"PAYMENT_CANCELLATION_FEE_RATE": value}, env_file=no_env_file)
    assert settings.pricing.cancellation_fee_rate == rate


def test_hsts_is_on_by_default_off_with_0_and_never_negative(no_env_file: Path) -> None:
    assert load_settings({}, env_file=no_env_file).web.hsts_max_age_s == 31_536_000
    assert load_settings({"HSTS_MAX_AGE": "0"}, env_file=no_env_file).web.hsts_max_age_s == 0
    with pytest.raises(SettingsError, match="HSTS_MAX_AGE must be 0 or more"):
        load_settings({"HSTS_MAX_AGE": "-1"}, env_file=no_env_file)


def test_a_schedule_horizon_within_the_minimum_ahead_is_refused_a_zero_lead_taken(no_env_file: Path) -> None:
    with pytest.raises(SettingsError, match=r"DISPATCH_SCHEDULE_HORIZON_DAYS \(1 days\) must be longer than"):
        load_settings({"DISPATCH_SCHEDULE_HORIZON_DAYS": "1", "DISPATCH_SCHEDULE_MIN_AHEAD": "86400"},
                      env_file=no_env_file)
    settings = load_settings({"DISPATCH_SCHEDULE_LEAD": "0"}, env_file=no_env_file)
    assert (settings.dispatch.schedule_lead_s, settings.dispatch.schedule_min_ahead_s) == (0, 900)
