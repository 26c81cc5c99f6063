"""Settings of who gets in and how much they may do: tokens and logins, per-user write limits, phone
verification."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from app.settings.declare import POSITIVE, Check, part, setting

DEV_JWT_SECRET = "dev-only-secret-change-me-in-production-0123456789"


@dataclass(frozen=True)
class AuthSettings:
    """Access and refresh tokens, the auth routes' limits and failed logins. The signing keys and the
    trusted proxies are read by `app.settings.auth`."""

    jwt_secret: str = setting(
        "JWT_SECRET", DEV_JWT_SECRET, explicit=True,
        shown_default="a development value (development/test only)",
        doc="HS256 signing key; outside development/test the farm refuses to start when it is missing, a "
            "placeholder (`CHANGE-ME…`, `example`, …) or weak (< 32 characters or < 12 distinct)")
    #: Access tokens are HS256 (the verifier is specialised for it); not a setting.
    jwt_algorithm: str = "HS256"
    access_token_ttl_s: int = setting("ACCESS_TOKEN_TTL", 15 * 60, check=POSITIVE,
                                      doc="access token lifetime (s)")
    refresh_token_ttl_s: int = setting("REFRESH_TOKEN_TTL", 7 * 24 * 3600, check=POSITIVE,
                                       doc="refresh token lifetime (s)")
    token_retention_s: int = setting(
        "TOKEN_RETENTION", 7 * 24 * 3600, check=POSITIVE,
        doc="how long (s) spent, revoked or expired refresh tokens are kept (for reuse detection and "
            "audit) before `tokens.cleanup` deletes them")
    rate_limit_requests: int = setting("AUTH_RATE_LIMIT_REQUESTS", 20, check=POSITIVE,
                                       renamed_from=("AUTH_RATE_LIMIT",),
                                       doc="requests allowed per client address and auth route in one window")
    rate_limit_window_s: int = setting("AUTH_RATE_LIMIT_WINDOW", 60, check=POSITIVE,
                                       renamed_from=("AUTH_RATE_WINDOW",),
                                       doc="that window (s)")
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = setting(
        "TRUSTED_PROXIES", (), explicit=True,
        doc="CIDRs of your proxies: their `X-Forwarded-For` is believed, the client being the right-most "
            "address not in them; empty: the socket peer is the client, whatever the header says (the "
            "old `TRUST_FORWARDED_FOR` is refused)")
    login_failures_allowed: int = setting(
        "LOGIN_FAILURES_ALLOWED", 5, check=POSITIVE,
        doc="failed logins of one account allowed before each further one locks it (1 s, doubling)")
    login_max_lock_s: int = setting("LOGIN_MAX_LOCK", 900, check=POSITIVE,
                                    doc="the longest such lock (s)")
    login_forget_after_s: int = setting(
        "LOGIN_FORGET_AFTER", 3600, check=POSITIVE,
        doc="a failure count is forgotten this long (s) after the account's last failed login")
    jwt_key_id: str = setting("JWT_KEY_ID", "", explicit=True, shown_default="derived from the secret",
                              doc="the `kid` header of tokens signed with `JWT_SECRET`")
    jwt_previous_secret: str = setting(
        "JWT_PREVIOUS_SECRET", "", explicit=True,
        doc="key rotation: the secret before `JWT_SECRET`; its tokens verify while they expire within one "
            "`ACCESS_TOKEN_TTL` of `JWT_ROTATED_AT`")
    jwt_previous_key_id: str = setting("JWT_PREVIOUS_KEY_ID", "", explicit=True,
                                       shown_default="derived from the previous secret",
                                       doc="the `kid` of the previous secret's tokens")
    #: Epoch seconds; the variable is an RFC 3339 time.
    jwt_rotated_at: float = setting(
        "JWT_ROTATED_AT", 0.0, explicit=True, shown_default="empty",
        doc="when the previous secret was replaced (RFC 3339, e.g. `2026-12-03T08:00:00Z`; required with "
            "`JWT_PREVIOUS_SECRET`, and not in the future)")
    user_cache_ttl_s: int = setting(
        "USER_CACHE_TTL", 3600, check=POSITIVE,
        doc="lifetime (s) of a cached user snapshot (status, token generation, profile) in Redis")
    password_time_cost: int = setting("PASSWORD_TIME_COST", 3, check=POSITIVE,
                                      renamed_from=("PASSWORD_HASH_TIME_COST",),
                                      doc="argon2id time cost of new password hashes (the library's default; "
                                          "lower only for test suites)")
    password_memory_kib: int = setting("PASSWORD_MEMORY_KIB", 65536, check=POSITIVE,
                                       renamed_from=("PASSWORD_HASH_MEMORY_KIB",),
                                       doc="argon2id memory cost (KiB), likewise")


RATE = Check(lambda v: 0 <= v < math.inf,
             "{name} must be 0 (no limit) or requests per second, got {value}")


@dataclass(frozen=True)
class Bucket:
    """A per-user token bucket: `rate_per_s` sustained, `burst` at once; rate 0 = no limit."""

    rate_per_s: float = field(metadata=part("RATE_LIMIT", check=RATE,
                                            doc="requests per second sustained (0 = no limit)"))
    burst: int = field(metadata=part("RATE_BURST", check=POSITIVE, doc="requests at once"))

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0


OPEN_RIDES = Check(lambda v: v >= 0, "{name} must be 0 (no cap) or a number of rides, got {value}")


@dataclass(frozen=True)
class LimitSettings:
    """Per-user limits on authenticated writes (Redis-backed, shared by every web process) and the
    cap on a customer's open rides (`app.api.limits`, `app.services.rides`). Each bucket is two
    variables, `<NAME>_RATE_LIMIT` and `<NAME>_RATE_BURST`. Outside production the defaults are looser,
    so demos, scripted clients and test suites that book many rides with one account keep working."""

    rides: Bucket = setting("RIDES", Bucket(2.0, 20), renamed_from=("RIDE",),
                            doc="`POST /rides` per customer")
    writes: Bucket = setting(
        "WRITES", Bucket(5.0, 30), renamed_from=("WRITE",),
        doc="per user: bids, accepts, cancels, status moves, online/offline, phone routes")
    location: Bucket = setting("LOCATION", Bucket(5.0, 10), doc="`PUT /drivers/me/location` per driver")
    payment_setup: Bucket = setting(
        "PAYMENT_SETUP", Bucket(0.5, 5),
        doc="provider calls on the user's behalf: payouts onboarding and `POST /payments/{rideId}/intent`")
    open_rides_per_customer: int = setting(
        "OPEN_RIDES_PER_CUSTOMER", 5, check=OPEN_RIDES,
        doc="rides not in a final state a customer may have at once (409 `OPEN_RIDE_LIMIT`; 0 = no cap)")


#: The limits outside production (each still overridable by its variable).
DEVELOPMENT_LIMITS = LimitSettings(rides=Bucket(50.0, 500), writes=Bucket(50.0, 300),
                                   location=Bucket(20.0, 100), payment_setup=Bucket(5.0, 50),
                                   open_rides_per_customer=100)


@dataclass(frozen=True)
class PhoneSettings:
    """Phone verification by a one-time SMS code (`app.services.phone_verification`)."""

    verification_required: bool = setting(
        "PHONE_VERIFICATION_REQUIRED", False,
        doc="a customer's first ride needs a verified phone, and SMS/WhatsApp go only to verified numbers "
            "(others are recorded `skipped`)")
    code_ttl_s: int = setting("PHONE_CODE_TTL", 600, check=POSITIVE, doc="one-time code lifetime (s)")
    max_attempts: int = setting("PHONE_CODE_MAX_ATTEMPTS", 5, check=POSITIVE,
                                doc="wrong codes allowed per code before it is spent")
    sends_per_hour: int = setting("PHONE_CODE_SENDS_PER_HOUR", 5, check=POSITIVE,
                                  doc="codes sent per user per hour")
