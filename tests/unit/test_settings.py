"""`load_settings()`: typed values from a mapping over an optional `.env`, with safe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import DEV_JWT_SECRET, SettingsError, load_settings

PRIVATE_SECRET = "a-private-production-secret-0123456789"


@pytest.fixture
def no_env_file(tmp_path: Path) -> Path:
    return tmp_path / "absent.env"


def test_an_empty_environment_gives_the_development_defaults(no_env_file: Path) -> None:
    settings = load_settings({}, env_file=no_env_file)

    assert settings.env == "development"
    assert settings.auth.jwt_secret == DEV_JWT_SECRET
    assert settings.auth.access_token_ttl_s == 900
    assert settings.auth.rate_limit_requests == 20
    assert settings.auth.trusted_proxies == ()
    assert settings.dispatch.radii_km == (5.0, 10.0, 20.0)
    assert settings.dispatch.accept_window_s == 600
    assert settings.stripe.hold_timeout_s == 900
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.redis.key("auth", "x") == "farm:auth:x"
    assert settings.log.format == "console"
    assert settings.web.cors_origins == ()
    assert settings.stripe.enabled is False
    assert settings.twilio.enabled is False


def test_values_are_typed(no_env_file: Path) -> None:
    settings = load_settings(
        {
            "ACCESS_TOKEN_TTL": "60",
            "DB_POOL_TIMEOUT": "2.5",
            "TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::/32",
            "DB_ECHO": "0",
            "CORS_ORIGINS": "https://a.example, https://b.example,",
            "REDIS_PREFIX": "blue",
            "STRIPE_SECRET_KEY": "sk_test_x",
            "DISPATCH_ACCEPT_WINDOW": "1",
            "PAYMENT_HOLD_TIMEOUT": "2",
        },
        env_file=no_env_file,
    )

    assert settings.auth.access_token_ttl_s == 60
    assert settings.db.pool_timeout_s == 2.5
    assert [str(n) for n in settings.auth.trusted_proxies] == ["10.0.0.0/8", "2001:db8::/32"]
    assert settings.db.echo is False
    assert settings.web.cors_origins == ("https://a.example", "https://b.example")
    assert settings.redis.key("rl") == "blue:rl"
    assert settings.stripe.enabled is True
    assert (settings.dispatch.accept_window_s, settings.stripe.hold_timeout_s) == (1, 2)


def test_an_empty_value_means_the_default(no_env_file: Path) -> None:
    settings = load_settings({"ACCESS_TOKEN_TTL": "", "JWT_SECRET": ""}, env_file=no_env_file)

    assert settings.auth.access_token_ttl_s == 900
    assert settings.auth.jwt_secret == DEV_JWT_SECRET


def test_the_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ACCESS_TOKEN_TTL=120\nAUTH_RATE_LIMIT=7\n")

    settings = load_settings({"ACCESS_TOKEN_TTL": "300"}, env_file=env_file)

    assert settings.auth.access_token_ttl_s == 300
    assert settings.auth.rate_limit_requests == 7


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ACCESS_TOKEN_TTL", "fifteen"),
        ("AUTH_RATE_LIMIT", "1.5"),
        ("DB_POOL_TIMEOUT", "soon"),
        ("TRUST_FORWARDED_FOR", "maybe"),
        ("APP_ENV", "staging"),
        ("LOG_LEVEL", "LOUD"),
        ("DISPATCH_ACCEPT_WINDOW", "0"),
        ("PAYMENT_HOLD_TIMEOUT", "-5"),
    ],
)
def test_a_malformed_value_is_refused_by_name(no_env_file: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value}, env_file=no_env_file)


def test_production_refuses_the_development_jwt_secret(no_env_file: Path) -> None:
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        load_settings({"APP_ENV": "production"}, env_file=no_env_file)
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        load_settings({"APP_ENV": "production", "JWT_SECRET": DEV_JWT_SECRET}, env_file=no_env_file)


def test_production_starts_with_a_private_secret_and_logs_json(no_env_file: Path) -> None:
    settings = load_settings({"APP_ENV": "production", "JWT_SECRET": PRIVATE_SECRET}, env_file=no_env_file)

    assert settings.env == "production"
    assert settings.auth.jwt_secret == PRIVATE_SECRET
    assert settings.log.format == "json"


def test_a_short_jwt_secret_is_refused(no_env_file: Path) -> None:
    with pytest.raises(SettingsError, match="32"):
        load_settings({"JWT_SECRET": "too-short"}, env_file=no_env_file)


@pytest.mark.parametrize(
    ("value", "radii"),
    [("3,7.5,15", (3.0, 7.5, 15.0)), (" 2 , 4 ", (2.0, 4.0)), ("12", (12.0,)), ("1,2,", (1.0, 2.0))],
)
def test_dispatch_radii_are_parsed(no_env_file: Path, value: str, radii: tuple[float, ...]) -> None:
    assert load_settings({"DISPATCH_RADII_KM": value}, env_file=no_env_file).dispatch.radii_km == radii


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("10,5", id="decreasing"),
        pytest.param("0,5", id="zero"),
        pytest.param("-1,5", id="negative"),
        pytest.param("5,ten", id="not-a-number"),
        pytest.param(",", id="no-number"),
    ],
)
def test_bad_dispatch_radii_are_refused(no_env_file: Path, value: str) -> None:
    with pytest.raises(SettingsError, match="DISPATCH_RADII_KM"):
        load_settings({"DISPATCH_RADII_KM": value}, env_file=no_env_file)


@pytest.mark.parametrize("value", ["nan", "5,nan,3", "5,5"], ids=["nan", "nan-in-the-middle", "repeated"])
def test_radii_that_are_not_numbers_or_not_strictly_increasing_are_refused(
    no_env_file: Path, value: str
) -> None:
    with pytest.raises(SettingsError, match="DISPATCH_RADII_KM"):
        load_settings({"DISPATCH_RADII_KM": value}, env_file=no_env_file)


def test_retention_and_driver_pruning_have_safe_defaults(no_env_file: Path) -> None:
    settings = load_settings({}, env_file=no_env_file)

    assert settings.dispatch.driver_prune_after_s == 900
    assert settings.clock.driver_prune_interval_s == 60
    assert settings.clock.retention_interval_s == 3600
    retention = settings.retention
    assert (retention.offers_days, retention.notifications_days, retention.stripe_events_days) == (30, 30, 30)
    assert retention.ride_history_days == 0  # kept forever unless asked
    assert (retention.max_rows_per_run, retention.batch_size) == (10_000, 1_000)


def test_retention_days_are_read_and_zero_keeps_forever(no_env_file: Path) -> None:
    settings = load_settings({"RETENTION_OFFERS_DAYS": "0", "RETENTION_RIDE_HISTORY_DAYS": "365",
                              "RETENTION_MAX_ROWS_PER_RUN": "500", "RETENTION_BATCH_SIZE": "100",
                              "DRIVER_PRUNE_AFTER": "600"}, env_file=no_env_file)

    assert settings.retention.offers_days == 0
    assert settings.retention.ride_history_days == 365
    assert (settings.retention.max_rows_per_run, settings.retention.batch_size) == (500, 100)
    assert settings.dispatch.driver_prune_after_s == 600


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        pytest.param({"DRIVER_PRUNE_AFTER": "120"}, "DRIVER_PRUNE_AFTER", id="prune-not-after-stale"),
        pytest.param({"DRIVER_STALE_AFTER": "1800"}, "DRIVER_PRUNE_AFTER", id="stale-above-prune"),
        pytest.param({"RETENTION_NOTIFICATIONS_DAYS": "-1"}, "RETENTION_NOTIFICATIONS_DAYS", id="negative"),
        pytest.param({"RETENTION_STRIPE_EVENTS_DAYS": "2"}, "RETENTION_STRIPE_EVENTS_DAYS",
                     id="stripe-events-shorter-than-redelivery"),
        pytest.param({"RETENTION_BATCH_SIZE": "0"}, "RETENTION_BATCH_SIZE", id="no-batch"),
    ],
)
def test_pruning_settings_that_would_prune_too_soon_are_refused(
    no_env_file: Path, environ: dict[str, str], name: str
) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(environ, env_file=no_env_file)


def test_phone_verification_is_required_by_default_only_in_production(no_env_file: Path) -> None:
    secret = {"JWT_SECRET": "a-private-production-secret-of-enough-length-0123"}
    for env, required in (("development", False), ("test", False), ("production", True)):
        settings = load_settings({"APP_ENV": env, **secret}, env_file=no_env_file)
        assert settings.phone.verification_required is required, env
        assert settings.twilio.verified_numbers_only is required, env
    forced = load_settings({"APP_ENV": "development", "PHONE_VERIFICATION_REQUIRED": "true"},
                           env_file=no_env_file)
    assert forced.phone.verification_required and forced.twilio.verified_numbers_only


def test_write_limits_and_the_open_ride_cap_are_settings_and_0_turns_them_off(no_env_file: Path) -> None:
    defaults = load_settings({}, env_file=no_env_file)
    assert defaults.limits.open_rides_per_customer == 100 and defaults.limits.rides.enabled
    assert defaults.db.lock_timeout_ms == 2000
    production = load_settings({"APP_ENV": "production", "JWT_SECRET": PRIVATE_SECRET}, env_file=no_env_file)
    assert production.limits.open_rides_per_customer == 5
    assert (production.limits.rides.rate_per_s, production.limits.rides.burst) == (2.0, 20)
    settings = load_settings({"RIDE_RATE_LIMIT": "0", "LOCATION_RATE_LIMIT": "2.5",
                              "LOCATION_RATE_BURST": "4", "OPEN_RIDES_PER_CUSTOMER": "0"},
                             env_file=no_env_file)
    assert not settings.limits.rides.enabled
    assert (settings.limits.location.rate_per_s, settings.limits.location.burst) == (2.5, 4)
    assert settings.limits.open_rides_per_customer == 0
    refused = (("WRITE_RATE_LIMIT", "-1"), ("OPEN_RIDES_PER_CUSTOMER", "-2"), ("RIDE_RATE_BURST", "0"))
    for name, value in refused:
        with pytest.raises(SettingsError, match=name):
            load_settings({name: value}, env_file=no_env_file)
