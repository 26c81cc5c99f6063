"""One loader for every group: each field is read from its variable, parsed as its type says and
checked as its spec says; then the few rules across fields (`app.settings.rules`) apply."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar, get_type_hints

from app.settings import rules
from app.settings.access import AuthSettings, LimitSettings, PhoneSettings
from app.settings.auth import signing_keys, trusted_proxies
from app.settings.bookings import BookingSettings
from app.settings.declare import Spec, part_spec, setting, spec_of
from app.settings.infrastructure import (
    AutoscaleSettings,
    ClockSettings,
    DatabaseSettings,
    LogSettings,
    RedisSettings,
    WebSettings,
    WorkerSettings,
)
from app.settings.market import (
    DispatchSettings,
    NotificationSettings,
    PricingSettings,
    RetentionSettings,
    StripeSettings,
    TwilioSettings,
)
from app.settings.source import Source, merged_values, parse

Environment = Literal["development", "test", "production"]

G = TypeVar("G")


@dataclass(frozen=True)
class Settings:
    env: Environment = setting(
        "APP_ENV", "development", shown_default="`development` (the Docker image: `production`)",
        doc="`development`, `test` or `production` (production requires a real `JWT_SECRET`, logs JSON, "
            "requires verified phones and has tighter write limits)")
    db: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    autoscale: AutoscaleSettings = field(default_factory=AutoscaleSettings)
    clock: ClockSettings = field(default_factory=ClockSettings)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    stripe: StripeSettings = field(default_factory=StripeSettings)
    pricing: PricingSettings = field(default_factory=PricingSettings)
    bookings: BookingSettings = field(default_factory=BookingSettings)
    twilio: TwilioSettings = field(default_factory=TwilioSettings)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    phone: PhoneSettings = field(default_factory=PhoneSettings)
    log: LogSettings = field(default_factory=LogSettings)
    web: WebSettings = field(default_factory=WebSettings)


def read_setting(src: Source, spec: Spec, kind: Any, default: Any) -> Any:
    """One setting's value: its variable (or an old name of it) parsed as `kind`, else `default`.
    A value made of several variables (a `Bucket`) is read part by part."""
    if dataclasses.is_dataclass(kind):
        hints = get_type_hints(kind)
        parts = {}
        for part in dataclasses.fields(kind):
            part_of = spec_of(part)
            if part_of is not None:
                parts[part.name] = read_setting(src, part_spec(spec, part_of), hints[part.name],
                                                getattr(default, part.name))
        return dataclasses.replace(default, **parts)
    name, raw = src.lookup(spec.env, spec.renamed_from)
    value = default if raw is None else parse(kind, name, raw)
    if spec.check is not None:
        spec.check.verify(name, value)
    return value


def load_group(group: type[G], src: Source, base: G | None = None, **given: Any) -> G:
    """`group` read from `src`: each setting's default is `base`'s value (default: the field's
    default); fields in `given` (read by an explicit function) are taken as they are."""
    start: Any = group() if base is None else base
    hints = get_type_hints(group)
    values = dict(given)
    for item in dataclasses.fields(start):
        spec = spec_of(item)
        if item.name in values or spec is None or spec.explicit:
            continue
        values[item.name] = read_setting(src, spec, hints[item.name], getattr(start, item.name))
    built: G = dataclasses.replace(start, **values)
    return built


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Build settings from `environ` (default: the process environment) over an optional `.env`."""
    src = Source(merged_values(environ, env_file))
    env = load_group(Settings, src).env
    bases = rules.environment_defaults(env)
    given = {"auth": {**signing_keys(src, env), "trusted_proxies": trusted_proxies(src)}}
    hints = get_type_hints(Settings)
    groups = {item.name: load_group(hints[item.name], src, bases.get(item.name), **given.get(item.name, {}))
              for item in dataclasses.fields(Settings) if spec_of(item) is None}
    settings = Settings(env=env, **groups)
    rules.check_driver_pruning(settings.dispatch)
    rules.check_schedule_window(settings.dispatch)
    rules.check_stripe_event_retention(settings.retention)
    rules.check_autoscale_bounds(settings.autoscale)
    return dataclasses.replace(settings, twilio=rules.verified_numbers_only(settings.twilio, settings.phone))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first use."""
    return load_settings()
