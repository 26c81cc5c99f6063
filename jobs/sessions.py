"""`sessions.end_sockets`: end a user's live sockets (or one session's) on every socket server.

Enqueued (through the outbox, so only once the change is committed) by logout (that session),
logout-all, suspension and re-activation (every socket of the user). It publishes an end request;
each socket server ends its matching sockets (telling them `session:ended`) and acks it
(`app.realtime.sessions`). The job then waits for an ack from every live socket server (a fresh
heartbeat) and fails, to be retried, if one is missing. Running it twice ends nothing twice.
"""

from __future__ import annotations

import time
import uuid

import redis

from app.keys import SESSIONS_END_SOCKETS, RedisKeys
from app.logging import get_logger
from app.realtime.sessions import SERVER_TTL_S, EndRequest, encode
from jobs.base import JobContext, job

log = get_logger("jobs.sessions")

#: How long one attempt waits for every live socket server's ack.
ACK_WAIT_S = 5.0


class SocketServersMissed(Exception):
    """Some live socket server did not ack the end request (retried)."""


def live_servers(client: redis.Redis, keys: RedisKeys) -> set[str]:
    now = time.time()
    key = keys.socket_servers()
    client.zremrangebyscore(key, "-inf", now - 4 * SERVER_TTL_S)
    return set(client.zrangebyscore(key, now - SERVER_TTL_S, "+inf"))  # type: ignore[arg-type]


# claim_first=False: no transaction is held while waiting for acks (the job is idempotent: a
# second run ends nothing twice), and its ledger row is marked done once every server acked.
@job(SESSIONS_END_SOCKETS, max_retries=5, min_backoff_ms=500, claim_first=False)
def end_sockets(ctx: JobContext, user_id: str, reason: str, session_id: str | None = None) -> None:
    # One request id per message: acks from an earlier attempt still count on a retry.
    end_everywhere(ctx.redis, ctx.keys, user_id, reason, session_id, request_id=ctx.message_id or None)


def end_everywhere(client: redis.Redis, keys: RedisKeys, user_id: str, reason: str,
                   session_id: str | None = None, *, request_id: str | None = None) -> None:
    """Publish the end request and wait for every live socket server's ack (or raise)."""
    servers = live_servers(client, keys)
    if not servers:
        log.info("sessions.no_socket_servers", user_id=user_id)
        return
    request = EndRequest(request=request_id or uuid.uuid4().hex, user_id=user_id, reason=reason,
                         session_id=session_id)
    client.publish(keys.socket_end_channel(), encode(request))
    acks_key = keys.socket_end_acks(request.request)
    deadline = time.monotonic() + ACK_WAIT_S
    while True:
        missing = servers - set(client.smembers(acks_key))
        # A server whose heartbeat lapsed meanwhile is gone, and its sockets with it.
        missing &= live_servers(client, keys)
        if not missing:
            break
        if time.monotonic() > deadline:
            log.warning("sessions.socket_servers_missed", user_id=user_id, missing=sorted(missing))
            raise SocketServersMissed(f"{len(missing)} socket server(s) did not acknowledge")
        time.sleep(0.02)
    log.info("sessions.sockets_ended", user_id=user_id, session_id=session_id, servers=len(servers),
             reason=reason)
