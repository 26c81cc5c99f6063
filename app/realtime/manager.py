"""The socket server's Redis manager: delivers pub/sub emits without a loop turn per message.

python-socketio's listener handles one pub/sub message at a time and, for each, starts a task per
recipient and waits for all of them (`asyncio.wait`) before it reads the next message. Every
message therefore costs at least two turns of the event loop; on a web process that is also
serving HTTP a turn takes milliseconds, so under load every emit of the farm (offers, statuses,
locations) queues up behind the listener (`scripts/bench/bench_offer_latency.py` measures it).

Handing a packet to a connected socket is a put on that socket's unbounded send queue, which does
not suspend, so this manager sends to each recipient in turn, inline: no task, no wait, in the
order the messages arrived. The socket's own writer task does the network I/O as before.
Emits with a callback or binary data keep the library's path.
"""

from __future__ import annotations

from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from app.logging import get_logger

log = get_logger("realtime")


class FanOutRedisManager(socketio.AsyncRedisManager):
    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("callback") is not None or message.get("binary"):
            await super()._handle_emit(message)
            return
        namespace = message.get("namespace") or "/"
        if namespace not in self.rooms:
            return
        data = message.get("data")
        args = list(data) if isinstance(data, list | tuple) else ([] if data is None else [data])
        skip = message.get("skip_sid")
        skip_sids = set(skip) if isinstance(skip, list) else {skip}
        encoded = self.server.packet_class(packet.EVENT, namespace=namespace,
                                           data=[message["event"], *args]).encode()
        frames = [eio_packet.Packet(eio_packet.MESSAGE, part)
                  for part in (encoded if isinstance(encoded, list) else [encoded])]
        for sid, eio_sid in self.get_participants(namespace, message.get("room")):
            if sid in skip_sids:
                continue
            for frame in frames:
                try:
                    await self.server._send_eio_packet(eio_sid, frame)
                except Exception as exc:  # a socket closing under us must not stop the others
                    log.debug("realtime.send_skipped", sid=sid, error=type(exc).__name__)
                    break
