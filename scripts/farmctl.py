"""`farmctl`: the operator's command line. Exit codes: 0 done, 1 nothing matched, 2 bad usage.

Each command parses its arguments and calls one service; errors are one clear line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from app.errors import AppError
from app.settings import SettingsError, get_settings

T = TypeVar("T")

EXIT_OK, EXIT_NOTHING, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in how the command was called (exit 2)."""


def _print_err(message: str) -> None:
    print(f"farmctl: {message}", file=sys.stderr)


def _run_async(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())  # type: ignore[arg-type]


async def _with_uow(action: Callable[[Any], Awaitable[T]]) -> T:
    """Run `action(uow)` in one transaction on the async engine, committing on success."""
    from app.db import AsyncUnitOfWork, async_session_factory, create_async_db_engine

    engine = create_async_db_engine(get_settings().db)
    try:
        uow = AsyncUnitOfWork(async_session_factory(engine)())
        try:
            result = await action(uow)
            await uow.commit()
            return result
        except BaseException:
            await uow.rollback()
            raise
        finally:
            await uow.close()
    finally:
        await engine.dispose()


# --- db ------------------------------------------------------------------------------------
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from models.migrate import upgrade

    upgrade(get_settings().db.url, args.revision)
    print(f"database migrated to {args.revision}")
    return EXIT_OK


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

    password = _read_password_twice()
    user = _run_async(lambda: _with_uow(
        lambda uow: create_admin(uow, args.email, password, args.name, args.phone)))
    print(f"admin {user.email} created with id {user.id}")
    return EXIT_OK


# --- regions -------------------------------------------------------------------------------
def cmd_regions_set(args: argparse.Namespace) -> int:
    from decimal import Decimal, InvalidOperation

    from app.services.regions import set_region

    try:
        commission = Decimal(args.commission)
    except InvalidOperation as error:
        raise UsageError(f"--commission must be a decimal fraction such as 0.15, got {args.commission!r}") \
            from error
    region = _run_async(lambda: _with_uow(lambda uow: set_region(
        uow, args.code, name=args.name, currency=args.currency, commission_rate=commission)))
    print(f"region {region.code} ({region.name}): {region.currency}, commission {region.commission_rate}")
    return EXIT_OK


# --- demo ----------------------------------------------------------------------------------
def cmd_demo_seed(args: argparse.Namespace) -> int:
    import time

    from app.adapters.driver_index import DriverIndexReader
    from app.keys import RedisKeys
    from app.redis_conn import create_sync_redis
    from app.services.demo import DEMO_PASSWORD, DemoAccount, seed

    settings = get_settings()
    client = create_sync_redis(settings.redis)
    index = DriverIndexReader(client, RedisKeys(settings.redis))

    def place(accounts: list[DemoAccount]) -> None:
        seen = time.time()
        for account in accounts:
            if account.vehicle_type and account.lat is not None and account.lng is not None:
                index.place(account.user_id, account.vehicle_type, account.lat, account.lng, seen)

    try:
        accounts = _run_async(lambda: _with_uow(lambda uow: seed(
            uow, region=args.region, lat=args.lat, lng=args.lng, drivers=args.drivers,
            radius_km=args.radius_km, index_later=place)))
    finally:
        client.close()
    print(f"region {args.region} · password for every demo account: {DEMO_PASSWORD}")
    for account in accounts:
        where = f"  {account.vehicle_type:<9} at {account.lat:.5f},{account.lng:.5f}" if account.lat else ""
        print(f"{account.role:<9} {account.email:<32} {account.user_id}{where}")
    print("drivers stay offerable for DRIVER_STALE_AFTER seconds; run the seed again to refresh them")
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="farmctl",
        description="Operate a Dispatch Farm: database, users and drivers (more in later releases).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  farmctl db upgrade\n  farmctl users create-admin ops@example.com",
    )
    sub = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    upgrade = db.add_parser("upgrade", help="create the database if needed and migrate it",
                            epilog="example:\n  farmctl db upgrade",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=cmd_db_upgrade)

    users = sub.add_parser("users", help="accounts").add_subparsers(dest="action", required=True)
    admin = users.add_parser(
        "create-admin", help="create an admin (password prompted twice, or two lines on stdin)",
        epilog="examples:\n  farmctl users create-admin ops@example.com\n"
               "  printf 'pw12345678\\npw12345678\\n' | farmctl users create-admin ops@example.com",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    admin.add_argument("email")
    admin.add_argument("--name", default="Administrator")
    admin.add_argument("--phone", default="+10000000000")
    admin.set_defaults(func=cmd_users_create_admin)

    regions = sub.add_parser("regions", help="markets").add_subparsers(dest="action", required=True)
    region = regions.add_parser(
        "set", help="create or update a region",
        epilog="example:\n  farmctl regions set BER --name Berlin --currency EUR --commission 0.15",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    region.add_argument("code")
    region.add_argument("--name", required=True)
    region.add_argument("--currency", required=True, help="ISO 4217, e.g. EUR")
    region.add_argument("--commission", required=True, help="the platform's share, e.g. 0.15")
    region.set_defaults(func=cmd_regions_set)

    demo = sub.add_parser("demo", help="demo data").add_subparsers(dest="action", required=True)
    seed = demo.add_parser(
        "seed", help="a region, a customer and online drivers around a point (prints credentials)",
        epilog="examples:\n  farmctl demo seed\n  farmctl demo seed --lat 48.137 --lng 11.575 --region MUC",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    seed.add_argument("--region", default="BER")
    seed.add_argument("--lat", type=float, default=52.5219)
    seed.add_argument("--lng", type=float, default=13.4132)
    seed.add_argument("--drivers", type=int, default=12)
    seed.add_argument("--radius-km", type=float, default=4.0)
    seed.set_defaults(func=cmd_demo_seed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        from app.logging import configure_logging

        configure_logging(get_settings().log, process="cli")
        return int(args.func(args))
    except UsageError as error:
        _print_err(str(error))
        return EXIT_USAGE
    except SettingsError as error:
        _print_err(f"configuration: {error}")
        return EXIT_USAGE
    except AppError as error:
        _print_err(f"{error.code}: {error.message}")
        return EXIT_NOTHING if error.status_code == 404 else EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
