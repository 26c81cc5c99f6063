"""Dramatiq actors, one module per area. Importing this package registers every actor.

Each actor module imports `jobs.base`, which imports `workers.broker` first, so every actor binds
to the farm's configured broker.
"""

from jobs import bookings, dispatch, drivers, notifications, payments, retention, rides, sessions, tokens
from workers.broker import broker

__all__ = ["bookings", "broker", "dispatch", "drivers", "notifications", "payments", "retention", "rides",
           "sessions", "tokens"]
