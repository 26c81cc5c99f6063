"""Which signing secrets the farm starts with, key ids and rotation, and whose X-Forwarded-For counts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from pathlib import Path

import jwt
import pytest

from app.api.dependencies import pick_client_address
from app.errors import InvalidToken, TokenExpired
from app.security import decode_access_token, issue_access_token
from app.settings import DEV_JWT_SECRET, Settings, SettingsError, key_id_of, load_settings

NO_FILE = Path("/nonexistent.env")
STRONG = "q8Vt2mKx7RzP4nW1sY6bJ3cL9fH0dG5a"
OLD = "Lw5Nc2Xp8Qk1Rv6Tz3Ym9Hb4Jd7Fs0Ga"


def production(**env: str) -> dict[str, str]:
    return {"APP_ENV": "production", **env}


@pytest.mark.parametrize(("secret", "reason"), [
    ("", "must be set"),
    (DEV_JWT_SECRET, "placeholder"),
    ("CHANGE-ME-to-at-least-32-random-characters", "placeholder"),
    ("replace_me_with_a_long_random_string_0000", "placeholder"),
    ("this-is-an-example-jwt-signing-key-for-docs", "placeholder"),
    ("a" * 40, "too guessable"),
    ("abababababababababababababababab12", "too guessable"),
    ("short-but-random-Zx81", "too guessable"),
])
def test_outside_development_a_missing_placeholder_or_weak_secret_stops_the_start(
    secret: str, reason: str
) -> None:
    with pytest.raises(SettingsError, match=f"JWT_SECRET.*{reason}"):
        load_settings(production(JWT_SECRET=secret), env_file=NO_FILE)


def test_a_strong_secret_starts_production_and_development_keeps_its_built_in_secret() -> None:
    assert load_settings(production(JWT_SECRET=STRONG), env_file=NO_FILE).auth.jwt_secret == STRONG
    assert load_settings({}, env_file=NO_FILE).auth.jwt_secret == DEV_JWT_SECRET
    assert load_settings({"APP_ENV": "test"}, env_file=NO_FILE).auth.jwt_secret == DEV_JWT_SECRET


def test_tokens_name_their_key_and_an_unknown_key_is_refused() -> None:
    auth = load_settings(production(JWT_SECRET=STRONG), env_file=NO_FILE).auth
    token, _ = issue_access_token(auth, user_id=uuid.uuid4(), role="customer", session_id=uuid.uuid4(),
                                  generation=0)

    assert jwt.get_unverified_header(token)["kid"] == key_id_of(STRONG) == auth.jwt_key_id
    # A token signed with the same secret but naming another key is refused
    forged = jwt.encode(jwt.decode(token, options={"verify_signature": False}), STRONG, algorithm="HS256",
                        headers={"kid": "someone-elses"})
    with pytest.raises(InvalidToken):
        decode_access_token(auth, forged)


def _rotated(rotated_at: datetime) -> Settings:
    return load_settings(production(JWT_SECRET=STRONG, JWT_PREVIOUS_SECRET=OLD,
                                    JWT_ROTATED_AT=rotated_at.isoformat().replace("+00:00", "Z")),
                         env_file=NO_FILE)


def test_after_a_rotation_the_previous_key_is_accepted_for_one_access_token_lifetime() -> None:
    rotation = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    before = load_settings(production(JWT_SECRET=OLD), env_file=NO_FILE).auth
    after = _rotated(rotation).auth
    ttl = after.access_token_ttl_s
    minted_before, _ = issue_access_token(before, user_id=uuid.uuid4(), role="driver",
                                          session_id=uuid.uuid4(), generation=0,
                                          now=rotation - timedelta(seconds=60))

    # A token of the old key minted before the rotation verifies until it expires
    claims = decode_access_token(after, minted_before, now=rotation.timestamp())
    assert claims.role == "driver"
    with pytest.raises(TokenExpired):
        decode_access_token(after, minted_before, now=rotation.timestamp() + ttl)
    # One the old key signed after the rotation (a leaked old secret) is refused
    minted_late, _ = issue_access_token(before, user_id=uuid.uuid4(), role="admin", session_id=uuid.uuid4(),
                                        generation=0, now=rotation + timedelta(seconds=5))
    with pytest.raises(InvalidToken):
        decode_access_token(after, minted_late, now=rotation.timestamp() + 10)
    # New tokens use the new key
    fresh, _ = issue_access_token(after, user_id=uuid.uuid4(), role="customer", session_id=uuid.uuid4(),
                                  generation=0)
    assert jwt.get_unverified_header(fresh)["kid"] == key_id_of(STRONG)


def test_a_previous_secret_needs_its_rotation_time_in_the_past() -> None:
    with pytest.raises(SettingsError, match="JWT_ROTATED_AT"):
        load_settings(production(JWT_SECRET=STRONG, JWT_PREVIOUS_SECRET=OLD), env_file=NO_FILE)
    with pytest.raises(SettingsError, match="JWT_ROTATED_AT is in the future"):
        load_settings(production(JWT_SECRET=STRONG, JWT_PREVIOUS_SECRET=OLD,
                                 JWT_ROTATED_AT="2999-01-01T00:00:00Z"), env_file=NO_FILE)


def test_trust_forwarded_for_is_refused_with_the_way_forward() -> None:
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        load_settings({"TRUST_FORWARDED_FOR": "true"}, env_file=NO_FILE)
    with pytest.raises(SettingsError, match="CIDRs"):
        load_settings({"TRUSTED_PROXIES": "10.0.0.0/8,not-a-network"}, env_file=NO_FILE)


PROXIES = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    # no trusted proxies configured, or a peer that is not one: the header means nothing
    ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),
    # behind our proxy: the right-most address it did not add itself
    ("10.0.0.2", ["198.51.100.7"], "198.51.100.7"),
    # a client writing its own header gets it prepended, never believed
    ("10.0.0.2", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),
    ("10.0.0.2", ["6.6.6.6", "198.51.100.7, 10.1.2.3"], "198.51.100.7"),
    # IPv6, and a malformed hop stops at the last trusted one
    ("fd00::1", ["2001:db8::5"], "2001:db8::5"),
    ("10.0.0.2", ["198.51.100.7, garbage, 10.1.2.3"], "10.1.2.3"),
    # only proxies: the farthest of them
    ("10.0.0.2", ["10.9.9.9, 10.1.1.1"], "10.9.9.9"),
    ("10.0.0.2", [], "10.0.0.2"),
])
def test_the_client_address_is_the_right_most_untrusted_hop(
    peer: str, forwarded: list[str], client: str
) -> None:
    assert pick_client_address(peer, forwarded, PROXIES) == client
    assert pick_client_address(peer, forwarded, []) == peer
