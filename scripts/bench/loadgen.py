"""A paced HTTP/1.1 load generator: a fixed request rate, latency from each request's scheduled time.

wrk only runs closed loops (a connection sends its next request when the last one answered), so it
cannot say what latency a fixed arrival rate sees, and wrk2 is not packaged for this machine. This
sends request *i* at `start + i / rate` over a pool of keep-alive connections and measures its
latency from that scheduled moment (as wrk2 does, so a stall is not hidden by the requests it held
back: "coordinated omission"). A request that finds every connection busy waits for one, and that
wait counts.

    python scripts/bench/loadgen.py --url http://127.0.0.1:8000/api/v1/rides --rate 1000 \
        --duration 10 --method POST --header 'Authorization: Bearer ...' --body-file ride.json

prints one `BENCH_RESULT {json}` line. `ConnectionPool` and `pace()` are also used in-process by
benchmarks that need each answer (`bench_offer_latency.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

#: A request later than this after its scheduled time counts as a late start (the generator lagged).
LATE_START_S = 0.002
#: After the last scheduled send, answers are awaited this long; the rest count as unanswered.
DRAIN_TIMEOUT_S = 20.0


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            answer = self._answer()
            if answer is not None:
                self.waiter.set_result(answer)

    def _answer(self) -> tuple[int, bytes] | None:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(self.buffer[:head_end]).lower()
        status = int(head[9:12])
        start = head_end + 4
        length_at = head.find(b"\r\ncontent-length:")
        if length_at >= 0:
            line_end = head.find(b"\r\n", length_at + 2)
            length = int(head[length_at + 17:line_end if line_end >= 0 else len(head)])
            if len(self.buffer) < start + length:
                return None
            body = bytes(self.buffer[start:start + length])
            del self.buffer[:start + length]
        elif b"transfer-encoding: chunked" in head:
            end = self.buffer.find(b"\r\n0\r\n\r\n", start - 2)
            if end < 0:
                return None
            body = _dechunk(bytes(self.buffer[start:end + 2]))
            del self.buffer[:end + 7]
        else:
            body = b""
            del self.buffer[:start]
        if b"\r\nconnection: close" in head and self.transport is not None:
            self.transport.close()
            self.closed = True
        return status, body

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.transport is None or self.closed:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        try:
            return await self.waiter
        except asyncio.CancelledError:
            self.transport.close()  # its answer may still come: never reuse the connection
            self.closed = True
            raise
        finally:
            self.waiter = None


def _dechunk(data: bytes) -> bytes:
    out, at = bytearray(), 0
    while True:
        line_end = data.find(b"\r\n", at)
        size = int(data[at:line_end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[line_end + 2:line_end + 2 + size]
        at = line_end + 4 + size


class ConnectionPool:
    """`size` keep-alive connections to one host; `send()` waits for a free one."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self._free: asyncio.Queue[HttpConnection] = asyncio.Queue()

    async def _connect(self) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(HttpConnection, self.host, self.port)
        return protocol

    async def open(self) -> None:
        for connection in await asyncio.gather(*(self._connect() for _ in range(self.size))):
            self._free.put_nowait(connection)

    async def send(self, raw: bytes, sent: Callable[[], None] | None = None) -> tuple[int, bytes]:
        """Send one request (whole bytes) on a free connection; `sent` is called as it is written."""
        connection = await self._free.get()
        try:
            if connection.closed:
                connection = await self._connect()
            if sent is not None:
                sent()
            return await connection.request(raw)
        finally:
            if connection.closed:
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    connection = await self._connect()
            self._free.put_nowait(connection)

    def close(self) -> None:
        while not self._free.empty():
            connection = self._free.get_nowait()
            if connection.transport is not None:
                connection.transport.close()


def build_request(method: str, host: str, path: str, headers: dict[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


@dataclass
class Sample:
    index: int
    scheduled: float
    sent: float = math.nan
    done: float = math.nan
    status: int = 0
    error: str | None = None
    unanswered: bool = False


@dataclass
class Samples:
    items: list[Sample] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        answered = [s for s in self.items if s.error is None and not s.unanswered]
        latency = [(s.done - s.scheduled) * 1000 for s in answered]
        service = [(s.done - s.sent) * 1000 for s in answered]
        first = min((s.scheduled for s in self.items), default=0.0)
        last = max((s.done for s in answered), default=first)
        return {
            "sent": len(self.items),
            "duration_s": max(last - first, 1e-9),
            "statuses": dict(Counter(str(s.status) for s in answered)),
            "errors": sum(1 for s in self.items if s.error is not None),
            "unanswered": sum(1 for s in self.items if s.unanswered),
            "late_starts": sum(1 for s in answered if s.sent - s.scheduled > LATE_START_S),
            "latency_ms": _percentiles(latency),
            "service_ms": _percentiles(service),
        }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"p{p:g}": ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] for p in (50, 90, 95, 99, 99.9)}
    out["max"] = ordered[-1]
    out["mean"] = sum(ordered) / len(ordered)
    return out


Request = Callable[[int], bytes]
OnAnswer = Callable[[Sample, bytes], None]


async def pace(pool: ConnectionPool, request: Request, *, rate: float, count: int,
               on_answer: OnAnswer | None = None, first_index: int = 0,
               drain_timeout_s: float = DRAIN_TIMEOUT_S) -> Samples:
    """Send `count` requests at `rate` per second; returns once every one has answered or failed,
    or `drain_timeout_s` after the last was due (those still waiting count as unanswered)."""
    samples = Samples()
    tasks: set[asyncio.Task[None]] = set()

    async def one(sample: Sample) -> None:
        def mark_sent() -> None:
            sample.sent = time.perf_counter()

        try:
            sample.status, body = await pool.send(request(sample.index), mark_sent)
            sample.done = time.perf_counter()
            if on_answer is not None:
                on_answer(sample, body)
        except asyncio.CancelledError:
            sample.unanswered = True
        except Exception as error:  # a failed request is a counted result, not a crash
            sample.error = repr(error)

    start = time.perf_counter() + 0.01
    interval = 1.0 / rate
    for n in range(count):
        scheduled = start + n * interval
        delay = scheduled - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        sample = Sample(index=first_index + n, scheduled=scheduled)
        samples.items.append(sample)
        task = asyncio.create_task(one(sample))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=drain_timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
    return samples


async def run(args: argparse.Namespace, body: bytes | None) -> dict[str, object]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    raw = build_request(args.method, f"{host}:{port}", url.path or "/", headers, body)
    pool = ConnectionPool(host, port, args.connections)
    await pool.open()
    try:
        if args.warmup > 0:
            await pace(pool, lambda _: raw, rate=args.rate, count=int(args.rate * args.warmup))
        samples = await pace(pool, lambda _: raw, rate=args.rate, count=int(args.rate * args.duration))
    finally:
        pool.close()
    return samples.summary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="paced HTTP/1.1 load at a fixed rate")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds at the same rate, not measured")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    parser.add_argument("--body-file")
    args = parser.parse_args(argv)
    body = Path(args.body_file).read_bytes() if args.body_file else None
    try:
        import uvloop

        summary = uvloop.run(run(args, body))
    except ImportError:
        summary = asyncio.run(run(args, body))
    print("BENCH_RESULT " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
