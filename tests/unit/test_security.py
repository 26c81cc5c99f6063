"""Passwords, access tokens and refresh tokens (`app/security.py`): pure functions, no I/O."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from app.errors import InvalidToken, TokenExpired
from app.security import (
    decode_access_token,
    hash_password,
    hash_refresh_token,
    issue_access_token,
    new_refresh_token,
    verify_password,
)
from app.settings import AuthSettings

AUTH = AuthSettings(jwt_secret="unit-test-secret-0123456789-0123456789", access_token_ttl_s=900)


def issue(now: datetime | None = None, settings: AuthSettings = AUTH) -> tuple[str, uuid.UUID, uuid.UUID]:
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    token, _ = issue_access_token(settings, user_id=user_id, role="driver", session_id=session_id,
                                  generation=3, now=now)
    return token, user_id, session_id


# --- passwords ---------------------------------------------------------------------------------
def test_a_password_verifies_against_its_hash_and_nothing_else() -> None:
    stored = hash_password("correct horse battery")

    assert stored != "correct horse battery"
    assert stored.startswith("$argon2")
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "correct horse batterY")
    assert not verify_password(stored, "")


def test_two_hashes_of_one_password_differ() -> None:
    assert hash_password("same password") != hash_password("same password")


@pytest.mark.parametrize("stored", [None, "", "not-an-argon2-hash", "$argon2id$v=19$broken"])
def test_a_missing_or_corrupt_hash_never_verifies(stored: str | None) -> None:
    assert verify_password(stored, "anything at all") is False


# --- access tokens -----------------------------------------------------------------------------
def test_an_access_token_round_trips_its_claims() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    user_id, session_id = uuid.uuid4(), uuid.uuid4()

    token, issued = issue_access_token(AUTH, user_id=user_id, role="driver", session_id=session_id,
                                       generation=3, now=now)
    claims = decode_access_token(AUTH, token)

    assert claims == issued
    assert claims.user_id == user_id
    assert claims.session_id == session_id
    assert claims.role == "driver"
    assert claims.generation == 3
    assert claims.issued_at == int(now.timestamp())
    assert claims.expires_at == int(now.timestamp()) + 900
    assert len(claims.jti) >= 16


def test_every_access_token_has_its_own_id() -> None:
    first, _, _ = issue()
    second, _, _ = issue()

    assert decode_access_token(AUTH, first).jti != decode_access_token(AUTH, second).jti


def test_an_expired_access_token_is_token_expired() -> None:
    token, _, _ = issue(now=datetime.now(UTC) - timedelta(seconds=901))

    with pytest.raises(TokenExpired):
        decode_access_token(AUTH, token)


def test_a_token_minted_on_a_machine_whose_clock_runs_ahead_is_accepted() -> None:
    # Given a token issued by another web machine whose clock is 5 s ahead of ours
    token, user_id, _ = issue(now=datetime.now(UTC) + timedelta(seconds=5))

    # Then it is accepted here all the same
    assert decode_access_token(AUTH, token).user_id == user_id


def test_a_token_signed_with_another_secret_is_invalid() -> None:
    token, _, _ = issue(settings=dataclasses.replace(AUTH, jwt_secret="another-secret-" + "x" * 32))

    with pytest.raises(InvalidToken):
        decode_access_token(AUTH, token)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "Bearer abc"])
def test_garbage_is_an_invalid_token(token: str) -> None:
    with pytest.raises(InvalidToken):
        decode_access_token(AUTH, token)


def _payload(**changes: object) -> dict[str, object]:
    now = int(datetime.now(UTC).timestamp())
    payload: dict[str, object] = {
        "sub": str(uuid.uuid4()), "role": "customer", "jti": uuid.uuid4().hex, "sid": str(uuid.uuid4()),
        "gen": 0, "iat": now, "exp": now + 900, "typ": "access",
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_payload(typ="refresh"), id="refresh-typ"),
        pytest.param(_payload(typ=None), id="no-typ"),
        pytest.param(_payload(sid=None), id="no-session"),
        pytest.param(_payload(gen=None), id="no-generation"),
        pytest.param(_payload(jti=None), id="no-jti"),
        pytest.param(_payload(sub="not-a-uuid"), id="sub-not-a-uuid"),
        pytest.param(_payload(sid="not-a-uuid"), id="sid-not-a-uuid"),
        pytest.param(_payload(iat=None), id="no-iat"),
        pytest.param(_payload(iat="yesterday"), id="iat-not-a-number"),
    ],
)
def test_a_well_signed_token_with_the_wrong_claims_is_invalid(payload: dict[str, object]) -> None:
    token = jwt.encode(payload, AUTH.jwt_secret, algorithm="HS256")

    with pytest.raises(InvalidToken):
        decode_access_token(AUTH, token)


def test_an_unsigned_token_is_invalid() -> None:
    token = jwt.encode(_payload(), key=None, algorithm="none")

    with pytest.raises(InvalidToken):
        decode_access_token(AUTH, token)


# --- refresh tokens ----------------------------------------------------------------------------
def test_a_refresh_token_is_stored_only_as_its_hash() -> None:
    token, stored = new_refresh_token()

    assert stored != token
    assert token not in stored
    assert len(stored) == 64 and int(stored, 16) >= 0
    assert hash_refresh_token(token) == stored


def test_refresh_tokens_are_unique_and_long_enough() -> None:
    tokens = {new_refresh_token()[0] for _ in range(100)}

    assert len(tokens) == 100
    assert all(len(token) >= 40 for token in tokens)
    assert hash_refresh_token("a") != hash_refresh_token("b")
