"""Typed settings, grouped per concern and built once per process.

Values come from the environment, then from an optional `.env` file in the working directory
(the environment wins), then from defaults that work on a development machine with PostgreSQL
and Redis on loopback. Nothing else in the code base reads `os.environ`.

Each setting is declared once, on its group's dataclass field (`app.settings.declare.setting`):
its variable, its default, its doc and its check. `docs/configuration.md` is generated from them
(`python -m scripts.dev.settings_doc`).
"""

from app.settings.access import (
    DEV_JWT_SECRET,
    DEVELOPMENT_LIMITS,
    AuthSettings,
    Bucket,
    LimitSettings,
    PhoneSettings,
)
from app.settings.auth import PLACEHOLDER_MARKERS, key_id_of
from app.settings.bookings import BookingSettings
from app.settings.declare import SettingsError
from app.settings.infrastructure import (
    AutoscaleSettings,
    ClockSettings,
    DatabaseSettings,
    LogSettings,
    RedisSettings,
    WebSettings,
    WorkerSettings,
)
from app.settings.loader import Environment, Settings, get_settings, load_settings
from app.settings.market import (
    MIN_STRIPE_EVENT_DAYS,
    DispatchSettings,
    NotificationSettings,
    PricingSettings,
    RetentionSettings,
    StripeSettings,
    TwilioSettings,
)
from app.settings.source import take_renamed_variables

__all__ = [
    "DEVELOPMENT_LIMITS",
    "DEV_JWT_SECRET",
    "MIN_STRIPE_EVENT_DAYS",
    "PLACEHOLDER_MARKERS",
    "AuthSettings",
    "AutoscaleSettings",
    "BookingSettings",
    "Bucket",
    "ClockSettings",
    "DatabaseSettings",
    "DispatchSettings",
    "Environment",
    "LimitSettings",
    "LogSettings",
    "NotificationSettings",
    "PhoneSettings",
    "PricingSettings",
    "RedisSettings",
    "RetentionSettings",
    "Settings",
    "SettingsError",
    "StripeSettings",
    "TwilioSettings",
    "WebSettings",
    "WorkerSettings",
    "get_settings",
    "key_id_of",
    "load_settings",
    "take_renamed_variables",
]
