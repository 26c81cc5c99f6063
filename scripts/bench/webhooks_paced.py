"""Paced `POST /webhooks/stripe`: `loadgen.py`'s generator, one pre-signed event per request.

`loadgen.py` sends the same request every time; a webhook must carry a new event id (or it is a
duplicate) and a signature over its own body. This sends line *i* of an events file (the
`Stripe-Signature` header, a tab, the JSON body: what `bench_webhooks.py` writes) as request *i*, at
`start + i / rate`, with latency from that scheduled moment (`loadgen.pace()`), and counts the
answers: 200 `"duplicate":false`, 200 `"duplicate":true`, anything else.

    python scripts/bench/webhooks_paced.py --url http://127.0.0.1:8000/webhooks/stripe \
        --events /tmp/events.tsv --rate 1000 --duration 10 --warmup 2

prints one `BENCH_RESULT {json}` line: `loadgen.py`'s summary of the measured requests plus
`answers` (over warm-up and measured requests), `events_sent` (scheduled) and `unwritten` (the
indices of those still waiting for a connection when the generator gave up: never sent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.bench.loadgen import ConnectionPool, Sample, build_request, pace

HEADERS = {"Content-Type": "application/json; charset=utf-8", "Accept": "*/*; q=0.5, application/xml",
           "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"}


def load_requests(path: Path, host: str, target: str, count: int) -> list[bytes]:
    raw: list[bytes] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if len(raw) == count:
                break
            signature, _, body = line.rstrip("\n").partition("\t")
            raw.append(build_request("POST", host, target, {**HEADERS, "Stripe-Signature": signature},
                                     body.encode()))
    if len(raw) < count:
        raise SystemExit(f"{path} holds {len(raw)} events; the run needs {count}")
    return raw


async def run(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    warm, measured = int(args.rate * args.warmup), int(args.rate * args.duration)
    raw = load_requests(Path(args.events), f"{host}:{port}", url.path or "/", warm + measured)
    answers: Counter[str] = Counter()

    def on_answer(sample: Sample, body: bytes) -> None:
        if sample.status == 200:
            answers["duplicate" if b'"duplicate":true' in body else "new"] += 1
        else:
            answers[str(sample.status)] += 1

    pool = ConnectionPool(host, port, args.connections)
    await pool.open()
    try:
        warm_samples = await pace(pool, raw.__getitem__, rate=args.rate, count=warm, on_answer=on_answer)
        samples = await pace(pool, raw.__getitem__, rate=args.rate, count=measured, on_answer=on_answer,
                             first_index=warm)
    finally:
        pool.close()
    # a request still waiting for a free connection when the generator gave up was never written
    unwritten = [s.index for s in warm_samples.items + samples.items if math.isnan(s.sent)]
    return {**samples.summary(), "answers": dict(answers), "events_sent": warm + measured,
            "unwritten": unwritten}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="paced POST /webhooks/stripe, one signed event per request")
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", required=True, help="file of 'signature<TAB>body' lines")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds at the same rate, not measured")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        import uvloop

        summary = uvloop.run(run(args))
    except ImportError:
        summary = asyncio.run(run(args))
    print("BENCH_RESULT " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
