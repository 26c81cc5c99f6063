#!/usr/bin/env bash
# Install everything the tests need, then run them against the local PostgreSQL and Redis.
#   scripts/run-tests.sh                 # the whole suite
#   scripts/run-tests.sh tests/unit -q   # any pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dev/bootstrap.sh
ensure_chromium

if [[ $# -eq 0 ]]; then
  say "lint: ruff"
  ruff check .
  say "types: mypy"
  mypy
fi

set +e
python -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  say "pytest collected no tests: treating that as a failure"
  exit 1
fi
exit $status
