"""Phone verification by a one-time SMS code: proof that an account receives messages at its number.

`send_code` makes a 6-digit code, stores only its HMAC (keyed by the JWT secret, bound to the user
and the number) with an expiry (`PHONE_CODE_TTL`, 10 min) in `phone_verifications` — one row per
user, a new code replaces the old — and sends it through the notifications outbox (template
`phone_code`: the code is in the body only, which is redacted once handed to Twilio; with no Twilio
credentials the console channel logs it). Sends are limited per user per hour
(`PHONE_CODE_SENDS_PER_HOUR`, shared by every web process).

`verify_code` checks a guess: right → `users.phone_verified_at` is set and the code spent; wrong →
400 `VALIDATION_ERROR` and one of `PHONE_CODE_MAX_ATTEMPTS` spent (the last one spends the code:
409 `CONFLICT`, reason `CODE_ATTEMPTS_EXCEEDED`); none sent or expired → 409 `CONFLICT`, reason
`NO_CODE_SENT` / `CODE_EXPIRED`.

With `PHONE_VERIFICATION_REQUIRED`, a customer's ride needs a verified phone
(`require_verified_phone`) and messages go only to verified numbers (`app.services.notifications`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from app.adapters.rate_limiter import RateLimiter
from app.adapters.token_store import TokenStore, UserSnapshot
from app.db import AsyncUnitOfWork
from app.errors import CodeMismatch, CodeRefused, Conflict, Forbidden
from app.logging import get_logger
from app.services.access import Principal, load_snapshot
from app.services.notifications import notify_async
from app.settings import Settings
from models import PhoneVerification, User
from models.ride_states import CUSTOMER

log = get_logger("phone")

CODE_DIGITS = 6
TEMPLATE = "phone_code"


def code_hash(secret: str, user_id: uuid.UUID, phone: str, code: str) -> str:
    """The stored form of a code: an HMAC bound to the user and the number (a leaked table gives
    no code, and a code proves only the number it was sent to)."""
    message = f"{user_id}:{phone}:{code}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def require_verified_phone(principal: Principal, settings: Settings) -> None:
    """Before a customer's ride, when verification is required: 403 `FORBIDDEN`, reason
    `PHONE_NOT_VERIFIED`, for a phone not proven yet."""
    required = settings.phone.verification_required and principal.role == CUSTOMER
    if required and not principal.user.phone_verified:
        raise Forbidden("Verify your phone number first (POST /api/v1/me/phone/verification).",
                        details={"reason": "PHONE_NOT_VERIFIED"})


async def send_code(uow: AsyncUnitOfWork, principal: Principal, *, settings: Settings,
                    limiter: RateLimiter) -> datetime:
    """Send a new code to the caller's phone (replacing any earlier one); returns its expiry."""
    user = principal.user
    if user.phone_verified:
        raise Conflict("This phone number is already verified.", details={"reason": "PHONE_ALREADY_VERIFIED"})
    await limiter.hit("phone-code", str(user.id), limit=settings.phone.sends_per_hour, window_s=3600)
    code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=settings.phone.code_ttl_s)
    values = {"phone": user.phone, "expires_at": expires_at, "attempts": 0, "created_at": now,
              "code_hash": code_hash(settings.auth.jwt_secret, user.id, user.phone, code)}
    await uow.session.execute(insert(PhoneVerification).values(user_id=user.id, **values)
                              .on_conflict_do_update(index_elements=["user_id"], set_=values))
    await notify_async(uow.session, user_id=user.id, template=TEMPLATE,
                       dedupe_key=f"user:{user.id}:phone_code:{uuid.uuid4()}", settings=settings.twilio,
                       params={"minutes": max(1, settings.phone.code_ttl_s // 60)}, secret={"code": code})
    log.info("phone.code_sent", user_id=str(user.id), expires_at=expires_at.isoformat())
    return expires_at


async def verify_code(uow: AsyncUnitOfWork, principal: Principal, code: str, *, settings: Settings,
                      store: TokenStore) -> UserSnapshot:
    """Check the caller's guess (see the module docstring); the verified user on success."""
    user_id, phone = principal.id, principal.user.phone
    row = await uow.session.scalar(select(PhoneVerification).where(PhoneVerification.user_id == user_id)
                                   .with_for_update())
    if row is None:
        raise CodeRefused("No code was sent; ask for one first.", details={"reason": "NO_CODE_SENT"})
    now = datetime.now(UTC)
    if row.expires_at <= now or row.phone != phone:
        await uow.session.delete(row)
        raise CodeRefused("The code has expired; ask for a new one.", details={"reason": "CODE_EXPIRED"})
    expected = code_hash(settings.auth.jwt_secret, user_id, phone, code)
    if not hmac.compare_digest(expected, row.code_hash):
        row.attempts += 1
        left = settings.phone.max_attempts - row.attempts
        log.info("phone.code_wrong", user_id=str(user_id), attempts_left=max(left, 0))
        if left <= 0:
            await uow.session.delete(row)
            raise CodeRefused("Too many wrong codes; ask for a new one.",
                              details={"reason": "CODE_ATTEMPTS_EXCEEDED"})
        plural = "s" if left != 1 else ""
        raise CodeMismatch("The code is not right.",
                           details={"code": f"does not match ({left} attempt{plural} left)"})
    await uow.session.execute(delete(PhoneVerification).where(PhoneVerification.user_id == user_id))
    user = await uow.session.get_one(User, user_id, with_for_update=True)
    user.phone_verified_at = now
    await uow.session.flush()
    snapshot = await load_snapshot(uow.session, user_id)
    assert snapshot is not None
    uow.after_commit(lambda: store.forget_user(user_id))  # every process reloads the user
    log.info("phone.verified", user_id=str(user_id))
    return snapshot
