"""The Twilio fake (`tests/fakes/twilio_server.py`) in a process of its own, for benchmarks.

    .venv/bin/python -m scripts.bench.twilio_fake [--latency-ms 100]

Prints one line `TWILIO_FAKE {"base_url": ..., "account_sid": ..., "auth_token": ...}`, then serves
until SIGTERM or SIGINT, when it prints `TWILIO_FAKE_DONE {"calls": n, "messages": m}`. It runs
apart from the worker so the two don't share a GIL, and speaks HTTP/1.1 with keep-alive, as
Twilio's API does (the fake's handler defaults to HTTP/1.0: one TCP connection per request).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fakes import twilio_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the Twilio fake, served until SIGTERM")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay every answer (Twilio: ~100-300)")
    args = parser.parse_args(argv)
    handler = twilio_server._Handler
    handler.protocol_version = "HTTP/1.1"  # keep-alive (it sends Content-Length)
    # One send per answer and no Nagle: unbuffered, the headers and the body leave as two small
    # writes, and on a kept-alive connection the second waits ~40 ms for the client's delayed ACK.
    handler.wbufsize = -1
    handler.disable_nagle_algorithm = True
    stopping = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with twilio_server.FakeTwilio() as fake:
        fake.slow(args.latency_ms / 1000)
        print("TWILIO_FAKE " + json.dumps({"base_url": fake.base_url, "account_sid": fake.account_sid,
                                           "auth_token": fake.auth_token}), flush=True)
        stopping.wait()
        print("TWILIO_FAKE_DONE " + json.dumps({"calls": fake.calls, "messages": len(fake.messages)}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
