"""Admin account actions: suspend and re-activate drivers, create admins and set their access.
Every one is audited."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import anyio.to_thread
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.adapters.driver_index import DriverIndex
from app.adapters.token_store import TokenStore
from app.db import AsyncUnitOfWork
from app.errors import Conflict, NotFound
from app.logging import get_logger
from app.security import hash_password
from app.services import audit, drivers
from app.services.auth import revoke_all_tokens
from app.services.live_map import MapPublisher
from models import AdminAccess, Driver, Role, User

log = get_logger("accounts")


def _audit(uow: AsyncUnitOfWork, actor_id: uuid.UUID | None, actor_role: str, action: str,
           user_id: uuid.UUID, details: dict[str, object], operator: str | None) -> None:
    audit.record(uow.session, audit.Operator(role=actor_role, name=operator, account_id=actor_id), action,
                 target_type="user", target_id=user_id, details=details)


async def _driver(uow: AsyncUnitOfWork, driver_id: uuid.UUID) -> User:
    user = await uow.session.scalar(
        select(User).join(Driver, Driver.user_id == User.id).where(User.id == driver_id).with_for_update()
    )
    if user is None:
        raise NotFound("No driver has this id.")
    return user


async def suspend_driver(uow: AsyncUnitOfWork, store: TokenStore, driver_id: uuid.UUID, reason: str,
                         *, index: DriverIndex, actor_id: uuid.UUID | None, actor_role: str,
                         operator: str | None = None, publisher: MapPublisher | None = None) -> None:
    """Deactivate the driver and refuse every token it holds, at once; its sockets are ended.

    It goes offline and leaves the driver index after commit (and the live map of admins watching
    its region, with `publisher`); activation leaves it offline.
    """
    user = await _driver(uow, driver_id)
    await drivers.go_offline(uow, index, driver_id, publisher=publisher)
    user.is_active = False
    user.deactivated_at = datetime.now(UTC)
    user.deactivation_reason = reason
    await revoke_all_tokens(uow, driver_id, reason="suspended", store=store)
    _audit(uow, actor_id, actor_role, "driver.suspended", driver_id, {"reason": reason}, operator)
    log.info("accounts.driver_suspended", driver_id=str(driver_id))


async def activate_driver(uow: AsyncUnitOfWork, store: TokenStore, driver_id: uuid.UUID, reason: str,
                          *, actor_id: uuid.UUID | None, actor_role: str,
                          operator: str | None = None) -> None:
    """Re-activate the driver; tokens issued before the suspension stay refused."""
    user = await _driver(uow, driver_id)
    user.is_active = True
    user.deactivated_at = None
    user.deactivation_reason = None
    await revoke_all_tokens(uow, driver_id, reason="reactivated", store=store)
    _audit(uow, actor_id, actor_role, "driver.activated", driver_id, {"reason": reason}, operator)
    log.info("accounts.driver_activated", driver_id=str(driver_id))


async def create_admin(uow: AsyncUnitOfWork, email: str, password: str, full_name: str,
                       phone: str, *, operator: str | None = None,
                       access: AdminAccess = AdminAccess.FULL) -> User:
    existing = await uow.session.scalar(select(User.id).where(func.lower(User.email) == email.lower()))
    if existing is not None:
        raise Conflict("An account with this email already exists.", details={"email": "taken"})
    password_hash = await anyio.to_thread.run_sync(hash_password, password)
    user = User(id=uuid.uuid4(), email=email, password_hash=password_hash, full_name=full_name,
                phone=phone, role=Role.ADMIN, admin_access=access, created_at=datetime.now(UTC))
    uow.session.add(user)
    try:
        await uow.session.flush()
    except IntegrityError as exc:
        raise Conflict("An account with this email already exists.", details={"email": "taken"}) from exc
    _audit(uow, None, audit.CLI, "admin.created", user.id, {"email": email, "access": access.value}, operator)
    return user


async def set_admin_access(uow: AsyncUnitOfWork, store: TokenStore, email: str, access: AdminAccess, *,
                           operator: str | None = None) -> tuple[User, AdminAccess]:
    """Make the admin with this email `full` or `read_only`; (the admin, its access before).

    It holds from the admin's next request, with the tokens it has now: every process drops its
    cached copy of the account after commit. Audited `admin.access_changed` (also when unchanged
    nothing is written and nothing is audited).
    """
    user = await uow.session.scalar(
        select(User).where(func.lower(User.email) == email.lower(), User.role == Role.ADMIN)
        .with_for_update())
    if user is None:
        raise NotFound(f"No admin has the email {email}.")
    before = AdminAccess(user.admin_access)
    if before != access:
        user.admin_access = access
        _audit(uow, None, audit.CLI, "admin.access_changed", user.id,
               {"email": user.email, "from": before.value, "to": access.value}, operator)
        user_id = user.id
        uow.after_commit(lambda: store.forget_user(user_id))
        log.info("accounts.admin_access_changed", user_id=str(user_id), access=access.value)
    return user, before
