"""Passwords, access tokens (JWT) and refresh tokens: pure functions, no I/O."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import jwt
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
    token = jwt.encode(payload, settings.jwt_secret, algorithm=settings.jwt_algorithm)
    return token, claims


def decode_access_token(settings: AuthSettings, token: str) -> AccessClaims:
    """Verify signature and expiry; raise `TokenExpired` or `InvalidToken`.

    `iat` is not checked against this machine's clock: a token minted a second ahead on another
    web machine is ours (the signature says so), and `exp` still bounds its life exactly.
    """
    try:
        payload = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[settings.jwt_algorithm],
            options={"require": ["sub", "jti", "iat", "exp", "role", "sid", "gen"], "verify_iat": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenExpired() from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken() from exc
    if payload.get("typ") != "access":
        raise InvalidToken()
    try:
        return AccessClaims(
            user_id=uuid.UUID(payload["sub"]),
            role=str(payload["role"]),
            jti=str(payload["jti"]),
            session_id=uuid.UUID(payload["sid"]),
            generation=int(payload["gen"]),
            issued_at=int(payload["iat"]),
            expires_at=int(payload["exp"]),
        )
    except (ValueError, TypeError) as exc:
        raise InvalidToken() from exc


def new_refresh_token() -> tuple[str, str]:
    """A fresh opaque refresh token and the SHA-256 hash that is stored in its place."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
