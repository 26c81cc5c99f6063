"""Who is calling: verify an access token and check it against revocations.

From the process's live mirror of the revocation cache when it has the user (no I/O), otherwise
with one Redis round trip (and PostgreSQL on a cache miss).

Used by every authenticated HTTP route and by the Socket.IO connect handler. It fails closed: if
Redis can't be asked, the caller gets `ServiceUnavailable` (503), never access.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.adapters.access_cache import AccessMirror
from app.adapters.token_store import TokenStore, UserSnapshot
from app.errors import AccountDeactivated, Forbidden, InvalidToken, ServiceUnavailable, TokenRevoked
from app.logging import get_logger
from app.security import AccessClaims, decode_access_token
from app.settings import AuthSettings
from models import AdminAccess, Driver, RevokedSession, Role, User

log = get_logger("auth.access")

#: `details.reason` of the 403 a read-only admin gets for an action.
READ_ONLY_ADMIN = "READ_ONLY_ADMIN"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    claims: AccessClaims
    user: UserSnapshot

    @property
    def id(self) -> uuid.UUID:
        return self.user.id

    @property
    def role(self) -> str:
        return self.user.role

    @property
    def read_only(self) -> bool:
        """A read-only admin (support staff): it may read what admins read, and change nothing."""
        return self.user.role == Role.ADMIN and self.user.admin_access == AdminAccess.READ_ONLY

    def require_role(self, *roles: str) -> None:
        if self.user.role not in roles:
            raise Forbidden(f"This needs the role {' or '.join(roles)}.")

    def require_write(self) -> None:
        """403 `FORBIDDEN` (`details.reason` `READ_ONLY_ADMIN`) for a read-only admin."""
        if self.read_only:
            raise Forbidden("This admin account is read-only: it may look but not act.",
                            details={"reason": READ_ONLY_ADMIN})


def snapshot_of(user: User, vehicle_type: str | None) -> UserSnapshot:
    return UserSnapshot(
        id=user.id,
        email=user.email,
        full_name=user.full_name,
        phone=user.phone,
        role=user.role.value,
        vehicle_type=vehicle_type,
        whatsapp_opt_in=user.whatsapp_opt_in,
        is_active=user.is_active,
        generation=user.token_generation,
        created_at=user.created_at,
        phone_verified=user.phone_verified_at is not None,
        admin_access=str(user.admin_access or AdminAccess.FULL),
    )


async def load_snapshot(session: AsyncSession, user_id: uuid.UUID) -> UserSnapshot | None:
    row = (
        await session.execute(
            select(User, Driver.vehicle_type).outerjoin(Driver, Driver.user_id == User.id)
            .where(User.id == user_id)
        )
    ).first()
    if row is None:
        return None
    user, vehicle_type = row
    return snapshot_of(user, vehicle_type.value if vehicle_type else None)


class AccessGate:
    """Turns a bearer token into a `Principal` or raises the API's auth error."""

    def __init__(self, settings: AuthSettings, store: TokenStore,
                 sessions: async_sessionmaker[AsyncSession], mirror: AccessMirror | None = None) -> None:
        self._settings = settings
        self._store = store
        self._sessions = sessions
        self._mirror = mirror

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise InvalidToken("An access token is required.")
        claims = decode_access_token(self._settings, token)
        mirror = self._mirror
        if mirror is None:
            return await self._authenticate_from_redis(claims)
        user = mirror.user(claims.user_id)
        if user is not None:
            return self._verdict(claims, user, mirror.session_revoked(claims.session_id))
        epoch = mirror.epoch
        principal = await self._authenticate_from_redis(claims)
        mirror.remember(principal.user, epoch)
        return principal

    async def _authenticate_from_redis(self, claims: AccessClaims) -> Principal:
        """The slow path: one Redis round trip (and PostgreSQL on a cache miss)."""
        state = await self._store.access_state(claims.session_id, claims.user_id)
        revoked = state.session_revoked
        if not state.loaded:
            await self._rebuild_revocations()
            revoked = await self._store.is_session_revoked(claims.session_id)
        user = state.user
        if user is None:
            async with self._sessions() as session:
                user = await load_snapshot(session, claims.user_id)
            if user is None:
                raise InvalidToken("The token's account no longer exists.")
            await self._store.put_user(user, announce=False)
        return self._verdict(claims, user, revoked)

    @staticmethod
    def _verdict(claims: AccessClaims, user: UserSnapshot, session_revoked: bool) -> Principal:
        if not user.is_active:
            raise AccountDeactivated()
        if session_revoked or claims.generation < user.generation:
            raise TokenRevoked()
        return Principal(claims=claims, user=user)

    async def ensure_revocations_loaded(self) -> None:
        """Rebuild the revocation cache from PostgreSQL if Redis lost it (the mirror calls this)."""
        if not await self._store.is_loaded():
            await self._rebuild_revocations()

    async def _rebuild_revocations(self) -> None:
        """Reload revoked sessions from PostgreSQL into an empty (restarted) Redis."""
        for _ in range(40):
            if await self._store.try_lock_rebuild():
                now = datetime.now(UTC)
                async with self._sessions() as session:
                    rows = (
                        await session.execute(
                            select(RevokedSession.session_id, RevokedSession.expires_at)
                            .where(RevokedSession.expires_at > now)
                        )
                    ).all()
                await self._store.finish_rebuild(
                    (sid, int((expires - now).total_seconds()) + 1) for sid, expires in rows
                )
                log.warning("auth.revocations_rebuilt", count=len(rows))
                return
            await asyncio.sleep(0.05)
            if await self._store.is_loaded():
                return
        raise ServiceUnavailable("The revocation cache is being rebuilt; try again.")
