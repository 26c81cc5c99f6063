"""What every benchmark stands on: a private database and Redis prefix, errors, and its figures.

- `BenchStack` creates `dispatchfarm_bench_<random>` (migrated), a Redis prefix of its own, and
  drops both when it closes, so a benchmark never touches a developer's or a test run's data;
- `register_user()` signs a customer or driver up through the API;
- `record_result()` appends a bench's figures as one JSON line to `$BENCH_RESULTS` when it is set
  (what `compare.py` reads; without the variable it does nothing).

The farm's processes are in `processes.py`, wrk and the paced generators in `generators.py`, py-spy
in `profiling.py`, a bench's run on its stack (create, measure, stop and drop) in `session.py`; CPU
meters, percentiles and the report table in `measure.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from sqlalchemy.engine import make_url

from app.settings import Settings, load_settings
from models.migrate import drop_database, upgrade

REPO = Path(__file__).resolve().parents[2]


class BenchError(RuntimeError):
    """The benchmark could not be set up or run (not a slow result: a broken one)."""


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


#: When set, every bench appends its figures to this file as JSON lines (see `record_result`).
RESULTS_ENV = "BENCH_RESULTS"


def record_result(bench: str, figures: Mapping[str, Any]) -> None:
    """Append `{"bench": bench, "figures": figures}` as one JSON line to `$BENCH_RESULTS`, if set.

    Called where a bench prints its table, with the figures the table shows; dataclasses in
    `figures` are turned into dicts. A bench run without the variable writes nothing.
    """
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        return str(value)

    line = json.dumps({"bench": bench, "figures": figures}, default=plain)
    with open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


# --- database and Redis ---------------------------------------------------------------------------
@dataclass
class BenchStack:
    """A private, migrated database and Redis prefix; `env` points a farm process at them."""

    database_url: str
    redis_url: str
    prefix: str
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls) -> BenchStack:
        base = load_settings()
        run_id = secrets.token_hex(4)
        url = make_url(base.db.url).set(database=f"dispatchfarm_bench_{run_id}")
        database_url = url.render_as_string(hide_password=False)
        stack = cls(database_url=database_url, redis_url=base.redis.url, prefix=f"bench{run_id}")
        stack.env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": base.redis.url,
            "REDIS_PREFIX": stack.prefix,
            "DRAMATIQ_NAMESPACE": f"{stack.prefix}-dramatiq",
            # One bench customer books thousands of rides a second: per-user write limits and
            # the open-ride cap off (they are measured by the integration tests, not here).
            "RIDES_RATE_LIMIT": "0",
            "WRITES_RATE_LIMIT": "0",
            "LOCATION_RATE_LIMIT": "0",
            "OPEN_RIDES_PER_CUSTOMER": "0",
        }
        say(f"creating database {url.database} and Redis prefix {stack.prefix}")
        upgrade(database_url)
        return stack

    @property
    def libpq_dsn(self) -> str:
        """The database URL as psycopg / libpq take it (no SQLAlchemy driver name)."""
        return make_url(self.database_url).set(drivername="postgresql").render_as_string(hide_password=False)

    def settings(self, **overrides: str) -> Settings:
        """The farm's settings as a process started with `env` (plus `overrides`) would load them."""
        return load_settings({**os.environ, **self.env, **overrides})

    def add_region(self, code: str, *, name: str = "Bench", currency: str = "EUR",
                   commission: str = "0.15") -> None:
        with psycopg.connect(self.libpq_dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO regions (code, name, currency, commission_rate, updated_at) "
                "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (code) DO NOTHING",
                (code, name, currency, commission),
            )

    def forget_keys(self, *patterns: str) -> None:
        """Delete the Redis keys that match any of `patterns` (`SCAN MATCH` patterns)."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            for pattern in patterns:
                batch = list(client.scan_iter(match=pattern, count=1000))
                if batch:
                    client.delete(*batch)
        finally:
            client.close()

    def close(self) -> None:
        drop_database(self.database_url)
        self.forget_keys(f"{self.prefix}:*", f"{self.prefix}-dramatiq:*")


def register_user(base_url: str, role: str = "customer", *, vehicle_type: str | None = None
                  ) -> tuple[str, str]:
    """Register a user through the API; returns `(user_id, access_token)`.

    The web process should run with a high `AUTH_RATE_LIMIT_REQUESTS` when a benchmark registers many.
    """
    body: dict[str, Any] = {
        "email": f"bench-{role}-{secrets.token_hex(6)}@example.com", "password": secrets.token_urlsafe(16),
        "fullName": f"Bench {role.title()}", "phone": "+491701234567", "role": role,
    }
    if vehicle_type:
        body["vehicleType"] = vehicle_type
    with httpx.Client(base_url=f"{base_url}/api/v1", timeout=30.0) as client:
        response = client.post("/auth/register", json=body)
    if response.status_code != 201:
        raise BenchError(f"register ({role}) answered {response.status_code}: {response.text[:300]}")
    data = response.json()
    return str(data["user"]["id"]), str(data["accessToken"])


def add_settings_option(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    """A repeatable `flag NAME=VALUE`: a setting for a farm process (`--worker-env`, `--web-env`)."""
    parser.add_argument(flag, action="append", default=[], metavar="NAME=VALUE", help=help)


def parse_settings(parser: argparse.ArgumentParser, flag: str, items: list[str]) -> dict[str, str]:
    """The `NAME=VALUE` items of `flag` as settings (the parser exits when one has no `=`)."""
    if any("=" not in item for item in items):
        parser.error(f"{flag} takes NAME=VALUE")
    return dict(item.split("=", 1) for item in items)
