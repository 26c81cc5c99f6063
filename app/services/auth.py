"""Registration, login, refresh-token rotation, logout and logout-all.

Revocations are written to PostgreSQL (the truth) and to the Redis cache *before* the commit,
so a Redis failure fails the request with nothing committed, and a committed revocation is
already in force in every web process.

Refresh tokens are opaque, single-use and stored hashed. One login starts a *session* whose id is
the refresh-token family and the `sid` claim of its access tokens: spending a refresh token twice
revokes the whole family and its session; logout revokes the session; logout-all bumps the user's
token generation so every token issued before it is refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio.to_thread
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from app.adapters.token_store import TokenStore, UserSnapshot
from app.db import AsyncUnitOfWork
from app.errors import (
    AccountDeactivated,
    Conflict,
    InvalidCredentials,
    InvalidToken,
    RefreshTokenReused,
    TokenExpired,
    TokenRevoked,
    ValidationFailed,
)
from app.keys import SESSIONS_END_SOCKETS
from app.logging import get_logger
from app.outbox import add_job_async
from app.security import (
    hash_password,
    hash_refresh_token,
    issue_access_token,
    new_refresh_token,
    verify_password,
)
from app.services.access import Principal, snapshot_of
from app.settings import AuthSettings
from models import AuditEntry, Driver, RefreshToken, RevokedSession, Role, User, VehicleType

log = get_logger("auth")


@dataclass(frozen=True, slots=True)
class Registration:
    email: str
    password: str
    full_name: str
    phone: str
    role: str
    vehicle_type: str | None
    whatsapp_opt_in: bool


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class Session:
    user: UserSnapshot
    tokens: TokenPair


class AuthService:
    def __init__(self, settings: AuthSettings, store: TokenStore) -> None:
        self.settings = settings
        self.store = store

    # --- registration and login ---------------------------------------------------------------
    async def register(self, uow: AsyncUnitOfWork, data: Registration) -> Session:
        if data.role == Role.DRIVER and data.vehicle_type is None:
            raise ValidationFailed("Drivers must give a vehicle type.", details={"vehicleType": "required"})
        if data.role == Role.CUSTOMER and data.vehicle_type is not None:
            raise ValidationFailed(
                "Customers do not have a vehicle type.", details={"vehicleType": "not allowed for customers"}
            )
        password_hash = await anyio.to_thread.run_sync(hash_password, data.password)
        user = User(
            id=uuid.uuid4(),
            email=data.email,
            password_hash=password_hash,
            full_name=data.full_name,
            phone=data.phone,
            role=Role(data.role),
            whatsapp_opt_in=data.whatsapp_opt_in,
            created_at=datetime.now(UTC),
        )
        uow.session.add(user)
        if data.vehicle_type is not None:
            uow.session.add(Driver(user_id=user.id, vehicle_type=VehicleType(data.vehicle_type)))
        try:
            await uow.session.flush()
        except IntegrityError as exc:
            raise Conflict("An account with this email already exists.", details={"email": "taken"}) from exc
        log.info("auth.registered", user_id=str(user.id), role=data.role)
        return await self._start_session(uow, user, data.vehicle_type)

    async def login(self, uow: AsyncUnitOfWork, email: str, password: str) -> Session:
        row = (
            await uow.session.execute(
                select(User, Driver.vehicle_type)
                .outerjoin(Driver, Driver.user_id == User.id)
                .where(func.lower(User.email) == email.lower())
            )
        ).first()
        user, vehicle_type = row if row is not None else (None, None)
        ok = await anyio.to_thread.run_sync(
            verify_password, user.password_hash if user else None, password
        )
        if user is None or not ok:
            raise InvalidCredentials()
        if not user.is_active:
            raise AccountDeactivated()
        log.info("auth.logged_in", user_id=str(user.id))
        return await self._start_session(uow, user, vehicle_type.value if vehicle_type else None)

    async def _start_session(self, uow: AsyncUnitOfWork, user: User, vehicle_type: str | None) -> Session:
        # No cache write here: the first authenticated request loads the snapshot on a miss.
        tokens = await self._issue(uow, user, family_id=uuid.uuid4())
        return Session(user=snapshot_of(user, vehicle_type), tokens=tokens)

    async def _issue(self, uow: AsyncUnitOfWork, user: User, family_id: uuid.UUID) -> TokenPair:
        now = datetime.now(UTC)
        refresh, refresh_hash = new_refresh_token()
        uow.session.add(
            RefreshToken(
                user_id=user.id,
                family_id=family_id,
                token_hash=refresh_hash,
                issued_at=now,
                expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl_s),
            )
        )
        access, _ = issue_access_token(
            self.settings,
            user_id=user.id,
            role=user.role.value,
            session_id=family_id,
            generation=user.token_generation,
            now=now,
        )
        return TokenPair(access, refresh, self.settings.access_token_ttl_s)

    # --- refresh ------------------------------------------------------------------------------
    async def refresh(self, uow: AsyncUnitOfWork, refresh_token: str) -> TokenPair:
        """Spend `refresh_token` for a new pair.

        Lock order, shared with every revocation: the user row first (here `FOR SHARE`; logout,
        logout-all, suspension and reuse detection take it exclusively), then the token row. So a
        revocation either waits for this refresh and then sees (and revokes) the token it issues,
        or runs first, and this refresh, re-reading its token and the session afterwards, refuses.
        """
        token_hash = hash_refresh_token(refresh_token)
        found = (await uow.session.execute(select(RefreshToken.user_id, RefreshToken.used_at)
                                           .where(RefreshToken.token_hash == token_hash))).first()
        if found is None:
            raise InvalidToken("The refresh token is not valid.")
        owner, spent = found
        # A token already spent is a reuse: take the user row exclusively from the start (never
        # upgrade a share lock, which two concurrent replays would deadlock on).
        user_lock = (select(User).where(User.id == owner).with_for_update(key_share=True) if spent
                     else select(User).where(User.id == owner).with_for_update(read=True))
        user = await uow.session.scalar(user_lock.execution_options(populate_existing=True))
        row = await uow.session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
            .execution_options(populate_existing=True))
        if user is None or row is None:
            raise InvalidToken("The refresh token is not valid.")
        now = datetime.now(UTC)
        if not user.is_active:
            raise AccountDeactivated()
        if row.revoked_at is not None or await self._session_revoked(uow, row.family_id):
            raise TokenRevoked("The refresh token has been revoked.")
        if row.used_at is not None:
            # Spent while this refresh waited for it: revoke under the share lock. A token a sibling
            # refresh issues meanwhile is refused by the revoked-session check above.
            await self._revoke_family(uow, user.id, row.family_id, "refresh_reuse")
            await add_job_async(uow.session, SESSIONS_END_SOCKETS, str(user.id),
                                "refresh_reuse", str(row.family_id))
            uow.session.add(
                AuditEntry(actor_id=None, actor_role="system", action="auth.refresh_reuse_detected",
                           target_type="user", target_id=str(user.id),
                           details={"family": str(row.family_id)})
            )
            log.warning("auth.refresh_reuse_detected", user_id=str(user.id), family=str(row.family_id))
            raise RefreshTokenReused("The refresh token was already used; the session is revoked.")
        if row.expires_at <= now:
            raise TokenExpired("The refresh token has expired.")
        row.used_at = now
        return await self._issue(uow, user, family_id=row.family_id)

    # --- logout -------------------------------------------------------------------------------
    async def logout(self, uow: AsyncUnitOfWork, principal: Principal, refresh_token: str | None) -> None:
        # The user row first, exclusively: a refresh in flight finishes (and its new token is
        # revoked below) or starts after this commits (and finds its session revoked).
        await _lock_user(uow, principal.id)
        families = {principal.claims.session_id}
        if refresh_token:
            family = await uow.session.scalar(
                select(RefreshToken.family_id).where(
                    RefreshToken.token_hash == hash_refresh_token(refresh_token),
                    RefreshToken.user_id == principal.id,
                )
            )
            if family is not None:
                families.add(family)
        for family_id in families:
            await self._revoke_family(uow, principal.id, family_id, "logout")
            # That session's sockets only (the user's other sessions keep theirs).
            await add_job_async(uow.session, SESSIONS_END_SOCKETS, str(principal.id),
                                "logout", str(family_id))
        log.info("auth.logged_out", user_id=str(principal.id))

    async def logout_all(self, uow: AsyncUnitOfWork, principal: Principal) -> None:
        await revoke_all_tokens(uow, principal.id, reason="logout_all", store=self.store)
        log.info("auth.logged_out_everywhere", user_id=str(principal.id))

    @staticmethod
    async def _session_revoked(uow: AsyncUnitOfWork, family_id: uuid.UUID) -> bool:
        found = await uow.session.scalar(select(RevokedSession.session_id)
                                         .where(RevokedSession.session_id == family_id))
        return found is not None

    async def _revoke_family(self, uow: AsyncUnitOfWork, user_id: uuid.UUID, family_id: uuid.UUID,
                             reason: str) -> None:
        now = datetime.now(UTC)
        ttl = self.settings.access_token_ttl_s
        await uow.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )
        await uow.session.execute(
            insert(RevokedSession)
            .values(session_id=family_id, user_id=user_id, reason=reason,
                    expires_at=now + timedelta(seconds=ttl), revoked_at=now)
            .on_conflict_do_nothing(index_elements=["session_id"])
        )
        # Revocations reach Redis *before* the commit: if Redis can't be told, nothing is
        # committed (503); if the commit then fails, the session is only revoked early.
        await self.store.revoke_sessions([(family_id, ttl + 1)])


async def _lock_user(uow: AsyncUnitOfWork, user_id: uuid.UUID) -> None:
    """Take the user row exclusively (`FOR NO KEY UPDATE`): refreshes of the user wait."""
    await uow.session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))


async def revoke_all_tokens(uow: AsyncUnitOfWork, user_id: uuid.UUID, *, reason: str,
                            store: TokenStore) -> User:
    """Refuse every token the user holds: bump the generation, revoke refresh tokens, end sockets."""
    user = await uow.session.get_one(User, user_id, with_for_update=True)
    user.token_generation += 1
    now = datetime.now(UTC)
    await uow.session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    await add_job_async(uow.session, SESSIONS_END_SOCKETS, str(user_id), reason)
    await uow.session.flush()
    vehicle_type = await uow.session.scalar(select(Driver.vehicle_type).where(Driver.user_id == user_id))
    snapshot = snapshot_of(user, vehicle_type.value if vehicle_type else None)
    # The stricter snapshot reaches Redis before the commit, so no request can pass on the old
    # generation once the commit lands; if the commit fails, the entry is dropped and reloaded.
    await store.put_user(snapshot, announce=True)
    uow.on_rollback(lambda: store.forget_user(user_id))
    return user
