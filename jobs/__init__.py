"""Dramatiq actors, one module per area. Importing this package registers every actor.

`workers.broker` is imported first so the actors bind to the farm's configured broker.
"""

from jobs import sessions, tokens
from workers.broker import broker

__all__ = ["broker", "sessions", "tokens"]
