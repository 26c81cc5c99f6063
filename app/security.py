"""Passwords, access tokens (JWT) and refresh tokens: pure functions, no I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import jwt
import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.errors import InvalidToken, TokenExpired
from app.settings import AuthSettings, get_settings


@lru_cache(maxsize=1)
def _password_hasher() -> tuple[PasswordHasher, str]:
    """argon2id with the configured cost, and a real hash to verify against for unknown emails
    (so timing does not reveal which accounts exist)."""
    auth = get_settings().auth
    hasher = PasswordHasher(time_cost=auth.password_time_cost, memory_cost=auth.password_memory_kib)
    return hasher, hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _password_hasher()[0].hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        hasher, dummy = _password_hasher()
        return hasher.verify(password_hash or dummy, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What an access token says: who, which role, which session, which token generation."""

    user_id: uuid.UUID
    role: str
    jti: str
    session_id: uuid.UUID
    generation: int
    issued_at: int
    expires_at: int


def issue_access_token(
    settings: AuthSettings,
    *,
    user_id: uuid.UUID,
    role: str,
    session_id: uuid.UUID,
    generation: int,
    now: datetime | None = None,
) -> tuple[str, AccessClaims]:
    issued = now or datetime.now(UTC)
    claims = AccessClaims(
        user_id=user_id,
        role=role,
        jti=uuid.uuid4().hex,
        session_id=session_id,
        generation=generation,
        issued_at=int(issued.timestamp()),
        expires_at=int((issued + timedelta(seconds=settings.access_token_ttl_s)).timestamp()),
    )
    payload: dict[str, Any] = {
        "sub": str(user_id),
        "role": role,
        "jti": claims.jti,
        "sid": str(session_id),
        "gen": generation,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
        "typ": "access",
    }
    token = jwt.encode(payload, settings.jwt_secret, algorithm=settings.jwt_algorithm,
                       headers={"kid": settings.jwt_key_id})
    return token, claims


class _Header(msgspec.Struct):
    alg: str
    kid: str | None = None


class _AccessPayload(msgspec.Struct):
    sub: uuid.UUID
    role: str
    jti: str
    sid: uuid.UUID
    gen: int
    iat: int | float
    exp: int | float
    typ: str


_header_decoder = msgspec.json.Decoder(_Header)
_payload_decoder = msgspec.json.Decoder(_AccessPayload)


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def decode_access_token(settings: AuthSettings, token: str, *, now: float | None = None) -> AccessClaims:
    """Verify an HS256 access token; raise `TokenExpired` or `InvalidToken`.

    This runs on every authenticated request and socket connect, so it is a direct HS256 check
    (HMAC-SHA256 over `header.payload`, constant-time compare, then typed claim decoding) rather
    than a general JWT library: the algorithm is fixed by us, never read from the token. Tokens
    are minted with PyJWT (`issue_access_token`). `iat` is not checked against this machine's
    clock (a token minted a second ahead on another web machine is ours); `exp` is exact.
    """
    try:
        signing_input, _, signature = token.rpartition(".")
        header_segment, _, payload_segment = signing_input.partition(".")
        if not header_segment or not payload_segment or "." in payload_segment:
            raise InvalidToken()
        header = _header_decoder.decode(_b64url(header_segment))
        if header.alg != settings.jwt_algorithm:
            raise InvalidToken()
        secret, previous = _signing_key(settings, header.kid)
        expected = hmac.new(_jwt_key(secret), signing_input.encode("ascii"), hashlib.sha256)
        if not hmac.compare_digest(expected.digest(), _b64url(signature)):
            raise InvalidToken()
        payload = _payload_decoder.decode(_b64url(payload_segment))
    except (ValueError, TypeError, msgspec.DecodeError, UnicodeError) as exc:
        raise InvalidToken() from exc
    if payload.typ != "access":
        raise InvalidToken()
    if previous and payload.exp > settings.jwt_rotated_at + settings.access_token_ttl_s:
        raise InvalidToken()  # not minted before the rotation: the old key can't vouch for it
    if payload.exp <= (time.time() if now is None else now):
        raise TokenExpired()
    return AccessClaims(
        user_id=payload.sub,
        role=payload.role,
        jti=payload.jti,
        session_id=payload.sid,
        generation=payload.gen,
        issued_at=int(payload.iat),
        expires_at=int(payload.exp),
    )


def _signing_key(settings: AuthSettings, kid: str | None) -> tuple[str, bool]:
    """The secret that signed a token with this `kid`, and whether it is the previous one. Tokens
    from before key ids (no `kid`) are checked against the current secret."""
    if kid is None or kid == settings.jwt_key_id:
        return settings.jwt_secret, False
    if settings.jwt_previous_secret and kid == settings.jwt_previous_key_id:
        return settings.jwt_previous_secret, True
    raise InvalidToken()


@lru_cache(maxsize=4)
def _jwt_key(secret: str) -> bytes:
    return secret.encode()


def new_refresh_token() -> tuple[str, str]:
    """A fresh opaque refresh token and the SHA-256 hash that is stored in its place."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
