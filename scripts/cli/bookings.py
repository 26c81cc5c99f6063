"""`farmctl bookings list|show|cancel`: time-slot bookings, as support sees them (cancel is audited).

A cancellation here is an admin's (it never costs the customer): the booking's payment is released
by `bookings.settle` on a worker, both parties are told, and `booking:status` goes to their sockets.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from scripts.cli import output
from scripts.cli.arguments import command, operator_name, positive
from scripts.cli.connections import database_sessions, unit_of_work
from scripts.cli.outcomes import EXIT_OK, NothingMatched, UsageError

STATUSES = ("HELD", "CONFIRMED", "EXPIRED", "CANCELLED", "COMPLETED", "NO_SHOW")


def _uuid(text: str | None, what: str) -> uuid.UUID | None:
    if text is None:
        return None
    try:
        return uuid.UUID(text)
    except ValueError as error:
        raise UsageError(f"{what} must be an id (a UUID), got {text!r}") from error


def _support() -> Any:
    from app.services.bookings.lifecycle import Caller

    return Caller(None, "admin")


def cmd_bookings_list(args: argparse.Namespace) -> int:
    from app.records import BookingOut
    from app.services.bookings import views

    filters = views.BookingFilter(status=args.status, provider_id=_uuid(args.provider, "--provider"),
                                  customer_id=_uuid(args.customer, "--customer"))
    with database_sessions() as sessions, sessions() as session:
        page, _ = views.list_bookings(session, _support(), cursor=None, limit=args.limit, filters=filters)
    if not page:
        raise NothingMatched("no booking matches")
    records = [BookingOut.of(view) for view in page]
    if args.json:
        for record in records:
            print(output.json_line(record))
        return EXIT_OK
    rows = [[str(r.id), r.status, r.start, r.end, str(r.provider_id), str(r.customer_id),
             f"{r.price.amount} {r.price.currency}", r.payment_method,
             r.payment.status if r.payment else "-"] for r in records]
    print("\n".join(output.table(["ID", "STATUS", "START (UTC)", "END", "PROVIDER", "CUSTOMER", "PRICE",
                                  "PAID BY", "PAYMENT"], rows)))
    return EXIT_OK


def cmd_bookings_show(args: argparse.Namespace) -> int:
    from app.records import BookingOut
    from app.services.bookings import views

    booking_id = _uuid(args.id, "ID")
    assert booking_id is not None
    with database_sessions() as sessions, sessions() as session:
        record = BookingOut.of(views.get_booking(session, _support(), booking_id))
    if args.json:
        print(output.json_line(record))
        return EXIT_OK
    print(f"booking {record.id}: {record.status}, {record.start} - {record.end} ({record.local_start} "
          f"{record.time_zone})")
    print(f"  provider {record.provider_id}, customer {record.customer_id}, service {record.service or '-'}")
    payment = record.payment.status if record.payment else "-"
    print(f"  {record.price.amount} {record.price.currency} by {record.payment_method}, payment {payment}, "
          f"hold until {record.hold_expires_at}")
    for entry in record.history:
        print(f"  {entry.at}  {entry.from_ or '-'} -> {entry.to}  by {entry.by.role}"
              f"{'  (' + entry.reason + ')' if entry.reason else ''}")
    return EXIT_OK


def cmd_bookings_cancel(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from app.adapters.realtime import Publisher
    from app.services import audit
    from app.services.bookings import lifecycle
    from app.services.bookings.effects import Effects
    from app.settings import get_settings
    from models import BookingStatus

    booking_id = _uuid(args.id, "ID")
    assert booking_id is not None
    settings = get_settings()
    caller = lifecycle.Caller(None, "admin", audit.Operator(role=audit.CLI, name=operator_name(args)))
    effects = Effects()
    publisher = Publisher(settings.redis)
    with database_sessions() as sessions, unit_of_work(sessions) as uow:
        lifecycle.end(uow.session, settings, caller, booking_id, BookingStatus.CANCELLED,
                      now=datetime.now(UTC), effects=effects, reason=args.reason)
        effects.emit_after_commit(uow.after_commit, publisher.emit)
    print(f"booking {booking_id} cancelled: its payment is released by a worker (bookings.settle) and "
          "both parties are told")
    return EXIT_OK


def add_bookings_parsers(sub: Any) -> None:
    bookings = sub.add_parser("bookings", help="time-slot bookings: list, show, cancel (audited)")
    actions = bookings.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = command(actions, "list", "bookings, newest first", [
        "farmctl bookings list --status HELD",
        "farmctl bookings list --provider 6c1f0b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b --json",
    ], cmd_bookings_list)
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--provider", help="the provider's (driver's) user id")
    listing.add_argument("--customer", help="the customer's user id")
    listing.add_argument("--limit", type=positive, default=50, help="at most N bookings (default 50)")
    listing.add_argument("--json", action="store_true", help="one JSON record per line")
    show = command(actions, "show", "one booking with its payment and history",
                   ["farmctl bookings show 6c1f0b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b"], cmd_bookings_show)
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true")
    cancel = command(actions, "cancel", "cancel a booking as support (the customer pays nothing)",
                     ["farmctl bookings cancel 6c1f0b1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b --reason 'provider ill'"],
                     cmd_bookings_cancel, audited=True)
    cancel.add_argument("id", metavar="ID")
    cancel.add_argument("--reason", required=True, help="why (told to both parties, kept in the audit log)")
