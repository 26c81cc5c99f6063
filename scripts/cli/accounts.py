"""`farmctl users create-admin` and `farmctl drivers suspend|activate`: accounts, as the admin routes."""

from __future__ import annotations

import argparse
import getpass
import sys
import uuid
from typing import Any

from app.settings import get_settings
from scripts.cli.arguments import command, operator_name
from scripts.cli.connections import run_async, with_uow
from scripts.cli.outcomes import EXIT_OK, UsageError


# --- users ---------------------------------------------------------------------------------
def _read_password_twice() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Password again: ")
    else:
        lines = sys.stdin.read().splitlines()
        if len(lines) < 2:
            raise UsageError("give the password twice on standard input (two lines)")
        first, second = lines[0], lines[1]
    if first != second:
        raise UsageError("the two passwords differ")
    if len(first) < 8:
        raise UsageError("the password needs at least 8 characters")
    return first


def cmd_users_create_admin(args: argparse.Namespace) -> int:
    from app.services.accounts import create_admin
    from models import AdminAccess

    password = _read_password_twice()
    access = AdminAccess.READ_ONLY if args.read_only else AdminAccess.FULL
    user = run_async(lambda: with_uow(
        lambda uow: create_admin(uow, args.email, password, args.name, args.phone,
                                 operator=operator_name(args), access=access)))
    kind = "read-only admin" if args.read_only else "admin"
    print(f"{kind} {user.email} created with id {user.id}")
    return EXIT_OK


#: `farmctl users set-access` words → the stored access.
ACCESS_WORDS = {"full": "full", "read-only": "read_only"}


async def _set_access(email: str, access: str, by: str) -> tuple[str, str]:
    from app.adapters.token_store import TokenStore
    from app.keys import RedisKeys
    from app.redis_conn import create_async_redis
    from app.services.accounts import set_admin_access
    from models import AdminAccess

    settings = get_settings()
    client = create_async_redis(settings.redis)
    store = TokenStore(client, RedisKeys(settings.redis), settings.auth.user_cache_ttl_s)
    try:
        user, before = await with_uow(
            lambda uow: set_admin_access(uow, store, email, AdminAccess(access), operator=by))
        return user.email, before.value
    finally:
        await client.aclose()


def cmd_users_set_access(args: argparse.Namespace) -> int:
    access = ACCESS_WORDS[args.access]
    email, before = run_async(lambda: _set_access(args.email, access, operator_name(args)))
    if before == access:
        print(f"admin {email} already has {args.access} access: nothing changed")
    else:
        print(f"admin {email}: {before.replace('_', '-')} → {args.access} access, from its next request")
    return EXIT_OK


def add_users_parsers(sub: Any) -> None:
    users = sub.add_parser("users", help="accounts").add_subparsers(dest="action", required=True)
    admin = command(users, "create-admin",
                    "create an admin (password prompted twice, or two lines on stdin)", [
        "farmctl users create-admin ops@example.com",
        "printf 'pw12345678\\npw12345678\\n' | farmctl users create-admin ops@example.com"],
        cmd_users_create_admin, audited=True)
    admin.add_argument("email")
    admin.add_argument("--name", default="Administrator")
    admin.add_argument("--phone", default="+10000000000")
    admin.add_argument("--read-only", action="store_true",
                       help="support staff: may read every admin page and list, may act on nothing")
    access = command(users, "set-access", "make an admin full or read-only (from its next request)", [
        "farmctl users set-access support@example.com read-only",
        "farmctl users set-access ops@example.com full"], cmd_users_set_access, audited=True)
    access.add_argument("email")
    access.add_argument("access", choices=sorted(ACCESS_WORDS))


# --- drivers -------------------------------------------------------------------------------
def _driver_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError as error:
        raise UsageError(f"{text!r} is not a driver id (a UUID)") from error


async def _driver_action(driver_id: uuid.UUID, reason: str, *, suspend: bool, by: str) -> None:
    from app.adapters.driver_index import DriverIndex
    from app.adapters.token_store import TokenStore
    from app.keys import RedisKeys
    from app.redis_conn import create_async_redis
    from app.services import accounts

    settings = get_settings()
    client = create_async_redis(settings.redis)
    keys = RedisKeys(settings.redis)
    store = TokenStore(client, keys, settings.auth.user_cache_ttl_s)
    try:
        if suspend:
            await with_uow(lambda uow: accounts.suspend_driver(
                uow, store, driver_id, reason, index=DriverIndex(client, keys), actor_id=None,
                actor_role="cli", operator=by))
        else:
            await with_uow(lambda uow: accounts.activate_driver(
                uow, store, driver_id, reason, actor_id=None, actor_role="cli", operator=by))
    finally:
        await client.aclose()


def cmd_drivers_suspend(args: argparse.Namespace) -> int:
    driver_id = _driver_id(args.id)
    run_async(lambda: _driver_action(driver_id, args.reason, suspend=True, by=operator_name(args)))
    print(f"driver {driver_id} suspended: every token refused from now on; its live sockets are "
          "disconnected by a worker (sessions.end_sockets)")
    return EXIT_OK


def cmd_drivers_activate(args: argparse.Namespace) -> int:
    driver_id = _driver_id(args.id)
    run_async(lambda: _driver_action(driver_id, args.reason, suspend=False, by=operator_name(args)))
    print(f"driver {driver_id} active again: it logs in anew (tokens from before stay refused)")
    return EXIT_OK


def add_drivers_parsers(sub: Any) -> None:
    drivers = sub.add_parser("drivers", help="suspend or re-activate drivers (audited)")
    actions = drivers.add_subparsers(dest="action", required=True, metavar="ACTION")
    suspend = command(
        actions, "suspend", "suspend a driver: every token refused at once, live sockets disconnected",
        ["farmctl drivers suspend 6c1f0b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b --reason 'documents expired'"],
        cmd_drivers_suspend, audited=True)
    activate = command(
        actions, "activate", "re-activate a suspended driver (it logs in again)",
        ["farmctl drivers activate 6c1f0b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b --reason 'documents renewed'"],
        cmd_drivers_activate, audited=True)
    for parser in (suspend, activate):
        parser.add_argument("id", metavar="ID", help="the driver's user id")
        parser.add_argument("--reason", required=True, help="why (kept in the audit log)")
