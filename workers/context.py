"""Per-message state that the worker middleware hands to the job wrapper (one per worker thread)."""

from __future__ import annotations

import threading

from app.db import UnitOfWork

_local = threading.local()


def set_unit_of_work(uow: UnitOfWork | None) -> None:
    _local.uow = uow


def current_unit_of_work() -> UnitOfWork:
    uow: UnitOfWork | None = getattr(_local, "uow", None)
    if uow is None:
        raise RuntimeError("no unit of work: jobs run inside a worker with SessionPerMessage")
    return uow


def peek_unit_of_work() -> UnitOfWork | None:
    return getattr(_local, "uow", None)
