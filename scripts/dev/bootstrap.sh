#!/usr/bin/env bash
# Prepare a machine for the farm: local services up, a virtualenv with the locked dependencies.
# Sourced by run-farm.sh and run-tests.sh; safe to run again (it only does what is missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${FARM_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

say() { printf '\033[1m[farm]\033[0m %s\n' "$*" >&2; }

ensure_services() {
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    say "PostgreSQL is not answering on 127.0.0.1:5432; starting it"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    say "Redis is not answering on 127.0.0.1:6379; starting it"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  pg_isready -h 127.0.0.1 -p 5432 -q || { say "PostgreSQL is still down: see README, 'Services'"; exit 1; }
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { say "Redis is still down: see README, 'Services'"; exit 1; }
}

ensure_venv() {
  local stamp="$VENV/.farm-installed"
  local want
  want="$(cat "$ROOT/requirements.lock" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  say "installing Python dependencies into $VENV"
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.lock"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$ROOT"
  echo "$want" > "$stamp"
}

# The browser tests' Chromium: Debian's package, driven by Playwright (never `playwright install`).
# Called by run-tests.sh only. Without root or apt it says so, and tests/browser skips.
CHROMIUM=/usr/bin/chromium  # where Debian puts it; tests/browser/conftest.py launches this path
ensure_chromium() {
  [[ -x "$CHROMIUM" ]] && return 0
  if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    say "Chromium is missing ($CHROMIUM) and can't be installed here (needs root and apt-get):" \
        "the browser tests will be skipped; install it with: apt-get install chromium"
    return 0
  fi
  say "installing Debian's chromium for the browser tests"
  local log
  log="$(mktemp)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >"$log" 2>&1; then
    if grep -qE "Unable to locate package|has no installation candidate|Unable to fetch|404 +Not Found" "$log"; then
      say "apt has no usable package lists; running apt-get update first"
      if apt-get update -q >"$log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >"$log" 2>&1 || true
      fi
    fi
  fi
  if [[ -x "$CHROMIUM" ]]; then
    say "installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
  else
    tail -n 20 "$log" >&2
    say "could not install chromium (output above): the browser tests will be skipped"
  fi
  rm -f "$log"
}

ensure_services
ensure_venv
export PATH="$VENV/bin:$PATH"
