"""`farmctl demo seed`: a region, a customer and online drivers around a point, to try the farm."""

from __future__ import annotations

import argparse
from typing import Any

from app.settings import get_settings
from scripts.cli.arguments import command, operator_name
from scripts.cli.connections import run_async, with_uow
from scripts.cli.outcomes import EXIT_OK


def cmd_demo_seed(args: argparse.Namespace) -> int:
    import time

    from app.adapters.driver_index import DriverIndexReader
    from app.keys import RedisKeys
    from app.redis_conn import create_sync_redis
    from app.services import audit
    from app.services.demo import DEMO_PASSWORD, DemoAccount, seed

    settings = get_settings()
    client = create_sync_redis(settings.redis)
    index = DriverIndexReader(client, RedisKeys(settings.redis))

    def place(accounts: list[DemoAccount]) -> None:
        seen = time.time()
        for account in accounts:
            if account.vehicle_type and account.lat is not None and account.lng is not None:
                index.place(account.user_id, account.vehicle_type, account.lat, account.lng, seen)

    async def seed_audited(uow: Any) -> list[DemoAccount]:
        by = operator_name(args)
        seeded = await seed(uow, region=args.region, lat=args.lat, lng=args.lng, drivers=args.drivers,
                            radius_km=args.radius_km, index_later=place, operator=by)
        audit.record(uow.session, audit.Operator.at_terminal(by), "demo.seeded",
                     target_type="region", target_id=args.region, details={"accounts": len(seeded)})
        return seeded

    try:
        accounts = run_async(lambda: with_uow(seed_audited))
    finally:
        client.close()
    print(f"region {args.region} · password for every demo account: {DEMO_PASSWORD}")
    for account in accounts:
        where = f"  {account.vehicle_type:<9} at {account.lat:.5f},{account.lng:.5f}" if account.lat else ""
        print(f"{account.role:<9} {account.email:<32} {account.user_id}{where}")
    print("drivers stay offerable for DRIVER_STALE_AFTER seconds; run the seed again to refresh them")
    return EXIT_OK


def add_demo_parsers(sub: Any) -> None:
    demo = sub.add_parser("demo", help="demo data").add_subparsers(dest="action", required=True)
    seed = command(demo, "seed",
                   "a region, a customer and online drivers around a point (prints credentials)",
                   ["farmctl demo seed", "farmctl demo seed --lat 48.137 --lng 11.575 --region MUC"],
                   cmd_demo_seed, audited=True)
    seed.add_argument("--region", default="BER")
    seed.add_argument("--lat", type=float, default=52.5219)
    seed.add_argument("--lng", type=float, default=13.4132)
    seed.add_argument("--drivers", type=int, default=12)
    seed.add_argument("--radius-km", type=float, default=4.0)
