"""The auth settings that need more than a parser: signing secrets (required and strong outside
development), key rotation, and the proxies whose `X-Forwarded-For` is believed."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from app.settings.access import DEV_JWT_SECRET, AuthSettings
from app.settings.declare import SettingsError, env_name
from app.settings.source import Source

#: Parts of the values that examples, manifests and tutorials put where a secret belongs.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "placeholder", "example", "replace-me",
                       "replace_me", "your-secret", "your_secret", "dev-only", "insecure", "xxxxxxxx")

SECRET = env_name(AuthSettings, "jwt_secret")
KEY_ID = env_name(AuthSettings, "jwt_key_id")
PREVIOUS_SECRET = env_name(AuthSettings, "jwt_previous_secret")
PREVIOUS_KEY_ID = env_name(AuthSettings, "jwt_previous_key_id")
ROTATED_AT = env_name(AuthSettings, "jwt_rotated_at")
TRUSTED_PROXIES = env_name(AuthSettings, "trusted_proxies")
#: The variable TRUSTED_PROXIES replaced; refused, so nobody believes it still works.
TRUST_FORWARDED_FOR = "TRUST_FORWARDED_FOR"


def jwt_secret(src: Source, name: str, env: str) -> str:
    """The signing secret: anything of 32+ characters in development and test (the built-in dev
    secret by default); elsewhere it must be given, and not a placeholder or a low-entropy one."""
    given: str = src.read(name, str, "")
    if env in ("development", "test"):
        secret = given or DEV_JWT_SECRET
        if len(secret) < 32:
            raise SettingsError(f"{name} must be at least 32 characters")
        return secret
    how = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
    if not given:
        raise SettingsError(f"{name} must be set when APP_ENV={env}; {how}")
    lowered = given.lower()
    if given == DEV_JWT_SECRET or any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        raise SettingsError(f"{name} is a placeholder, not a secret; {how}")
    if len(given) < 32 or len(set(given)) < 12:
        raise SettingsError(f"{name} is too guessable (at least 32 characters, at least 12 distinct); {how}")
    return given


def key_id_of(secret: str) -> str:
    """A token header's `kid` for `secret`: a short digest, which tells keys apart and reveals none."""
    return hashlib.sha256(b"dispatch-farm-kid:" + secret.encode()).hexdigest()[:16]


def signing_keys(src: Source, env: str) -> dict[str, Any]:
    """The `AuthSettings` fields of the signing keys: the secret, its key id, and after a rotation
    the previous secret, its key id and when it was replaced."""
    secret = jwt_secret(src, SECRET, env)
    fields: dict[str, Any] = {"jwt_secret": secret,
                              "jwt_key_id": src.read(KEY_ID, str, "") or key_id_of(secret)}
    if not src.read(PREVIOUS_SECRET, str, ""):
        return fields
    previous = jwt_secret(src, PREVIOUS_SECRET, env)
    rotated = src.read(ROTATED_AT, str, "")
    try:
        rotated_at = datetime.fromisoformat(rotated.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SettingsError(f"{PREVIOUS_SECRET} needs {ROTATED_AT}, the RFC 3339 time the secret "
                            f"was replaced (e.g. 2026-12-03T08:00:00Z), got {rotated!r}") from exc
    if rotated_at.tzinfo is None:
        rotated_at = rotated_at.replace(tzinfo=UTC)
    if previous == secret:
        raise SettingsError(f"{PREVIOUS_SECRET} is the same as {SECRET}")
    if rotated_at.timestamp() > datetime.now(UTC).timestamp() + 300:
        raise SettingsError(f"{ROTATED_AT} is in the future: it would keep the previous key alive longer")
    return {**fields, "jwt_previous_secret": previous,
            "jwt_previous_key_id": src.read(PREVIOUS_KEY_ID, str, "") or key_id_of(previous),
            "jwt_rotated_at": rotated_at.timestamp()}


def trusted_proxies(src: Source) -> tuple[IPv4Network | IPv6Network, ...]:
    if src.read(TRUST_FORWARDED_FOR, bool, False):
        raise SettingsError(f"{TRUST_FORWARDED_FOR} trusted any client's X-Forwarded-For and is gone: list "
                            f"your proxies' addresses in {TRUSTED_PROXIES} (CIDRs, e.g. 10.0.0.0/8)")
    networks = []
    for part in src.read(TRUSTED_PROXIES, tuple[str, ...], ()):
        try:
            networks.append(ip_network(part, strict=False))
        except ValueError as exc:
            raise SettingsError(f"{TRUSTED_PROXIES} must list CIDRs such as 10.0.0.0/8, "
                                f"got {part!r}") from exc
    return tuple(networks)
