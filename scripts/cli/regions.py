"""`farmctl regions set`: create or update a market (name, currency, the platform's commission)."""

from __future__ import annotations

import argparse
from typing import Any

from scripts.cli.arguments import command, operator_name
from scripts.cli.connections import run_async, with_uow
from scripts.cli.outcomes import EXIT_OK, UsageError


def cmd_regions_set(args: argparse.Namespace) -> int:
    from decimal import Decimal, InvalidOperation

    from app.services.regions import set_region

    try:
        commission = Decimal(args.commission)
    except InvalidOperation as error:
        raise UsageError(f"--commission must be a decimal fraction such as 0.15, got {args.commission!r}") \
            from error
    region = run_async(lambda: with_uow(lambda uow: set_region(
        uow, args.code, name=args.name, currency=args.currency, commission_rate=commission,
        operator=operator_name(args), slot_minutes=args.slot_minutes,
        slot_buffer_minutes=args.buffer_minutes)))
    print(f"region {region.code} ({region.name}): {region.currency}, commission {region.commission_rate}, "
          f"booking slots {region.slot_minutes} min + {region.slot_buffer_minutes} min buffer")
    return EXIT_OK


def add_regions_parsers(sub: Any) -> None:
    regions = sub.add_parser("regions", help="markets").add_subparsers(dest="action", required=True)
    region = command(regions, "set", "create or update a region",
                     ["farmctl regions set BER --name Berlin --currency EUR --commission 0.15"],
                     cmd_regions_set, audited=True)
    region.add_argument("code")
    region.add_argument("--name", required=True)
    region.add_argument("--currency", required=True, help="ISO 4217, e.g. EUR")
    region.add_argument("--commission", required=True, help="the platform's share, e.g. 0.15")
    region.add_argument("--slot-minutes", type=int, help="time-slot bookings: the slot length of providers "
                                                         "who set none (default 60)")
    region.add_argument("--buffer-minutes", type=int, help="time-slot bookings: the gap after each booking "
                                                           "for providers who set none (default 0)")
