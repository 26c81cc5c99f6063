"""What no single field can say: defaults that depend on APP_ENV, values derived from other
settings, and checks that compare two settings."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.settings.access import DEVELOPMENT_LIMITS, LimitSettings, PhoneSettings
from app.settings.declare import SettingsError, env_name
from app.settings.infrastructure import AutoscaleSettings, LogSettings
from app.settings.market import MIN_STRIPE_EVENT_DAYS, DispatchSettings, RetentionSettings, TwilioSettings


def environment_defaults(env: str) -> dict[str, Any]:
    """The groups whose defaults depend on APP_ENV, by `Settings` field: production logs JSON,
    requires verified phones and has the tighter write limits."""
    production = env == "production"
    return {
        "limits": LimitSettings() if production else DEVELOPMENT_LIMITS,
        "log": LogSettings(format="json") if production else LogSettings(),
        "phone": PhoneSettings(verification_required=production),
    }


def verified_numbers_only(twilio: TwilioSettings, phone: PhoneSettings) -> TwilioSettings:
    """Messages go only to verified numbers exactly when phones must be verified."""
    return replace(twilio, verified_numbers_only=phone.verification_required)


def check_driver_pruning(dispatch: DispatchSettings) -> None:
    if dispatch.driver_prune_after_s <= dispatch.driver_stale_after_s:
        prune = env_name(DispatchSettings, "driver_prune_after_s")
        stale = env_name(DispatchSettings, "driver_stale_after_s")
        raise SettingsError(f"{prune} ({dispatch.driver_prune_after_s}) must be longer than "
                            f"{stale} ({dispatch.driver_stale_after_s})")


def check_schedule_window(dispatch: DispatchSettings) -> None:
    if dispatch.schedule_horizon_days * 86_400 <= dispatch.schedule_min_ahead_s:
        horizon = env_name(DispatchSettings, "schedule_horizon_days")
        min_ahead = env_name(DispatchSettings, "schedule_min_ahead_s")
        raise SettingsError(f"{horizon} ({dispatch.schedule_horizon_days} days) must be longer than "
                            f"{min_ahead} ({dispatch.schedule_min_ahead_s} s)")


def check_stripe_event_retention(retention: RetentionSettings) -> None:
    if 0 < retention.stripe_events_days < MIN_STRIPE_EVENT_DAYS:
        name = env_name(RetentionSettings, "stripe_events_days")
        raise SettingsError(f"{name} must be 0 or at least {MIN_STRIPE_EVENT_DAYS} "
                            "(Stripe redelivers an event for up to three days)")


def check_autoscale_bounds(scale: AutoscaleSettings) -> None:
    def name(field: str) -> str:
        return env_name(AutoscaleSettings, field)

    if scale.max_workers < scale.min_workers:
        raise SettingsError(f"{name('max_workers')} ({scale.max_workers}) must be at least "
                            f"{name('min_workers')} ({scale.min_workers})")
    if min(scale.interval_s, scale.target_age_s, scale.cooldown_s) <= 0:
        raise SettingsError(f"{name('interval_s')}, {name('target_age_s')} and {name('cooldown_s')} "
                            "must be positive")
