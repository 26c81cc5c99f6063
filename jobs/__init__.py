"""Dramatiq actors, one module per area. Importing this package registers every actor.

`workers.broker` is imported first so the actors bind to the farm's configured broker.
"""

from workers.broker import broker  # noqa: F401  (sets the global broker before any actor)

from jobs import sessions, tokens  # noqa: E402

__all__ = ["broker", "sessions", "tokens"]
