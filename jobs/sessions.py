"""`sessions.end_sockets`: tell a user's live sockets their session ended, then disconnect them.

Enqueued (through the outbox) by logout-all, suspension and re-activation. The socket ids come
from the Redis set the socket servers keep per user; running it twice finds the set empty.
"""

from __future__ import annotations

from app.keys import QUEUE_MAINTENANCE, user_room
from app.logging import get_logger
from jobs.base import JobContext, job

log = get_logger("jobs.sessions")


@job("sessions.end_sockets", queue=QUEUE_MAINTENANCE, max_retries=5)
def end_sockets(ctx: JobContext, user_id: str, reason: str) -> None:
    key = ctx.keys.user_sockets(user_id)
    sids: list[str] = sorted(ctx.redis.smembers(key))  # type: ignore[arg-type]
    if not sids:
        log.info("sessions.no_live_sockets", user_id=user_id)
        return
    ctx.publisher.emit("session:ended", {"userId": user_id, "reason": reason}, room=user_room(user_id))
    for sid in sids:
        ctx.publisher.disconnect(sid)
    ctx.redis.srem(key, *sids)
    log.info("sessions.sockets_ended", user_id=user_id, count=len(sids), reason=reason)
